//! What a docker-executor job may ask of the Docker engine through its proxy
//! (`docker_proxy`), decided without any IO: an allow-list of the endpoints the docker
//! command line needs to run a job's own containers, networks, volumes, execs and
//! builds, read the way the engine reads them — paths decoded before they are routed,
//! query strings as Go's `net/url` splits them, JSON fields matched in any case as Go's
//! decoder matches them — and turned into the one canonical request that is forwarded.
//! What would reach the host (privileged containers, host paths, host namespaces,
//! devices, volume driver options, …) or another job's objects is refused; a body field
//! that is not known to be harmless is refused unless it is empty. What only the engine
//! can answer (is this named object the job's?) comes back as checks for the plumbing.

mod bodies;
mod container;
mod json;
mod wire;

use wire::{OutQuery, Query, Target};

/// The job a proxy serves.
#[derive(Clone, Debug)]
pub struct JobIdentity {
    pub job_id: i64,
    /// The runner's instance (`usher.runner` label).
    pub instance: String,
    /// The job's network, which containers created without one join.
    pub network: String,
}

impl JobIdentity {
    /// The labels everything the job creates carries.
    pub fn labels(&self) -> Vec<(String, String)> {
        vec![
            (crate::docker::JOB_LABEL.to_string(), self.job_id.to_string()),
            (crate::docker::RUNNER_LABEL.to_string(), self.instance.clone()),
        ]
    }
}

/// A named object that must carry the job's labels before the request is forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectRef {
    Container(String),
    Network(String),
    Volume(String),
    /// An exec instance: its container must be the job's.
    Exec(String),
}

/// The body the plumbing forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardBody {
    /// None (whatever the client sent is dropped).
    Empty,
    /// This JSON, in place of the client's.
    Json(Vec<u8>),
    /// The client's body, streamed as is, with this content type (a tar archive).
    Stream { content_type: &'static str },
}

/// A request to forward, exactly as decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub method: &'static str,
    /// The canonical path (with the client's `/v1.N` prefix, if any).
    pub path: String,
    /// The canonical query string, without `?` (empty for none).
    pub query: String,
    pub body: ForwardBody,
    /// Checked with the engine first: each must carry the job's labels, else the answer
    /// is "No such …" (404), as if it did not exist.
    pub must_own: Vec<ObjectRef>,
    /// Named volumes to create with the job's labels before the request (a container
    /// mounting them), then checked like `must_own`.
    pub make_volumes: Vec<String>,
    /// The request creates a container, network or volume: teardown waits for it.
    pub creates: bool,
    /// The connection may be upgraded (attach, exec start): the client's `Upgrade` and
    /// `Connection` headers are passed on.
    pub upgrade: bool,
}

/// What the proxy does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Forward(Forward),
    /// Answered by the proxy with `{"message": …}`, the engine's error shape.
    Refuse {
        status: u16,
        message: String,
    },
}

/// A refusal on its way out of the policy.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: u16,
    message: String,
}

impl Refusal {
    pub(crate) fn bad(message: String) -> Refusal {
        Refusal { status: 400, message }
    }
    pub(crate) fn forbidden(message: String) -> Refusal {
        Refusal { status: 403, message }
    }
}

/// The largest JSON body the proxy reads.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// Whether the request's JSON body must be read before [`decide`] (the plumbing reads
/// at most [`MAX_JSON_BODY`] bytes of it).
pub fn reads_json_body(method: &str, raw_path: &str) -> bool {
    let Ok(target) = wire::parse_path(raw_path) else { return false };
    let s: Vec<&str> = target.segments.iter().map(String::as_str).collect();
    matches!(
        (method, s.as_slice()),
        ("POST", ["containers" | "networks" | "volumes", "create"])
            | ("POST", ["containers", _, "exec"])
            | ("POST", ["exec", _, "start"])
            | ("POST", ["networks", _, "connect" | "disconnect"])
            | ("POST", ["commit" | "auth"])
    )
}

