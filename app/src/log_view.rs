//! The job page's log. The server renders the log's lines into the page
//! ([`crate::terminal`]); in the browser, new output arriving as `log` frames on the
//! page's event socket is appended below them — only the new lines are added, and the
//! line still being written (a progress bar, say) is replaced — never re-rendering what
//! is shown. Output is parsed as it arrives but put on the page at most once per
//! animation frame, so a job writing thousands of lines a second costs one DOM change
//! per frame. A gap in the offsets (a missed frame, a reconnect) is filled by reading
//! the log from the page's own length.
//!
//! A long log is not all sent: the page comes with its last lines
//! ([`crate::server::PAGE_LOG_BYTES`]), numbered as in the whole log, and "Show earlier
//! output" puts the lines before them above, a read at a time; the raw log link has all.
//!
//! The log box follows its end while you are at the end and stops following when you
//! scroll up; "Follow" brings it back. Every line number is a link (`/jobs/7#L120`):
//! opening one scrolls to the line and marks it, clicking one marks it and puts it in
//! the address bar.

use leptos::prelude::*;
use usher_core::api::LogAppend;

use crate::terminal::LogState;

/// Where the log box's text begins and ends: bytes of the log, and the line before it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogSpan {
    pub start: u64,
    pub lines_before: u64,
    pub end: u64,
}

/// The log box, its "Show earlier output" and its "Follow" button.
#[component]
pub fn JobLog(id: i64, html: String, span: LogSpan, state: LogState, feed: LogFeed) -> impl IntoView {
    let pre = NodeRef::<leptos::html::Pre>::new();
    let following = RwSignal::new(true);
    let earlier = RwSignal::new(span.start);
    feed.attach(id, pre, following, earlier, span, state);
    let on_scroll = {
        let feed = feed.clone();
        move |_| feed.scrolled()
    };
    let on_click = {
        let feed = feed.clone();
        move |ev: leptos::ev::MouseEvent| feed.clicked(ev)
    };
    let show_earlier = {
        let feed = feed.clone();
        move |_| feed.show_earlier()
    };
    let follow = move |_| feed.follow();
    view! {
        <p class="log-earlier" hidden=move || earlier.get() == 0>
            <button class="btn" type="button" on:click=show_earlier data-testid="show-earlier">"↑ Show earlier output"</button>
            " "
            <span class="muted" data-testid="earlier-bytes">{move || format!("{} before this not shown", crate::components::byte_size(earlier.get()))}</span>
        </p>
        <div class="log-box">
            <pre class="log" data-testid="log" node_ref=pre inner_html=html on:scroll=on_scroll on:click=on_click></pre>
            <button class="btn follow" type="button" hidden=move || following.get() on:click=follow data-testid="follow">
                "↓ Follow"
            </button>
        </div>
    }
}

/// The handle the page gives its socket's `log` frames to. Does nothing on the server.
#[derive(Clone)]
pub struct LogFeed {
    #[cfg(feature = "hydrate")]
    inner: send_wrapper::SendWrapper<std::rc::Rc<browser::Feed>>,
}

impl Default for LogFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl LogFeed {
    pub fn new() -> LogFeed {
        LogFeed {
            #[cfg(feature = "hydrate")]
            inner: send_wrapper::SendWrapper::new(std::rc::Rc::default()),
        }
    }
}

#[cfg(not(feature = "hydrate"))]
impl LogFeed {
    fn attach(&self, _: i64, _: NodeRef<leptos::html::Pre>, _: RwSignal<bool>, _: RwSignal<u64>, _: LogSpan, _: LogState) {}
    fn show_earlier(&self) {}
    fn scrolled(&self) {}
    fn clicked(&self, _: leptos::ev::MouseEvent) {}
    fn follow(&self) {}
    /// A `log` frame of this job.
    pub fn piece(&self, _: LogAppend) {}
    /// Reads whatever the page has not seen yet.
    pub fn catch_up(&self) {}
}

