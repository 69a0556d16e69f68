//! The accept loop: every connection the server takes, and the limits on it. TCP without
//! Nagle's algorithm (a cancel pushed to a runner is one small frame that must leave at
//! once); at most `max_connections` open at a time (further clients wait in the kernel's
//! backlog, costing nothing here); HTTP/1.1 or HTTP/2, websocket upgrades included; a
//! client must finish its request headers within `header_timeout` or is disconnected
//! (also between requests on a kept-alive connection); on shutdown, connections finish
//! what they are doing and close. A client that stops reading an answer costs a small
//! fixed buffer (see [`WRITE_BUFFER_BYTES`]), whatever the answer's size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The most of an answer a connection queues in user space before it waits for the
/// client to take what is queued (hyper's default is ~400 KB a connection). The kernel's
/// socket buffer lies beyond this, and a body is read from its source (a log page, an
/// artifact chunk) only when this has room, so a client that stops reading holds this
/// plus one such piece (docs/benchmarks.md, "Clients that stop reading"). For HTTP/1.1
/// it also bounds a request's head (a larger one is answered 431); for HTTP/2 it is the
/// send buffer of each stream.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// What one server accepts.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            // Above the 10,000 event websockets Usher is built to hold.
            max_connections: 16_384,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` turns true, then waits (up to 10 s)
/// for open connections to finish.
/// `tls`: speak HTTPS (the handshake must also finish within `header_timeout`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(WRITE_BUFFER_BYTES);
    builder.http2().timer(TokioTimer::new()).max_send_buf_size(WRITE_BUFFER_BYTES);
    let mut stopping = std::pin::pin!(async move {
        let _ = shutdown.wait_for(|s| *s).await;
    });
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = &mut stopping => break,
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: wait a moment instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopping => break,
        };
        let _ = tcp.set_nodelay(true);
        // The client's address goes into each request as it arrives. (Layering the router
        // per connection instead rebuilt every route's service: ~150 KiB a connection.)
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: axum::http::Request<_>| {
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
                request
            },
        ));
        let (builder, watcher, tls, timeout) = (builder.clone(), graceful.watcher(), tls.clone(), limits.header_timeout);
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    watcher
                        .watch(builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).into_owned())
                        .await
                }
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        watcher
                            .watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned())
                            .await
                    }
                    Ok(Err(e)) => Err(format!("TLS handshake failed: {e}").into()),
                    Err(_) => Err("no TLS handshake within the header timeout".into()),
                },
            };
            if let Err(e) = result {
                tracing::debug!("connection from {remote} ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::info!("some connections were still open 10 s after shutdown began");
    }
}
