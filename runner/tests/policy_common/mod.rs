//! What the docker policy tests share: the job, a way to ask the policy, the spellings
//! of a field name the engine reads as the same field, and the invariant every
//! forwarded request must hold — written here independently of the policy's own lists.

#![allow(dead_code)]

use serde_json::Value;
use usher_runner::docker_policy::{Decision, Forward, ForwardBody, JobIdentity, ObjectRef, decide};

pub const NETWORK: &str = "usher-abc123-job-7";

pub fn job() -> JobIdentity {
    JobIdentity {
        job_id: 7,
        instance: "abc123".into(),
        network: NETWORK.into(),
    }
}

/// The policy's decision; a body is given when the endpoint reads one.
pub fn ask(method: &str, path: &str, query: &str, body: Option<&[u8]>) -> Decision {
    decide(method, path, query, body, &job())
}

/// Spellings Go's decoder matches to the same struct field.
pub fn spellings(field: &str) -> Vec<String> {
    let toggled: String = field
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    let mut all = vec![field.to_string(), field.to_ascii_lowercase(), field.to_ascii_uppercase(), toggled];
    all.dedup();
    all
}

/// HostConfig fields a forwarded container create may carry.
pub const SAFE_HOST_FIELDS: &[&str] = &[
    "AutoRemove",
    "ConsoleSize",
    "CapDrop",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "GroupAdd",
    "ReadonlyRootfs",
    "ShmSize",
    "Tmpfs",
    "Init",
    "ContainerIDFile",
    "CpuShares",
    "Memory",
    "NanoCpus",
    "BlkioWeight",
    "CpuPeriod",
    "CpuQuota",
    "CpusetCpus",
    "CpusetMems",
    "MemoryReservation",
    "MemorySwap",
    "MemorySwappiness",
    "PidsLimit",
    "CpuCount",
    "CpuPercent",
    "IOMaximumIOps",
    "IOMaximumBandwidth",
    "Binds",
    "Mounts",
    "LogConfig",
    "NetworkMode",
    "RestartPolicy",
    "IpcMode",
    "CgroupnsMode",
    "Isolation",
    "Links",
    "OomScoreAdj",
    "Ulimits",
];

fn owns(f: &Forward, object: ObjectRef) -> bool {
    f.must_own.contains(&object)
}

/// Panics unless the forwarded request is one that cannot reach the host or another
/// job's objects without the plumbing's ownership checks.
pub fn assert_safe(f: &Forward, context: &str) {
    for bad in ["%2F", "%2f", "/../", "/./", "//", "%00"] {
        assert!(!f.path.contains(bad), "{context}: forwarded path {}", f.path);
    }
    assert!(!f.path.ends_with('/') && !f.path.ends_with("/.."), "{context}: {}", f.path);
    assert!(!f.query.contains(';'), "{context}: {}", f.query);
    let body: Value = match &f.body {
        ForwardBody::Json(bytes) => serde_json::from_slice(bytes).expect("the policy forwards JSON"),
        _ => return,
    };
    let labels_ok = |labels: &Value| labels["usher.job"] == "7" && labels["usher.runner"] == "abc123";
    let path = &f.path;
    if path.ends_with("/containers/create") {
        assert!(labels_ok(&body["Labels"]), "{context}: {body}");
        let host = body["HostConfig"].as_object().expect("a HostConfig");
        for key in host.keys() {
            assert!(
                SAFE_HOST_FIELDS.contains(&key.as_str()),
                "{context}: HostConfig.{key} forwarded: {body}"
            );
        }
        let network = host["NetworkMode"].as_str().unwrap();
        assert!(
            network == NETWORK || network == "none" || owns(f, ObjectRef::Network(network.into())),
            "{context}: network {network}"
        );
        for mode in ["IpcMode", "CgroupnsMode"] {
            let m = host.get(mode).and_then(Value::as_str).unwrap_or_default();
            assert!(m != "host" && !m.starts_with("container"), "{context}: {mode} {m}");
        }
        for bind in host["Binds"].as_array().unwrap() {
            let source = bind.as_str().unwrap().split(':').next().unwrap();
            assert!(source.chars().next().unwrap().is_ascii_alphanumeric(), "{context}: bind {bind}");
            assert!(owns(f, ObjectRef::Volume(source.into())), "{context}: bind {bind}");
            assert!(f.make_volumes.contains(&source.to_string()), "{context}: bind {bind}");
        }
        for m in host["Mounts"].as_array().unwrap() {
            let kind = m["Type"].as_str().unwrap();
            assert!(kind == "volume" || kind == "tmpfs", "{context}: mount {m}");
            assert!(
                m["VolumeOptions"].get("DriverConfig").is_none() && m.get("BindOptions").is_none(),
                "{context}: {m}"
            );
            if let Some(source) = m.get("Source").and_then(Value::as_str) {
                assert!(owns(f, ObjectRef::Volume(source.into())), "{context}: mount {m}");
            } else if kind == "volume" {
                assert!(labels_ok(&m["VolumeOptions"]["Labels"]), "{context}: {m}");
            }
        }
        let log = host["LogConfig"]["Type"].as_str().unwrap();
        assert!(["", "json-file", "local", "none"].contains(&log), "{context}: log {log}");
        for (name, _) in body["NetworkingConfig"]["EndpointsConfig"].as_object().unwrap() {
            assert!(
                name == NETWORK || name == "none" || owns(f, ObjectRef::Network(name.clone())),
                "{context}: {name}"
            );
        }
        assert!(f.creates, "{context}");
    } else if path.ends_with("/volumes/create") {
        assert_eq!(body["Driver"], "local", "{context}");
        assert!(body.get("DriverOpts").is_none() && labels_ok(&body["Labels"]), "{context}: {body}");
    } else if path.ends_with("/networks/create") {
        assert_eq!(body["Driver"], "bridge", "{context}");
        assert!(body.get("Options").is_none() && body.get("IPAM").is_none(), "{context}: {body}");
        assert!(labels_ok(&body["Labels"]), "{context}: {body}");
    } else if path.ends_with("/exec") {
        assert!(body.get("Privileged").is_none(), "{context}: {body}");
    }
}

