//! `/` (recent pipelines of all projects) and `/projects/{id}` (one project's pipelines,
//! with a form to run a new one). Rows update live from the event websocket.

use leptos::either::Either;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_params_map;
use usher_core::api::{EventFrame, Pipeline};
use usher_core::roles::Action;

use crate::components::{Header, LiveDot, StatusBadge, loaded, short_time};
use crate::live::follow_events;
use crate::server::{PipelineListData, RunPipeline, list_pipelines};

/// `/` when the route has no `:id`, `/projects/{id}` when it has one.
#[component]
pub fn PipelinesPage() -> impl IntoView {
    let params = use_params_map();
    // A non-numeric id is no project (0): the engine answers "not found".
    let project_id = move || params.read().get("id").map(|s| s.parse::<i64>().unwrap_or(0));
    let data = Resource::new(project_id, list_pipelines);
    loaded(data, |d| view! { <PipelineList data=d/> })
}

#[component]
fn PipelineList(data: PipelineListData) -> impl IntoView {
    let PipelineListData {
        viewer,
        project,
        pipelines,
    } = data;
    let project_id = project.as_ref().map(|p| p.id);
    let rows = RwSignal::new(pipelines);
    let connected = RwSignal::new(false);
    let reload = move || {
        spawn_local(async move {
            if let Ok(fresh) = list_pipelines(project_id).await {
                rows.set(fresh.pipelines);
            }
        })
    };
    let query = project_id.map(|p| format!("project_id={p}")).unwrap_or_default();
    follow_events(query, connected, reload, move |frame| {
        if let EventFrame::Pipeline { pipeline } = frame {
            let known = rows.with_untracked(|r| r.iter().any(|(p, _)| p.id == pipeline.id));
            if known {
                rows.update(|r| {
                    if let Some((p, _)) = r.iter_mut().find(|(p, _)| p.id == pipeline.id) {
                        *p = pipeline;
                    }
                });
            } else {
                reload();
            }
        }
    });
    let run = ServerAction::<RunPipeline>::new();
    let run_error = RwSignal::new(None::<String>);
    Effect::new(move |_| match run.value().get() {
        Some(Ok(_)) => {
            run_error.set(None);
            reload();
        }
        Some(Err(e)) => run_error.set(Some(e.to_string())),
        None => {}
    });
    let default_branch = project.as_ref().map(|p| p.default_branch.clone()).unwrap_or_else(|| "main".into());
    let repository = project.as_ref().and_then(|p| p.repository_url.clone());
    let may_run = viewer.role.may(Action::CreatePipeline);
    let title = project
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_else(|| "Recent pipelines".to_string());
    view! {
        <Header viewer=viewer/>
        <main class="page">
            <div class="title-row">
                <h1>{title}</h1>
                <LiveDot connected=connected/>
            </div>
            {project_id.map(|_| view! {
                <p class="repository">
                    {match repository {
                        Some(url) => Either::Left(view! { "Repository " <code>{url}</code> " · default branch " <code>{default_branch.clone()}</code> }),
                        None => Either::Right(view! { "Inline CI configuration" }),
                    }}
                </p>
            })}
            {match project_id {
                Some(pid) if may_run => Either::Left(view! {
                    <ActionForm action=run attr:class="run-pipeline">
                        <input type="hidden" name="project_id" value=pid/>
                        <label>"Branch or tag " <input type="text" name="git_ref" value=default_branch required/></label>
                        <button type="submit" class="btn primary" disabled=move || run.pending().get()>
                            {move || if run.pending().get() { "Starting…" } else { "Run pipeline" }}
                        </button>
                    </ActionForm>
                    {move || run_error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                }),
                _ => Either::Right(()),
            }}
            <table class="pipelines">
                <thead><tr><th>"Pipeline"</th><th>"Project"</th><th>"Ref"</th><th>"Commit"</th><th>"Status"</th><th>"Created"</th><th>"By"</th></tr></thead>
                <tbody>
                    <For
                        each=move || rows.get()
                        key=|(p, _)| (p.id, p.status)
                        children=|(pipeline, project_name)| view! { <PipelineRow pipeline=pipeline project_name=project_name/> }
                    />
                </tbody>
            </table>
            <Show when=move || rows.with(|r| r.is_empty())>
                <p class="empty">"No pipelines yet."</p>
            </Show>
        </main>
    }
}

#[component]
fn PipelineRow(pipeline: Pipeline, project_name: String) -> impl IntoView {
    let status = pipeline.status;
    view! {
        <tr class="pipeline" data-pipeline-id=pipeline.id>
            <td><a href=format!("/pipelines/{}", pipeline.id)>"#" {pipeline.id}</a></td>
            <td><a href=format!("/projects/{}", pipeline.project_id)>{project_name}</a></td>
            <td>{pipeline.git_ref.clone()}</td>
            <td class="commit">
                {pipeline.sha.as_deref().map(|sha| view! { <code title=sha.to_string()>{usher_core::repository::short_sha(sha).to_string()}</code> " " })}
                {pipeline.commit_title.clone().unwrap_or_default()}
            </td>
            <td><StatusBadge status=Signal::stored(status)/></td>
            <td>{short_time(&pipeline.created_at)}</td>
            <td>{pipeline.triggered_by.clone()}</td>
        </tr>
    }
}
