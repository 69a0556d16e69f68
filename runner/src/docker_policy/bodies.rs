//! The smaller requests the policy rebuilds: exec create and start, network and volume
//! create, network connect, commit, login, the `filters` of lists and events (narrowed
//! to the job's labels), and the query string of a build.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::container::{CONFIG_PASS, endpoint, words};
use super::json::{Fields, J, labels};
use super::wire::{OutQuery, Query};
use super::{JobIdentity, ObjectRef, Refusal, is_object_name, may_name};

fn unknown(at: &str) -> String {
    format!("usher: jobs may not set {at} (not among the fields the job's Docker API allows)")
}

fn bytes(out: Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(&Value::Object(out)).expect("JSON value")
}

/// `POST /containers/{id}/exec`: anything but a privileged exec.
pub(crate) fn exec_create(body: &J) -> Result<Vec<u8>, Refusal> {
    let pass = [
        "User",
        "Tty",
        "ConsoleSize",
        "AttachStdin",
        "AttachStderr",
        "AttachStdout",
        "Detach",
        "DetachKeys",
        "Env",
        "WorkingDir",
        "Cmd",
    ];
    let e = Fields::of(body, "", &[&pass[..], &["Privileged"]].concat(), unknown)?;
    e.refuse_set(&["Privileged"], |at| format!("usher: jobs may not run privileged execs ({at})"))?;
    let mut out = Map::new();
    e.copy(&pass, &mut out);
    Ok(bytes(out))
}

/// `POST /exec/{id}/start`.
pub(crate) fn exec_start(body: &J) -> Result<Vec<u8>, Refusal> {
    let pass = ["Detach", "Tty", "ConsoleSize"];
    let e = Fields::of(body, "", &pass, unknown)?;
    let mut out = Map::new();
    e.copy(&pass, &mut out);
    Ok(bytes(out))
}

/// `POST /networks/create`: a plain bridge network of the job's, labelled.
pub(crate) fn network_create(body: &J, job: &JobIdentity) -> Result<Vec<u8>, Refusal> {
    let pass = ["Name", "CheckDuplicate", "EnableIPv4", "EnableIPv6", "Internal", "Attachable"];
    let refused = ["Ingress", "ConfigOnly", "ConfigFrom", "Options"];
    let known = [&pass[..], &refused, &["Driver", "Scope", "IPAM", "Labels"]].concat();
    let n = Fields::of(body, "", &known, unknown)?;
    n.refuse_set(&refused, |at| {
        format!("usher: jobs may not create networks with driver options ({at})")
    })?;
    may_name(n.or_null("Name").text("Name")?, "network")?;
    for (field, allowed) in [("Driver", ["", "bridge"]), ("Scope", ["", "local"])] {
        let value = n.or_null(field).text(field)?;
        if !allowed.contains(&value) {
            return Err(Refusal::forbidden(format!(
                "usher: jobs may only create local bridge networks ({field} {value})"
            )));
        }
    }
    let ipam = Fields::of(n.or_null("IPAM"), "IPAM", &["Driver", "Options", "Config"], unknown)?;
    ipam.refuse_set(&["Options", "Config"], |at| {
        format!("usher: jobs may not choose a network's addresses ({at}): they could clash with the host's routes")
    })?;
    if !["", "default"].contains(&ipam.or_null("Driver").text("IPAM.Driver")?) {
        return Err(Refusal::forbidden(
            "usher: jobs may not use another IPAM driver (IPAM.Driver)".into(),
        ));
    }
    let mut out = Map::new();
    n.copy(&pass, &mut out);
    out.insert("Driver".into(), json!("bridge"));
    out.insert("Labels".into(), labels(n.or_null("Labels"), "Labels", &job.labels())?);
    Ok(bytes(out))
}

/// `POST /networks/{id}/connect|disconnect`: the container must be the job's too.
pub(crate) fn network_connect(body: &J, connect: bool) -> Result<(Vec<u8>, Vec<ObjectRef>), Refusal> {
    let known: &[&str] = if connect {
        &["Container", "EndpointConfig"]
    } else {
        &["Container", "Force"]
    };
    let b = Fields::of(body, "", known, unknown)?;
    let container = b.or_null("Container").text("Container")?;
    if !is_object_name(container) {
        return Err(Refusal::bad(format!("usher: {container:?} is not a container name or id")));
    }
    let mut must_own = vec![ObjectRef::Container(container.to_string())];
    let mut out = Map::new();
    b.copy(&["Container", "Force"], &mut out);
    if connect {
        let settings = endpoint(b.or_null("EndpointConfig"), "EndpointConfig", &mut must_own)?;
        out.insert("EndpointConfig".into(), settings);
    }
    Ok((bytes(out), must_own))
}

/// `POST /volumes/create`: a plain local volume, labelled — no driver, no options
/// (`-o type=none -o o=bind -o device=/` would mount any host path).
pub(crate) fn volume_create(body: &J, job: &JobIdentity) -> Result<Vec<u8>, Refusal> {
    let v = Fields::of(body, "", &["Name", "Driver", "DriverOpts", "Labels", "ClusterVolumeSpec"], unknown)?;
    v.refuse_set(&["DriverOpts"], |at| {
        format!("usher: jobs may not create volumes with driver options ({at})")
    })?;
    v.refuse_set(&["ClusterVolumeSpec"], |at| {
        format!("usher: jobs may not create cluster volumes ({at})")
    })?;
    let driver = v.or_null("Driver").text("Driver")?;
    if !["", "local"].contains(&driver) {
        return Err(Refusal::forbidden(format!(
            "usher: jobs may only create local volumes (Driver {driver})"
        )));
    }
    let name = v.or_null("Name").text("Name")?;
    may_name(name, "volume")?;
    let mut out = Map::new();
    if !name.is_empty() {
        out.insert("Name".into(), json!(name));
    }
    out.insert("Driver".into(), json!("local"));
    out.insert("Labels".into(), labels(v.or_null("Labels"), "Labels", &job.labels())?);
    Ok(bytes(out))
}