pub enum Want {
    /// Status, and a word the message must contain (any case).
    Refused(u16, String),
    /// The canonical path, words the query must contain, the objects to check.
    Forwarded(String, Vec<String>, Vec<ObjectRef>),
}

pub struct Row {
    pub method: &'static str,
    pub path: String,
    pub query: String,
    pub body: Option<Vec<u8>>,
    pub want: Want,
}

pub fn row(method: &'static str, path: &str, query: &str, body: Option<String>, want: Want) -> Row {
    Row {
        method,
        path: path.to_string(),
        query: query.to_string(),
        body: body.map(String::into_bytes),
        want,
    }
}

pub fn refused(status: u16, word: &str) -> Want {
    Want::Refused(status, word.to_string())
}

pub fn forwarded(path: &str, query: &[&str], must_own: Vec<ObjectRef>) -> Want {
    Want::Forwarded(path.to_string(), query.iter().map(|q| q.to_string()).collect(), must_own)
}

pub fn c(id: &str) -> ObjectRef {
    ObjectRef::Container(id.into())
}

/// Checks every row; panics listing all that failed.
pub fn check(rows: &[Row]) -> usize {
    let mut failures = Vec::new();
    for r in rows {
        let context = format!(
            "{} {}?{} {}",
            r.method,
            r.path,
            r.query,
            String::from_utf8_lossy(r.body.as_deref().unwrap_or_default())
        );
        let decision = ask(r.method, &r.path, &r.query, r.body.as_deref());
        match (&r.want, &decision) {
            (Want::Refused(status, word), Decision::Refuse { status: got, message }) => {
                if got != status || !message.to_lowercase().contains(&word.to_lowercase()) || !message.starts_with("usher:") {
                    failures.push(format!("{context}\n  want {status} …{word}…, got {got} {message}"));
                }
            }
            (Want::Forwarded(path, query, must_own), Decision::Forward(f)) => {
                assert_safe(f, &context);
                let query_ok = query.iter().all(|q| f.query.contains(q.as_str()));
                if &f.path != path || !query_ok || &f.must_own != must_own {
                    failures.push(format!("{context}\n  want {path}?{query:?} {must_own:?}, got {f:?}"));
                }
                let body = match &f.body {
                    ForwardBody::Json(b) => Some(b.as_slice()),
                    _ => r.body.as_deref(),
                };
                if ask(f.method, &f.path, &f.query, body) != decision {
                    failures.push(format!("{context}\n  the forwarded request decides differently: {f:?}"));
                }
            }
            (_, got) => failures.push(format!("{context}\n  got {got:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    rows.len()
}
