//! `/pipelines/{id}`: the pipeline's stages and jobs with status badges, Cancel and
//! Abort for the pipeline and for each job, following the event websocket so a click
//! shows `canceling` and then `canceled` without a reload.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_params_map;
use usher_core::api::{EventFrame, Job};
use usher_core::pipeline::{counted, pipeline_status};
use usher_core::roles::Role;
use usher_core::status::Status;

use crate::components::{
    ErrorBox, Header, JobActions, JobButtons, LiveDot, PipelineButtons, RetryJobButton, StatusBadge, cancel_words, job_actions, loaded,
    pipeline_actions, short_time,
};
use crate::live::follow_events;
use crate::server::{PipelinePageData, RetryPipeline, pipeline_page};

#[component]
pub fn PipelinePage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let data = crate::page_data::page_data(id, pipeline_page);
    loaded(data, |d| view! { <PipelineView data=d/> })
}

/// Long for a reason: most of it is the page's markup, which reads best in one piece.
#[component]
fn PipelineView(data: PipelinePageData) -> impl IntoView {
    let PipelinePageData {
        viewer,
        project_name,
        pipeline,
        needs,
    } = data;
    let pipeline_id = pipeline.id;
    let project_id = pipeline.project_id;
    let role = viewer.role;
    let jobs = RwSignal::new(pipeline.jobs.clone().unwrap_or_default());
    // Whether the pipeline was cancelled (then it is `canceling` while its cleanup jobs
    // run), by whom and why.
    let cancel_info = RwSignal::new(pipeline.cancel.clone());
    let cancel = Signal::derive(move || cancel_info.with(|c| c.as_ref().map(|c| c.mode)));
    // The badge is derived from the jobs and the cancel by the server's own rule, so it
    // can never disagree with them, whatever order frames and answers arrive in.
    // Only the newest attempt of each job counts, as on the server.
    let status = Signal::derive(move || {
        jobs.with(|list| {
            let newest = list.iter().filter(|j| !j.retried);
            pipeline_status(newest.map(|j| (counted(j.status, j.allow_failure), j.when)), cancel.get())
        })
    });
    let connected = RwSignal::new(false);
    // Frames, action answers and re-reads race; the more advanced snapshot of a job wins.
    let upsert = move |job: Job| {
        jobs.update(|list| match list.iter_mut().find(|j| j.id == job.id) {
            Some(j) => {
                if job.status.progress() >= j.status.progress() || job.retried != j.retried {
                    *j = job;
                }
            }
            // A new attempt (a retry): it joins its stage; the attempt it replaces is retried.
            None => {
                if let Some(old) = job.retry_of.and_then(|old| list.iter_mut().find(|j| j.id == old)) {
                    old.retried = true;
                }
                list.push(job);
            }
        })
    };
    follow_events(
        format!("pipeline_id={pipeline_id}"),
        connected,
        move || {
            spawn_local(async move {
                if let Ok(fresh) = pipeline_page(pipeline_id).await {
                    cancel_info.set(fresh.pipeline.cancel.clone());
                    fresh.pipeline.jobs.unwrap_or_default().into_iter().for_each(upsert);
                }
            })
        },
        move |frame| match frame {
            EventFrame::Job { job } => upsert(job),
            EventFrame::Pipeline { pipeline } => cancel_info.set(pipeline.cancel),
            EventFrame::Log(_) => {}
        },
    );

    let error = RwSignal::new(None::<String>);
    let job_buttons = job_actions(error, upsert);
    let (cancel_pipeline, abort_pipeline) = pipeline_actions(error, move |p| {
        cancel_info.set(p.cancel.clone());
        p.jobs.unwrap_or_default().into_iter().for_each(upsert)
    });
    let retry_pipeline = ServerAction::<RetryPipeline>::new();
    Effect::new(move |_| match retry_pipeline.value().get() {
        Some(Ok(p)) => {
            // Retried, it is no longer a cancelled pipeline.
            cancel_info.set(p.cancel.clone());
            p.jobs.unwrap_or_default().into_iter().for_each(upsert)
        }
        Some(Err(e)) => error.set(Some(e.to_string())),
        None => {}
    });
    let may_retry_pipeline = move || {
        role.may(usher_core::roles::Action::Retry)
            && status.get().is_terminal()
            && jobs.with(|l| {
                l.iter()
                    .any(|j| !j.retried && matches!(j.status, Status::Failed | Status::Canceled))
            })
    };

    // A job's `needs:` (None: it waits for the stages before its own).
    let needs_of = move |id: i64| {
        let name = jobs.with_untracked(|l| l.iter().find(|j| j.id == id).map(|j| j.name.clone()));
        name.and_then(|name| needs.iter().find(|(n, _)| *n == name).map(|(_, list)| list.clone()))
    };

    // Stages in pipeline order, each with the ids of its jobs.
    let stages = move || {
        jobs.with(|list| {
            let mut stages: Vec<(String, Vec<i64>)> = Vec::new();
            for j in list {
                match stages.iter_mut().find(|(s, _)| *s == j.stage) {
                    Some((_, ids)) => ids.push(j.id),
                    None => stages.push((j.stage.clone(), vec![j.id])),
                }
            }
            stages
        })
    };

    view! {
        <Header viewer=viewer/>
        <main class="page">
            <p class="crumbs"><a href=format!("/projects/{project_id}")>{project_name}</a> " / pipeline #" {pipeline_id}</p>
            <div class="title-row">
                <h1>"Pipeline #" {pipeline_id} " on " <code>{pipeline.git_ref.clone()}</code></h1>
                <StatusBadge status=status/>
                <LiveDot connected=connected/>
            </div>
            {pipeline.sha.clone().map(|sha| view! {
                <p class="commit">"Commit " <code title=sha.clone()>{usher_core::repository::short_sha(&sha).to_string()}</code> " " {pipeline.commit_title.clone().unwrap_or_default()}</p>
            })}
            {move || cancel_info.get().map(|c| view! {
                <p class="cancel-note muted" data-testid="pipeline-cancel">{cancel_words(&c)}</p>
            })}
            <PipelineButtons id=pipeline_id status=status role=role cancel=cancel_pipeline abort=abort_pipeline/>
            <Show when=may_retry_pipeline>
                <ActionForm action=retry_pipeline attr:class="inline">
                    <input type="hidden" name="pipeline_id" value=pipeline_id/>
                    <button type="submit" class="btn" title="New attempts of the failed and canceled jobs">"Retry"</button>
                </ActionForm>
            </Show>
            {move || error.get().map(|e| view! { <ErrorBox message=e/> })}
            <div class="stages">
                <For
                    each=stages
                    key=|(stage, ids)| (stage.clone(), ids.len())
                    children=move |(stage, ids)| view! {
                        <section class="stage">
                            <h2>{stage}</h2>
                            <ul class="jobs">
                                {ids.into_iter().map(|id| view! {
                                    <JobRow id=id jobs=jobs needs=needs_of(id) role=role actions=job_buttons/>
                                }).collect_view()}
                            </ul>
                        </section>
                    }
                />
            </div>
        </main>
    }
}

