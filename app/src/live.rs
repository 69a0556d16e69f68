//! Live updates in the browser: a page subscribes to the event websocket for as long as
//! it is shown. On the server (SSR) this does nothing; the first render there is
//! already current, and the browser re-reads state every time the socket opens, so
//! nothing that changed in between is missed.
//!
//! The socket comes back by itself: when it closes (a server restart, a network blip)
//! the page waits 0.5 s, 1 s, 2 s … up to 15 s, each with up to 50% random jitter so a
//! restarted server is not hit by every page at once, and opens it again; the live dot
//! says "not live" meanwhile, and the re-read on open brings the page back to the truth.

use leptos::prelude::*;
use usher_core::api::EventFrame;

/// One frame of the event socket, or None for a frame this page does not know.
///
/// Read through a flat struct rather than `EventFrame`'s own (internally tagged)
/// decoder: serde decodes a tagged enum by buffering the frame as generic `Content`
/// first, which put a second decoder of every job and pipeline field, and the buffering
/// itself, into the WASM (about 40 KB before wasm-opt). The flat struct reuses the
/// decoders the pages' data already needs.
pub fn decode_frame(json: &[u8]) -> Option<EventFrame> {
    #[derive(serde::Deserialize)]
    struct Flat {
        #[serde(rename = "type")]
        kind: String,
        job: Option<usher_core::api::Job>,
        pipeline: Option<usher_core::api::Pipeline>,
        job_id: Option<i64>,
        offset: Option<u64>,
        length: Option<u64>,
        text: Option<String>,
    }
    let flat: Flat = serde_json::from_slice(json).ok()?;
    match flat.kind.as_str() {
        "job" => flat.job.map(|job| EventFrame::Job { job }),
        "pipeline" => flat.pipeline.map(|pipeline| EventFrame::Pipeline { pipeline }),
        "log" => Some(EventFrame::Log(usher_core::api::LogAppend {
            job_id: flat.job_id?,
            offset: flat.offset?,
            length: flat.length?,
            text: flat.text,
        })),
        _ => None,
    }
}

/// The wait before reconnect attempt `n` (0-based), in milliseconds, before jitter.
pub fn backoff_ms(attempt: u32) -> u64 {
    (500u64 << attempt.min(5)).min(15_000)
}

/// Re-reads of a live list (a page that reloads it when frames say it changed). Reloads
/// may overlap and come back out of order, and a frame may arrive while one is on its
/// way (its answer then predates the frame): only the newest reload applies its answer,
/// and it reads again when frames came meanwhile. Otherwise a job that ends within
/// milliseconds could stay listed as `running` or `canceling` for good.
#[derive(Clone, Copy)]
pub struct Reloader {
    started: StoredValue<u64>,
    frames: StoredValue<u64>,
}

impl Reloader {
    pub fn new() -> Reloader {
        Reloader {
            started: StoredValue::new(0),
            frames: StoredValue::new(0),
        }
    }

    /// A frame that changes the list arrived.
    pub fn frame_seen(&self) {
        self.frames.update_value(|n| *n += 1);
    }

    /// Reads with `fetch` (None: the read failed) and gives the answer to `apply`, as
    /// described on [`Reloader`].
    pub fn reload<T, Fut>(&self, fetch: impl Fn() -> Fut + 'static, apply: impl Fn(T) + 'static)
    where
        Fut: std::future::Future<Output = Option<T>> + 'static,
        T: 'static,
    {
        let this = *self;
        this.started.update_value(|n| *n += 1);
        let mine = this.started.get_value();
        leptos::task::spawn_local(async move {
            loop {
                let seen = this.frames.get_value();
                let Some(fresh) = fetch().await else {
                    return;
                };
                if this.started.get_value() != mine {
                    return;
                }
                apply(fresh);
                if this.frames.get_value() == seen {
                    return;
                }
            }
        })
    }
}

impl Default for Reloader {
    fn default() -> Self {
        Reloader::new()
    }
}

