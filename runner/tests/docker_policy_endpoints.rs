//! The job's Docker API policy, second table: which endpoints are forwarded (those the
//! docker CLI needs for a job's own containers, networks, volumes, execs, images and
//! builds) and which are refused; query strings read as Go's net/url reads them, with
//! the parameters that name another object or reach the host; the bodies the docker
//! CLI really sends (captured from docker 28), forwarded labelled and on the job's
//! network; list filters narrowed to the job's labels.

mod policy_common;

use policy_common::{NETWORK, Row, ask, c, check, forwarded, refused, row};
use serde_json::{Value, json};
use usher_runner::docker_policy::{Decision, ForwardBody, ObjectRef};

fn net(id: &str) -> ObjectRef {
    ObjectRef::Network(id.into())
}

#[test]
fn only_known_endpoints_are_forwarded() {
    let mut rows: Vec<Row> = Vec::new();
    let no: Vec<ObjectRef> = Vec::new();
    let pass = [
        ("HEAD", "/_ping", "", no.clone()),
        ("GET", "/_ping", "", no.clone()),
        ("GET", "/version", "", no.clone()),
        ("GET", "/info", "", no.clone()),
        ("GET", "/containers/web/json", "size=1", vec![c("web")]),
        ("GET", "/containers/web/logs", "stdout=1&stderr=1&follow=1&tail=all", vec![c("web")]),
        ("GET", "/containers/web/stats", "stream=0", vec![c("web")]),
        ("GET", "/containers/web/archive", "path=%2Fout", vec![c("web")]),
        ("HEAD", "/containers/web/archive", "path=%2Fout", vec![c("web")]),
        ("POST", "/containers/web/start", "", vec![c("web")]),
        ("POST", "/containers/web/stop", "t=0", vec![c("web")]),
        ("POST", "/containers/web/restart", "t=1&signal=TERM", vec![c("web")]),
        ("POST", "/containers/web/kill", "signal=KILL", vec![c("web")]),
        ("POST", "/containers/web/wait", "condition=next-exit", vec![c("web")]),
        ("POST", "/containers/web/attach", "stream=1&stdout=1&stderr=1", vec![c("web")]),
        ("POST", "/containers/web/resize", "h=24&w=80", vec![c("web")]),
        ("POST", "/containers/web/pause", "", vec![c("web")]),
        ("POST", "/containers/web/unpause", "", vec![c("web")]),
        ("POST", "/containers/web/rename", "name=web2", vec![c("web")]),
        ("DELETE", "/containers/web", "force=1&v=1", vec![c("web")]),
        ("GET", "/exec/e1/json", "", vec![ObjectRef::Exec("e1".into())]),
        ("POST", "/exec/e1/resize", "h=1&w=2", vec![ObjectRef::Exec("e1".into())]),
        ("GET", "/networks/n1", "verbose=true", vec![net("n1")]),
        ("DELETE", "/networks/n1", "", vec![net("n1")]),
        ("GET", "/volumes/v1", "", vec![ObjectRef::Volume("v1".into())]),
        ("DELETE", "/volumes/v1", "force=1", vec![ObjectRef::Volume("v1".into())]),
        ("GET", "/images/json", "all=1", no.clone()),
        ("POST", "/images/create", "fromImage=busybox&tag=1", no.clone()),
        ("GET", "/images/docker.io/library/busybox:1/json", "", no.clone()),
        ("GET", "/images/sha256:abc/history", "", no.clone()),
        ("POST", "/images/busybox:1/tag", "repo=mine&tag=2", no.clone()),
        ("POST", "/images/registry.example:5000/team/app:1/push", "tag=1", no.clone()),
    ];
    for (method, path, query, must_own) in pass {
        let words: Vec<&str> = query.split('&').filter(|w| !w.is_empty()).collect();
        rows.push(row(method, path, query, None, forwarded(path, &words, must_own.clone())));
        let versioned = format!("/v1.47{path}");
        rows.push(row(method, &versioned, query, None, forwarded(&versioned, &words, must_own)));
    }
    let refused_endpoints = [
        ("POST", "/containers/prune", "prune"),
        ("POST", "/volumes/prune", "prune"),
        ("POST", "/networks/prune", "prune"),
        ("POST", "/images/prune", "prune"),
        ("POST", "/build/prune", "prune"),
        ("POST", "/system/prune", "prune"),
        ("GET", "/system/df", "this part"),
        ("POST", "/swarm/init", "this part"),
        ("GET", "/plugins", "this part"),
        ("POST", "/plugins/pull", "this part"),
        ("GET", "/nodes", "this part"),
        ("GET", "/services", "this part"),
        ("GET", "/secrets", "this part"),
        ("GET", "/configs", "this part"),
        ("GET", "/tasks", "this part"),
        ("POST", "/session", "this part"),
        ("POST", "/grpc", "this part"),
        ("POST", "/images/load", "POST /images/load"),
        ("GET", "/images/get", "GET /images/get"),
        ("GET", "/images/busybox/get", "/get"),
        ("DELETE", "/images/busybox", "DELETE"),
        ("GET", "/images/search", "search"),
        ("POST", "/containers/web/update", "update"),
        ("GET", "/containers/web/top", "top"),
        ("GET", "/containers/web/export", "export"),
        ("GET", "/containers/web/changes", "changes"),
        ("GET", "/containers/web/attach/ws", "ws"),
        ("PUT", "/volumes/v1", "PUT"),
        ("GET", "/distribution/busybox/json", "distribution"),
        ("POST", "/build/cancel", "cancel"),
        ("OPTIONS", "/_ping", "OPTIONS"),
        ("PATCH", "/containers/web", "PATCH"),
        ("post", "/containers/web/stop", "post"),
        ("GET", "/containers/create", "GET"),
    ];
    for (method, path, word) in refused_endpoints {
        rows.push(row(method, path, "", None, refused(403, word)));
    }
    rows.push(row("GET", "/", "", None, refused(400, "empty segment")));
    eprintln!("{} rows", check(&rows));
}