#[cfg(feature = "hydrate")]
impl LogFeed {
    fn attach(
        &self,
        id: i64,
        pre: NodeRef<leptos::html::Pre>,
        following: RwSignal<bool>,
        earlier: RwSignal<u64>,
        span: LogSpan,
        state: LogState,
    ) {
        self.inner.attach(id, pre, following, earlier, span, state);
        let feed = self.clone();
        // After the first render (or hydration): fill a box built without the server's
        // lines, and go to the marked line or the end.
        Effect::new(move |_| feed.inner.mounted());
    }
    fn show_earlier(&self) {
        browser::Feed::show_earlier(&self.inner);
    }
    fn scrolled(&self) {
        self.inner.scrolled();
    }
    fn clicked(&self, ev: leptos::ev::MouseEvent) {
        self.inner.clicked(ev);
    }
    fn follow(&self) {
        self.inner.follow();
    }
    /// A `log` frame of this job.
    pub fn piece(&self, piece: LogAppend) {
        browser::Feed::piece(&self.inner, piece);
    }
    /// Reads whatever the page has not seen yet.
    pub fn catch_up(&self) {
        browser::Feed::catch_up(&self.inner);
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use leptos::prelude::*;
    use leptos::task::spawn_local;
    use usher_core::api::LogAppend;
    use wasm_bindgen::JsCast;

    use super::LogSpan;
    use crate::terminal::{CHUNK_LINES, CHUNK_OPEN, LogRenderer, LogState};

    /// How close to the bottom (in pixels) still counts as "at the end".
    const AT_END_SLACK: i32 = 24;

    #[derive(Default)]
    pub struct Feed {
        id: Cell<i64>,
        pre: Cell<Option<NodeRef<leptos::html::Pre>>>,
        following: Cell<Option<RwSignal<bool>>>,
        /// Where the box's text begins (0: the log's start), and the lines before it.
        earlier: Cell<Option<RwSignal<u64>>>,
        lines_before: Cell<u64>,
        loading_earlier: Cell<bool>,
        renderer: RefCell<LogRenderer>,
        /// Bytes of the log the box shows.
        length: Cell<u64>,
        fetching: Cell<bool>,
        fetch_again: Cell<bool>,
        /// Lines parsed but not yet on the page, and the line being written.
        unshown: RefCell<Vec<String>>,
        partial: RefCell<Option<String>>,
        frame_requested: Cell<bool>,
    }

    impl Feed {
        pub fn attach(
            &self,
            id: i64,
            pre: NodeRef<leptos::html::Pre>,
            following: RwSignal<bool>,
            earlier: RwSignal<u64>,
            span: LogSpan,
            state: LogState,
        ) {
            self.id.set(id);
            self.pre.set(Some(pre));
            self.following.set(Some(following));
            self.earlier.set(Some(earlier));
            self.lines_before.set(span.lines_before);
            self.length.set(span.end);
            *self.renderer.borrow_mut() = LogRenderer::resume(state);
        }

        fn start(&self) -> u64 {
            self.earlier.get().map_or(0, |e| e.get_untracked())
        }

        /// Reads the lines before the box's first and puts them above it, keeping what
        /// is in view where it is.
        pub fn show_earlier(this: &Rc<Self>) {
            Feed::load_earlier(this, None);
        }

        /// [`Feed::show_earlier`], repeated until line `target` is on the page (then it
        /// is marked and brought into view), when one is given.
        fn load_earlier(this: &Rc<Self>, target: Option<u64>) {
            let before = this.start();
            if before == 0 || this.loading_earlier.replace(true) {
                return;
            }
            let this = send_wrapper::SendWrapper::new(this.clone());
            spawn_local(async move {
                if let Ok((start, lines_before, text)) = crate::server::job_log_before(this.id.get(), before).await {
                    if let Some(pre) = this.element() {
                        let (chunks, _) = crate::terminal::render_from(lines_before, &text);
                        let height = pre.scroll_height();
                        let _ = pre.insert_adjacent_html("afterbegin", &chunks);
                        pre.set_scroll_top(pre.scroll_top() + pre.scroll_height() - height);
                        this.lines_before.set(lines_before);
                        if let Some(earlier) = this.earlier.get() {
                            earlier.set(start);
                        }
                    }
                    this.loading_earlier.set(false);
                    if let Some(line) = target {
                        if !this.mark_line(line) && start > 0 {
                            Feed::load_earlier(&this, target);
                        }
                    }
                    return;
                }
                this.loading_earlier.set(false);
            });
        }

        fn element(&self) -> Option<web_sys::HtmlElement> {
            self.pre.get()?.get_untracked().map(|p| p.unchecked_into())
        }

        fn following(&self) -> bool {
            self.following.get().is_some_and(|f| f.get_untracked())
        }

        fn set_following(&self, on: bool) {
            if let Some(f) = self.following.get() {
                if f.get_untracked() != on {
                    f.set(on);
                }
            }
        }

        pub fn mounted(self: &Rc<Self>) {
            let Some(pre) = self.element() else { return };
            if pre.child_element_count() == 0 && self.length.get() > self.start() {
                // Built in the browser (not hydrated): the server's lines are not here.
                *self.renderer.borrow_mut() = LogRenderer::resume(LogState::at_line(self.lines_before.get()));
                self.length.set(self.start());
                Feed::catch_up(self);
            }
            let hash = window().location().hash().unwrap_or_default();
            if let Some(line) = hash.strip_prefix("#L").and_then(|n| n.parse::<u64>().ok()) {
                if self.mark_line(line) {
                    return;
                }
                if line >= 1 && line <= self.lines_before.get() {
                    // A line before the shown ones: read back to it.
                    self.set_following(false);
                    Feed::load_earlier(self, Some(line));
                    return;
                }
            }
            self.to_end(&pre);
        }

        /// Marks line `line` and brings it into view, if it is on the page.
        fn mark_line(&self, line: u64) -> bool {
            let Some(el) = document().get_element_by_id(&format!("L{line}")) else {
                return false;
            };
            let _ = el.class_list().add_1("selected");
            el.scroll_into_view_with_bool(false);
            self.set_following(false);
            true
        }

        fn to_end(&self, pre: &web_sys::HtmlElement) {
            pre.set_scroll_top(pre.scroll_height());
        }

        pub fn scrolled(&self) {
            let Some(pre) = self.element() else { return };
            let at_end = pre.scroll_top() + pre.client_height() >= pre.scroll_height() - AT_END_SLACK;
            self.set_following(at_end);
        }

        pub fn follow(&self) {
            self.set_following(true);
            if let Some(pre) = self.element() {
                self.to_end(&pre);
            }
        }

        /// A line number: mark its line and put it in the address bar, without a
        /// navigation (the router would otherwise take the click).
        pub fn clicked(&self, ev: leptos::ev::MouseEvent) {
            let Some(link) = ev
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .and_then(|t| t.closest("a.ln").ok().flatten())
            else {
                return;
            };
            if ev.button() != 0 || ev.ctrl_key() || ev.meta_key() || ev.shift_key() || ev.alt_key() {
                return;
            }
            ev.prevent_default();
            let Some(line) = link.parent_element() else { return };
            if let Ok(old) = document().query_selector_all(".log .line.selected") {
                for i in 0..old.length() {
                    if let Some(el) = old.item(i).and_then(|n| n.dyn_into::<web_sys::Element>().ok()) {
                        let _ = el.class_list().remove_1("selected");
                    }
                }
            }
            let _ = line.class_list().add_1("selected");
            self.set_following(false);
            if let Ok(history) = window().history() {
                let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&format!("#{}", line.id())));
            }
        }

