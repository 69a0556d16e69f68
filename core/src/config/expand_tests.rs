use super::*;

fn expanded(yaml: &str) -> Expanded {
    expand(crate::config::yaml::parse(yaml).unwrap()).unwrap_or_else(|r| panic!("refused: {} {}", r.key, r.message))
}

fn job<'a>(e: &'a Expanded, name: &str) -> &'a Mapping {
    &e.jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name}"))
        .keys
}

fn text(v: &Value) -> String {
    serde_yaml_ng::to_string(v).unwrap().trim().to_string()
}

#[test]
fn extends_merges_maps_deeply_and_replaces_lists_over_several_levels() {
    let e = expanded(
        r#"
.base:
  image: alpine
  variables: {A: "1", B: "1"}
  script: [echo base]
.middle:
  extends: .base
  variables: {B: "2", C: "2"}
  tags: [linux]
build:linux:
  extends: [.middle]
  variables: {C: "3"}
  script: [echo own]
"#,
    );
    let build = job(&e, "build:linux");
    assert_eq!(text(&build["variables"]), "A: '1'\nB: '2'\nC: '3'");
    assert_eq!(text(&build["script"]), "- echo own");
    assert_eq!(text(&build["image"]), "alpine");
    assert!(!build.contains_key("extends"));
    assert_eq!(e.jobs.len(), 1, "hidden keys are not jobs");
}

#[test]
fn anchors_merges_and_references_resolve_and_script_lists_flatten() {
    let e = expanded(
        r#"
.setup: &setup
  before_script:
    - echo one
    - [echo two, echo three]
.vars: &vars
  X: "x"
test:
  <<: *setup
  variables:
    <<: *vars
    Y: "y"
  script:
    - !reference [.setup, before_script]
    - echo last
"#,
    );
    let test = job(&e, "test");
    assert_eq!(text(&test["before_script"]), "- echo one\n- echo two\n- echo three");
    assert_eq!(text(&test["script"]), "- echo one\n- echo two\n- echo three\n- echo last");
    let variables = test["variables"].as_mapping().unwrap();
    assert_eq!(
        (text(&variables["X"]), text(&variables["Y"]), variables.len()),
        ("x".into(), "y".into(), 2)
    );
}

#[test]
fn top_level_image_and_scripts_are_defaults_unless_default_sets_them() {
    let e = expanded("image: ruby:3\nbefore_script: [bundle]\ndefault:\n  image: alpine\njob:\n  script: [x]\n");
    let default = e.top["default"].as_mapping().unwrap();
    assert_eq!(text(&default["image"]), "alpine");
    assert_eq!(text(&default["before_script"]), "- bundle");
}

#[test]
fn parallel_makes_numbered_copies_and_needs_point_at_all_of_them() {
    let e = expanded("build:\n  parallel: 3\n  script: [x]\ntest:\n  needs: [build]\n  script: [y]\n");
    let names: Vec<&str> = e.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["build 1/3", "build 2/3", "build 3/3", "test"]);
    assert_eq!(e.jobs[1].node, Some((2, 3)));
    assert_eq!(e.jobs[1].written_as, "build");
    assert_eq!(text(&job(&e, "test")["needs"]), "- build 1/3\n- build 2/3\n- build 3/3");
}

#[test]
fn a_matrix_makes_one_job_per_combination_with_its_variables() {
    let e = expanded(
        "deploy:\n  script: [x]\n  parallel:\n    matrix:\n      - PROVIDER: aws\n        STACK: [monitoring, app]\n      - PROVIDER: ovh\n",
    );
    let names: Vec<&str> = e.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["deploy: [aws, monitoring]", "deploy: [aws, app]", "deploy: [ovh]"]);
    assert_eq!(text(&job(&e, "deploy: [aws, app]")["variables"]), "PROVIDER: aws\nSTACK: app");
}

#[test]
fn refusals_name_the_key_as_written() {
    let refused = |yaml: &str| expand(crate::config::yaml::parse(yaml).unwrap()).err().expect("refused");
    let r = refused(".a:\n  extends: .b\n.b:\n  extends: .a\nbuild:linux:\n  extends: .a\n  script: [x]\n");
    assert_eq!(r.key, "build:linux.extends");
    assert!(r.message.contains("circle"), "{}", r.message);
    let r = refused("build:linux:\n  extends: .missing\n  script: [x]\n");
    assert_eq!(r.key, "build:linux.extends");
    assert!(r.message.contains("`.missing`"), "{}", r.message);
    let r = refused("job:\n  script: !reference [.nothing, script]\n");
    assert_eq!(r.key, "job.script");
    let r = refused("job: [a, b]\n");
    assert!(r.message.contains("leading dot"), "{}", r.message);
    let r = refused("job:\n  parallel: 500\n  script: [x]\n");
    assert_eq!(r.key, "job.parallel");
}