#[test]
fn query_strings_are_read_as_go_reads_them_and_objects_they_name_are_checked() {
    let mut rows: Vec<Row> = Vec::new();
    let commit = |query: &str, want| row("POST", "/v1.47/commit", query, Some(String::new()), want);
    rows.push(commit(
        "container=other&repo=x",
        forwarded("/v1.47/commit", &["container=other"], vec![c("other")]),
    ));
    rows.push(commit(
        "container=mine&container=other",
        forwarded("/v1.47/commit", &["container=mine"], vec![c("mine")]),
    ));
    rows.push(commit(
        "%63ontainer=other",
        forwarded("/v1.47/commit", &["container=other"], vec![c("other")]),
    ));
    rows.push(commit("container=mine;container=other", refused(400, "separator")));
    rows.push(commit("container=mine%3Bx", refused(400, "container")));
    rows.push(commit("repo=x", refused(400, "container")));
    rows.push(commit("container=a%2Fb", refused(400, "container")));
    rows.push(commit("container=mine&bogus=1", refused(403, "bogus")));
    rows.push(commit("container=mine&x=%zz", refused(400, "escape")));
    let build = |query: &str, want| row("POST", "/build", query, None, want);
    let job_net = format!("networkmode={NETWORK}");
    rows.push(build("networkmode=host", refused(403, "host")));
    rows.push(build("%6eetworkmode=host", refused(403, "host")));
    rows.push(build("networkmode=host&networkmode=none", refused(403, "host")));
    rows.push(build("networkmode=container:other", refused(403, "container:other")));
    rows.push(build("networkmode=host+", refused(403, "networkmode")));
    rows.push(build(
        "networkmode=none&networkmode=host",
        forwarded("/build", &["networkmode=none", "rm=1", "forcerm=1"], vec![]),
    ));
    rows.push(build(
        "networkmode=default&t=a&t=b",
        forwarded("/build", &[&job_net, "t=a&t=b"], vec![]),
    ));
    rows.push(build("", forwarded("/build", &[&job_net, "rm=1", "forcerm=1"], vec![])));
    rows.push(build("rm=0&forcerm=0", forwarded("/build", &["rm=1", "forcerm=1"], vec![])));
    rows.push(build(
        "networkmode=mine",
        forwarded("/build", &["networkmode=mine"], vec![net("mine")]),
    ));
    rows.push(build(
        "networkmode=HOST",
        forwarded("/build", &["networkmode=HOST"], vec![net("HOST")]),
    ));
    rows.push(build("isolation=", forwarded("/build", &[&job_net], vec![])));
    for (query, word) in [
        ("isolation=hyperv", "isolation"),
        ("cgroupparent=%2F", "cgroupparent"),
        ("securityopt=seccomp%3Dunconfined", "securityopt"),
        ("securityopt=&securityopt=seccomp%3Dunconfined", "securityopt"),
        ("remote=http%3A%2F%2F127.0.0.1%3A2375%2F", "remote"),
        ("version=2", "BuildKit"),
        ("session=abc", "session"),
        ("buildid=abc", "buildid"),
        ("outputs=%5B%5D", "outputs"),
        ("ulimits=%5B%5D", "ulimits"),
        ("privileged=1", "privileged"),
    ] {
        rows.push(build(query, refused(403, word)));
    }
    let pull = |query: &str, want| row("POST", "/images/create", query, None, want);
    rows.push(pull("fromSrc=http%3A%2F%2F127.0.0.1%2Fx", refused(403, "fromSrc")));
    rows.push(pull("fromImage=busybox&fromSrc=-", refused(403, "fromSrc")));
    rows.push(pull("fromImage=&fromImage=busybox", refused(403, "fromImage")));
    rows.push(row(
        "POST",
        "/containers/web/start",
        "checkpoint-dir=%2F",
        None,
        refused(403, "checkpoint-dir"),
    ));
    rows.push(row("DELETE", "/containers/web", "link=1", None, refused(403, "link")));
    rows.push(row(
        "POST",
        "/containers/web/rename",
        "name=usher-abc123-job-8",
        None,
        refused(403, "usher-"),
    ));
    rows.push(row(
        "POST",
        "/containers/create",
        "name=%2Fusher-x",
        Some("{}".into()),
        refused(403, "usher-"),
    ));
    for path in ["/containers/json", "/networks", "/volumes", "/events"] {
        let ours = ["usher.job%3D7", "usher.runner%3Dabc123"];
        rows.push(row("GET", path, "", None, forwarded(path, &ours, vec![])));
        let given = "filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D&filters=%7B%7D";
        rows.push(row("GET", path, given, None, forwarded(path, &["a%3Db", ours[0], ours[1]], vec![])));
        rows.push(row("GET", path, "filters=%5B%5D", None, refused(400, "filters")));
        rows.push(row(
            "GET",
            path,
            "filters=%7B%22label%22%3A%22x%22%7D",
            None,
            refused(400, "filters"),
        ));
    }
    eprintln!("{} rows", check(&rows));
}

