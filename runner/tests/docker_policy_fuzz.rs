//! The job's Docker API policy under random input: random bytes as bodies, random JSON
//! built from the field names that matter (in random case, nested at random, with
//! values that reach the host), random paths and query strings built from encoding
//! tricks. The policy must never panic, and whatever it forwards must be safe
//! (`policy_common::assert_safe`) and be its own canonical form.

mod policy_common;

use policy_common::{ask, assert_safe};
use serde_json::{Map, Value, json};
use usher_runner::docker_policy::{Decision, ForwardBody};

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

const KEYS: &[&str] = &[
    "Image",
    "Cmd",
    "Labels",
    "HostConfig",
    "NetworkingConfig",
    "EndpointsConfig",
    "default",
    "bridge",
    "host",
    "Privileged",
    "CapAdd",
    "Devices",
    "SecurityOpt",
    "PidMode",
    "IpcMode",
    "UTSMode",
    "UsernsMode",
    "CgroupnsMode",
    "NetworkMode",
    "CgroupParent",
    "Sysctls",
    "VolumesFrom",
    "Runtime",
    "Binds",
    "Mounts",
    "Type",
    "Source",
    "Target",
    "VolumeOptions",
    "DriverConfig",
    "Options",
    "DriverOpts",
    "Driver",
    "Name",
    "Subpath",
    "BindOptions",
    "TmpfsOptions",
    "LogConfig",
    "Config",
    "Ulimits",
    "Links",
    "PortBindings",
    "OomKillDisable",
    "MaskedPaths",
    "ReadonlyPaths",
    "Memory",
    "Tmpfs",
    "IPAM",
    "Container",
    "EndpointConfig",
    "ſecurityOpt",
    "Kapadd",
    "usher.job",
    "Healthcheck",
    "RestartPolicy",
    "Annotations",
    "Cgroup",
];
const STRINGS: &[&str] = &[
    "host",
    "none",
    "default",
    "bridge",
    "container:x",
    "/",
    "/etc:/etc",
    "vol:/data",
    "/:/host",
    "bind",
    "volume",
    "tmpfs",
    "npipe",
    "local",
    "nfs",
    "device=/",
    "o=bind",
    "private",
    "usher-abc123-job-8",
    "mine",
    "seccomp=unconfined",
    "syslog",
    "",
    "x",
    "../..",
    "nofile",
    "memlock",
];

fn spelled(rng: &mut Rng, key: &str) -> String {
    key.chars()
        .map(|c| {
            if rng.below(3) == 0 {
                c.to_ascii_uppercase()
            } else if rng.below(3) == 0 {
                c.to_ascii_lowercase()
            } else {
                c
            }
        })
        .collect()
}

fn value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 4 } else { 7 }) {
        0 => json!(rng.below(2) == 0),
        1 => json!(rng.below(5) as i64 - 2),
        2 | 3 => json!(rng.pick(STRINGS)),
        4 => Value::Array((0..rng.below(3)).map(|_| value(rng, depth + 1)).collect()),
        _ => object(rng, depth + 1),
    }
}

fn object(rng: &mut Rng, depth: usize) -> Value {
    let mut map = Map::new();
    for _ in 0..rng.below(6) {
        let key = *rng.pick(KEYS);
        let key = spelled(rng, key);
        map.insert(key, value(rng, depth));
    }
    Value::Object(map)
}

const JSON_ENDPOINTS: &[&str] = &[
    "/containers/create",
    "/v1.47/containers/create",
    "/volumes/create",
    "/networks/create",
    "/containers/web/exec",
    "/exec/e1/start",
    "/networks/n1/connect",
    "/networks/n1/disconnect",
    "/commit",
    "/auth",
];

fn check_forward(decision: &Decision, context: &str, body: Option<&[u8]>) {
    if let Decision::Forward(f) = decision {
        assert_safe(f, context);
        let again = match &f.body {
            ForwardBody::Json(b) => ask(f.method, &f.path, &f.query, Some(b)),
            _ => ask(f.method, &f.path, &f.query, body),
        };
        assert_eq!(&again, decision, "{context}: not a fixed point");
    }
}

