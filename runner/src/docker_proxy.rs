//! The Docker API a docker-executor job is given: a proxy on a unix socket of its own
//! (mounted into the job container as `DOCKER_HOST`) in front of the runner's engine.
//!
//! It does two things to what passes through:
//! - **Labels.** Every container, network and volume the job creates gets
//!   `usher.job=<id>` and `usher.runner=<instance>` added to its labels (named volumes a container mounts are created
//!   labelled first), so the runner finds and removes all of it when the job ends,
//!   whatever the job's own cleanup did. A container created without a network joins
//!   the job's network, so the job reaches it by name.
//! - **Confinement.** The job may only touch its own objects: a request naming a
//!   container, network, volume or exec that is not the job's is answered "no such …"
//!   (404), as if it did not exist. What would reach the host is refused (403):
//!   privileged containers, bind mounts of host paths, host namespaces, devices, added
//!   capabilities, and engine-wide operations (prune, swarm, plugins).
//!
//! Everything else (images, logs, attach and exec streams, builds) is passed through;
//! upgraded connections (`docker attach`, `docker exec -it`) are spliced byte for byte.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::docker::{Docker, JOB_LABEL, RUNNER_LABEL};

type Body = BoxBody<Bytes, hyper::Error>;

/// The largest create request (JSON) the proxy reads.
const MAX_CREATE_BODY: usize = 1024 * 1024;

/// A running proxy; dropping it (or [`DockerProxy::stop`]) closes the socket and every
/// connection through it.
pub struct DockerProxy {
    pub socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
    ctx: Arc<Ctx>,
}

struct Ctx {
    upstream: PathBuf,
    job_id: i64,
    /// The runner's instance (`usher.runner` label).
    instance: String,
    /// The job's network, which containers created without one join.
    network: String,
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
            job_id,
            instance: docker.instance.clone(),
            network: docker.job_name(job_id),
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
                            let service = hyper::service::service_fn(move |req| handle(req, ctx.clone()));
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

async fn handle(req: Request<Incoming>, ctx: Arc<Ctx>) -> Result<Response<Body>, hyper::Error> {
    let creates = req.method() == Method::POST && {
        let p = parts(req.uri().path());
        p.len() == 2 && ["containers", "networks", "volumes"].contains(&p[0].as_str()) && p[1] == "create"
    };
    let answer = if creates {
        // In a task of its own, counted: see `Ctx::creating`.
        ctx.creating.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let task_ctx = ctx.clone();
        let task = tokio::spawn(async move {
            let answer = route(req, &task_ctx).await;
            task_ctx.creating.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            answer
        });
        task.await
            .unwrap_or_else(|_| Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "usher: the proxy failed")))
    } else {
        route(req, &ctx).await
    };
    Ok(answer.unwrap_or_else(|refusal| refusal))
}

/// The API path without its `/v1.xx` version prefix, split into parts.
fn parts(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned())
        .collect();
    if parts
        .first()
        .is_some_and(|p| p.starts_with('v') && p[1..].chars().all(|c| c.is_ascii_digit() || c == '.'))
    {
        parts.remove(0);
    }
    parts
}

