//! A container create request rebuilt from what is known to stay inside the container:
//! the container's own settings pass, `HostConfig` keeps only an allow-list of fields
//! (resource limits, tmpfs, DNS, named volumes, the job's networks, …), each checked,
//! and every other field that is set is refused with a message naming it. The job's
//! labels are added, and a container without a network joins the job's.

use serde_json::{Map, Value, json};

use super::json::{Fields, J, labels};
use super::{JobIdentity, ObjectRef, Refusal, is_object_name, may_name};

/// What the forwarded request is, and what the plumbing must check or make first.
pub(crate) struct Create {
    pub body: Vec<u8>,
    pub must_own: Vec<ObjectRef>,
    pub make_volumes: Vec<String>,
}

/// `Config` fields that only shape the container's own process.
pub(crate) const CONFIG_PASS: &str = concat!(
    "Hostname Domainname User AttachStdin AttachStdout AttachStderr ExposedPorts Tty OpenStdin StdinOnce ",
    "Env Cmd ArgsEscaped Image Volumes WorkingDir Entrypoint NetworkDisabled MacAddress OnBuild ",
    "StopSignal StopTimeout Shell",
);

/// `HostConfig` fields passed as they are: limits and settings inside the container.
const HOST_PASS: &str = concat!(
    "AutoRemove ConsoleSize CapDrop Dns DnsOptions DnsSearch ExtraHosts GroupAdd ReadonlyRootfs ShmSize ",
    "Tmpfs Init ContainerIDFile CpuShares Memory NanoCpus BlkioWeight CpuPeriod CpuQuota CpusetCpus ",
    "CpusetMems MemoryReservation MemorySwap MemorySwappiness PidsLimit CpuCount CpuPercent IOMaximumIOps ",
    "IOMaximumBandwidth",
);

/// `HostConfig` fields allowed with some values only (checked below).
const HOST_CHECKED: &str = concat!(
    "Binds Mounts LogConfig NetworkMode RestartPolicy IpcMode CgroupnsMode Isolation Links OomScoreAdj ",
    "Ulimits",
);

/// `HostConfig` fields refused whenever they are set, and why.
pub(crate) const HOST_REFUSED: &[(&str, &str)] = &[
    ("Privileged", "privileged containers"),
    ("CapAdd", "containers with added capabilities"),
    ("Devices", "containers with host devices"),
    ("DeviceRequests", "containers with host devices"),
    ("DeviceCgroupRules", "containers with host devices"),
    ("BlkioWeightDevice", "containers naming host devices"),
    ("BlkioDeviceReadBps", "containers naming host devices"),
    ("BlkioDeviceWriteBps", "containers naming host devices"),
    ("BlkioDeviceReadIOps", "containers naming host devices"),
    ("BlkioDeviceWriteIOps", "containers naming host devices"),
    ("SecurityOpt", "containers with security options"),
    ("PidMode", "containers sharing a namespace"),
    ("UTSMode", "containers sharing a namespace"),
    ("UsernsMode", "containers sharing a namespace"),
    ("Cgroup", "containers sharing a namespace"),
    ("CgroupParent", "containers in another cgroup"),
    ("Sysctls", "containers with sysctls"),
    ("VolumesFrom", "containers with --volumes-from"),
    ("VolumeDriver", "volumes of a volume driver"),
    ("Runtime", "containers of another runtime"),
    ("OomKillDisable", "containers the OOM killer spares"),
    (
        "PortBindings",
        "containers publishing ports on the host (reach them by name on the job's network)",
    ),
    (
        "PublishAllPorts",
        "containers publishing ports on the host (reach them by name on the job's network)",
    ),
    ("StorageOpt", "containers with storage options"),
    ("Annotations", "containers with runtime annotations"),
    ("MaskedPaths", "containers with unmasked /proc paths"),
    ("ReadonlyPaths", "containers with unmasked /proc paths"),
    ("CpuRealtimePeriod", "containers with real-time scheduling"),
    ("CpuRealtimeRuntime", "containers with real-time scheduling"),
];