#[test]
fn random_bodies_never_panic_and_never_forward_what_reaches_the_host() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let (mut forwarded, mut total) = (0, 0);
    for round in 0..6000 {
        let path = *rng.pick(JSON_ENDPOINTS);
        let body: Vec<u8> = match round % 3 {
            0 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
            1 => {
                // Random JSON, sometimes wrapped the way a create request nests it.
                let inner = object(&mut rng, 0);
                let wrapped = match rng.below(3) {
                    0 => json!({ spelled(&mut rng, "HostConfig"): inner }),
                    1 => json!({ "Image": "b", "HostConfig": { spelled(&mut rng, "Mounts"): [inner] } }),
                    _ => inner,
                };
                wrapped.to_string().into_bytes()
            }
            _ => {
                // Valid JSON text cut or spliced at random.
                let mut text = object(&mut rng, 0).to_string().into_bytes();
                let cut = rng.below(text.len() + 1);
                text.truncate(cut);
                text.extend_from_slice(br#","privileged":true}"#);
                text
            }
        };
        let decision = ask("POST", path, "", Some(&body));
        total += 1;
        forwarded += matches!(decision, Decision::Forward(_)) as usize;
        check_forward(&decision, &format!("POST {path} {}", String::from_utf8_lossy(&body)), Some(&body));
    }
    eprintln!("{total} random bodies, {forwarded} forwarded (each checked safe)");
    assert!(forwarded > 100, "the generator reaches forwarded requests: {forwarded}");
}

#[test]
fn random_paths_and_queries_never_panic_and_forward_only_canonical_requests() {
    let segments = [
        "containers",
        "create",
        "json",
        "networks",
        "volumes",
        "exec",
        "images",
        "build",
        "commit",
        "v1.47",
        "v1.23",
        "%2F",
        "%2f",
        "..",
        "%2e%2e",
        ".",
        "",
        "web",
        "%77eb",
        "x%00",
        "%zz",
        "%ff",
        "start",
        "attach",
        "logs",
        "_ping",
        "v1.47%2Fcontainers",
        "usher-abc123-job-7",
        "busybox:1",
        "tag",
        "push",
        "prune",
        "swarm",
        "?",
        "%3F",
        "#",
        "%25",
        ";",
    ];
    let query_parts = [
        "container=web",
        "container=other",
        "networkmode=host",
        "networkmode=none",
        "name=x",
        "name=usher-x",
        "filters=%7B%7D",
        "fromImage=busybox",
        "fromSrc=-",
        "t=a",
        ";",
        "%zz",
        "+",
        "=",
        "&",
        "remote=x",
        "version=2",
        "force=1",
        "a=%00",
    ];
    let templates = [
        "/containers/{}/json",
        "/containers/{}/start",
        "/containers/{}",
        "/networks/{}",
        "/volumes/{}",
        "/exec/{}/json",
        "/images/{}/json",
        "/images/{}/tag",
        "/{}/create",
        "/containers/{}/attach",
        "/{}",
        "/build",
        "/commit",
        "/containers/json",
    ];
    let methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"];
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut forwarded = 0;
    for _ in 0..20000 {
        let path: String = if rng.below(2) == 0 {
            (0..1 + rng.below(5)).map(|_| format!("/{}", rng.pick(&segments))).collect()
        } else {
            // A real endpoint with a random object part and version prefix.
            let template = *rng.pick(&templates);
            let prefix = *rng.pick(&["", "/v1.47", "/v1.23", "/%761.47", "//v1.47"]);
            let object = *rng.pick(&segments);
            format!("{prefix}{}", template.replace("{}", object))
        };
        let query: Vec<&str> = (0..rng.below(4)).map(|_| *rng.pick(&query_parts)).collect();
        let query = query.join("&");
        let method = *rng.pick(&methods);
        let decision = ask(method, &path, &query, Some(b"{}"));
        if let Decision::Forward(f) = &decision {
            forwarded += 1;
            assert!(!f.path.starts_with("/v1.23/"), "{path}");
            assert!(
                !f.query.contains("networkmode=host") && !f.query.contains("fromSrc") && !f.query.contains("remote"),
                "{f:?}"
            );
        }
        check_forward(&decision, &format!("{method} {path}?{query}"), Some(b"{}"));
    }
    eprintln!("20000 random paths, {forwarded} forwarded (each checked safe and canonical)");
}
