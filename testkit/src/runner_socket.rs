//! A runner's websocket spoken by hand, as an attacker holding a runner token of their
//! own would: tests of what the server accepts from a runner use it (a real runner is
//! `usher-runner`, started by [`crate::process`] or in-process by [`crate::server`]).

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::TestServer;

pub type Runner = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(t: &TestServer, token: &str, name: &str) -> Runner {
    let mut request = format!("ws://{}/api/runner/v1/connect", t.base.trim_start_matches("http://"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
    let hello = json!({"type": "hello", "version": usher_core::protocol::PROTOCOL_VERSION, "name": name,
        "concurrency": 1, "held_jobs": [], "runner_id": null});
    send(&mut ws, hello).await;
    assert_eq!(next_of(&mut ws, "welcome").await["type"], "welcome");
    ws
}

pub async fn send(ws: &mut Runner, frame: Value) {
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
}

/// The next frame of type `kind`, skipping others; panics after 10 s.
pub async fn next_of(ws: &mut Runner, kind: &str) -> Value {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if frame["type"] == kind {
                        return frame;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the server closed the connection before a `{kind}` frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{kind}` frame"))
}