/// The field names in one of the lists above.
pub(crate) fn words(list: &'static str) -> Vec<&'static str> {
    list.split_whitespace().collect()
}

fn forbid(what: &str, at: &str) -> Refusal {
    Refusal::forbidden(format!("usher: jobs may not create {what} ({at})"))
}

fn unknown(at: &str) -> String {
    format!("usher: jobs may not set {at} (not among the fields the job's Docker API allows)")
}

/// Builds the create request to forward (see the module comment).
pub(crate) fn create(body: &J, job: &JobIdentity) -> Result<Create, Refusal> {
    let pass = words(CONFIG_PASS);
    let top_known = [&pass[..], &["Healthcheck", "Labels", "HostConfig", "NetworkingConfig"]].concat();
    let top = Fields::of(body, "", &top_known, unknown)?;
    let mut made = Create {
        body: Vec::new(),
        must_own: Vec::new(),
        make_volumes: Vec::new(),
    };
    let mut out = Map::new();
    top.copy(&pass, &mut out);
    if let Some(check) = top.get("Healthcheck") {
        out.insert("Healthcheck".into(), healthcheck(check)?);
    }
    out.insert("Labels".into(), labels(top.or_null("Labels"), "Labels", &job.labels())?);
    let (host, network) = host_config(top.or_null("HostConfig"), job, &mut made)?;
    out.insert("HostConfig".into(), host);
    let networking = Fields::of(top.or_null("NetworkingConfig"), "NetworkingConfig", &["EndpointsConfig"], unknown)?;
    let endpoints = networking.or_null("EndpointsConfig");
    let mut rebuilt = Map::new();
    if let J::Obj(entries) = endpoints {
        for (name, settings) in entries {
            let name = match name.as_str() {
                "" | "default" | "bridge" => job.network.clone(),
                n => n.to_string(),
            };
            if rebuilt.contains_key(&name) {
                return Err(Refusal::bad(format!("usher: the network {name} is given twice")));
            }
            let at = format!("NetworkingConfig.EndpointsConfig.{name}");
            rebuilt.insert(name.clone(), endpoint(settings, &at, &mut made.must_own)?);
            match name.as_str() {
                n if n == job.network || n == network => {}
                "none" => {}
                n if is_object_name(n) && n != "host" => made.must_own.push(ObjectRef::Network(n.to_string())),
                n => return Err(forbid("containers on that network", &format!("{at}: {n}"))),
            }
        }
    } else if !endpoints.is_empty() {
        return Err(Refusal::bad("usher: NetworkingConfig.EndpointsConfig must be an object".into()));
    }
    out.insert("NetworkingConfig".into(), json!({ "EndpointsConfig": rebuilt }));
    made.body = serde_json::to_vec(&Value::Object(out)).expect("JSON value");
    Ok(made)
}

fn healthcheck(value: &J) -> Result<Value, Refusal> {
    let names = ["Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"];
    let fields = Fields::of(value, "Healthcheck", &names, unknown)?;
    let mut out = Map::new();
    fields.copy(&names, &mut out);
    Ok(Value::Object(out))
}

/// The rebuilt `HostConfig`, and the network the container joins.
fn host_config(value: &J, job: &JobIdentity, made: &mut Create) -> Result<(Value, String), Refusal> {
    let refused: Vec<&'static str> = HOST_REFUSED.iter().map(|(k, _)| *k).collect();
    let (pass, checked) = (words(HOST_PASS), words(HOST_CHECKED));
    let known = [&pass[..], &checked, &refused].concat();
    let host = Fields::of(value, "HostConfig", &known, unknown)?;
    for (name, why) in HOST_REFUSED {
        host.refuse_set(&[name], |at| format!("usher: jobs may not create {why} ({at})"))?;
    }
    let mut out = Map::new();
    host.copy(&pass, &mut out);
    let text = |name: &str| host.or_null(name).text(&format!("HostConfig.{name}"));
    for (name, allowed) in [
        ("IpcMode", &["", "private", "shareable", "none"][..]),
        ("CgroupnsMode", &["", "private"]),
        ("Isolation", &["", "default"]),
    ] {
        let mode = text(name)?;
        if !allowed.contains(&mode) {
            return Err(forbid("containers sharing a namespace", &format!("HostConfig.{name} {mode}")));
        }
        if !mode.is_empty() {
            out.insert(name.into(), json!(mode));
        }
    }
    let network = match text("NetworkMode")? {
        "" | "default" | "bridge" => job.network.clone(),
        "none" => "none".to_string(),
        "host" => return Err(forbid("containers on the host's network", "HostConfig.NetworkMode host")),
        n if n.starts_with("container:") => return Err(forbid("containers sharing a namespace", &format!("HostConfig.NetworkMode {n}"))),
        n if is_object_name(n) => {
            if n != job.network {
                made.must_own.push(ObjectRef::Network(n.to_string()));
            }
            n.to_string()
        }
        n => return Err(Refusal::bad(format!("usher: HostConfig.NetworkMode {n:?} is not a network"))),
    };
    out.insert("NetworkMode".into(), json!(network));
    let oom = host.or_null("OomScoreAdj");
    if !oom.is_empty() {
        let Some(n @ 0..=1000) = oom.as_i64() else {
            return Err(forbid("containers the OOM killer spares", "HostConfig.OomScoreAdj below 0"));
        };
        out.insert("OomScoreAdj".into(), json!(n));
    }
    let restart = Fields::of(
        host.or_null("RestartPolicy"),
        "HostConfig.RestartPolicy",
        &["Name", "MaximumRetryCount"],
        unknown,
    )?;
    match restart.or_null("Name").text("HostConfig.RestartPolicy.Name")? {
        "" | "no" | "on-failure" | "always" | "unless-stopped" => {
            let mut policy = Map::new();
            restart.copy(&["Name", "MaximumRetryCount"], &mut policy);
            out.insert("RestartPolicy".into(), Value::Object(policy));
        }
        other => return Err(Refusal::bad(format!("usher: unknown restart policy {other:?}"))),
    }
    out.insert("LogConfig".into(), log_config(host.or_null("LogConfig"))?);
    let mut ulimits = Vec::new();
    for limit in host.or_null("Ulimits").items("HostConfig.Ulimits")? {
        let fields = Fields::of(limit, "HostConfig.Ulimits[]", &["Name", "Soft", "Hard"], unknown)?;
        let name = fields.or_null("Name").text("HostConfig.Ulimits[].Name")?;
        let (low, high) = match name {
            "nofile" => (0, 1 << 20),
            "nproc" | "core" | "stack" => (-1, i64::MAX),
            _ => return Err(forbid(&format!("containers with the {name} ulimit"), "HostConfig.Ulimits")),
        };
        for bound in ["Soft", "Hard"] {
            if fields.or_null(bound).as_i64().is_some_and(|n| !(low..=high).contains(&n)) {
                return Err(forbid(&format!("containers with a {name} ulimit that high"), "HostConfig.Ulimits"));
            }
        }
        let mut one = Map::new();
        fields.copy(&["Name", "Soft", "Hard"], &mut one);
        ulimits.push(Value::Object(one));
    }
    out.insert("Ulimits".into(), Value::Array(ulimits));
    let mut links = Vec::new();
    for link in host.or_null("Links").items("HostConfig.Links")? {
        links.push(json!(link_target(link, "HostConfig.Links", &mut made.must_own)?));
    }
    out.insert("Links".into(), Value::Array(links));
    let mut binds = Vec::new();
    for bind in host.or_null("Binds").items("HostConfig.Binds")? {
        let bind = bind.text("HostConfig.Binds[]")?;
        binds.push(json!(named_volume_bind(bind, made)?));
    }
    out.insert("Binds".into(), Value::Array(binds));
    let mut mounts = Vec::new();
    for (i, m) in host.or_null("Mounts").items("HostConfig.Mounts")?.iter().enumerate() {
        mounts.push(mount(m, &format!("HostConfig.Mounts[{i}]"), job, made)?);
    }
    out.insert("Mounts".into(), Value::Array(mounts));
    Ok((Value::Object(out), network))
}

/// `name:alias`: the linked container must be the job's.
fn link_target(link: &J, at: &str, must_own: &mut Vec<ObjectRef>) -> Result<String, Refusal> {
    let link = link.text(at)?;
    let name = link.split(':').next().unwrap_or_default().trim_start_matches('/');
    if !is_object_name(name) {
        return Err(Refusal::bad(format!("usher: {at}: {link:?} is not a container")));
    }
    must_own.push(ObjectRef::Container(name.to_string()));
    Ok(link.to_string())
}

fn log_config(value: &J) -> Result<Value, Refusal> {
    let fields = Fields::of(value, "HostConfig.LogConfig", &["Type", "Config"], unknown)?;
    let kind = fields.or_null("Type").text("HostConfig.LogConfig.Type")?;
    if !["", "json-file", "local", "none"].contains(&kind) {
        return Err(forbid(
            "containers logging elsewhere than the engine (json-file, local, none)",
            &format!("HostConfig.LogConfig.Type {kind}"),
        ));
    }
    let options = fields.or_null("Config").string_map("HostConfig.LogConfig.Config")?;
    let allowed = ["max-size", "max-file", "compress", "mode", "max-buffer-size"];
    if let Some((key, _)) = options.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(forbid(
            "containers with that log option",
            &format!("HostConfig.LogConfig.Config.{key}"),
        ));
    }
    let options: Map<String, Value> = options.into_iter().map(|(k, v)| (k, json!(v))).collect();
    Ok(json!({ "Type": kind, "Config": options }))
}

