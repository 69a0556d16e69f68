//! Each page as a lazily loaded route: the browser first loads the framework and the
//! app's frame, and a page's own code (its views, its server-function calls and the
//! decoding of its data) comes in a WASM chunk of its own, fetched when the page is first
//! shown. `cargo leptos build --split` cuts the chunks; on a server-rendered page the
//! chunk is named in a `modulepreload` link, so hydration does not wait for a second
//! round trip.

use crate::pages;
use leptos::prelude::*;
use leptos_router::{LazyRoute, lazy_route};

/// `/` and `/projects/{id}`.
pub struct PipelinesChunk;

#[lazy_route]
impl LazyRoute for PipelinesChunk {
    fn data() -> Self {
        Self
    }
    fn view(_this: Self) -> AnyView {
        view! { <pages::pipelines::PipelinesPage/> }.into_any()
    }
}

/// `/projects`.
pub struct ProjectsChunk;

#[lazy_route]
impl LazyRoute for ProjectsChunk {
    fn data() -> Self {
        Self
    }
    fn view(_this: Self) -> AnyView {
        view! { <pages::projects::ProjectsPage/> }.into_any()
    }
}

/// `/pipelines/{id}`.
pub struct PipelineChunk;

#[lazy_route]
impl LazyRoute for PipelineChunk {
    fn data() -> Self {
        Self
    }
    fn view(_this: Self) -> AnyView {
        view! { <pages::pipeline::PipelinePage/> }.into_any()
    }
}

/// `/jobs/{id}`.
pub struct JobChunk;

#[lazy_route]
impl LazyRoute for JobChunk {
    fn data() -> Self {
        Self
    }
    fn view(_this: Self) -> AnyView {
        view! { <pages::job::JobPage/> }.into_any()
    }
}

/// `/login`.
pub struct LoginChunk;

#[lazy_route]
impl LazyRoute for LoginChunk {
    fn data() -> Self {
        Self
    }
    fn view(_this: Self) -> AnyView {
        view! { <pages::login::LoginPage/> }.into_any()
    }
}

/// `/admin/jobs`.
pub struct AdminJobsChunk;

#[lazy_route]
impl LazyRoute for AdminJobsChunk {
    fn data() -> Self {
        Self
    }
    fn view(_this: Self) -> AnyView {
        view! { <pages::admin::AdminJobsPage/> }.into_any()
    }
}

/// `/admin/runners`.
pub struct AdminRunnersChunk;

#[lazy_route]
impl LazyRoute for AdminRunnersChunk {
    fn data() -> Self {
        Self
    }
    fn view(_this: Self) -> AnyView {
        view! { <pages::admin::AdminRunnersPage/> }.into_any()
    }
}

/// `/admin/users`.
pub struct AdminUsersChunk;

#[lazy_route]
impl LazyRoute for AdminUsersChunk {
    fn data() -> Self {
        Self
    }
    fn view(_this: Self) -> AnyView {
        view! { <pages::users::AdminUsersPage/> }.into_any()
    }
}
