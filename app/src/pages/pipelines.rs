//! `/` (recent pipelines of all projects) and `/projects/{id}` (one project's pipelines,
//! with a form to run a new one). Rows update live from the event websocket; each
//! unfinished row has its Cancel; the list pages through 25 at a time and filters by
//! status and ref (plain links and a GET form, so all of it works before hydration).

use leptos::either::Either;
use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};
use usher_core::api::{EventFrame, Pipeline};
use usher_core::roles::{Action, Role};

use crate::components::{Header, LiveDot, StatusBadge, loaded, may_cancel};
use crate::live::{Reloader, follow_events};
use crate::server::{CancelPipeline, ListQuery, PipelineListData, RunPipeline, list_pipelines};
use crate::time;

/// `/` when the route has no `:id`, `/projects/{id}` when it has one.
#[component]
pub fn PipelinesPage() -> impl IntoView {
    let params = use_params_map();
    // A non-numeric id is no project (0): the engine answers "not found".
    let project_id = move || params.read().get("id").map(|s| s.parse::<i64>().unwrap_or(0));
    let query_map = use_query_map();
    let query = move || {
        let q = query_map.read();
        ListQuery {
            page: q.get("page").and_then(|p| p.parse().ok()),
            status: q.get("status").filter(|s| !s.is_empty()),
            git_ref: q.get("ref").filter(|s| !s.is_empty()),
        }
    };
    let data = crate::page_data::page_data(
        move || (project_id(), query()),
        |(id, q)| list_pipelines(id, q.page, q.status, q.git_ref),
    );
    loaded(data, move |d| view! { <PipelineList data=d query=query()/> })
}

#[component]
fn PipelineList(data: PipelineListData, query: ListQuery) -> impl IntoView {
    let PipelineListData {
        viewer,
        project,
        pipelines,
        now,
        page,
        has_more,
        variables,
    } = data;
    let role = viewer.role;
    let filter_status = query.status.clone().unwrap_or_default();
    let filter_ref = query.git_ref.clone().unwrap_or_default();
    // The link to another page of the same filter.
    let page_link = {
        let (status, git_ref) = (filter_status.clone(), filter_ref.clone());
        move |n: i64| {
            let mut q = vec![format!("page={n}")];
            if !status.is_empty() {
                q.push(format!("status={status}"));
            }
            if !git_ref.is_empty() {
                q.push(format!("ref={}", usher_core::url::percent_encode(&git_ref)));
            }
            format!("?{}", q.join("&"))
        }
    };
    let project_id = project.as_ref().map(|p| p.id);
    let rows = RwSignal::new(pipelines);
    let connected = RwSignal::new(false);
    let reloader = Reloader::new();
    let reload = {
        let query = query.clone();
        move || {
            let query = query.clone();
            reloader.reload(
                move || {
                    let query = query.clone();
                    async move { list_pipelines(project_id, query.page, query.status, query.git_ref).await.ok() }
                },
                move |fresh: PipelineListData| rows.set(fresh.pipelines),
            )
        }
    };
    let events_query = project_id.map(|p| format!("project_id={p}")).unwrap_or_default();
    let reload_on_new = reload.clone();
    let reload_after_run = reload.clone();
    follow_events(events_query, connected, reload, move |frame| {
        if let EventFrame::Pipeline { pipeline } = frame {
            reloader.frame_seen();
            let known = rows.with_untracked(|r| r.iter().any(|(p, _)| p.id == pipeline.id));
            if known {
                rows.update(|r| {
                    if let Some((p, _)) = r.iter_mut().find(|(p, _)| p.id == pipeline.id) {
                        *p = pipeline;
                    }
                });
            } else if page == 1 {
                reload_on_new();
            }
        }
    });
    let run = ServerAction::<RunPipeline>::new();
    let run_error = RwSignal::new(None::<String>);
    Effect::new(move |_| match run.value().get() {
        Some(Ok(_)) => {
            run_error.set(None);
            reload_after_run();
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
            {(!variables.is_empty()).then(|| view! {
                <p class="variables" data-testid="variables">"CI variables: "
                    {variables.iter().map(|v| view! {
                        <code>{v.key.clone()}</code>
                        {v.masked.then(|| view! { <span class="muted">" (masked)"</span> })}
                        " "
                    }).collect_view()}
                    <span class="muted">"· values are write-only (docs/api.md)"</span>
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
            <form method="get" class="filters">
                <label>"Status "
                    <select name="status">
                        <option value="" selected=filter_status.is_empty()>"any"</option>
                        {usher_core::Status::ALL.into_iter().map(|s| view! {
                            <option value=s.as_str() selected=filter_status == s.as_str()>{s.as_str()}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label>"Ref " <input type="text" name="ref" value=filter_ref.clone() placeholder="any"/></label>
                <button type="submit" class="btn">"Filter"</button>
            </form>
            <table class="pipelines">
                <thead><tr><th>"Pipeline"</th><th>"Project"</th><th>"Ref"</th><th>"Commit"</th><th>"Status"</th><th>"Created"</th><th>"Took"</th><th>"By"</th><th></th></tr></thead>
                <tbody>
                    <For
                        each=move || rows.get()
                        key=|(p, _)| (p.id, p.status)
                        children=move |(pipeline, project_name)| view! {
                            <PipelineRow pipeline=pipeline project_name=project_name now=now.clone() role=role/>
                        }
                    />
                </tbody>
            </table>
            <nav class="pager" aria-label="Pages">
                {(page > 1).then(|| view! { <a href=page_link(page - 1) rel="prev">"← Newer"</a> })}
                <span class="muted">" Page " {page} " "</span>
                {has_more.then(|| view! { <a href=page_link(page + 1) rel="next">"Older →"</a> })}
            </nav>
            <Show when=move || rows.with(|r| r.is_empty())>
                <p class="empty">"No pipelines yet."</p>
            </Show>
        </main>
    }
}

#[component]
fn PipelineRow(pipeline: Pipeline, project_name: String, now: String, role: Role) -> impl IntoView {
    let status = pipeline.status;
    let cancel = ServerAction::<CancelPipeline>::new();
    let took = time::took(&now, pipeline.started_at.as_deref(), pipeline.finished_at.as_deref()).unwrap_or_default();
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
            <td><time datetime=pipeline.created_at.clone() title=time::exact(&pipeline.created_at)>{time::ago(&now, &pipeline.created_at)}</time></td>
            <td>{took}</td>
            <td>{pipeline.triggered_by.clone()}</td>
            <td>
                <Show when=move || may_cancel(role, status)>
                    <ActionForm action=cancel attr:class="inline">
                        <input type="hidden" name="pipeline_id" value=pipeline.id/>
                        <button type="submit" class="btn primary" title="Cancel every unfinished job; running jobs clean up first">"Cancel"</button>
                    </ActionForm>
                </Show>
            </td>
        </tr>
    }
}