/// What docker 28.2.2 sends for `docker run -d -v vol:/data --mount type=volume,src=v2,dst=/m --tmpfs /t -e A=1 busybox true`.
const CLI_RUN: &str = r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["A=1"],"Cmd":["true"],"Image":"busybox","Volumes":{},"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{},"HostConfig":{"Binds":["vol:/data"],"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,"CapDrop":null,"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"Tmpfs":{"/t":""},"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":0,"Ulimits":[],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"Mounts":[{"Type":"volume","Source":"v2","Target":"/m"}],"MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{"default":{"IPAMConfig":null,"Links":null,"Aliases":null,"MacAddress":"","DriverOpts":null,"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}}}"#;

/// `docker network connect mynet abc`, `docker exec -d abc true`, `docker network create mynet`.
const CLI_CONNECT: &str = r#"{"Container":"abc","EndpointConfig":{"IPAMConfig":{},"Links":null,"Aliases":[],"MacAddress":"","DriverOpts":{},"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}"#;
const CLI_EXEC: &str = r#"{"User":"","Privileged":false,"Tty":false,"AttachStdin":false,"AttachStderr":false,"AttachStdout":false,"Detach":true,"DetachKeys":"","Env":null,"WorkingDir":"","Cmd":["true"]}"#;
const CLI_NETWORK: &str = r#"{"Driver":"bridge","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{},"Labels":{},"Name":"mynet"}"#;

fn forwarded_json(method: &str, path: &str, query: &str, body: &str) -> (Value, Vec<ObjectRef>, Vec<String>) {
    match ask(method, path, query, Some(body.as_bytes())) {
        Decision::Forward(f) => match f.body {
            ForwardBody::Json(b) => (serde_json::from_slice(&b).unwrap(), f.must_own, f.make_volumes),
            other => panic!("{other:?}"),
        },
        other => panic!("{path}: {other:?}"),
    }
}

#[test]
fn what_the_docker_cli_sends_is_forwarded_labelled_and_on_the_job_network() {
    let (body, must_own, make) = forwarded_json("POST", "/v1.47/containers/create", "name=x", CLI_RUN);
    assert_eq!(body["Labels"], json!({"usher.job": "7", "usher.runner": "abc123"}));
    assert_eq!(body["HostConfig"]["NetworkMode"], NETWORK);
    assert_eq!(body["HostConfig"]["Binds"], json!(["vol:/data"]));
    assert_eq!(body["HostConfig"]["Tmpfs"], json!({"/t": ""}));
    assert_eq!(body["HostConfig"]["MemorySwappiness"], -1);
    assert!(body["HostConfig"].get("Privileged").is_none() && body["HostConfig"].get("MaskedPaths").is_none());
    assert_eq!(body["NetworkingConfig"]["EndpointsConfig"][NETWORK]["IPAMConfig"], json!({}));
    assert_eq!(body["Env"], json!(["A=1"]));
    assert_eq!(make, ["vol", "v2"]);
    assert_eq!(must_own, [ObjectRef::Volume("vol".into()), ObjectRef::Volume("v2".into())]);
    let mounts = &body["HostConfig"]["Mounts"][0];
    assert_eq!((mounts["Type"].clone(), mounts["Source"].clone()), (json!("volume"), json!("v2")));
    // The anonymous volume of a mount gets the labels.
    let anonymous = r#"{"Image":"b","HostConfig":{"Mounts":[{"Type":"volume","Target":"/m"}],"NetworkMode":"mine"}}"#;
    let (body, must_own, _) = forwarded_json("POST", "/containers/create", "", anonymous);
    assert_eq!(body["HostConfig"]["Mounts"][0]["VolumeOptions"]["Labels"]["usher.job"], "7");
    assert_eq!(must_own, [net("mine")]);
    let (body, must_own, _) = forwarded_json("POST", "/v1.47/networks/mynet/connect", "", CLI_CONNECT);
    assert_eq!(must_own, [net("mynet"), c("abc")]);
    assert!(body["EndpointConfig"].get("DriverOpts").is_none(), "{body}");
    let (body, must_own, _) = forwarded_json("POST", "/v1.47/containers/abc/exec", "", CLI_EXEC);
    assert_eq!(must_own, [c("abc")]);
    assert_eq!(
        body,
        json!({"User": "", "Tty": false, "AttachStdin": false, "AttachStderr": false, "AttachStdout": false, "Detach": true, "DetachKeys": "", "Env": null, "WorkingDir": "", "Cmd": ["true"]})
    );
    let (body, _, _) = forwarded_json("POST", "/v1.47/networks/create", "", CLI_NETWORK);
    assert_eq!(
        body,
        json!({"Name": "mynet", "Driver": "bridge", "Internal": false, "Attachable": false, "Labels": {"usher.job": "7", "usher.runner": "abc123"}})
    );
    let (body, _, _) = forwarded_json(
        "POST",
        "/v1.47/volumes/create",
        "",
        r#"{"Driver":"local","DriverOpts":{},"Labels":{"mine":"1"},"Name":"v1"}"#,
    );
    assert_eq!(
        body,
        json!({"Name": "v1", "Driver": "local", "Labels": {"mine": "1", "usher.job": "7", "usher.runner": "abc123"}})
    );
    // The forwarded bytes are the canonical ones, never the client's.
    let (body, _, _) = forwarded_json("POST", "/containers/create", "", r#"{"image":"b","hostconfig":{"memory":1024}}"#);
    assert_eq!(
        (body["Image"].clone(), body["HostConfig"]["Memory"].clone()),
        (json!("b"), json!(1024))
    );
    assert!(body.get("image").is_none() && body.get("hostconfig").is_none());
}
