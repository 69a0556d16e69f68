//! `/login`: a plain form posting to `/auth/login`, which sets the session cookie.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let failed = move || query.read().get("error").is_some_and(|e| e != "throttled");
    let throttled = move || query.read().get("error").is_some_and(|e| e == "throttled");
    let next = move || query.read().get("next").unwrap_or_else(|| "/".to_string());
    view! {
        <main class="page login">
            <h1>"Sign in to Usher"</h1>
            <Show when=failed>
                <p class="error" role="alert">"Unknown user or wrong password."</p>
            </Show>
            <Show when=throttled>
                <p class="error" role="alert">"Too many failed sign-ins. Wait a few minutes and try again."</p>
            </Show>
            <form method="post" action="/auth/login" class="card">
                <input type="hidden" name="next" value=next/>
                <label>"User" <input type="text" name="name" autocomplete="username" required/></label>
                <label>"Password" <input type="password" name="password" autocomplete="current-password" required/></label>
                <button type="submit" class="btn primary">"Sign in"</button>
            </form>
        </main>
    }
}
