//! The job's Docker API policy against a table of requests, generated: every field that
//! reaches the host × the spellings the engine's decoder reads as that field × where it
//! nests; every path-encoding trick × every kind of object; version prefixes; repeated
//! keys; query strings as Go splits them; the endpoints the docker CLI uses. Each row
//! says what must be decided, and every request that is forwarded must also be safe
//! (`policy_common::assert_safe`) and decide the same again (the canonical form is a
//! fixed point). No Docker engine needed.

mod policy_common;

use policy_common::{c, check, forwarded, refused, row, spellings};
use serde_json::{Value, json};
use usher_runner::docker_policy::ObjectRef;

/// HostConfig fields that reach the host, each with a value that would.
fn host_dangers() -> Vec<(&'static str, Value)> {
    vec![
        ("Privileged", json!(true)),
        ("CapAdd", json!(["SYS_ADMIN"])),
        (
            "Devices",
            json!([{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}]),
        ),
        ("DeviceRequests", json!([{"Driver": "nvidia", "Count": -1}])),
        ("DeviceCgroupRules", json!(["a *:* rwm"])),
        ("SecurityOpt", json!(["apparmor=unconfined"])),
        ("SecurityOpt", json!(["seccomp=unconfined"])),
        ("SecurityOpt", json!(["label=disable"])),
        ("PidMode", json!("host")),
        ("PidMode", json!("container:other")),
        ("IpcMode", json!("host")),
        ("IpcMode", json!("container:other")),
        ("UTSMode", json!("host")),
        ("UsernsMode", json!("host")),
        ("CgroupnsMode", json!("host")),
        ("Cgroup", json!("container:other")),
        ("NetworkMode", json!("host")),
        ("NetworkMode", json!("container:other")),
        ("CgroupParent", json!("/")),
        ("Sysctls", json!({"kernel.core_pattern": "|/tmp/x"})),
        ("VolumesFrom", json!(["usher-abc123-job-8"])),
        ("VolumeDriver", json!("sshfs")),
        ("Runtime", json!("io.containerd.runc.v2")),
        ("Isolation", json!("hyperv")),
        ("OomKillDisable", json!(true)),
        ("OomScoreAdj", json!(-1000)),
        ("PortBindings", json!({"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "2222"}]})),
        ("PublishAllPorts", json!(true)),
        ("Binds", json!(["/:/host"])),
        ("Binds", json!(["/etc:/etc:ro"])),
        ("Binds", json!(["./x:/y"])),
        ("Binds", json!(["/var/run/docker.sock:/var/run/docker.sock"])),
        ("Binds", json!(["vol:/x:rshared"])),
        ("Mounts", json!([{"Type": "bind", "Source": "/", "Target": "/host"}])),
        ("Mounts", json!([{"Type": "npipe", "Source": "/", "Target": "/host"}])),
        ("Mounts", json!([{"Type": "cluster", "Source": "x", "Target": "/host"}])),
        ("Mounts", json!([{"Type": "image", "Source": "busybox", "Target": "/host"}])),
        ("Mounts", json!([{"Type": "volume", "Source": "/etc", "Target": "/host"}])),
        ("Mounts", json!([{"Source": "/", "Target": "/host"}])),
        ("Annotations", json!({"run.oci.keep_original_groups": "1"})),
        ("MaskedPaths", json!(["/proc/nothing"])),
        ("ReadonlyPaths", json!(["/proc/nothing"])),
        ("StorageOpt", json!({"size": "1T"})),
        ("BlkioDeviceReadBps", json!([{"Path": "/dev/sda", "Rate": 1}])),
        (
            "LogConfig",
            json!({"Type": "syslog", "Config": {"syslog-address": "unix:///run/systemd/journal/syslog"}}),
        ),
        ("LogConfig", json!({"Type": "json-file", "Config": {"labels-regex": "."}})),
        ("Ulimits", json!([{"Name": "memlock", "Soft": -1, "Hard": -1}])),
        ("Ulimits", json!([{"Name": "nofile", "Soft": -1, "Hard": -1}])),
        ("CpuRealtimeRuntime", json!(950000)),
        ("Capabilities", json!(["ALL"])),
        ("KernelMemory", json!(1)),
    ]
}

#[test]
fn host_config_fields_that_reach_the_host_are_refused_in_every_spelling() {
    let mut rows = Vec::new();
    for (field, value) in host_dangers() {
        for spelled in spellings(field) {
            for (i, host) in ["HostConfig", "hostconfig", "HOSTCONFIG", "hostConfig"].iter().enumerate() {
                let body = json!({ "Image": "busybox", (*host): { spelled.as_str(): value.clone() } });
                let path = if i % 2 == 0 {
                    "/v1.47/containers/create"
                } else {
                    "/containers/create"
                };
                // A bind of a host path is "refused" by its own message, naming Binds.
                rows.push(row("POST", path, "name=x", Some(body.to_string()), refused(403, field)));
            }
        }
    }
    // Nested: a mount's fields in any spelling.
    let bind = |t: &str| json!({ t: "bind", "Source": "/", "Target": "/host" });
    let driver = |o: &str, d: &str| json!({"Type": "volume", "Source": "v", "Target": "/x", o: { d: {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}});
    for t in spellings("Type") {
        rows.push(row(
            "POST",
            "/containers/create",
            "",
            Some(json!({"HostConfig": {"Mounts": [bind(&t)]}}).to_string()),
            refused(403, "Mounts"),
        ));
    }
    for o in spellings("VolumeOptions") {
        for d in spellings("DriverConfig") {
            let body = json!({"HostConfig": {"mounts": [driver(&o, &d)]}});
            rows.push(row(
                "POST",
                "/containers/create",
                "",
                Some(body.to_string()),
                refused(403, "DriverConfig"),
            ));
        }
    }
    let mounts = [
        (
            json!({"Type": "volume", "Target": "/x", "BindOptions": {"Propagation": "rshared"}}),
            403,
            "BindOptions",
        ),
        (
            json!({"Type": "volume", "Source": "v", "Target": "/x", "VolumeOptions": {"Subpath": "../.."}}),
            403,
            "Subpath",
        ),
        (json!({"Type": "tmpfs", "Source": "/etc", "Target": "/x"}), 400, "tmpfs"),
        (
            json!({"Type": "volume", "Source": "usher-abc123-job-8", "Target": "/x"}),
            403,
            "usher-",
        ),
    ];
    for (m, status, word) in mounts {
        rows.push(row(
            "POST",
            "/containers/create",
            "",
            Some(json!({"HostConfig": {"Mounts": [m]}}).to_string()),
            refused(status, word),
        ));
    }
    // Unicode letters Go folds to ASCII (ſ → s, K → k) are not fields the policy knows.
    let body = r#"{"HostConfig":{"ſecurityOpt":["seccomp=unconfined"]}}"#;
    rows.push(row(
        "POST",
        "/containers/create",
        "",
        Some(body.into()),
        refused(403, "ſecurityOpt"),
    ));
    // Escapes in keys are decoded before the key is matched, by the engine and the policy.
    let escaped = r#"{"HostConfig":{"\u0050rivileged":true}}"#;
    rows.push(row(
        "POST",
        "/containers/create",
        "",
        Some(escaped.into()),
        refused(403, "Privileged"),
    ));
    let endpoints = json!({"NetworkingConfig": {"EndpointsConfig": {"host": {}}}});
    rows.push(row(
        "POST",
        "/containers/create",
        "",
        Some(endpoints.to_string()),
        refused(403, "host"),
    ));
    let opts = json!({"NetworkingConfig": {"EndpointsConfig": {"default": {"DriverOpts": {"com.docker.network.endpoint.sysctls": "x"}}}}});
    rows.push(row(
        "POST",
        "/containers/create",
        "",
        Some(opts.to_string()),
        refused(403, "DriverOpts"),
    ));
    rows.push(row(
        "POST",
        "/containers/create",
        "name=usher-abc123-job-8",
        Some("{}".into()),
        refused(403, "usher-"),
    ));
    let n = check(&rows);
    eprintln!("{n} rows");
    assert!(n > 700, "{n}");
}

#[test]
fn volume_network_and_exec_bodies_are_refused_what_reaches_the_host_in_every_spelling() {
    let mut rows = Vec::new();
    let options = [
        json!({"type": "none", "o": "bind", "device": "/"}),
        json!({"device": "/etc"}),
        json!({"o": "bind"}),
    ];
    for spelled in spellings("DriverOpts") {
        for o in &options {
            let body = json!({"Name": "hostroot", "Driver": "local", spelled.as_str(): o});
            rows.push(row(
                "POST",
                "/v1.47/volumes/create",
                "",
                Some(body.to_string()),
                refused(403, "DriverOpts"),
            ));
        }
    }
    for spelled in spellings("Driver") {
        for driver in ["nfs", "LOCAL", "vieux/sshfs"] {
            let body = json!({"Name": "v", spelled.as_str(): driver});
            rows.push(row("POST", "/volumes/create", "", Some(body.to_string()), refused(403, "Driver")));
        }
    }
    let cluster = json!({"Name": "v", "ClusterVolumeSpec": {"Group": "x"}});
    rows.push(row(
        "POST",
        "/volumes/create",
        "",
        Some(cluster.to_string()),
        refused(403, "ClusterVolumeSpec"),
    ));
    rows.push(row(
        "POST",
        "/volumes/create",
        "",
        Some(json!({"Name": "usher-x"}).to_string()),
        refused(403, "usher-"),
    ));
    for spelled in spellings("Privileged") {
        for value in [json!(true), json!(1), json!("true")] {
            let body = json!({"Cmd": ["sh"], spelled.as_str(): value});
            for path in ["/containers/web/exec", "/v1.47/containers/web/exec"] {
                rows.push(row("POST", path, "", Some(body.to_string()), refused(403, "Privileged")));
            }
        }
    }
    for spelled in spellings("Options") {
        let body = json!({"Name": "n", spelled.as_str(): {"com.docker.network.bridge.name": "eth0"}});
        rows.push(row("POST", "/networks/create", "", Some(body.to_string()), refused(403, "Options")));
    }
    for driver in ["macvlan", "ipvlan", "host", "overlay"] {
        let body = json!({"Name": "n", "Driver": driver});
        rows.push(row("POST", "/networks/create", "", Some(body.to_string()), refused(403, driver)));
    }
    let networks = [
        (json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.0/8"}]}}), "IPAM.Config"),
        (json!({"Name": "n", "ingress": true}), "Ingress"),
        (json!({"Name": "n", "ConfigFrom": {"Network": "x"}}), "ConfigFrom"),
        (json!({"Name": "usher-abc123-job-8"}), "usher-"),
    ];
    for (body, word) in networks {
        rows.push(row("POST", "/networks/create", "", Some(body.to_string()), refused(403, word)));
    }
    let connect = json!({"Container": "web", "EndpointConfig": {"DriverOpts": {"x": "y"}}});
    rows.push(row(
        "POST",
        "/networks/n/connect",
        "",
        Some(connect.to_string()),
        refused(403, "DriverOpts"),
    ));
    eprintln!("{} rows", check(&rows));
}

#[test]
fn a_key_given_twice_in_any_case_is_refused() {
    let mut rows = Vec::new();
    let dangers = [
        ("Privileged", "false", "true"),
        ("CapAdd", "null", r#"["ALL"]"#),
        ("Binds", "[]", r#"["/:/host"]"#),
        ("NetworkMode", r#""default""#, r#""host""#),
        ("PidMode", r#""""#, r#""host""#),
        ("SecurityOpt", "null", r#"["seccomp=unconfined"]"#),
        ("Devices", "[]", r#"[{"PathOnHost":"/dev/mem"}]"#),
        ("Mounts", "[]", r#"[{"Type":"bind","Source":"/","Target":"/h"}]"#),
    ];
    for (field, empty, danger) in dangers {
        for other in spellings(field) {
            let bodies = [
                format!(r#"{{"Image":"b","HostConfig":{{"{field}":{empty},"{other}":{danger}}}}}"#),
                format!(r#"{{"Image":"b","HostConfig":{{"{other}":{danger},"{field}":{empty}}}}}"#),
                format!(r#"{{"Image":"b","HostConfig":{{}},"{}":{{"{other}":{danger}}}}}"#, "hostConfig"),
                format!(r#"{{"Image":"b","HostConfig":{{"{field}":{empty}}},"HostConfig":{{"{other}":{danger}}}}}"#),
            ];
            for body in bodies {
                rows.push(row("POST", "/containers/create", "", Some(body), refused(400, "twice")));
            }
        }
    }
    let twice = [
        (
            "/containers/create",
            r#"{"HostConfig":{"Mounts":[{"Type":"volume","type":"bind","Source":"/","Target":"/h"}]}}"#,
        ),
        ("/containers/create", r#"{"Labels":{"a":"1","a":"2"}}"#),
        (
            "/containers/create",
            r#"{"NetworkingConfig":{"EndpointsConfig":{"default":{},"bridge":{}}}}"#,
        ),
        ("/volumes/create", r#"{"Name":"v","DriverOpts":{},"driverOpts":{"device":"/"}}"#),
        ("/volumes/create", r#"{"Name":"v","Driver":"local","driver":"nfs"}"#),
        ("/containers/web/exec", r#"{"Cmd":["true"],"Privileged":false,"privileged":true}"#),
        ("/networks/create", r#"{"Name":"n","Options":{},"options":{"a":"b"}}"#),
    ];
    for (path, body) in twice {
        rows.push(row("POST", path, "", Some(body.into()), refused(400, "twice")));
    }
    eprintln!("{} rows", check(&rows));
}

#[test]
fn paths_are_decoded_before_they_are_matched_and_tricks_are_refused() {
    let mut rows = Vec::new();
    let targets = [
        ("GET", "containers/{}/json", "container"),
        ("GET", "containers/{}/logs", "container"),
        ("POST", "containers/{}/stop", "container"),
        ("POST", "containers/{}/kill", "container"),
        ("DELETE", "containers/{}", "container"),
        ("GET", "networks/{}", "network"),
        ("DELETE", "networks/{}", "network"),
        ("GET", "volumes/{}", "volume"),
        ("DELETE", "volumes/{}", "volume"),
        ("GET", "exec/{}/json", "exec"),
        ("POST", "exec/{}/resize", "exec"),
    ];
    let own = |kind: &str, id: &str| match kind {
        "container" => c(id),
        "network" => ObjectRef::Network(id.into()),
        "volume" => ObjectRef::Volume(id.into()),
        _ => ObjectRef::Exec(id.into()),
    };
    let tricks = [
        "other%2Fjson",
        "other%2fjson",
        "..",
        "%2e%2e",
        ".",
        "%2E",
        "",
        "x%00",
        "x%zz",
        "x%ff",
        "x%5Cy",
        "x%0Ay",
    ];
    for (method, template, kind) in targets {
        for trick in tricks {
            rows.push(row(
                method,
                &format!("/{}", template.replace("{}", trick)),
                "",
                None,
                refused(400, ""),
            ));
        }
        let plain = format!("/{}", template.replace("{}", "abc"));
        rows.push(row(method, &format!("{plain}/"), "", None, refused(400, "empty segment")));
        rows.push(row(method, &format!("/{plain}"), "", None, refused(400, "empty segment")));
        for version in ["v1.23", "v1.045", "v2.0", "v1", "v1.45.1", "v.", "v1..45"] {
            rows.push(row(method, &format!("/{version}{plain}"), "", None, refused(400, "version")));
        }
        for unknown in ["V1.45", "v1.47/v1.47", "api"] {
            rows.push(row(method, &format!("/{unknown}{plain}"), "", None, refused(403, "")));
        }
        let want = || forwarded(&format!("/v1.47{plain}"), &[], vec![own(kind, "abc")]);
        rows.push(row(method, &format!("/v1.47{plain}"), "", None, want()));
        rows.push(row(method, &format!("/%761.47{plain}"), "", None, want()));
        rows.push(row(
            method,
            &format!("/v1.47/{}", template.replace("{}", "%61bc")),
            "",
            None,
            want(),
        ));
        rows.push(row(method, &plain, "", None, forwarded(&plain, &[], vec![own(kind, "abc")])));
    }
    let privileged = json!({"Image": "busybox", "HostConfig": {"Privileged": true, "Binds": ["/:/host"]}}).to_string();
    for path in [
        "/containers%2Fcreate",
        "/containers%2fcreate",
        "/v1.47/containers%2Fcreate",
        "/containers/create/",
        "/containers/./create",
        "/containers/%2E/create",
        "/containers/x/../create",
        "//containers/create",
        "/networks%2Fcreate",
        "/volumes%2Fcreate",
    ] {
        rows.push(row("POST", path, "", Some(privileged.clone()), refused(400, "malformed")));
    }
    eprintln!("{} rows", check(&rows));
}
