//! Admin pages: `/admin/jobs?status=canceling` (jobs in one status across all projects —
//! by default the cleanups still running or stuck, each with Cancel/Abort as the role
//! allows) and `/admin/runners` (who is connected and what they hold).

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_query_map;
use usher_core::api::{EventFrame, Job, RunnerInfo};
use usher_core::status::Status;

use crate::components::{ErrorBox, Header, JobActions, JobButtons, LiveDot, StatusBadge, job_actions, loaded, short_time};
use crate::live::{Reloader, follow_events};
use crate::server::{AdminJobsData, AdminRunnersData, PauseRunner, admin_jobs, admin_runners};

/// The statuses the page offers as quick links.
const STATUS_LINKS: [Status; 5] = [Status::Canceling, Status::Running, Status::Pending, Status::Manual, Status::Created];

#[component]
pub fn AdminJobsPage() -> impl IntoView {
    let query = use_query_map();
    let status = move || {
        query
            .read()
            .get("status")
            .map(|s| Status::parse(&s).ok_or(s))
            .unwrap_or(Ok(Status::Canceling))
    };
    let data = crate::page_data::page_data(status, |status| async move {
        match status {
            Ok(s) => admin_jobs(s).await.map_err(|e| e.to_string()),
            Err(text) => Err(format!("`{text}` is not a job status")),
        }
    });
    loaded(data, |d| view! { <AdminJobs data=d/> })
}

#[component]
fn AdminJobs(data: AdminJobsData) -> impl IntoView {
    let AdminJobsData { viewer, status, jobs } = data;
    let role = viewer.role;
    let rows = RwSignal::new(jobs);
    let connected = RwSignal::new(false);
    let reloader = Reloader::new();
    let reload = move || {
        reloader.reload(
            move || async move { admin_jobs(status).await.ok() },
            move |fresh: AdminJobsData| rows.set(fresh.jobs),
        )
    };
    follow_events(String::new(), connected, reload, move |frame| {
        if let EventFrame::Job { job } = frame {
            let listed = rows.with_untracked(|r| r.iter().any(|j| j.id == job.id));
            if listed || job.status == status {
                reloader.frame_seen();
                reload();
            }
        }
    });
    let error = RwSignal::new(None::<String>);
    let actions = job_actions(error, move |_| reload());
    let title = if status == Status::Canceling {
        "Cleanups in progress (canceling)".to_string()
    } else {
        format!("Jobs: {status}")
    };
    view! {
        <Header viewer=viewer/>
        <main class="page">
            <div class="title-row">
                <h1>{title}</h1>
                <LiveDot connected=connected/>
            </div>
            <p class="crumbs">
                {STATUS_LINKS.into_iter().map(|s| view! {
                    <a href=format!("/admin/jobs?status={s}") class:current=move || s == status>{s.as_str()}</a> " "
                }).collect_view()}
            </p>
            {move || error.get().map(|e| view! { <ErrorBox message=e/> })}
            <table class="jobs" data-testid="admin-jobs">
                <thead><tr><th>"Job"</th><th>"Pipeline"</th><th>"Status"</th><th>"Started"</th><th>"Cancel asked"</th><th></th></tr></thead>
                <tbody>
                    <For
                        each=move || rows.get()
                        key=|j| (j.id, j.status)
                        children=move |job| view! { <AdminJobRow job=job role=role actions=actions/> }
                    />
                </tbody>
            </table>
            <Show when=move || rows.with(|r| r.is_empty())>
                <p class="empty">{format!("No {status} jobs.")}</p>
            </Show>
        </main>
    }
}

#[component]
fn AdminJobRow(job: Job, role: usher_core::roles::Role, actions: JobActions) -> impl IntoView {
    let status = Signal::stored(job.status);
    let asked = job
        .cancel
        .as_ref()
        .map(|c| format!("{} by {} at {}", c.mode.as_str(), c.requested_by, short_time(&c.requested_at)))
        .unwrap_or_default();
    view! {
        <tr class="job" data-job-id=job.id>
            <td><a href=format!("/jobs/{}", job.id)>{job.name.clone()} " #" {job.id}</a></td>
            <td><a href=format!("/pipelines/{}", job.pipeline_id)>"#" {job.pipeline_id}</a></td>
            <td><StatusBadge status=status/></td>
            <td>{job.started_at.as_deref().map(short_time).unwrap_or_default()}</td>
            <td>{asked}</td>
            <td><JobButtons id=job.id status=status role=role actions=actions/></td>
        </tr>
    }
}