/// Decides what to do with a request: `raw_path` and `raw_query` as they came (still
/// percent-encoded), `body` when [`reads_json_body`] says so.
pub fn decide(method: &str, raw_path: &str, raw_query: &str, body: Option<&[u8]>, job: &JobIdentity) -> Decision {
    match route(method, raw_path, raw_query, body, job) {
        Ok(forward) => Decision::Forward(forward),
        Err(Refusal { status, message }) => Decision::Refuse { status, message },
    }
}

/// Characters of container, network, volume and exec names and ids.
pub(crate) fn is_object_name(name: &str) -> bool {
    name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Refuses a name the job may not give what it creates: `usher-…` is the runner's
/// (a job could otherwise take the name of another job's container or network).
pub(crate) fn may_name(name: &str, what: &str) -> Result<(), Refusal> {
    if name.trim_start_matches('/').starts_with("usher-") {
        return Err(Refusal::forbidden(format!(
            "usher: names starting with usher- are the runner's; give the {what} another name"
        )));
    }
    Ok(())
}

fn object(id: &str, what: &str) -> Result<String, Refusal> {
    if is_object_name(id) {
        Ok(id.to_string())
    } else {
        Err(Refusal::bad(format!("usher: {id:?} is not a {what} name or id")))
    }
}

/// An image name given as path segments (`docker.io/library/busybox:1`).
fn image(parts: &[&str]) -> Result<Vec<String>, Refusal> {
    let ok = !parts.is_empty()
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || "._:@-".contains(c)));
    if ok {
        Ok(parts.iter().map(|p| p.to_string()).collect())
    } else {
        Err(Refusal::bad(format!("usher: {:?} is not an image name", parts.join("/"))))
    }
}

fn not_allowed(method: &str, s: &[&str]) -> Refusal {
    let what = match s {
        [.., "prune"] => "usher: prune would touch other jobs' objects".to_string(),
        [
            "swarm" | "nodes" | "services" | "tasks" | "secrets" | "configs" | "plugins" | "session" | "grpc" | "system",
            ..,
        ] => "usher: jobs may not use this part of the Docker API".to_string(),
        _ => format!("usher: jobs may not use {method} /{} of the Docker API", s.join("/")),
    };
    Refusal::forbidden(what)
}

/// The query, refused if it has a parameter not in `allowed`.
fn only(q: &Query, allowed: &[&str]) -> Result<(), Refusal> {
    match q.unknown(allowed) {
        Some(key) => Err(Refusal::forbidden(format!(
            "usher: the query parameter {key:?} is not allowed here"
        ))),
        None => Ok(()),
    }
}

const LOGS: &[&str] = &["follow", "stdout", "stderr", "since", "until", "timestamps", "tail", "details"];
const ATTACH: &[&str] = &["detachKeys", "logs", "stream", "stdin", "stdout", "stderr"];

