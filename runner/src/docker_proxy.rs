//! The Docker API a docker-executor job is given: a proxy on a unix socket of its own
//! (mounted into the job container as `DOCKER_HOST`) in front of the runner's engine.
//!
//! This is only the plumbing. What a request may do is decided by the pure
//! [`docker_policy`](crate::docker_policy), which also rewrites it: the labels
//! `usher.job=<id>` and `usher.runner=<instance>` on what the job creates, the job's
//! network for a container without one, the job's label filters on lists. The proxy
//! reads the request (its JSON body bounded), asks the policy, asks the engine whether
//! the named objects the policy wants checked carry the job's labels (else "No such …",
//! 404, as if they did not exist), creates the named volumes a container mounts with
//! those labels, and forwards exactly the path, query and body the policy decided on —
//! never the client's bytes. Upgraded connections (`docker attach`, `docker exec -it`)
//! are spliced byte for byte. Create requests are counted, so that teardown waits for
//! them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::docker::{Docker, JOB_LABEL, RUNNER_LABEL};
use crate::docker_policy::{self, Decision, Forward, ForwardBody, JobIdentity, ObjectRef};

type Body = BoxBody<Bytes, hyper::Error>;

/// Request headers passed to the engine (the policy's own replace the rest).
const PASSED_HEADERS: [&str; 3] = ["user-agent", "x-registry-auth", "x-registry-config"];

/// A running proxy; dropping it (or [`DockerProxy::stop`]) closes the socket and every
/// connection through it.
pub struct DockerProxy {
    pub socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
    ctx: Arc<Ctx>,
}

struct Ctx {
    upstream: PathBuf,
    job: JobIdentity,
    /// Create requests under way. They run to their end even when the job's connection
    /// goes (the engine finishes them anyway), so [`DockerProxy::close`] can wait for
    /// them: an object created after the teardown looked would be left behind.
    creating: std::sync::atomic::AtomicUsize,
}

impl DockerProxy {
    /// Listens on `socket` (removed first if it exists) for the job `job_id`, forwarding
    /// to `docker`'s engine.
    pub fn start(socket: &Path, docker: &Docker, job_id: i64) -> std::io::Result<DockerProxy> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let ctx = Arc::new(Ctx {
            upstream: docker.socket.clone(),
            job: JobIdentity {
                job_id,
                instance: docker.instance.clone(),
                network: docker.job_name(job_id),
            },
            creating: Default::default(),
        });
        let ctx_for_close = ctx.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let ctx = ctx.clone();
                        connections.spawn(async move {
                            let service = hyper::service::service_fn(move |req| Box::pin(handle(req, ctx.clone())));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await;
                        });
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Ok(DockerProxy {
            socket: socket.to_path_buf(),
            task,
            ctx: ctx_for_close,
        })
    }

    /// Stops accepting and ends every open connection (the job can create nothing more).
    pub fn stop(&self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// [`Self::stop`], then waits (up to a minute) until every create request that was
    /// under way has been answered by the engine, so what it made can be found.
    pub async fn close(self) {
        self.stop();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.ctx.creating.load(std::sync::atomic::Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// An answer in the engine's own error shape, which the docker CLI prints.
fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(json!({ "message": message }).to_string()))
        .expect("static response")
}

/// The most of a refused request's body read (and dropped) before the refusal is sent.
const MAX_DRAINED: usize = 256 * 1024 * 1024;

async fn handle(mut req: Request<Incoming>, ctx: Arc<Ctx>) -> Result<Response<Body>, hyper::Error> {
    let client_side = req
        .headers()
        .contains_key(hyper::header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let (method, path) = (parts.method.as_str(), parts.uri.path());
    // The JSON body is read (bounded) when the policy needs it; otherwise the body is
    // kept to be streamed, if the policy forwards one.
    let (json, body) = if docker_policy::reads_json_body(method, path) {
        match Limited::new(body, docker_policy::MAX_JSON_BODY).collect().await {
            Ok(collected) => (Some(collected.to_bytes()), None),
            Err(_) => return Ok(refuse(StatusCode::PAYLOAD_TOO_LARGE, "usher: request body too large")),
        }
    } else {
        (None, Some(body))
    };
    let query = parts.uri.query().unwrap_or_default();
    let forward = match docker_policy::decide(method, path, query, json.as_deref(), &ctx.job) {
        Decision::Forward(forward) => forward,
        Decision::Refuse { status, message } => {
            // The client may still be sending (a build context): read it to its end
            // (bounded) first, so it gets the answer and not a broken pipe.
            if let Some(body) = body {
                let _ = Limited::new(body, MAX_DRAINED).collect().await;
            }
            return Ok(refuse(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), &message));
        }
    };
    let stream = match forward.body {
        ForwardBody::Stream { .. } => body.map(BodyExt::boxed),
        _ => None,
    };
    let Ok(req) = request(&forward, &parts.headers, stream) else {
        return Ok(refuse(StatusCode::BAD_REQUEST, "usher: the request could not be rebuilt"));
    };
    let client_side = client_side.filter(|_| forward.upgrade);
    let answer = if forward.creates {
        // In a task of its own, counted: see `Ctx::creating`.
        ctx.creating.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let task_ctx = ctx.clone();
        let task = tokio::spawn(async move {
            let answer = Box::pin(run(forward, req, client_side, &task_ctx)).await;
            task_ctx.creating.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            answer
        });
        match task.await {
            Ok(answer) => answer,
            Err(_) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "usher: the proxy failed")),
        }
    } else {
        // Boxed: the futures of the engine calls are large, and a debug build's worker
        // stack is not.
        Box::pin(run(forward, req, client_side, &ctx)).await
    };
    Ok(answer.unwrap_or_else(|refusal| refusal))
}

