//! Small pieces shared by the pages: the header, status badges, the Cancel/Abort
//! buttons (shown by the same rules the engine enforces), and time formatting.

use leptos::prelude::*;
use usher_core::roles::{Action, Role};
use usher_core::status::Status;

use usher_core::api::{Job, Pipeline};

use crate::server::{AbortJob, AbortPipeline, CancelJob, CancelPipeline, PlayJob, RetryJob, Viewer};

/// Asked before an Abort is sent (works before hydration too: it is plain HTML).
pub const ABORT_CONFIRM: &str =
    "return confirm('Abort now? Every process is killed at once and after_script does not run. Use Cancel to let the job clean up.')";

#[component]
pub fn Header(viewer: Viewer) -> impl IntoView {
    // Once the page is live in the browser (hydrated or built there), `<body>` says so:
    // what a test waits for before it clicks a control that needs the page's code.
    Effect::new(|_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "");
        }
    });
    view! {
        <header class="top">
            <a class="brand" href="/">"Usher"</a>
            <nav>
                <a href="/">"Pipelines"</a>
                <a href="/projects">"Projects"</a>
                <a href="/admin/jobs?status=canceling">"Cleanups"</a>
                <a href="/admin/runners">"Runners"</a>
                {viewer.role.may(Action::Administer).then(|| view! { <a href="/admin/users">"Users"</a> })}
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

pub fn may_play(role: Role, status: Status) -> bool {
    role.may(Action::Play) && status.can_play()
}

pub fn may_retry(role: Role, status: Status) -> bool {
    role.may(Action::Retry) && status.can_retry()
}

/// Retry for one finished job (not shown once it was retried): a plain form post, so it
/// works before hydration; the answer leads to the new attempt's page.
#[component]
pub fn RetryJobButton(id: i64, status: Signal<Status>, retried: Signal<bool>, role: Role) -> impl IntoView {
    let retry = ServerAction::<RetryJob>::new();
    view! {
        <Show when=move || may_retry(role, status.get()) && !retried.get()>
            <ActionForm action=retry attr:class="inline">
                <input type="hidden" name="job_id" value=id/>
                <button type="submit" class="btn" title="Run this job again as a new attempt" disabled=move || retry.pending().get()>"Retry"</button>
            </ActionForm>
        </Show>
        {move || retry.value().get().and_then(Result::err).map(|e| view! { <span class="error" role="alert">{e.to_string()}</span> })}
    }
}

/// A cancel as people read it: `graceful by alice at 2026-12-07 04:01:02 (user): “the
/// deploy window closed”`.
pub fn cancel_words(c: &usher_core::api::CancelInfo) -> String {
    let said = c.message.as_ref().map(|m| format!(": “{m}”")).unwrap_or_default();
    format!(
        "{} by {} at {} ({}){said}",
        c.mode.as_str(),
        c.requested_by,
        short_time(&c.requested_at),
        c.reason.as_str()
    )
}

/// A size in bytes as people read it: `900 B`, `16.0 KiB`, `4.2 MiB`.
pub fn byte_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
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
pub fn loaded<T, E, V>(
    data: crate::page_data::PageData<Result<T, E>>,
    show: impl Fn(T) -> V + Clone + Send + Sync + 'static,
) -> impl IntoView
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

/// A page's Cancel and Abort actions for jobs: the job each one answers with goes to
/// `on_job` (answers may be applied again later, so `on_job` must not mind a repeat), a
/// refusal into `error`.
pub fn job_actions(error: RwSignal<Option<String>>, on_job: impl Fn(Job) + Send + Sync + 'static) -> JobActions {
    let actions = JobActions {
        cancel: ServerAction::new(),
        abort: ServerAction::new(),
        play: ServerAction::new(),
    };
    Effect::new(move |_| {
        let answers = [
            actions.cancel.value().get(),
            actions.abort.value().get(),
            actions.play.value().get(),
        ];
        for value in answers.into_iter().flatten() {
            match value {
                Ok(job) => on_job(job),
                Err(e) => error.set(Some(e.to_string())),
            }
        }
    });
    actions
}

/// What a page's job buttons send; each answer is the job as it is afterwards.
#[derive(Clone, Copy)]
pub struct JobActions {
    pub cancel: ServerAction<CancelJob>,
    pub abort: ServerAction<AbortJob>,
    pub play: ServerAction<PlayJob>,
}

/// Play (for a manual job), Cancel (primary) and Abort (secondary, confirmed) for one job;
/// `with_message`: a field for the words kept with a cancel or abort.
#[component]
pub fn JobButtons(id: i64, status: Signal<Status>, role: Role, actions: JobActions, #[prop(optional)] with_message: bool) -> impl IntoView {
    let JobActions { cancel, abort, play } = actions;
    view! {
        <span class="buttons">
            <Show when=move || may_play(role, status.get())>
                <ActionForm action=play>
                    <input type="hidden" name="job_id" value=id/>
                    <button type="submit" class="btn primary" title="Start this manual job">"Play"</button>
                </ActionForm>
            </Show>
            <Show when=move || may_cancel(role, status.get())>
                <ActionForm action=cancel>
                    <input type="hidden" name="job_id" value=id/>
                    {with_message.then(|| view! { <MessageField/> })}
                    <button type="submit" class="btn primary" title="Stop the script and let after_script clean up">"Cancel"</button>
                </ActionForm>
            </Show>
            <Show when=move || may_abort(role, status.get())>
                <ActionForm action=abort>
                    <input type="hidden" name="job_id" value=id/>
                    {with_message.then(|| view! { <MessageField/> })}
                    <button type="submit" class="btn secondary" onclick=ABORT_CONFIRM title="Kill every process now; no after_script">"Abort"</button>
                </ActionForm>
            </Show>
        </span>
    }
}

/// The optional words sent with a Cancel or Abort (kept with it, shown to everyone).
#[component]
fn MessageField() -> impl IntoView {
    view! {
        <input type="text" name="message" class="cancel-message" maxlength="500" placeholder="why (optional)" aria-label="Message"/>
    }
}

/// The pipeline page's Cancel and Abort actions: the pipeline each answers with goes to
/// `on_pipeline`, a refusal into `error`.
pub fn pipeline_actions(
    error: RwSignal<Option<String>>,
    on_pipeline: impl Fn(Pipeline) + Send + Sync + 'static,
) -> (ServerAction<CancelPipeline>, ServerAction<AbortPipeline>) {
    let cancel = ServerAction::<CancelPipeline>::new();
    let abort = ServerAction::<AbortPipeline>::new();
    Effect::new(move |_| {
        for value in [cancel.value().get(), abort.value().get()].into_iter().flatten() {
            match value {
                Ok(p) => on_pipeline(p),
                Err(e) => error.set(Some(e.to_string())),
            }
        }
    });
    (cancel, abort)
}

/// Cancel (primary) and Abort (secondary, confirmed) for a whole pipeline.
#[component]
pub fn PipelineButtons(
    id: i64,
    status: Signal<Status>,
    role: Role,
    cancel: ServerAction<CancelPipeline>,
    abort: ServerAction<AbortPipeline>,
) -> impl IntoView {
    view! {
        <div class="buttons pipeline-buttons">
            <Show when=move || may_cancel(role, status.get())>
                <ActionForm action=cancel>
                    <input type="hidden" name="pipeline_id" value=id/>
                    <MessageField/>
                    <button type="submit" class="btn primary" title="Cancel every unfinished job; running jobs clean up first">"Cancel"</button>
                </ActionForm>
            </Show>
            <Show when=move || may_abort(role, status.get())>
                <ActionForm action=abort>
                    <input type="hidden" name="pipeline_id" value=id/>
                    <MessageField/>
                    <button type="submit" class="btn secondary" onclick=ABORT_CONFIRM title="Kill every unfinished job now">"Abort"</button>
                </ActionForm>
            </Show>
        </div>
    }
}
