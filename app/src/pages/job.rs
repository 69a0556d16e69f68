//! `/jobs/{id}`: status, Cancel/Abort/Retry, the live log ([`crate::log_view`]), the
//! cancel and after_script facts, the job's artifacts (download links), and the timeline
//! of state changes. One event socket, filtered by the job, brings both status changes
//! and new log output.

use leptos::either::Either;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_params_map;
use usher_core::api::{EventFrame, Job};

use crate::components::{
    ErrorBox, Header, JobButtons, LiveDot, RetryJobButton, StatusBadge, cancel_words, job_actions, loaded, short_time,
};
use crate::live::follow_events;
use crate::log_view::{JobLog, LogFeed, LogSpan};
use crate::server::{JobPageData, job_artifacts, job_now, job_page, job_timeline};

#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let data = crate::page_data::page_data(id, job_page);
    loaded(data, |d| view! { <JobView data=d/> })
}

/// Long for a reason: most of it is the page's markup, which reads best in one piece.
#[component]
fn JobView(data: JobPageData) -> impl IntoView {
    let JobPageData {
        viewer,
        job: first,
        timeline: first_timeline,
        log_html,
        log_start,
        log_lines_before,
        log_length,
        log_state,
        artifacts: first_artifacts,
    } = data;
    let artifacts = RwSignal::new(first_artifacts);
    let id = first.id;
    let role = viewer.role;
    let job = RwSignal::new(first.clone());
    let timeline = RwSignal::new(first_timeline);
    let log = LogFeed::new();
    let connected = RwSignal::new(false);
    // Frames, action answers and re-reads race; the more advanced snapshot wins.
    let update_job = move |j: Job| {
        job.update(|current| {
            if j.status.progress() >= current.status.progress() {
                *current = j;
            }
        })
    };
    let refresh_timeline = move || {
        spawn_local(async move {
            if let Ok(t) = job_timeline(id).await {
                timeline.set(t);
            }
        })
    };
    follow_events(
        format!("job_id={id}"),
        connected,
        {
            let log = log.clone();
            move || {
                log.catch_up();
                spawn_local(async move {
                    if let Ok((fresh, fresh_timeline)) = job_now(id).await {
                        update_job(fresh);
                        timeline.set(fresh_timeline);
                    }
                })
            }
        },
        {
            let log = log.clone();
            move |frame| match frame {
                EventFrame::Log(piece) => log.piece(piece),
                EventFrame::Job { job: j } => {
                    let ended = j.status.is_terminal();
                    update_job(j);
                    // The reads the change calls for wait for a task of their own: each
                    // starts a fetch (2 ms apiece in a busy browser), and in this task they
                    // would hold back the new status from the screen.
                    let log = log.clone();
                    set_timeout(
                        move || {
                            // Artifacts are complete once the job is.
                            if ended {
                                spawn_local(async move {
                                    if let Ok(list) = job_artifacts(id).await {
                                        artifacts.set(list);
                                    }
                                });
                            }
                            refresh_timeline();
                            // Whatever a missed log frame held is read now.
                            log.catch_up();
                        },
                        std::time::Duration::ZERO,
                    );
                }
                EventFrame::Pipeline { .. } => {}
            }
        },
    );

    let error = RwSignal::new(None::<String>);
    let actions = job_actions(error, update_job);
    let status = Signal::derive(move || job.get().status);

    view! {
        <Header viewer=viewer/>
        <main class="page">
            <p class="crumbs"><a href=format!("/pipelines/{}", first.pipeline_id)>"pipeline #" {first.pipeline_id}</a> " / " {first.stage.clone()}</p>
            <div class="title-row">
                <h1>"Job " {first.name.clone()} " #" {id}</h1>
                <StatusBadge status=status/>
                <LiveDot connected=connected/>
                <JobButtons id=id status=status role=role actions=actions with_message=true/>
                <RetryJobButton id=id status=status retried=Signal::derive(move || job.get().retried) role=role/>
            </div>
            {move || job.get().retried.then(|| view! { <p class="muted">"This attempt was retried; the pipeline follows the newest one."</p> })}
            {first.retry_of.map(|old| view! { <p class="muted">"A retry of " <a href=format!("/jobs/{old}")>"job #" {old}</a></p> })}
            {move || error.get().map(|e| view! { <ErrorBox message=e/> })}
            <JobFacts job=job/>
            <h2>"Log" " " <a class="raw" rel="external" href=format!("/api/v1/jobs/{id}/log") data-testid="raw-log">"raw"</a></h2>
            <JobLog
                id=id
                html=log_html
                span=LogSpan { start: log_start, lines_before: log_lines_before, end: log_length }
                state=log_state
                feed=log
            />
            <h2>"Artifacts"</h2>
            <ul class="artifacts" data-testid="artifacts">
                {move || {
                    let list = artifacts.get();
                    if list.is_empty() {
                        Either::Left(view! { <li class="muted">"No artifacts."</li> })
                    } else {
                        Either::Right(list.into_iter().map(|a| view! {
                            <li>
                                {if a.expired {
                                    Either::Left(view! { <span class="muted">{a.path.clone()} " (expired, deleted)"</span> })
                                } else {
                                    Either::Right(view! { <a href=format!("/api/v1/jobs/{id}/artifacts/{}", usher_core::url::percent_encode(&a.path)) download="">{a.path.clone()}</a> })
                                }}
                                " " <span class="muted">{crate::components::byte_size(a.size)}</span>
                                {a.expires_at.clone().filter(|_| !a.expired).map(|t| view! { <span class="muted">" · deleted after " {short_time(&t)}</span> })}
                            </li>
                        }).collect_view())
                    }
                }}
            </ul>
            <h2>"Timeline"</h2>
            <table class="timeline">
                <thead><tr><th>"When"</th><th>"Change"</th><th>"By"</th><th>"Mode"</th><th>"Reason"</th><th>"Detail"</th></tr></thead>
                <tbody>
                    {move || timeline.get().into_iter().map(|e| view! {
                        <tr>
                            <td>{short_time(&e.at)}</td>
                            <td>{e.from.map(|f| format!("{f} → ")).unwrap_or_default()} {e.to.as_str()}</td>
                            <td>{e.actor}</td>
                            <td>{e.mode.map(|m| m.as_str()).unwrap_or("")}</td>
                            <td>{e.reason.unwrap_or_default()}</td>
                            <td>{e.detail.unwrap_or_default()}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </main>
    }
}

#[component]
fn JobFacts(job: RwSignal<Job>) -> impl IntoView {
    view! {
        <dl class="facts">
            {move || {
                let j = job.get();
                let mut rows: Vec<(&'static str, String)> = Vec::new();
                if let Some(w) = &j.waiting_for { rows.push(("Waiting for", w.clone())); }
                if j.when.is_cleanup() { rows.push(("Runs", format!("when: {} (a cleanup job)", j.when.as_str()))); }
                if let Some(t) = &j.play_at { rows.push(("Starts", format!("{} (when: delayed); Play starts it now", short_time(t)))); }
                if !j.tags.is_empty() { rows.push(("Tags", j.tags.join(", "))); }
                if let Some(t) = &j.started_at { rows.push(("Started", short_time(t))); }
                if let Some(t) = &j.finished_at { rows.push(("Finished", short_time(t))); }
                if let Some(c) = j.exit_code { rows.push(("Exit code", c.to_string())); }
                if let Some(r) = &j.failure_reason { rows.push(("Failure", r.to_string())); }
                if let Some(c) = j.coverage { rows.push(("Coverage", format!("{c}%"))); }
                if j.allow_failure { rows.push(("Allowed to fail", "yes: a failure does not fail the pipeline".to_string())); }
                if let Some(c) = &j.cancel {
                    rows.push(("Cancel", cancel_words(c)));
                }
                if !j.deferred.is_empty() && j.teardown.is_none() {
                    // Registered with usher-defer; they run when the job ends.
                    let commands: Vec<String> = j.deferred.iter().map(|c| format!("`{c}`")).collect();
                    rows.push(("Runs when it ends", commands.join(" · ")));
                }
                if let Some(t) = &j.teardown {
                    let d = &t.docker_removed;
                    let mut parts = vec![format!("{} process(es) stopped", t.processes_killed)];
                    if d.containers + d.networks + d.volumes > 0 {
                        parts.push(format!("{} container(s), {} network(s), {} volume(s) removed", d.containers, d.networks, d.volumes));
                    }
                    parts.push(format!("after_script {}", t.after_script));
                    for c in &t.deferred {
                        parts.push(format!("deferred `{}`: {}", c.command, c.exit_code.map_or("killed".to_string(), |e| format!("exit {e}"))));
                    }
                    parts.push(format!("{} left over", t.leftovers));
                    rows.push(("Teardown", parts.join(" · ")));
                }
                if let Some(a) = &j.after_script {
                    let outcome = if a.timed_out { "timed out".to_string() } else { a.exit_code.map(|c| format!("exit {c}")).unwrap_or_else(|| "killed".into()) };
                    rows.push(("after_script", format!("{outcome} in {} ms", a.duration_ms)));
                }
                rows.into_iter().map(|(k, v)| view! { <dt>{k}</dt><dd>{v}</dd> }).collect_view()
            }}
        </dl>
    }
}
