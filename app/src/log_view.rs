//! The job page's log. The server renders the log's lines into the page
//! ([`crate::terminal`]); in the browser, new output arriving as `log` frames on the
//! page's event socket is appended below them — only the new lines are added, and the
//! line still being written (a progress bar, say) is replaced — never re-rendering what
//! is shown. Output is parsed as it arrives but put on the page at most once per
//! animation frame, so a job writing thousands of lines a second costs one DOM change
//! per frame. A gap in the offsets (a missed frame, a reconnect) is filled by reading
//! the log from the page's own length.
//!
//! The log box follows its end while you are at the end and stops following when you
//! scroll up; "Follow" brings it back. Every line number is a link (`/jobs/7#L120`):
//! opening one scrolls to the line and marks it, clicking one marks it and puts it in
//! the address bar.

use leptos::prelude::*;
use usher_core::api::LogAppend;

use crate::terminal::LogState;

/// The log box and its "Follow" button.
#[component]
pub fn JobLog(id: i64, html: String, length: u64, state: LogState, feed: LogFeed) -> impl IntoView {
    let pre = NodeRef::<leptos::html::Pre>::new();
    let following = RwSignal::new(true);
    feed.attach(id, pre, following, length, state);
    let on_scroll = {
        let feed = feed.clone();
        move |_| feed.scrolled()
    };
    let on_click = {
        let feed = feed.clone();
        move |ev: leptos::ev::MouseEvent| feed.clicked(ev)
    };
    let follow = move |_| feed.follow();
    view! {
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
    fn attach(&self, _: i64, _: NodeRef<leptos::html::Pre>, _: RwSignal<bool>, _: u64, _: LogState) {}
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
    fn attach(&self, id: i64, pre: NodeRef<leptos::html::Pre>, following: RwSignal<bool>, length: u64, state: LogState) {
        self.inner.attach(id, pre, following, length, state);
        let feed = self.clone();
        // After the first render (or hydration): fill a box built without the server's
        // lines, and go to the marked line or the end.
        Effect::new(move |_| feed.inner.mounted());
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

    use crate::terminal::{CHUNK_LINES, CHUNK_OPEN, LogRenderer, LogState};

    /// How close to the bottom (in pixels) still counts as "at the end".
    const AT_END_SLACK: i32 = 24;

    #[derive(Default)]
    pub struct Feed {
        id: Cell<i64>,
        pre: Cell<Option<NodeRef<leptos::html::Pre>>>,
        following: Cell<Option<RwSignal<bool>>>,
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
        pub fn attach(&self, id: i64, pre: NodeRef<leptos::html::Pre>, following: RwSignal<bool>, length: u64, state: LogState) {
            self.id.set(id);
            self.pre.set(Some(pre));
            self.following.set(Some(following));
            self.length.set(length);
            *self.renderer.borrow_mut() = LogRenderer::resume(state);
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
            if pre.child_element_count() == 0 && self.length.get() > 0 {
                // Built in the browser (not hydrated): the server's lines are not here.
                *self.renderer.borrow_mut() = LogRenderer::default();
                self.length.set(0);
                Feed::catch_up(self);
            }
            let hash = window().location().hash().unwrap_or_default();
            if let Some(line) = hash.strip_prefix("#L").and_then(|n| n.parse::<u64>().ok()) {
                if let Some(el) = document().get_element_by_id(&format!("L{line}")) {
                    let _ = el.class_list().add_1("selected");
                    el.scroll_into_view_with_bool(false);
                    self.set_following(false);
                    return;
                }
            }
            self.to_end(&pre);
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

        /// Reads the log from the box's length on; one read at a time, repeated when
        /// asked again meanwhile.
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
                    if let Ok((text, _)) = crate::server::job_log_since(this.id.get(), offset).await {
                        if this.length.get() == offset {
                            this.append(&text);
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