        pub fn piece(this: &Rc<Self>, piece: LogAppend) {
            if piece.job_id != this.id.get() || piece.length <= this.length.get() {
                return;
            }
            match piece.text {
                Some(text) if piece.offset == this.length.get() && !this.fetching.get() => this.append(&text),
                _ => Feed::catch_up(this),
            }
        }

        fn append(self: &Rc<Self>, text: &str) {
            if text.is_empty() {
                return;
            }
            let html = self.renderer.borrow_mut().feed(text);
            self.length.set(self.length.get() + text.len() as u64);
            self.unshown.borrow_mut().extend(html.lines);
            *self.partial.borrow_mut() = Some(html.partial);
            if !self.frame_requested.replace(true) {
                let this = send_wrapper::SendWrapper::new(self.clone());
                request_animation_frame(move || this.show());
            }
        }

        /// Puts what arrived since the last frame on the page: the new lines into the
        /// last chunk (new chunks as they fill), then the line being written.
        fn show(&self) {
            self.frame_requested.set(false);
            let Some(pre) = self.element() else { return };
            let lines = std::mem::take(&mut *self.unshown.borrow_mut());
            let partial = self.partial.borrow_mut().take().unwrap_or_default();
            let mut chunk = pre.last_element_child();
            if let Some(last) = chunk.as_ref().and_then(|c| c.last_element_child()) {
                if last.class_list().contains("partial") {
                    last.remove();
                }
            }
            let mut room = chunk
                .as_ref()
                .map_or(0, |c| CHUNK_LINES.saturating_sub(c.child_element_count() as usize));
            let mut pending = lines.iter().chain((!partial.is_empty()).then_some(&partial)).peekable();
            while pending.peek().is_some() {
                if room == 0 {
                    let _ = pre.insert_adjacent_html("beforeend", &format!("{CHUNK_OPEN}</div>"));
                    chunk = pre.last_element_child();
                    room = CHUNK_LINES;
                }
                let mut taken = 0;
                let batch: String = pending.by_ref().take(room).inspect(|_| taken += 1).map(String::as_str).collect();
                room -= taken;
                if let Some(c) = &chunk {
                    let _ = c.insert_adjacent_html("beforeend", &batch);
                }
            }
            if self.following() {
                self.to_end(&pre);
            }
        }

        /// Reads the log from the box's length on, a bounded read at a time until the
        /// end; one reader at a time, going again when asked meanwhile.
        pub fn catch_up(this: &Rc<Self>) {
            if this.fetching.replace(true) {
                this.fetch_again.set(true);
                return;
            }
            let this = send_wrapper::SendWrapper::new(this.clone());
            spawn_local(async move {
                loop {
                    this.fetch_again.set(false);
                    let offset = this.length.get();
                    if let Ok((text, more)) = crate::server::job_log_since(this.id.get(), offset).await {
                        if this.length.get() == offset {
                            this.append(&text);
                            if more && !text.is_empty() {
                                this.fetch_again.set(true);
                            }
                        }
                    }
                    if !this.fetch_again.get() {
                        break;
                    }
                }
                this.fetching.set(false);
            });
        }
    }
}
