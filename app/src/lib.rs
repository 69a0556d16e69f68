//! Usher's web UI. Pages are rendered on the server and hydrated in the browser; every
//! button is an `<ActionForm>` over a server function, so it also works as a plain form
//! post before the WASM has loaded. Pages follow the event websocket to update live.
//!
//! - [`server`]: the server functions (thin adapters over `usher_engine::Engine`).
//! - [`live`]: the event websocket subscription in the browser.
//! - [`ansi`]: job logs with ANSI colours turned into escaped, styled text.
//! - [`pages`]: the routes of docs/api.md "Pages".

pub mod components;
pub mod live;
pub mod log_view;
pub mod page_chunks;
pub mod page_data;
pub mod pages;
pub mod server;
pub mod terminal;
pub mod time;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{Lazy, SsrMode, path};
use page_chunks::*;

/// The stylesheet's address: `/pkg/usher.css`, or with the build's hash in the name when
/// cargo-leptos hashed the files (`hash.txt` beside the server binary, which is where
/// Leptos reads the script names from too). The document head is rendered on the server
/// only, so the name never has to be known in the browser.
fn stylesheet_href(options: &LeptosOptions) -> String {
    let plain = format!("/{}/{}.css", options.site_pkg_dir, options.output_name);
    if !options.hash_files {
        return plain;
    }
    static HASHED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let hashed = HASHED.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        let hashes = std::fs::read_to_string(exe.parent()?.join(options.hash_file.as_ref())).ok()?;
        let hash = hashes.lines().find_map(|l| l.trim().strip_prefix("css:"))?.trim().to_string();
        Some(format!("/{}/{}.{hash}.css", options.site_pkg_dir, options.output_name))
    });
    hashed.clone().unwrap_or(plain)
}

/// The HTML document around the app (server side).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" type="image/svg+xml" href="/favicon.svg"/>
                <link rel="stylesheet" id="leptos" href=stylesheet_href(&options)/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Title text="Usher"/>
        <Router>
            <Routes fallback=|| view! { <main class="page"><p>"Page not found."</p></main> }>
                <Route path=path!("/login") view={Lazy::<LoginChunk>::new()}/>
                // Async: the whole page is rendered before it is sent, so it is complete
                // (and its forms usable) before or without hydration.
                <Route path=path!("/") view={Lazy::<PipelinesChunk>::new()} ssr=SsrMode::Async/>
                <Route path=path!("/projects") view={Lazy::<ProjectsChunk>::new()} ssr=SsrMode::Async/>
                <Route path=path!("/projects/:id") view={Lazy::<PipelinesChunk>::new()} ssr=SsrMode::Async/>
                <Route path=path!("/pipelines/:id") view={Lazy::<PipelineChunk>::new()} ssr=SsrMode::Async/>
                <Route path=path!("/jobs/:id") view={Lazy::<JobChunk>::new()} ssr=SsrMode::Async/>
                <Route path=path!("/admin/jobs") view={Lazy::<AdminJobsChunk>::new()} ssr=SsrMode::Async/>
                <Route path=path!("/admin/runners") view={Lazy::<AdminRunnersChunk>::new()} ssr=SsrMode::Async/>
                <Route path=path!("/admin/users") view={Lazy::<AdminUsersChunk>::new()} ssr=SsrMode::Async/>
            </Routes>
        </Router>
    }
}
