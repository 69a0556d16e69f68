//! Small pieces shared by the pages: the header, status badges, the Cancel/Abort
//! buttons (shown by the same rules the engine enforces), and time formatting.

use leptos::prelude::*;
use usher_core::roles::{Action, Role};
use usher_core::status::Status;

use crate::server::Viewer;

/// Asked before an Abort is sent (works before hydration too: it is plain HTML).
pub const ABORT_CONFIRM: &str =
    "return confirm('Abort now? Every process is killed at once and after_script does not run. Use Cancel to let the job clean up.')";

#[component]
pub fn Header(viewer: Viewer) -> impl IntoView {
    view! {
        <header class="top">
            <a class="brand" href="/">"Usher"</a>
            <nav>
                <a href="/">"Pipelines"</a>
                <a href="/admin/jobs?status=canceling">"Cleanups"</a>
                <a href="/admin/runners">"Runners"</a>
            </nav>
            <span class="who">{viewer.name} " · " {viewer.role.as_str()}</span>
            <form method="post" action="/auth/logout">
                <button type="submit" class="btn link">"Sign out"</button>
            </form>
        </header>
    }
}

#[component]
pub fn StatusBadge(#[prop(into)] status: Signal<Status>) -> impl IntoView {
    view! {
        <span class=move || format!("badge status-{}", status.get()) data-status=move || status.get().as_str()>
            {move || status.get().as_str()}
        </span>
    }
}

/// Whether the viewer's role and the status allow a Cancel / an Abort.
pub fn may_cancel(role: Role, status: Status) -> bool {
    role.may(Action::Cancel) && status.can_cancel()
}

pub fn may_abort(role: Role, status: Status) -> bool {
    role.may(Action::Abort) && status.can_abort()
}

/// `2026-11-27T19:20:36.123Z` → `2026-11-27 19:20:36`.
pub fn short_time(t: &str) -> String {
    t.get(..19).map(|s| s.replace('T', " ")).unwrap_or_else(|| t.to_string())
}

#[component]
pub fn ErrorBox(message: String) -> impl IntoView {
    view! { <p class="error" role="alert">{message}</p> }
}

/// A page's data: "Loading…" while it comes, the error if it fails, else `show(data)`.
pub fn loaded<T, E, V>(data: Resource<Result<T, E>>, show: impl Fn(T) -> V + Clone + Send + Sync + 'static) -> impl IntoView
where
    T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
    E: Clone + Send + Sync + std::fmt::Display + serde::Serialize + serde::de::DeserializeOwned + 'static,
    V: IntoView + 'static,
{
    view! {
        <Suspense fallback=|| view! { <p class="page">"Loading…"</p> }>
            {move || {
                let show = show.clone();
                Suspend::new(async move {
                    match data.await {
                        Ok(d) => leptos::either::Either::Left(show(d)),
                        Err(e) => leptos::either::Either::Right(view! { <main class="page"><ErrorBox message=e.to_string()/></main> }),
                    }
                })
            }}
        </Suspense>
    }
}

#[component]
pub fn LiveDot(connected: RwSignal<bool>) -> impl IntoView {
    view! {
        <span class="live" data-live=move || if connected.get() { "connected" } else { "offline" }
            title="Updates arrive live while this is green">
            {move || if connected.get() { "● live" } else { "○ not live" }}
        </span>
    }
}
