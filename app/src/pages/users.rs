//! `/admin/users` (admins): every user with their role and API tokens; add a user, change
//! a role, make a token (shown once, in the answer) or revoke one. Plain form posts, so
//! it all works before hydration.

use leptos::either::Either;
use leptos::prelude::*;
use usher_core::api::UserInfo;
use usher_core::roles::Role;

use crate::components::{Header, loaded};
use crate::server::{AddUserForm, AdminUsersData, CreateTokenForm, RevokeTokenForm, SetRoleForm, admin_users_page};
use crate::time;

const ROLES: [Role; 4] = [Role::Viewer, Role::Developer, Role::Maintainer, Role::Admin];

#[component]
pub fn AdminUsersPage() -> impl IntoView {
    let data = crate::page_data::page_data(|| (), |_| admin_users_page());
    loaded(data, |d| view! { <UserList data=d/> })
}

#[component]
fn UserList(data: AdminUsersData) -> impl IntoView {
    let AdminUsersData { viewer, users } = data;
    let add = ServerAction::<AddUserForm>::new();
    view! {
        <Header viewer=viewer/>
        <main class="page">
            <h1>"Users"</h1>
            <table class="users">
                <thead><tr><th>"User"</th><th>"Role"</th><th>"API tokens"</th><th></th></tr></thead>
                <tbody>{users.into_iter().map(|u| view! { <UserRow user=u/> }).collect_view()}</tbody>
            </table>
            <section class="card project-form">
                <h2>"Add a user"</h2>
                <ActionForm action=add>
                    <label>"Name" <input type="text" name="name" required/></label>
                    <label>"Role" <RoleSelect selected=Role::Developer label="Role"/></label>
                    <label>"Password " <span class="muted">"(empty: API tokens only)"</span>
                        <input type="password" name="password" autocomplete="new-password"/></label>
                    <button type="submit" class="btn primary">"Add user"</button>
                </ActionForm>
                {move || add.value().get().map(|r| match r {
                    Ok(()) => Either::Left(view! { <p role="status">"Added. " <a href="/admin/users">"Reload the list"</a></p> }),
                    Err(e) => Either::Right(view! { <p class="error" role="alert">{e.to_string()}</p> }),
                })}
            </section>
        </main>
    }
}

#[component]
fn RoleSelect(selected: Role, #[prop(into)] label: String) -> impl IntoView {
    view! {
        <select name="role" aria-label=label>
            {ROLES.into_iter().map(|r| view! { <option value=r.as_str() selected=r == selected>{r.as_str()}</option> }).collect_view()}
        </select>
    }
}

#[component]
fn UserRow(user: UserInfo) -> impl IntoView {
    let set_role = ServerAction::<SetRoleForm>::new();
    let create = ServerAction::<CreateTokenForm>::new();
    let name = user.name.clone();
    let (role_name, token_name) = (name.clone(), name.clone());
    let role_label = format!("Role of {name}");
    view! {
        <tr data-user=name.clone()>
            <td>{user.name.clone()} {(!user.has_password).then(|| view! { <span class="muted">" (tokens only)"</span> })}</td>
            <td>
                <ActionForm action=set_role attr:class="inline">
                    <input type="hidden" name="name" value=role_name/>
                    <RoleSelect selected=user.role label=role_label/>
                    <button type="submit" class="btn">"Change role"</button>
                </ActionForm>
                {move || set_role.value().get().map(|r| match r {
                    Ok(()) => Either::Left(view! { <span role="status">" saved"</span> }),
                    Err(e) => Either::Right(view! { <span class="error" role="alert">{e.to_string()}</span> }),
                })}
            </td>
            <td>
                <ul class="tokens">
                    {user.tokens.into_iter().map(|t| view! { <TokenItem token=t/> }).collect_view()}
                </ul>
            </td>
            <td>
                <ActionForm action=create attr:class="inline">
                    <input type="hidden" name="name" value=token_name/>
                    <button type="submit" class="btn">"New token"</button>
                </ActionForm>
                {move || create.value().get().map(|r| match r {
                    Ok(token) => Either::Left(view! {
                        <p class="new-token" role="status">"New token (shown only now): " <code data-testid="new-token">{token}</code></p>
                    }),
                    Err(e) => Either::Right(view! { <p class="error" role="alert">{e.to_string()}</p> }),
                })}
            </td>
        </tr>
    }
}

#[component]
fn TokenItem(token: usher_core::api::TokenInfo) -> impl IntoView {
    let revoke = ServerAction::<RevokeTokenForm>::new();
    let revoked = RwSignal::new(token.revoked);
    Effect::new(move |_| {
        if let Some(Ok(())) = revoke.value().get() {
            revoked.set(true);
        }
    });
    view! {
        <li>
            "#" {token.id} " · " <time title=time::exact(&token.created_at)>{token.created_at.get(..10).unwrap_or_default().to_string()}</time>
            {move || if revoked.get() {
                Either::Left(view! { <span class="muted">" revoked"</span> })
            } else {
                Either::Right(view! {
                    <ActionForm action=revoke attr:class="inline">
                        <input type="hidden" name="token_id" value=token.id/>
                        <button type="submit" class="btn secondary">"Revoke"</button>
                    </ActionForm>
                })
            }}
        </li>
    }
}