/// `POST /commit`: the image's config (nothing of the host's).
pub(crate) fn commit_config(body: &J) -> Result<Vec<u8>, Refusal> {
    let known = [&words(CONFIG_PASS)[..], &["Healthcheck", "Labels"]].concat();
    let c = Fields::of(body, "", &known, unknown)?;
    let mut out = Map::new();
    c.copy(&known, &mut out);
    Ok(bytes(out))
}

/// `POST /auth` (`docker login`): the engine checks the credentials with the registry.
pub(crate) fn auth(body: &J) -> Result<Vec<u8>, Refusal> {
    let known = [
        "username",
        "password",
        "auth",
        "email",
        "serveraddress",
        "identitytoken",
        "registrytoken",
    ];
    let a = Fields::of(body, "", &known, unknown)?;
    let mut out = Map::new();
    a.copy(&known, &mut out);
    Ok(bytes(out))
}

/// The `filters` of a list or of events with the job's labels added: label filters must
/// all match, so the engine answers with the job's own objects only.
pub(crate) fn job_filters(raw: Option<&str>, job: &JobIdentity) -> Result<String, Refusal> {
    let bad = || Refusal::bad("usher: filters must be a JSON object of filter names".into());
    let mut filters: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    let given = match raw {
        None | Some("") => J::Obj(Vec::new()),
        Some(raw) => J::parse(raw.as_bytes())?,
    };
    let J::Obj(entries) = given else { return Err(bad()) };
    for (name, values) in entries {
        let set = filters.entry(name).or_default();
        match values {
            J::Obj(values) => {
                for (value, on) in values {
                    let J::Bool(on) = on else { return Err(bad()) };
                    set.insert(value, on);
                }
            }
            J::Arr(values) => {
                for value in values {
                    let J::Str(value) = value else { return Err(bad()) };
                    set.insert(value, true);
                }
            }
            _ => return Err(bad()),
        }
    }
    let label = filters.entry("label".into()).or_default();
    for (key, value) in job.labels() {
        label.insert(format!("{key}={value}"), true);
    }
    Ok(serde_json::to_string(&filters).expect("JSON"))
}

/// `POST /build` with the classic builder: its query string, and a network of the job's
/// its `RUN` steps join (to check). BuildKit (`version=2`) needs sessions the proxy
/// does not serve.
pub(crate) fn build_query(q: &Query, job: &JobIdentity) -> Result<(String, Option<String>), Refusal> {
    let single = [
        "dockerfile",
        "q",
        "nocache",
        "pull",
        "memory",
        "memswap",
        "cpushares",
        "cpuperiod",
        "cpuquota",
        "cpusetcpus",
        "cpusetmems",
        "shmsize",
        "buildargs",
        "labels",
        "cachefrom",
        "platform",
        "target",
        "squash",
    ];
    let multi = ["t", "extrahosts"];
    let refused = [
        ("remote", "builds from a URL the engine fetches"),
        ("isolation", "builds with another isolation"),
        ("cgroupparent", "builds in another cgroup"),
        ("securityopt", "builds with security options"),
        ("ulimits", "builds with ulimits"),
        ("session", "BuildKit builds"),
        ("buildid", "BuildKit builds"),
        ("outputs", "BuildKit builds"),
    ];
    let ours = ["networkmode", "version", "rm", "forcerm"];
    let refused_keys: Vec<&str> = refused.iter().map(|(k, _)| *k).collect();
    if let Some(key) = q.unknown(&[&single[..], &multi, &refused_keys, &ours].concat()) {
        return Err(Refusal::forbidden(format!(
            "usher: the query parameter {key:?} is not allowed here"
        )));
    }
    for (key, what) in refused {
        if q.all(key).iter().any(|v| !v.is_empty()) {
            return Err(Refusal::forbidden(format!("usher: jobs may not run {what} ({key})")));
        }
    }
    if !["", "1"].contains(&q.get("version").unwrap_or_default()) {
        return Err(Refusal::forbidden(
            "usher: BuildKit builds (version=2) are not available to jobs; the classic builder is".into(),
        ));
    }
    let (network, to_check) = match q.get("networkmode").unwrap_or_default() {
        "" | "default" | "bridge" => (job.network.clone(), None),
        "none" => ("none".to_string(), None),
        "host" => {
            return Err(Refusal::forbidden(
                "usher: jobs may not build on the host's network (networkmode host)".into(),
            ));
        }
        n if n == job.network => (n.to_string(), None),
        n if is_object_name(n) => (n.to_string(), Some(n.to_string())),
        n => {
            return Err(Refusal::forbidden(format!(
                "usher: jobs may not build on that network (networkmode {n})"
            )));
        }
    };
    let mut out = OutQuery::copied(q, &single, &multi);
    out.push("networkmode", &network);
    // Intermediate containers go even when the build fails: they carry no job label.
    out.push("rm", "1");
    out.push("forcerm", "1");
    Ok((out.encode(), to_check))
}
