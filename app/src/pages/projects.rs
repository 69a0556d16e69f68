//! `/projects`: every project with its repository and default branch; maintainers create
//! one (name, repository, default branch, webhook secret, inline YAML) and edit one in
//! place. The forms are plain form posts to server functions, so they work before
//! hydration; a YAML error is shown with the line it names.

use leptos::either::Either;
use leptos::prelude::*;
use usher_core::api::Project;
use usher_core::roles::Action;

use crate::components::{Header, loaded};
use crate::server::{CreateProjectForm, ProjectsData, UpdateProjectForm, projects_page};

#[component]
pub fn ProjectsPage() -> impl IntoView {
    let data = crate::page_data::page_data(|| (), |_| projects_page());
    loaded(data, |d| view! { <ProjectList data=d/> })
}

#[component]
fn ProjectList(data: ProjectsData) -> impl IntoView {
    let ProjectsData { viewer, projects } = data;
    let may_manage = viewer.role.may(Action::ManageProjects);
    let create = ServerAction::<CreateProjectForm>::new();
    view! {
        <Header viewer=viewer/>
        <main class="page">
            <h1>"Projects"</h1>
            <table class="projects">
                <thead><tr><th>"Project"</th><th>"Repository"</th><th>"Default branch"</th><th>"Configuration"</th></tr></thead>
                <tbody>
                    {projects.iter().map(|p| view! {
                        <tr data-project-id=p.id>
                            <td><a href=format!("/projects/{}", p.id)>{p.name.clone()}</a></td>
                            <td><code>{p.repository_url.clone().unwrap_or_else(|| "—".into())}</code></td>
                            <td><code>{p.default_branch.clone()}</code></td>
                            <td>{if p.ci_config.is_some() { "inline YAML" } else { "the repository's CI file" }}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
            {projects.is_empty().then(|| view! { <p class="empty">"No projects yet."</p> })}
            {may_manage.then(|| view! {
                <section class="card project-form">
                    <h2>"New project"</h2>
                    <ActionForm action=create>
                        <ProjectFields project=None/>
                        <button type="submit" class="btn primary" disabled=move || create.pending().get()>"Create project"</button>
                    </ActionForm>
                    {move || create.value().get().map(|result| match result {
                        Err(e) => Either::Left(view! { <p class="error" role="alert">{e.to_string()}</p> }),
                        Ok(p) => Either::Right(view! { <p>"Created " <a href=format!("/projects/{}", p.id)>{p.name}</a></p> }),
                    })}
                </section>
                {projects.into_iter().map(|p| view! { <EditProject project=p/> }).collect_view()}
            })}
        </main>
    }
}

/// The fields of a project's form; `project` fills them for an edit.
#[component]
fn ProjectFields(project: Option<Project>) -> impl IntoView {
    let p = project.clone().unwrap_or(Project {
        id: 0,
        name: String::new(),
        repository_url: None,
        default_branch: "main".into(),
        ci_config: None,
        created_at: String::new(),
    });
    view! {
        <label>"Name" <input type="text" name="name" value=p.name required/></label>
        <label>"Repository URL " <span class="muted">"(a path, https://, ssh://, git://; a token in an https URL is kept secret)"</span>
            <input type="text" name="repository_url" value=p.repository_url.unwrap_or_default()/></label>
        <label>"Default branch" <input type="text" name="default_branch" value=p.default_branch/></label>
        <label>"Webhook secret " <span class="muted">{if project.is_some() { "(leave empty to keep it)" } else { "(for push webhooks)" }}</span>
            <input type="password" name="webhook_secret" autocomplete="new-password"/></label>
        <label>"Inline CI YAML " <span class="muted">"(empty: the repository's .usher-ci.yml)"</span>
            <textarea name="ci_config" rows="8" spellcheck="false">{p.ci_config.unwrap_or_default()}</textarea></label>
    }
}

#[component]
fn EditProject(project: Project) -> impl IntoView {
    let update = ServerAction::<UpdateProjectForm>::new();
    let id = project.id;
    let name = project.name.clone();
    view! {
        <details class="card project-form" data-edit-project=id>
            <summary>"Edit " {name}</summary>
            <ActionForm action=update>
                <input type="hidden" name="id" value=id/>
                <ProjectFields project=Some(project)/>
                <button type="submit" class="btn primary" disabled=move || update.pending().get()>"Save"</button>
            </ActionForm>
            {move || update.value().get().map(|result| match result {
                Err(e) => Either::Left(view! { <p class="error" role="alert">{e.to_string()}</p> }),
                Ok(_) => Either::Right(view! { <p role="status">"Saved."</p> }),
            })}
        </details>
    }
}