#[component]
pub fn AdminRunnersPage() -> impl IntoView {
    let data = crate::page_data::page_data(|| (), |_| admin_runners());
    loaded(data, |d| view! { <AdminRunners data=d/> })
}

#[component]
fn AdminRunners(data: AdminRunnersData) -> impl IntoView {
    let AdminRunnersData { viewer, runners } = data;
    let admin = viewer.role.may(usher_core::roles::Action::Administer);
    let rows = RwSignal::new(runners);
    let connected = RwSignal::new(false);
    let reload = move || {
        spawn_local(async move {
            if let Ok(fresh) = admin_runners().await {
                rows.set(fresh.runners);
            }
        })
    };
    // A Pause or Resume answers with the runner as it is now.
    let pause = ServerAction::<PauseRunner>::new();
    let error = RwSignal::new(None::<String>);
    Effect::new(move |_| match pause.value().get() {
        Some(Ok(runner)) => rows.update(|list| {
            if let Some(r) = list.iter_mut().find(|r| r.id == runner.id) {
                *r = runner;
            }
        }),
        Some(Err(e)) => error.set(Some(e.to_string())),
        None => {}
    });
    // Jobs starting and ending change what runners hold; heartbeats are re-read every 5 s.
    follow_events(String::new(), connected, reload, move |frame| {
        if matches!(frame, EventFrame::Job { .. }) {
            reload();
        }
    });
    Effect::new(move |_| {
        if let Ok(handle) = set_interval_with_handle(reload, std::time::Duration::from_secs(5)) {
            on_cleanup(move || handle.clear());
        }
    });
    view! {
        <Header viewer=viewer/>
        <main class="page">
            <div class="title-row">
                <h1>"Runners"</h1>
                <LiveDot connected=connected/>
            </div>
            {move || error.get().map(|e| view! { <ErrorBox message=e/> })}
            <table class="runners" data-testid="runners">
                <thead><tr><th>"Runner"</th><th>"State"</th><th>"Connected"</th><th>"Last seen"</th><th>"Active jobs"</th></tr></thead>
                <tbody>
                    <For
                        each=move || rows.get()
                        key=|r| (r.id, r.connected, r.paused, r.draining, r.active_jobs.clone(), r.last_seen_at.clone())
                        children=move |r| view! { <RunnerRow runner=r admin=admin pause=pause/> }
                    />
                </tbody>
            </table>
            <Show when=move || rows.with(|r| r.is_empty())>
                <p class="empty">"No runner has connected yet."</p>
            </Show>
        </main>
    }
}

#[component]
fn RunnerRow(runner: RunnerInfo, admin: bool, pause: ServerAction<PauseRunner>) -> impl IntoView {
    let state = match (runner.connected, runner.draining, runner.paused) {
        (false, _, _) => "offline",
        (true, true, _) => "draining",
        (true, false, true) => "paused",
        (true, false, false) => "online",
    };
    let id = runner.id;
    let paused = runner.paused;
    view! {
        <tr class="runner" data-runner-id=runner.id data-state=state>
            <td>{runner.name.clone()} " #" {runner.id}</td>
            <td>
                {state}
                {admin.then(|| view! {
                    <ActionForm action=pause attr:class="inline">
                        <input type="hidden" name="runner_id" value=id/>
                        <input type="hidden" name="paused" value=if paused { "false" } else { "true" }/>
                        <button type="submit" class="btn" title=if paused { "Let it take new jobs again" } else { "It keeps its running jobs and takes no new one" }>
                            {if paused { "Resume" } else { "Pause" }}
                        </button>
                    </ActionForm>
                })}
            </td>
            <td>{short_time(&runner.connected_at)}</td>
            <td>{short_time(&runner.last_seen_at)}</td>
            <td>
                {runner.active_jobs.iter().map(|id| view! { <a href=format!("/jobs/{id}")>"#" {*id}</a> " " }).collect_view()}
            </td>
        </tr>
    }
}