async fn route(req: Request<Incoming>, ctx: &Ctx) -> Result<Response<Body>, Response<Body>> {
    let req = req.map(BodyExt::boxed);
    let p = parts(req.uri().path());
    let p: Vec<&str> = p.iter().map(String::as_str).collect();
    let post = req.method() == Method::POST;
    match p.as_slice() {
        ["containers", "create"] if post => {
            let (req, mut body) = read_json(req).await?;
            confine_container(&mut body, ctx).await?;
            forward(with_json(req, &body), ctx).await
        }
        ["networks", "create"] if post => {
            let (req, mut body) = read_json(req).await?;
            add_label(&mut body, &["Labels"], ctx);
            forward(with_json(req, &body), ctx).await
        }
        ["volumes", "create"] if post => {
            let (req, mut body) = read_json(req).await?;
            add_label(&mut body, &["Labels"], ctx);
            forward(with_json(req, &body), ctx).await
        }
        [kind, "prune"] if ["containers", "networks", "volumes", "images", "build"].contains(kind) => {
            Err(refuse(StatusCode::FORBIDDEN, "usher: prune would touch other jobs' objects"))
        }
        ["system", "prune"] | ["swarm", ..] | ["plugins", ..] | ["nodes", ..] | ["services", ..] | ["secrets", ..] | ["configs", ..] => {
            Err(refuse(StatusCode::FORBIDDEN, "usher: jobs may not use this part of the Docker API"))
        }
        ["containers", "json"] | ["networks"] | ["volumes"] => forward(req, ctx).await,
        ["containers", id, ..] => {
            owned(
                ctx,
                &format!("/containers/{}/json", enc(id)),
                &["Config", "Labels"],
                "container",
                id,
            )
            .await?;
            forward(req, ctx).await
        }
        ["networks", id, ..] => {
            owned(ctx, &format!("/networks/{}", enc(id)), &["Labels"], "network", id).await?;
            if let ["networks", _, "connect" | "disconnect"] = p.as_slice() {
                let (req, body) = read_json(req).await?;
                let container = body.get("Container").and_then(Value::as_str).unwrap_or_default();
                owned(
                    ctx,
                    &format!("/containers/{}/json", enc(container)),
                    &["Config", "Labels"],
                    "container",
                    container,
                )
                .await?;
                return forward(with_json(req, &body), ctx).await;
            }
            forward(req, ctx).await
        }
        ["volumes", name, ..] => {
            owned(ctx, &format!("/volumes/{}", enc(name)), &["Labels"], "volume", name).await?;
            forward(req, ctx).await
        }
        ["exec", id, ..] => {
            let exec = get_json(ctx, &format!("/exec/{}/json", enc(id))).await;
            let container = exec
                .as_ref()
                .and_then(|e| e.get("ContainerID"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            owned(
                ctx,
                &format!("/containers/{}/json", enc(container)),
                &["Config", "Labels"],
                "exec instance",
                id,
            )
            .await?;
            forward(req, ctx).await
        }
        _ => forward(req, ctx).await,
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Passes `req` to the engine on a connection of its own; an upgrade is spliced.
async fn forward(mut req: Request<Body>, ctx: &Ctx) -> Result<Response<Body>, Response<Body>> {
    let unavailable = |e: &dyn std::fmt::Display| refuse(StatusCode::BAD_GATEWAY, &format!("usher: the Docker engine is unreachable: {e}"));
    let stream = UnixStream::connect(&ctx.upstream).await.map_err(|e| unavailable(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(&e))?;
    tokio::spawn(conn.with_upgrades());
    let wants_upgrade = req.headers().contains_key(hyper::header::UPGRADE);
    let client_side = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
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

/// Reads a JSON request body (bounded); the request comes back without it.
async fn read_json(req: Request<Body>) -> Result<(Request<Body>, Value), Response<Body>> {
    let (parts, body) = req.into_parts();
    let bytes = Limited::new(body, MAX_CREATE_BODY)
        .collect()
        .await
        .map_err(|_| refuse(StatusCode::PAYLOAD_TOO_LARGE, "usher: request body too large"))?
        .to_bytes();
    let value = if bytes.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&bytes).map_err(|e| refuse(StatusCode::BAD_REQUEST, &format!("usher: bad JSON: {e}")))?
    };
    Ok((Request::from_parts(parts, full(Bytes::new())), value))
}

/// The request with `body` as its JSON body.
fn with_json(req: Request<Body>, body: &Value) -> Request<Body> {
    let bytes = serde_json::to_vec(body).expect("JSON value");
    let (mut parts, _) = req.into_parts();
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    parts.headers.insert(hyper::header::CONTENT_LENGTH, bytes.len().into());
    parts
        .headers
        .insert(hyper::header::CONTENT_TYPE, "application/json".parse().expect("static header"));
    Request::from_parts(parts, full(bytes))
}

/// Sets the job's two labels in the labels object at `path` (created if missing).
fn add_label(body: &mut Value, path: &[&str], ctx: &Ctx) {
    let mut at = body;
    for key in path {
        if !at.is_object() {
            *at = json!({});
        }
        at = at.as_object_mut().expect("object").entry(*key).or_insert_with(|| json!({}));
    }
    if !at.is_object() {
        *at = json!({});
    }
    let labels = at.as_object_mut().expect("object");
    labels.insert(JOB_LABEL.into(), json!(ctx.job_id.to_string()));
    labels.insert(RUNNER_LABEL.into(), json!(ctx.instance));
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

/// Ok when the object at `path` carries the job's label; else "no such …".
async fn owned(ctx: &Ctx, path: &str, labels_at: &[&str], what: &str, id: &str) -> Result<(), Response<Body>> {
    let doc = get_json(ctx, path).await;
    let labels = labels_at.iter().fold(doc.as_ref(), |at, key| at.and_then(|v| v.get(*key)));
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    if label(JOB_LABEL) == Some(ctx.job_id.to_string().as_str()) && label(RUNNER_LABEL) == Some(ctx.instance.as_str()) {
        Ok(())
    } else {
        Err(refuse(StatusCode::NOT_FOUND, &format!("No such {what}: {id}")))
    }
}

/// Checks and completes a container create request (see the module comment).
async fn confine_container(body: &mut Value, ctx: &Ctx) -> Result<(), Response<Body>> {
    let forbid = |why: &str| refuse(StatusCode::FORBIDDEN, &format!("usher: jobs may not create {why}"));
    add_label(body, &["Labels"], ctx);
    if !body.get("HostConfig").is_some_and(Value::is_object) {
        body["HostConfig"] = json!({});
    }
    let host = body["HostConfig"].clone();
    let truthy = |key: &str| host.get(key).is_some_and(|v| v.as_bool() == Some(true));
    let nonempty = |key: &str| host.get(key).is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()));
    let text = |key: &str| host.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    if truthy("Privileged") {
        return Err(forbid("privileged containers"));
    }
    if nonempty("Devices") || nonempty("DeviceRequests") || nonempty("DeviceCgroupRules") {
        return Err(forbid("containers with host devices"));
    }
    if nonempty("CapAdd") {
        return Err(forbid("containers with added capabilities"));
    }
    if nonempty("VolumesFrom") {
        return Err(forbid("containers with --volumes-from"));
    }
    if host
        .get("SecurityOpt")
        .and_then(Value::as_array)
        .is_some_and(|o| o.iter().any(|o| o.as_str().is_some_and(|s| s.contains("unconfined"))))
    {
        return Err(forbid("unconfined containers"));
    }
    for key in ["PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode"] {
        let mode = text(key);
        if mode == "host" || mode.starts_with("container:") {
            return Err(forbid(&format!("containers sharing a namespace ({key} {mode})")));
        }
    }
    let network = text("NetworkMode");
    match network.as_str() {
        "" | "default" | "bridge" => body["HostConfig"]["NetworkMode"] = json!(ctx.network),
        "none" => {}
        "host" => return Err(forbid("containers on the host's network")),
        n if n.starts_with("container:") => return Err(forbid("containers sharing another's network")),
        n => owned(ctx, &format!("/networks/{}", enc(n)), &["Labels"], "network", n).await?,
    }
    if let Some(endpoints) = body.pointer_mut("/NetworkingConfig/EndpointsConfig").and_then(Value::as_object_mut) {
        // The docker command line names the default network `default`: that is the job's.
        for default in ["default", "bridge", ""] {
            if let Some(settings) = endpoints.remove(default) {
                endpoints.insert(ctx.network.clone(), settings);
            }
        }
        for name in endpoints.keys().cloned().collect::<Vec<_>>() {
            if name != ctx.network {
                owned(ctx, &format!("/networks/{}", enc(&name)), &["Labels"], "network", &name).await?;
            }
        }
    }
    let binds: Vec<String> = host
        .get("Binds")
        .and_then(Value::as_array)
        .map(|b| b.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    for bind in binds {
        let source = bind.split(':').next().unwrap_or_default();
        if source.starts_with('/') || source.starts_with('.') || source.is_empty() {
            return Err(forbid("containers with bind mounts of host paths (use a volume)"));
        }
        labelled_volume(ctx, source).await?;
    }
    let mounts = host.get("Mounts").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, mount) in mounts.iter().enumerate() {
        match mount.get("Type").and_then(Value::as_str).unwrap_or("volume") {
            "volume" => match mount.get("Source").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                Some(source) => labelled_volume(ctx, source).await?,
                None => add_label(&mut body["HostConfig"]["Mounts"][i], &["VolumeOptions", "Labels"], ctx),
            },
            "tmpfs" => {}
            _ => return Err(forbid("containers with bind mounts of host paths (use a volume)")),
        }
    }
    Ok(())
}

/// Creates the named volume with the job's label, or checks that the existing one is the
/// job's.
async fn labelled_volume(ctx: &Ctx, name: &str) -> Result<(), Response<Body>> {
    let mut create = json!({ "Name": name });
    add_label(&mut create, &["Labels"], ctx);
    let req = Request::post("/volumes/create")
        .header("host", "docker")
        .body(full(Bytes::new()))
        .expect("request");
    let resp = forward(with_json(req, &create), ctx).await?;
    if !resp.status().is_success() {
        return Err(resp);
    }
    owned(ctx, &format!("/volumes/{}", enc(name)), &["Labels"], "volume", name).await
}