/// The request the policy decided on: its method, path, query and body, with the
/// client's user agent and registry credentials (and upgrade headers where allowed).
fn request(forward: &Forward, headers: &hyper::HeaderMap, stream: Option<Body>) -> Result<Request<Body>, hyper::http::Error> {
    let uri = match forward.query.as_str() {
        "" => forward.path.clone(),
        query => format!("{}?{query}", forward.path),
    };
    let mut builder = Request::builder().method(forward.method).uri(uri).header("host", "docker");
    for name in PASSED_HEADERS {
        if let Some(value) = headers.get(name) {
            builder = builder.header(name, value);
        }
    }
    if forward.upgrade
        && let Some(upgrade) = headers.get(hyper::header::UPGRADE)
    {
        builder = builder
            .header(hyper::header::UPGRADE, upgrade)
            .header(hyper::header::CONNECTION, "Upgrade");
    }
    let body = match &forward.body {
        ForwardBody::Empty => full(Bytes::new()),
        ForwardBody::Json(bytes) => {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
            full(bytes.clone())
        }
        ForwardBody::Stream { content_type } => {
            builder = builder.header(hyper::header::CONTENT_TYPE, *content_type);
            stream.unwrap_or_else(|| full(Bytes::new()))
        }
    };
    builder.body(body)
}

/// Checks and makes what the policy asked for, then forwards.
async fn run(
    forward: Forward,
    req: Request<Body>,
    client_side: Option<hyper::upgrade::OnUpgrade>,
    ctx: &Ctx,
) -> Result<Response<Body>, Response<Body>> {
    for volume in &forward.make_volumes {
        Box::pin(labelled_volume(ctx, volume)).await?;
    }
    for object in &forward.must_own {
        Box::pin(owned(ctx, object)).await?;
    }
    Box::pin(send(req, client_side, ctx)).await
}

/// Passes `req` to the engine on a connection of its own; an upgrade is spliced.
async fn send(req: Request<Body>, client_side: Option<hyper::upgrade::OnUpgrade>, ctx: &Ctx) -> Result<Response<Body>, Response<Body>> {
    let unavailable = |e: &dyn std::fmt::Display| refuse(StatusCode::BAD_GATEWAY, &format!("usher: the Docker engine is unreachable: {e}"));
    let stream = UnixStream::connect(&ctx.upstream).await.map_err(|e| unavailable(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(&e))?;
    tokio::spawn(conn.with_upgrades());
    let mut resp = sender.send_request(req).await.map_err(|e| unavailable(&e))?;
    if let (Some(client_side), StatusCode::SWITCHING_PROTOCOLS) = (client_side, resp.status()) {
        let engine_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = (client_side.await, engine_side.await) {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
            }
        });
    }
    Ok(resp.map(BodyExt::boxed))
}

/// GETs a JSON document from the engine; None when it does not answer 200.
async fn get_json(ctx: &Ctx, path: &str) -> Option<Value> {
    let stream = UnixStream::connect(&ctx.upstream).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    let req = Request::get(path).header("host", "docker").body(full(Bytes::new())).ok()?;
    let resp = sender.send_request(req).await.ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let bytes = Limited::new(resp.into_body(), 16 * 1024 * 1024).collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Ok when the object carries the job's labels; else "No such …" (404).
async fn owned(ctx: &Ctx, object: &ObjectRef) -> Result<(), Response<Body>> {
    let container_labels = |doc: Option<Value>| doc.and_then(|d| d.get("Config")?.get("Labels").cloned());
    let (what, name, labels) = match object {
        ObjectRef::Container(id) => (
            "container",
            id,
            container_labels(get_json(ctx, &format!("/containers/{}/json", enc(id))).await),
        ),
        ObjectRef::Network(id) => (
            "network",
            id,
            get_json(ctx, &format!("/networks/{}", enc(id)))
                .await
                .and_then(|d| d.get("Labels").cloned()),
        ),
        ObjectRef::Volume(name) => (
            "volume",
            name,
            get_json(ctx, &format!("/volumes/{}", enc(name)))
                .await
                .and_then(|d| d.get("Labels").cloned()),
        ),
        ObjectRef::Exec(id) => {
            let exec = get_json(ctx, &format!("/exec/{}/json", enc(id))).await;
            let container = exec
                .as_ref()
                .and_then(|e| e.get("ContainerID"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let doc = match container {
                "" => None,
                c => get_json(ctx, &format!("/containers/{}/json", enc(c))).await,
            };
            ("exec instance", id, container_labels(doc))
        }
    };
    let label = |key: &str| labels.as_ref().and_then(|l| l.get(key)).and_then(Value::as_str);
    if label(JOB_LABEL) == Some(ctx.job.job_id.to_string().as_str()) && label(RUNNER_LABEL) == Some(ctx.job.instance.as_str()) {
        Ok(())
    } else {
        Err(refuse(StatusCode::NOT_FOUND, &format!("No such {what}: {name}")))
    }
}

/// Creates the named volume with the job's labels (the engine answers with the existing
/// one if there is one: [`owned`] then tells whose it is).
async fn labelled_volume(ctx: &Ctx, name: &str) -> Result<(), Response<Body>> {
    let labels: serde_json::Map<String, Value> = ctx.job.labels().into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let body = serde_json::to_vec(&json!({ "Name": name, "Driver": "local", "Labels": labels })).expect("JSON value");
    let req = Request::post("/volumes/create")
        .header("host", "docker")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("request");
    let resp = send(req, None, ctx).await?;
    if !resp.status().is_success() {
        return Err(resp);
    }
    Ok(())
}