fn route(method: &str, raw_path: &str, raw_query: &str, body: Option<&[u8]>, job: &JobIdentity) -> Result<Forward, Refusal> {
    let Target { version, segments } = wire::parse_path(raw_path)?;
    let q = Query::parse(raw_query)?;
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let json = || json::J::parse(body.unwrap_or_default());
    let method: &'static str = match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        _ => return Err(not_allowed(method, &s)),
    };
    let mut f = Forward {
        method,
        path: wire::path(version.as_deref(), &s),
        query: String::new(),
        body: ForwardBody::Empty,
        must_own: Vec::new(),
        make_volumes: Vec::new(),
        creates: false,
        upgrade: false,
    };
    // The plain pass-through endpoints: (their query parameters, what they name).
    let plain = |f: &mut Forward, keys: &[&str], owns: Option<ObjectRef>| -> Result<(), Refusal> {
        only(&q, keys)?;
        f.query = OutQuery::copied(&q, keys, &[]).encode();
        f.must_own.extend(owns);
        Ok(())
    };
    let c = |id: &str| object(id, "container").map(ObjectRef::Container);
    match (method, s.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) | ("GET", ["version" | "info"]) => plain(&mut f, &[], None)?,
        ("GET", ["events"]) => {
            only(&q, &["since", "until", "filters"])?;
            let mut out = OutQuery::copied(&q, &["since", "until"], &[]);
            out.push("filters", &bodies::job_filters(q.get("filters"), job)?);
            f.query = out.encode();
        }
        ("GET", ["containers", "json"] | ["networks"] | ["volumes"]) => {
            let keys: &[&str] = if s[0] == "containers" {
                &["all", "limit", "size", "since", "before"]
            } else {
                &[]
            };
            only(&q, &[keys, &["filters"]].concat())?;
            let mut out = OutQuery::copied(&q, keys, &[]);
            out.push("filters", &bodies::job_filters(q.get("filters"), job)?);
            f.query = out.encode();
        }
        ("GET", ["containers", id, "json"]) => plain(&mut f, &["size"], Some(c(id)?))?,
        ("GET", ["containers", id, "logs"]) => plain(&mut f, LOGS, Some(c(id)?))?,
        ("GET", ["containers", id, "stats"]) => plain(&mut f, &["stream", "one-shot"], Some(c(id)?))?,
        ("GET" | "HEAD", ["containers", id, "archive"]) => plain(&mut f, &["path"], Some(c(id)?))?,
        ("PUT", ["containers", id, "archive"]) => {
            plain(&mut f, &["path", "noOverwriteDirNonDir", "copyUIDGID"], Some(c(id)?))?;
            f.body = ForwardBody::Stream {
                content_type: "application/x-tar",
            };
        }
        ("POST", ["containers", id, "start"]) => plain(&mut f, &["detachKeys"], Some(c(id)?))?,
        ("POST", ["containers", id, "stop" | "restart"]) => plain(&mut f, &["t", "signal"], Some(c(id)?))?,
        ("POST", ["containers", id, "kill"]) => plain(&mut f, &["signal"], Some(c(id)?))?,
        ("POST", ["containers", id, "wait"]) => plain(&mut f, &["condition"], Some(c(id)?))?,
        ("POST", ["containers", id, "resize"]) => plain(&mut f, &["h", "w"], Some(c(id)?))?,
        ("POST", ["containers", id, "pause" | "unpause"]) => plain(&mut f, &[], Some(c(id)?))?,
        ("POST", ["containers", id, "attach"]) => {
            plain(&mut f, ATTACH, Some(c(id)?))?;
            f.upgrade = true;
        }
        ("POST", ["containers", id, "rename"]) => {
            may_name(q.get("name").unwrap_or_default(), "container")?;
            plain(&mut f, &["name"], Some(c(id)?))?;
        }
        ("DELETE", ["containers", id]) => plain(&mut f, &["v", "force"], Some(c(id)?))?,
        ("POST", ["containers", "create"]) => {
            only(&q, &["name", "platform"])?;
            may_name(q.get("name").unwrap_or_default(), "container")?;
            f.query = OutQuery::copied(&q, &["name", "platform"], &[]).encode();
            let made = container::create(&json()?, job)?;
            f.body = ForwardBody::Json(made.body);
            f.must_own = made.must_own;
            f.make_volumes = made.make_volumes;
            f.creates = true;
        }
        ("POST", ["containers", id, "exec"]) => {
            plain(&mut f, &[], Some(c(id)?))?;
            f.body = ForwardBody::Json(bodies::exec_create(&json()?)?);
        }
        ("GET", ["exec", id, "json"]) => plain(&mut f, &[], Some(ObjectRef::Exec(object(id, "exec")?)))?,
        ("POST", ["exec", id, "resize"]) => plain(&mut f, &["h", "w"], Some(ObjectRef::Exec(object(id, "exec")?)))?,
        ("POST", ["exec", id, "start"]) => {
            plain(&mut f, &[], Some(ObjectRef::Exec(object(id, "exec")?)))?;
            f.body = ForwardBody::Json(bodies::exec_start(&json()?)?);
            f.upgrade = true;
        }
        ("POST", ["networks", "create"]) => {
            plain(&mut f, &[], None)?;
            f.body = ForwardBody::Json(bodies::network_create(&json()?, job)?);
            f.creates = true;
        }
        ("GET", ["networks", id]) => plain(&mut f, &["verbose", "scope"], Some(ObjectRef::Network(object(id, "network")?)))?,
        ("DELETE", ["networks", id]) => plain(&mut f, &[], Some(ObjectRef::Network(object(id, "network")?)))?,
        ("POST", ["networks", id, action @ ("connect" | "disconnect")]) => {
            plain(&mut f, &[], Some(ObjectRef::Network(object(id, "network")?)))?;
            let (body, container) = bodies::network_connect(&json()?, *action == "connect")?;
            f.body = ForwardBody::Json(body);
            f.must_own.extend(container);
        }
        ("POST", ["volumes", "create"]) => {
            plain(&mut f, &[], None)?;
            f.body = ForwardBody::Json(bodies::volume_create(&json()?, job)?);
            f.creates = true;
        }
        ("GET", ["volumes", name]) => plain(&mut f, &[], Some(ObjectRef::Volume(object(name, "volume")?)))?,
        ("DELETE", ["volumes", name]) => plain(&mut f, &["force"], Some(ObjectRef::Volume(object(name, "volume")?)))?,
        ("GET", ["images", "json"]) => plain(&mut f, &["all", "filters", "shared-size", "digests", "manifests"], None)?,
        ("POST", ["images", "create"]) => {
            if q.get("fromImage").unwrap_or_default().is_empty() {
                return Err(Refusal::forbidden(
                    "usher: jobs may pull images (fromImage), not import them (fromSrc)".into(),
                ));
            }
            plain(&mut f, &["fromImage", "tag", "platform"], None)?;
        }
        ("GET" | "POST", ["images", name @ .., last @ ("json" | "history" | "tag" | "push")]) if !name.is_empty() => {
            let keys: &[&str] = match (method, *last) {
                ("GET", "json") => &["manifests", "platform"],
                ("GET", "history") => &["platform"],
                ("POST", "tag") => &["repo", "tag"],
                ("POST", "push") => &["tag", "platform"],
                _ => return Err(not_allowed(method, &s)),
            };
            let name = image(name)?;
            let mut parts: Vec<&str> = vec!["images"];
            parts.extend(name.iter().map(String::as_str));
            parts.push(last);
            f.path = wire::path(version.as_deref(), &parts);
            plain(&mut f, keys, None)?;
        }
        ("POST", ["build"]) => {
            let (query, network) = bodies::build_query(&q, job)?;
            f.query = query;
            f.must_own.extend(network.map(ObjectRef::Network));
            f.body = ForwardBody::Stream {
                content_type: "application/x-tar",
            };
        }
        ("POST", ["commit"]) => {
            let keys = ["container", "repo", "tag", "comment", "author", "pause"];
            only(&q, &[&keys[..], &["changes"]].concat())?;
            let id = q.get("container").unwrap_or_default();
            f.must_own.push(c(id)?);
            f.query = OutQuery::copied(&q, &keys, &["changes"]).encode();
            f.body = match body.unwrap_or_default().iter().all(u8::is_ascii_whitespace) {
                true => ForwardBody::Empty,
                false => ForwardBody::Json(bodies::commit_config(&json()?)?),
            };
        }
        ("POST", ["auth"]) => {
            plain(&mut f, &[], None)?;
            f.body = ForwardBody::Json(bodies::auth(&json()?)?);
        }
        _ => return Err(not_allowed(method, &s)),
    }
    Ok(f)
}