/// `volume:/target[:ro|rw|nocopy]` — never a host path.
fn named_volume_bind(bind: &str, made: &mut Create) -> Result<String, Refusal> {
    let parts: Vec<&str> = bind.split(':').collect();
    let host_path = || {
        forbid(
            "containers with bind mounts of host paths",
            &format!("HostConfig.Binds {bind:?}; use a volume"),
        )
    };
    let [source, target, rest @ ..] = parts.as_slice() else {
        return Err(host_path());
    };
    if rest.len() > 1 || !is_object_name(source) || source.len() < 2 || !target.starts_with('/') {
        return Err(host_path());
    }
    if let Some(mode) = rest.first()
        && !mode.split(',').all(|m| ["ro", "rw", "nocopy"].contains(&m))
    {
        return Err(forbid("containers with that mount option", &format!("HostConfig.Binds {bind:?}")));
    }
    named_volume(source, made)?;
    Ok(bind.to_string())
}

fn named_volume(name: &str, made: &mut Create) -> Result<(), Refusal> {
    may_name(name, "volume")?;
    if !made.make_volumes.iter().any(|v| v == name) {
        made.make_volumes.push(name.to_string());
        made.must_own.push(ObjectRef::Volume(name.to_string()));
    }
    Ok(())
}

/// A `Mounts` entry: a volume (named: the job's; anonymous: labelled) or a tmpfs.
fn mount(value: &J, at: &str, job: &JobIdentity, made: &mut Create) -> Result<Value, Refusal> {
    let names = [
        "Type",
        "Source",
        "Target",
        "ReadOnly",
        "Consistency",
        "BindOptions",
        "VolumeOptions",
        "ImageOptions",
        "TmpfsOptions",
        "ClusterOptions",
    ];
    let m = Fields::of(value, at, &names, unknown)?;
    let kind = m.or_null("Type").text(&format!("{at}.Type"))?;
    let source = m.or_null("Source").text(&format!("{at}.Source"))?;
    let mut out = Map::new();
    m.copy(&["Type", "Target", "ReadOnly", "Consistency"], &mut out);
    m.refuse_set(&["BindOptions", "ImageOptions", "ClusterOptions"], |at| {
        format!("usher: jobs may only mount volumes and tmpfs ({at})")
    })?;
    match kind {
        "volume" => {
            m.refuse_set(&["TmpfsOptions"], |at| format!("usher: {at} is for tmpfs mounts"))?;
            let at = format!("{at}.VolumeOptions");
            let options = Fields::of(
                m.or_null("VolumeOptions"),
                &at,
                &["NoCopy", "Labels", "Subpath", "DriverConfig"],
                unknown,
            )?;
            options.refuse_set(&["DriverConfig"], |at| {
                format!("usher: jobs may not create volumes with driver options ({at})")
            })?;
            options.refuse_set(&["Subpath"], |at| format!("usher: jobs may not mount part of a volume ({at})"))?;
            let mut volume = Map::new();
            options.copy(&["NoCopy"], &mut volume);
            volume.insert("Labels".into(), labels(options.or_null("Labels"), &at, &job.labels())?);
            out.insert("VolumeOptions".into(), Value::Object(volume));
            if !source.is_empty() {
                if !is_object_name(source) {
                    return Err(forbid(
                        "containers with bind mounts of host paths",
                        &format!("{at}.Source {source:?}; use a volume"),
                    ));
                }
                named_volume(source, made)?;
                out.insert("Source".into(), json!(source));
            }
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(Refusal::bad(format!("usher: {at}: a tmpfs mount has no source")));
            }
            m.refuse_set(&["VolumeOptions"], |at| format!("usher: {at} is for volume mounts"))?;
            let at = format!("{at}.TmpfsOptions");
            let options = Fields::of(m.or_null("TmpfsOptions"), &at, &["SizeBytes", "Mode", "Options"], unknown)?;
            let mut tmpfs = Map::new();
            options.copy(&["SizeBytes", "Mode", "Options"], &mut tmpfs);
            out.insert("TmpfsOptions".into(), Value::Object(tmpfs));
        }
        other => {
            return Err(forbid(
                "containers with bind mounts of host paths",
                &format!("{at}.Type {other:?}; only volume and tmpfs mounts, use a volume"),
            ));
        }
    }
    Ok(Value::Object(out))
}