#[component]
fn JobRow(id: i64, jobs: RwSignal<Vec<Job>>, needs: Option<Vec<String>>, role: Role, actions: JobActions) -> impl IntoView {
    let job = move || jobs.with(|l| l.iter().find(|j| j.id == id).cloned());
    let status = Signal::derive(move || job().map(|j| j.status).unwrap_or(Status::Created));
    let name = jobs
        .with_untracked(|l| l.iter().find(|j| j.id == id).map(|j| j.name.clone()))
        .unwrap_or_default();
    let label = name.clone();
    // A cleanup job says when it runs.
    let when = jobs
        .with_untracked(|l| l.iter().find(|j| j.id == id).map(|j| j.when))
        .filter(|w| w.is_cleanup())
        .map(|w| view! { <span class="when muted" data-testid="job-when" title="a cleanup job">{format!("when: {}", w.as_str())}</span> });
    view! {
        <li class="job" data-job-id=id data-job-name=name.clone()>
            <a class="job-name" href=format!("/jobs/{id}")>{label}</a>
            {when}
            <StatusBadge status=status/>
            {move || job().is_some_and(|j| j.allow_failure && j.status == Status::Failed).then(|| view! {
                <span class="muted allowed" data-testid="job-allowed" title="allow_failure: the pipeline does not fail for it">"allowed to fail"</span>
            })}
            {move || job().and_then(|j| finished_after(&j)).map(|d| view! { <span class="muted took" data-testid="job-took">{d}</span> })}
            {move || job().and_then(|j| j.play_at).map(|t| view! {
                <span class="muted starts" data-testid="job-starts" title="when: delayed: Usher plays it then; Play starts it now">{format!("starts {}", short_time(&t))}</span>
            })}
            {move || job().is_some_and(|j| j.retried).then(|| view! { <span class="muted">" (retried)"</span> })}
            <JobButtons id=id status=status role=role actions=actions/>
            <RetryJobButton id=id status=status retried=Signal::derive(move || job().is_some_and(|j| j.retried)) role=role/>
            {needs.map(|needs| view! { <NeedsLine needs=needs jobs=jobs/> })}
        </li>
    }
}

/// The jobs a job waits for (its `needs:`), each a link to that job's newest attempt;
/// `needs: []` starts at once, whatever the stages.
#[component]
fn NeedsLine(needs: Vec<String>, jobs: RwSignal<Vec<Job>>) -> impl IntoView {
    if needs.is_empty() {
        return view! { <p class="needs muted" data-testid="job-needs">"needs nothing: starts at once"</p> }.into_any();
    }
    let link = move |name: String| {
        let label = name.clone();
        let id = move || jobs.with(|l| l.iter().rev().find(|j| j.name == name && !j.retried).map(|j| j.id));
        view! {
            {move || match id() {
                Some(id) => view! { <a href=format!("/jobs/{id}")>{label.clone()}</a> }.into_any(),
                None => view! { <span>{label.clone()}</span> }.into_any(),
            }}
        }
    };
    let last = needs.len() - 1;
    view! {
        <p class="needs muted" data-testid="job-needs">
            "needs "
            {needs.into_iter().enumerate().map(|(i, name)| view! { {link(name)} {(i < last).then_some(", ")} }).collect_view()}
        </p>
    }
    .into_any()
}

/// How long a finished job ran ("2m 14s"); None while it has not finished.
fn finished_after(job: &Job) -> Option<String> {
    let finished = job.finished_at.as_deref()?;
    crate::time::took(finished, job.started_at.as_deref(), Some(finished))
}