/// Follows `/api/v1/events?{query}`. `connected` tells whether the socket is open;
/// `on_open` runs on each (re)connect; `on_frame` for every frame.
pub fn follow_events(query: String, connected: RwSignal<bool>, on_open: impl Fn() + 'static, on_frame: impl Fn(EventFrame) + 'static) {
    #[cfg(feature = "hydrate")]
    {
        use std::rc::Rc;
        let live = Rc::new(browser::Live {
            query,
            connected,
            on_open: Box::new(on_open),
            on_frame: Box::new(on_frame),
            attempt: std::cell::Cell::new(0),
            alive: std::cell::Cell::new(true),
            socket: std::cell::RefCell::new(None),
        });
        browser::connect(live.clone());
        let live = send_wrapper::SendWrapper::new(live);
        on_cleanup(move || live.stop());
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (query, connected, on_open, on_frame);
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use leptos::prelude::*;
    use usher_core::api::EventFrame;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;

    pub struct Live {
        pub query: String,
        pub connected: RwSignal<bool>,
        pub on_open: Box<dyn Fn()>,
        pub on_frame: Box<dyn Fn(EventFrame)>,
        pub attempt: Cell<u32>,
        /// False once the page is gone: no more reconnects.
        pub alive: Cell<bool>,
        pub socket: RefCell<Option<Connection>>,
    }

    /// One websocket and the handlers it calls: they live as long as it is this page's
    /// connection, and are dropped (not leaked) when a reconnect or the page's end
    /// replaces it.
    pub struct Connection {
        ws: web_sys::WebSocket,
        _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
        _opened: Closure<dyn FnMut()>,
        _closed: Closure<dyn FnMut()>,
    }

    impl Connection {
        /// The socket calls none of the handlers any more, so they may be dropped.
        fn detach(&self) {
            self.ws.set_onmessage(None);
            self.ws.set_onopen(None);
            self.ws.set_onclose(None);
        }
    }

    impl Live {
        pub fn stop(&self) {
            self.alive.set(false);
            if let Some(connection) = self.socket.borrow_mut().take() {
                connection.detach();
                let _ = connection.ws.close();
            }
        }
    }

    pub fn connect(live: Rc<Live>) {
        if !live.alive.get() {
            return;
        }
        let location = window().location();
        let scheme = if location.protocol().map(|p| p == "https:").unwrap_or(false) {
            "wss"
        } else {
            "ws"
        };
        let host = location.host().unwrap_or_default();
        let Ok(ws) = web_sys::WebSocket::new(&format!("{scheme}://{host}/api/v1/events?{}", live.query)) else {
            retry_later(live);
            return;
        };
        let on_message = {
            let live = live.clone();
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
                if let Some(text) = ev.data().as_string() {
                    if let Some(frame) = super::decode_frame(text.as_bytes()) {
                        (live.on_frame)(frame);
                    }
                }
            })
        };
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let opened = {
            let live = live.clone();
            Closure::<dyn FnMut()>::new(move || {
                live.attempt.set(0);
                live.connected.try_set(true);
                (live.on_open)();
            })
        };
        ws.set_onopen(Some(opened.as_ref().unchecked_ref()));
        let closed = {
            let live = live.clone();
            Closure::<dyn FnMut()>::new(move || {
                live.connected.try_set(false);
                retry_later(live.clone());
            })
        };
        ws.set_onclose(Some(closed.as_ref().unchecked_ref()));
        let connection = Connection {
            ws,
            _on_message: on_message,
            _opened: opened,
            _closed: closed,
        };
        // The one this replaces has closed (its `close` handler scheduled this connect).
        if let Some(old) = live.socket.borrow_mut().replace(connection) {
            old.detach();
        }
    }

    fn retry_later(live: Rc<Live>) {
        if !live.alive.get() {
            return;
        }
        let attempt = live.attempt.get();
        live.attempt.set(attempt.saturating_add(1));
        let base = super::backoff_ms(attempt) as f64;
        let wait = base * (1.0 + 0.5 * js_sys::Math::random());
        let live = send_wrapper::SendWrapper::new(live);
        set_timeout(move || connect(live.take()), std::time::Duration::from_millis(wait as u64));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use usher_core::api::{EventFrame, LogAppend};

    use super::decode_frame;

    #[test]
    fn every_frame_the_server_sends_decodes_to_what_it_sent() {
        let job = serde_json::from_value(json!({
            "id": 7, "pipeline_id": 3, "project_id": 1, "name": "build", "stage": "test",
            "status": "canceling", "interruptible": true, "created_at": "2026-11-29T04:00:00Z",
            "started_at": "2026-11-29T04:00:01Z", "finished_at": null, "runner_id": 2,
            "exit_code": null, "failure_reason": null,
            "cancel": {"mode": "graceful", "requested_by": "ana", "requested_at": "2026-11-29T04:00:02Z", "reason": "user"},
            "after_script": null, "tags": ["linux"], "waiting_for": null, "retry_of": 5, "retried": false
        }))
        .unwrap();
        let pipeline = serde_json::from_value(json!({
            "id": 3, "project_id": 1, "ref": "main", "status": "running",
            "created_at": "2026-11-29T04:00:00Z", "started_at": null, "finished_at": null,
            "triggered_by": "api", "cancel": null, "sha": "abc", "commit_title": "Fix"
        }))
        .unwrap();
        let frames = [
            EventFrame::Job { job },
            EventFrame::Pipeline { pipeline },
            EventFrame::Log(LogAppend {
                job_id: 7,
                offset: 10,
                length: 14,
                text: Some("ok\n".into()),
            }),
            EventFrame::Log(LogAppend {
                job_id: 7,
                offset: 14,
                length: 9000,
                text: None,
            }),
        ];
        for frame in frames {
            let sent = serde_json::to_vec(&frame).unwrap();
            assert_eq!(decode_frame(&sent), Some(frame), "{}", String::from_utf8_lossy(&sent));
        }
    }

    #[test]
    fn frames_of_an_unknown_type_or_shape_are_skipped() {
        assert_eq!(decode_frame(br#"{"type":"runner","runner":{"id":1}}"#), None);
        assert_eq!(decode_frame(br#"{"type":"job"}"#), None);
        assert_eq!(decode_frame(br#"{"type":"log","job_id":7}"#), None);
        assert_eq!(decode_frame(b"not json"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let waits: Vec<u64> = (0..8).map(super::backoff_ms).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000]);
    }
}
