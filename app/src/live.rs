//! Live updates in the browser: a page subscribes to the event websocket for as long as
//! it is shown. On the server (SSR) this does nothing; the first render there is
//! already current, and the browser re-reads state once the socket is open, so nothing
//! that changed in between is missed.

use leptos::prelude::*;
use usher_core::api::EventFrame;

/// Follows `/api/v1/events?{query}`. `connected` tells whether the socket is open;
/// `on_open` runs on each connect; `on_frame` for every frame.
pub fn follow_events(query: String, connected: RwSignal<bool>, on_open: impl Fn() + 'static, on_frame: impl Fn(EventFrame) + 'static) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        use wasm_bindgen::closure::Closure;
        let location = window().location();
        let scheme = if location.protocol().map(|p| p == "https:").unwrap_or(false) {
            "wss"
        } else {
            "ws"
        };
        let host = location.host().unwrap_or_default();
        let Ok(ws) = web_sys::WebSocket::new(&format!("{scheme}://{host}/api/v1/events?{query}")) else {
            return;
        };
        let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
            if let Some(text) = ev.data().as_string() {
                if let Ok(frame) = serde_json::from_str::<EventFrame>(&text) {
                    on_frame(frame);
                }
            }
        });
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget();
        let opened = Closure::<dyn FnMut()>::new(move || {
            connected.try_set(true);
            on_open();
        });
        ws.set_onopen(Some(opened.as_ref().unchecked_ref()));
        opened.forget();
        let closed = Closure::<dyn FnMut()>::new(move || {
            connected.try_set(false);
        });
        ws.set_onclose(Some(closed.as_ref().unchecked_ref()));
        closed.forget();
        let ws = send_wrapper::SendWrapper::new(ws);
        on_cleanup(move || {
            ws.set_onclose(None);
            let _ = ws.close();
        });
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (query, connected, on_open, on_frame);
    }
}
