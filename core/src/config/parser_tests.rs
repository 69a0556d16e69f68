//! The parser's tests: what it accepts, and the errors it gives, with line and key.
use super::*;
use crate::config::{ArtifactsWhen, AutoCancel};

#[test]
fn when_says_which_jobs_are_cleanup_jobs() {
    let cfg = parse("provision:\n  script: [up]\ndestroy:\n  when: on_cancel\n  script: [down]\nreport:\n  when: always\n  script: [x]\n")
        .unwrap();
    let when: Vec<crate::api::When> = cfg.jobs.iter().map(|j| j.when).collect();
    use crate::api::When::*;
    assert_eq!(when, [OnSuccess, OnCancel, Always]);
    let err = parse("a:\n  when: sometimes\n  script: [x]\n").unwrap_err();
    assert!(err.message.contains("sometimes") && err.message.contains("on_cancel"), "{err:?}");
    let err = parse("default:\n  when: always\na:\n  script: [x]\n").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("default.when"), "{err:?}");
}

#[test]
fn ci_variables_cannot_be_overridden() {
    let err = parse("job:\n  variables:\n    CI_JOB_ID: evil\n  script: [env]\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert_eq!(err.key.as_deref(), Some("job.variables.CI_JOB_ID"));
    let err = parse("variables:\n  CI: \"false\"\njob:\n  script: [env]\n").unwrap_err();
    assert_eq!((err.line, err.key.as_deref()), (Some(2), Some("variables.CI")));
    assert!(parse("default:\n  variables: {CI_JOB_NAME: 1}\njob:\n  script: [env]\n").is_err());
    // GitLab's variables that Usher does not set are the file's to set.
    assert!(parse("variables: {CI_REGISTRY: registry.example.com}\njob:\n  script: [env]\n").is_ok());
    assert!(parse("variables: {CIRCLE: 1}\njob:\n  script: [env]\n").is_ok());
}

#[test]
fn nesting_is_refused_before_the_parser_runs() {
    let source = format!("x: {}{}\njob:\n  script: [a]\n", "[".repeat(50_000), "]".repeat(50_000));
    let started = std::time::Instant::now();
    let err = parse(&source).unwrap_err();
    assert!(err.message.contains("nested too deeply"), "{err}");
    // Linear: well under the seconds the parser would take (regression guard, 100× slack).
    assert!(started.elapsed() < std::time::Duration::from_millis(500), "{:?}", started.elapsed());
}

#[test]
fn full_example_parses() {
    let cfg = parse(
        "workflow:\n  auto_cancel:\n    on_new_commit: interruptible\nstages: [build, test]\nvariables: {A: 1, B: x}\ndefault:\n  interruptible: true\n  after_script: [echo bye]\nbuild:\n  stage: build\n  script: make\nunit:\n  stage: test\n  needs: [build]\n  script: [cargo test]\n  timeout: 1h 30m\n  cancel_grace: 5s\n  after_script_timeout: 90\n  interruptible: false\n  artifacts:\n    paths: [out/]\n    when: always\n.hidden:\n  script: [x]\n",
    )
    .unwrap();
    assert_eq!(cfg.auto_cancel, AutoCancel::Interruptible);
    assert_eq!(cfg.variables, vec![("A".into(), "1".into()), ("B".into(), "x".into())]);
    assert_eq!(cfg.jobs.len(), 2);
    let unit = &cfg.jobs[1];
    assert_eq!(unit.timeout_secs, 5400);
    assert_eq!(unit.cancel_grace_secs, 5);
    assert_eq!(unit.after_script_timeout_secs, 90);
    assert!(!unit.interruptible);
    assert!(cfg.jobs[0].interruptible);
    assert_eq!(unit.after_script, vec!["echo bye".to_string()]);
    assert_eq!(unit.artifacts.as_ref().unwrap().when, ArtifactsWhen::Always);
}

#[test]
fn unknown_key_names_line_and_key() {
    let err = parse("job:\n  script: [a]\n  scirpt: [b]\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.to_string().contains("scirpt"), "{err}");
}

#[test]
fn missing_script_and_unknown_stage() {
    let err = parse("a:\n  script: [x]\nb:\n  stage: test\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.to_string().contains("script"), "{err}");
    let err = parse("a:\n  stage: nope\n  script: [x]\n").unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn needs_cycle_and_unknown_need() {
    let err = parse("a:\n  needs: [b]\n  script: [x]\nb:\n  needs: [a]\n  script: [x]\n").unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    let err = parse("a:\n  needs: [zzz]\n  script: [x]\n").unwrap_err();
    assert!(err.to_string().contains("zzz"), "{err}");
}

#[test]
fn bad_duration() {
    let err = parse("a:\n  script: [x]\n  timeout: soon\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.to_string().contains("soon"), "{err}");
}

#[test]
fn a_services_entrypoint_command_and_variables_are_kept() {
    let cfg = parse(
        "job:\n  services:\n    - name: postgres:16\n      entrypoint: [docker-entrypoint.sh]\n      command: [postgres, -c, fsync=off]\n      variables: {POSTGRES_PASSWORD: $DB_PASSWORD, PGPORT: {value: \"5433\"}}\n    - name: redis:7\n      entrypoint: []\n  script: [x]\n",
    )
    .unwrap();
    let [db, cache] = &cfg.jobs[0].services[..] else { panic!() };
    assert_eq!(db.entrypoint.as_deref(), Some(&["docker-entrypoint.sh".to_string()][..]));
    assert_eq!(db.command.as_ref().map(Vec::len), Some(3));
    assert_eq!(
        db.variables,
        [
            ("POSTGRES_PASSWORD".to_string(), "$DB_PASSWORD".to_string()),
            ("PGPORT".to_string(), "5433".to_string())
        ]
    );
    assert_eq!((cache.entrypoint.clone(), cache.command.clone()), (None, None));
    let err = parse("job:\n  services: [{name: db:1, variables: {\"A-B\": x}}]\n  script: [x]\n").unwrap_err();
    assert!(err.to_string().contains("`A-B` is not a variable name"), "{err}");
    // A name the job's variables complete gets its default alias when assigned.
    let cfg = parse("job:\n  services: [\"$DB_IMAGE\", \"$CACHE_IMAGE\"]\n  script: [x]\n").unwrap();
    assert_eq!(cfg.jobs[0].services[0].alias, "");
    let many = (0..33).map(|i| format!("db{i}:1")).collect::<Vec<_>>().join(", ");
    let err = parse(&format!("job:\n  services: [{many}]\n  script: [x]\n")).unwrap_err();
    assert!(err.to_string().contains("at most 32 services"), "{err}");
}

#[test]
fn image_variables_the_file_sets_are_put_in_and_the_others_kept_for_the_job() {
    let cfg = parse(
        "variables: {TAG: \"1.2\", GROUP: tools}\njob:\n  image: $CI_REGISTRY/${GROUP}/builder:$TAG\n  services: [\"$CI_REGISTRY_IMAGE/db:${TAG}\"]\n  script: [x]\n",
    )
    .unwrap();
    assert_eq!(cfg.jobs[0].image.as_deref(), Some("$CI_REGISTRY/tools/builder:1.2"));
    assert_eq!(cfg.jobs[0].services[0].name, "$CI_REGISTRY_IMAGE/db:1.2");
    assert_eq!(cfg.jobs[0].services[0].alias, "db");
    // Whatever the names are set to, what is around them must make an image name.
    for image in ["\"-$X\"", "\"$X bad\"", "\"/$X\""] {
        let err = parse(&format!("a:\n  script: [x]\n  image: {image}\n")).unwrap_err();
        assert!(err.to_string().contains("not an image name"), "{image}: {err}");
    }
}

#[test]
fn image_and_services() {
    let cfg = parse(
        "default:\n  image: alpine:3.20\nunit:\n  services:\n    - registry.example.com/db/postgres:16\n    - name: redis:7\n      alias: cache\n  script: [x]\nlint:\n  image: rust@sha256:abc\n  script: [x]\n",
    )
    .unwrap();
    assert_eq!(cfg.jobs[0].image.as_deref(), Some("alpine:3.20"));
    let aliases: Vec<_> = cfg.jobs[0].services.iter().map(|s| (s.name.as_str(), s.alias.as_str())).collect();
    assert_eq!(aliases, [("registry.example.com/db/postgres:16", "postgres"), ("redis:7", "cache")]);
    assert_eq!(cfg.jobs[1].image.as_deref(), Some("rust@sha256:abc"));
    let err = parse("a:\n  script: [x]\n  image: \"--privileged\"\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.to_string().contains("not an image name"), "{err}");
    let err = parse("a:\n  script: [x]\n  services: [{name: x, alias: \"a b\"}]\n").unwrap_err();
    assert!(err.to_string().contains("not a host name"), "{err}");
    assert!(
        parse("a:\n  script: [x]\n  services: [db:1, other/db:2]\n")
            .unwrap_err()
            .to_string()
            .contains("two services")
    );
}

#[test]
fn refusals_of_gitlab_files_name_the_key_as_written_and_speak_no_rust() {
    let refused = |yaml: &str| parse(yaml).unwrap_err().to_string();
    let cases = [
        (
            "build:linux:\n  script: [x]\n  artifacts: {paths: [a], expire: 1d}\n",
            "`build:linux.artifacts`",
            "`artifacts: expire` is not a keyword",
        ),
        (
            "job:\n  script: [x]\n  artifacts: {when: sometimes}\n",
            "`job.artifacts`",
            "`sometimes` is not one of",
        ),
        (
            "workflow: {auto_cancel: true}\njob:\n  script: [x]\n",
            "`workflow.auto_cancel`",
            "wrong shape",
        ),
        ("job:\n  script: [x]\n  timeout: [1h]\n", "`job.timeout`", "is not a duration"),
        ("1: {script: [x]}\n", "`1`", "must be a name"),
        ("job:\n  script: [x]\n  coverage: 12\n", "`job.coverage`", "must be a string"),
        ("job:\n  script: [x]\n  scirpt: [y]\n", "`job.scirpt`", "not a keyword of a job"),
        (
            "job:\n  script: [x]\n  trigger: other\n",
            "`job.trigger`",
            "no downstream pipelines",
        ),
    ];
    for (yaml, key, says) in cases {
        let e = refused(yaml);
        assert!(e.contains(key) && e.contains(says), "{yaml:?}: {e}");
        for rust in ["Raw", "struct", "variant", "Sequence", "Number(", "String("] {
            assert!(!e.contains(rust), "{yaml:?} speaks Rust: {e}");
        }
    }
}

#[test]
fn hostile_files_are_refused_quickly() {
    // References to references, ten levels of ten: 10^10 values if resolved naively.
    let mut yaml = String::from(".l0: [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let refs = vec![format!("!reference [.l{}]", level - 1); 10].join(", ");
        yaml.push_str(&format!(".l{level}: [{refs}]\n"));
    }
    yaml.push_str("job:\n  script: !reference [.l9]\n");
    let started = std::time::Instant::now();
    assert!(parse(&yaml).is_err());
    // Templates extending templates ten times each, nine levels deep.
    let mut yaml = String::from(".t0: {variables: {A: a}}\n");
    for level in 1..10 {
        let parents = vec![format!(".t{}", level - 1); 10].join(", ");
        yaml.push_str(&format!(".t{level}: {{extends: [{parents}]}}\n"));
    }
    yaml.push_str("job:\n  extends: .t9\n  script: [x]\n");
    assert!(parse(&yaml).is_ok());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn an_image_entrypoint_that_only_clears_or_names_a_shell_is_what_usher_does() {
    for entrypoint in [r#"[""]"#, r#"["/bin/sh", "-c"]"#, r#"["bash", "-c"]"#] {
        let yaml = format!("job:\n  image:\n    name: alpine/git\n    entrypoint: {entrypoint}\n  script: [git version]\n");
        assert_eq!(parse(&yaml).unwrap().jobs[0].image.as_deref(), Some("alpine/git"), "{entrypoint}");
    }
    let e = parse("job:\n  image: {name: x, entrypoint: [/usr/bin/tool]}\n  script: [x]\n").unwrap_err();
    assert!(e.to_string().contains("`job.image`") && e.message.contains("entrypoint"), "{e}");
}

#[test]
fn manual_jobs_are_optional_unless_they_say_otherwise() {
    let cfg = parse("a:\n  when: manual\n  script: [x]\nb:\n  when: manual\n  allow_failure: false\n  script: [x]\n").unwrap();
    let manual: Vec<(crate::api::When, bool)> = cfg.jobs.iter().map(|j| (j.when, j.allow_failure.any)).collect();
    assert_eq!(manual, [(crate::api::When::Manual, true), (crate::api::When::Manual, false)]);
}

#[test]
fn which_earlier_jobs_hand_over_their_artifacts() {
    let cfg = parse(
        "stages: [build, test, deploy]\nb:\n  stage: build\n  script: [x]\nr:\n  stage: build\n  script: [x]\n\
         all:\n  stage: test\n  script: [x]\nsome:\n  stage: test\n  dependencies: [r]\n  script: [x]\n\
         none:\n  stage: test\n  dependencies: []\n  script: [x]\n\
         needing:\n  stage: deploy\n  needs: [{job: b}, {job: r, artifacts: false}]\n  script: [x]\n",
    )
    .unwrap();
    let job = |name: &str| cfg.jobs.iter().find(|j| j.name == name).unwrap();
    let takes =
        |name: &str, stage: usize| ["b", "r", "all"].map(|from| job(name).takes_from(stage, from, if from == "all" { 1 } else { 0 }));
    assert_eq!(takes("all", 1), [true, true, false], "every job of an earlier stage");
    assert_eq!(takes("some", 1), [false, true, false], "only what `dependencies` names");
    assert_eq!(takes("none", 1), [false, false, false]);
    assert_eq!(takes("needing", 2), [true, false, false], "`needs`, but not `artifacts: false`");
}

#[test]
fn caches_are_read_with_gitlabs_keys_and_defaults() {
    let cfg = parse(
        "cache:\n  key: top-$CI_COMMIT_REF_SLUG\n  paths: [.m2/]\na:\n  script: [x]\nb:\n  cache:\n    - key: {files: [Cargo.lock], prefix: rust}\n      paths: [target/]\n      policy: pull\n      when: always\n  script: [x]\n",
    )
    .unwrap();
    let a = &cfg.jobs[0].cache;
    assert_eq!(
        (a[0].key.as_str(), a[0].paths.as_slice()),
        ("top-$CI_COMMIT_REF_SLUG", [".m2/".to_string()].as_slice())
    );
    assert_eq!(
        (a[0].policy, a[0].when),
        (crate::cache::CachePolicy::PullPush, ArtifactsWhen::OnSuccess)
    );
    let b = &cfg.jobs[1].cache[0];
    assert_eq!(
        (b.key.as_str(), b.policy, b.when),
        ("rust-Cargo.lock", crate::cache::CachePolicy::Pull, ArtifactsWhen::Always)
    );
    let err = parse("a:\n  cache: {paths: [x], policy: sometimes}\n  script: [x]\n").unwrap_err();
    assert!(err.message.contains("pull, push, pull-push"), "{err:?}");
    let untracked = parse("a:\n  cache: {untracked: true}\n  script: [x]\n").unwrap();
    assert!(untracked.jobs[0].cache[0].untracked && !b.untracked);
}

#[test]
fn dependencies_of_a_job_with_needs_are_among_its_needs() {
    let err = parse("stages: [a, b]\nx:\n  stage: a\n  script: [x]\ny:\n  stage: a\n  script: [y]\nz:\n  stage: b\n  needs: [x]\n  dependencies: [y]\n  script: [z]\n")
        .unwrap_err();
    assert!(err.message.contains("not in the job's `needs`"), "{err:?}");
    parse("stages: [a, b]\nx:\n  stage: a\n  script: [x]\nz:\n  stage: b\n  needs: [x]\n  dependencies: [x]\n  script: [z]\n").unwrap();
}

#[test]
fn a_resource_group_is_a_name_with_the_files_variables() {
    let cfg = parse("variables:\n  ENV: production\ndeploy:\n  resource_group: deploy-$ENV\n  script: [x]\n").unwrap();
    assert_eq!(cfg.jobs[0].resource_group.as_deref(), Some("deploy-production"));
    let err = parse("deploy:\n  resource_group: [a]\n  script: [x]\n").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("deploy.resource_group"), "{err:?}");
}

#[test]
fn artifacts_exclude_is_read_and_checked() {
    let cfg = parse("a:\n  artifacts:\n    paths: ['build/']\n    exclude: ['build/**/*.o']\n  script: [x]\n").unwrap();
    let artifacts = cfg.jobs[0].artifacts.as_ref().unwrap();
    assert_eq!(artifacts.exclude, ["build/**/*.o"]);
    let err = parse("a:\n  artifacts:\n    paths: ['build/']\n    exclude: ['../*.o']\n  script: [x]\n").unwrap_err();
    assert!(err.message.contains("`exclude: ../*.o`: it must be a relative path"), "{err:?}");
    let err = parse("a:\n  artifacts:\n    paths: ['build/']\n    exclude: ['[oops']\n  script: [x]\n").unwrap_err();
    assert!(err.message.contains("not a valid pattern"), "{err:?}");
}

#[test]
fn environment_on_stop_names_a_stop_job() {
    let review = "deploy:\n  script: [up]\n  environment: {name: review, on_stop: stop}\nstop:\n  when: manual\n  script: [down]\n  environment: {name: review, action: stop}\n";
    let cfg = parse(review).unwrap();
    assert_eq!(cfg.jobs[0].on_stop.as_deref(), Some("stop"));
    assert!(cfg.jobs[1].stops_environment && !cfg.jobs[0].stops_environment);
    let err = parse("deploy:\n  script: [up]\n  environment: {name: review, on_stop: gone}\n").unwrap_err();
    assert!(err.message.contains("names `gone`, which is not a job"), "{err:?}");
    let err = parse(&review.replace(", action: stop", "")).unwrap_err();
    assert!(err.message.contains("action: stop"), "{err:?}");
}

#[test]
fn delayed_jobs_need_a_start_in_of_at_most_a_week() {
    let cfg = parse("deploy:\n  when: delayed\n  start_in: 30 minutes\n  script: [d]\n").unwrap();
    assert_eq!((cfg.jobs[0].when, cfg.jobs[0].start_in), (When::Delayed, Some(1800)));
    // Not an optional job, unlike a manual one.
    assert!(!cfg.jobs[0].allow_failure.any);
    for (config, says) in [
        ("deploy:\n  when: delayed\n  script: [d]\n", "needs `start_in`"),
        ("deploy:\n  start_in: 10 seconds\n  script: [d]\n", "goes with `when: delayed`"),
        (
            "deploy:\n  when: delayed\n  start_in: 8 days\n  script: [d]\n",
            "longer than a week",
        ),
        ("deploy:\n  when: delayed\n  start_in: soonish\n  script: [d]\n", "not a duration"),
        ("deploy:\n  script: [d]\n  rules:\n    - when: delayed\n", "needs `start_in`"),
        (
            "deploy:\n  script: [d]\n  rules:\n    - start_in: 1 minute\n",
            "goes with `when: delayed`",
        ),
    ] {
        let err = parse(config).unwrap_err();
        assert!(err.message.contains(says), "{config}: {err:?}");
        assert!(err.to_string().contains("deploy."), "{err}");
    }
    let cfg =
        parse("deploy:\n  script: [d]\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"main\"\n      when: delayed\n      start_in: 1 hour\n")
            .unwrap();
    assert_eq!(cfg.conditions[0].rules.as_ref().unwrap()[0].start_in, Some(3600));
}