/// An endpoint's settings (a network it joins): links to the job's containers only,
/// no driver options.
pub(crate) fn endpoint(value: &J, at: &str, must_own: &mut Vec<ObjectRef>) -> Result<Value, Refusal> {
    let pass = ["Aliases", "GwPriority", "MacAddress", "DNSNames"];
    let names = [&pass[..], &["IPAMConfig", "Links", "DriverOpts"]].concat();
    let e = Fields::of(value, at, &names, unknown)?;
    e.refuse_set(&["DriverOpts"], |at| {
        format!("usher: jobs may not set endpoint driver options ({at})")
    })?;
    let mut out = Map::new();
    e.copy(&pass, &mut out);
    let ipam_names = ["IPv4Address", "IPv6Address", "LinkLocalIPs"];
    let ipam = Fields::of(e.or_null("IPAMConfig"), &format!("{at}.IPAMConfig"), &ipam_names, unknown)?;
    let mut addresses = Map::new();
    ipam.copy(&ipam_names, &mut addresses);
    out.insert("IPAMConfig".into(), Value::Object(addresses));
    let mut links = Vec::new();
    for link in e.or_null("Links").items(&format!("{at}.Links"))? {
        links.push(json!(link_target(link, &format!("{at}.Links"), must_own)?));
    }
    out.insert("Links".into(), Value::Array(links));
    Ok(Value::Object(out))
}
