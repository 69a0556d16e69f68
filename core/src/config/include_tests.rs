//! The tests of `include:`: merging, rules and names, components and inputs, refusals.
use super::*;

fn yaml(text: &str) -> Value {
    crate::config::yaml::parse(text).unwrap()
}

/// [`merged`] with files of one document each.
fn merged_values(
    doc: Value,
    read: &dyn Fn(&str) -> Option<Result<Value, String>>,
    facts: Option<&IncludeFacts>,
) -> Result<Value, IncludeError> {
    merged(
        doc,
        &|a| read(a).map(|r| r.map(|v| vec![v])),
        facts,
        &mut super::super::inputs::Budget::new(),
    )
}

#[test]
fn included_files_merge_under_the_file_in_order_and_nest() {
    let files = |path: &str| -> Option<Result<Value, String>> {
        Some(Ok(yaml(match path {
            "ci/base.yml" => "include: ci/deep.yml\nvariables: {A: base, B: base}\n.tmpl: {script: [from-base]}\n",
            "ci/deep.yml" => "variables: {D: deep}\nlint: {script: [lint]}\n",
            "ci/more.yml" => "variables: {B: more}\n",
            _ => return None,
        })))
    };
    let doc = yaml("include:\n  - local: /ci/base.yml\n  - ci/more.yml\nvariables: {A: own}\njob: {extends: .tmpl}\n");
    let merged = merged_values(doc, &files, None).unwrap_or_else(|e| panic!("{}", e.message));
    let v = &merged["variables"];
    assert_eq!(
        (v["A"].as_str(), v["B"].as_str(), v["D"].as_str()),
        (Some("own"), Some("more"), Some("deep"))
    );
    assert!(merged.get("lint").is_some() && merged.get(".tmpl").is_some() && merged.get("include").is_none());
}

#[test]
fn with_a_pipelines_facts_rules_choose_entries_and_names_are_put_in() {
    let doc = yaml(
        "include:\n  - local: ci/$KIND.yml\n    rules: [{if: $CI_COMMIT_BRANCH == \"main\"}]\n  - project: $GROUP/templates\n    ref: $CI_COMMIT_REF_NAME\n    file: [a.yml, $KIND/b.yml]\n  - local: never.yml\n    rules: [{exists: [nothing/*]}]\n  - https://example.com/$UNSET.yml\n",
    );
    let variables: std::collections::HashMap<String, String> = [
        ("KIND", "lint"),
        ("GROUP", "infra"),
        ("CI_COMMIT_BRANCH", "dev"),
        ("CI_COMMIT_REF_NAME", "dev"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let facts = PipelineFacts {
        variables: &variables,
        git_ref: "dev",
        is_tag: false,
        source: "push",
        files: &[],
    };
    let paths = local_paths(&doc, None, Some(&facts)).unwrap_or_else(|e| panic!("{}", e.message));
    let project = |file: &str| ProjectFile {
        project: "infra/templates".into(),
        git_ref: Some("dev".into()),
        file: file.into(),
    };
    assert_eq!(
        paths,
        [
            project("a.yml").address(),
            project("lint/b.yml").address(),
            "https://example.com/$UNSET.yml".into()
        ]
    );
    let files = ["ci/a.yml", "ci/b.yml", "ci/deep/c.yml", "ci/d.txt", "other.yml"].map(String::from);
    let facts = PipelineFacts { files: &files, ..facts };
    let wild = |pattern: &str| local_paths(&yaml(&format!("include: '{pattern}'\n")), None, Some(&facts)).map_err(|e| e.message);
    assert_eq!(wild("ci/*.yml").unwrap(), ["ci/a.yml", "ci/b.yml"]);
    assert_eq!(wild("/ci/**.yml").unwrap(), ["ci/a.yml", "ci/b.yml", "ci/deep/c.yml"]);
    assert!(wild("nothing/*.yml").unwrap_err().contains("names no file"));
    // A wildcard naming more files than a pipeline may include is refused before any is read.
    let many: Vec<String> = (0..200).map(|i| format!("ci/many/{i}.yml")).collect();
    let facts = PipelineFacts { files: &many, ..facts };
    let e = local_paths(&yaml("include: 'ci/**.yml'\n"), None, Some(&facts))
        .map_err(|e| e.message)
        .unwrap_err();
    assert!(e.contains("more than 150 files"), "{e}");
    // Without facts (a file checked on its own) every entry counts, as written.
    assert_eq!(local_paths(&doc, None, None).unwrap_or_else(|e| panic!("{}", e.message)).len(), 5);
}

#[test]
fn what_cannot_be_included_is_refused_by_kind() {
    let none = |_: &str| None;
    for (doc, key, says) in [
        ("include: missing.yml\n", "include.local", "not a file of the repository"),
        ("include: https://example.com/ci.yml\n", "include.remote", "could not be fetched"),
        (
            "include:\n  - remote: http://example.com/ci.yml\n",
            "include.remote",
            "only https://",
        ),
        (
            "include:\n  - project: group/x\n    file: a.yml\n",
            "include.project",
            "`a.yml` of project `group/x` is not a file of that repository",
        ),
        ("include:\n  - project: group/x\n", "include.project", "needs `file:`"),
        (
            "include:\n  - component: gitlab.example.com/group/templates/lint@~latest\n",
            "include.component",
            "name the component's version",
        ),
        (
            "include:\n  - component: lint@1.0\n",
            "include.component",
            "host/group/project/name@version",
        ),
        (
            "include:\n  - component: host/g/p/lint@1.0\n",
            "include.component",
            "`templates/lint.yml` of project `g/p` at `1.0` (nor `templates/lint/template.yml`) is not a file",
        ),
        ("include:\n  - local: a.yml\n    inputs: [a]\n", "include.inputs", "a map"),
        (
            "include:\n  - local: a.yml\n    rules: [{if: \"$A ==\"}]\n",
            "include.rules",
            "`if`",
        ),
        (
            "include:\n  - template: Auto-DevOps.gitlab-ci.yml\n",
            "include.template",
            "templates",
        ),
        ("include: 'ci/*.yml'\n", "include.local", "names no file"),
        ("include: 'ci/?.yml'\n", "include.local", "no others"),
    ] {
        let e = merged_values(yaml(doc), &none, None).expect_err("refused");
        assert!(e.key == key && e.message.contains(says), "{doc}: {} {}", e.key, e.message);
    }
    let circle = |_: &str| Some(Ok(yaml("include: a.yml\n")));
    assert!(merged_values(yaml("include: a.yml\n"), &circle, None).is_err());
}

/// A component is a project's `templates/NAME.yml` or `templates/NAME/template.yml` at
/// its version, given its inputs; a local file takes inputs too.
#[test]
fn components_and_inputs() {
    let files = |address: &str| -> Option<Result<Vec<Value>, String>> {
        let text = match ProjectFile::from_address(address) {
            Some(f)
                if (f.project.as_str(), f.git_ref.as_deref(), f.file.as_str())
                    == ("ci/kit", Some("2.1"), "templates/lint/template.yml") =>
            {
                "spec:\n  inputs:\n    stage: {default: test}\n    level: {type: number}\n---\nlint-$[[ inputs.level ]]:\n  stage: $[[ inputs.stage ]]\n  script:\n    - lint --level $[[ inputs.level ]]\n"
            }
            Some(_) => return None,
            None if address == "ci/job.yml" => "spec:\n  inputs:\n    name:\n---\n$[[ inputs.name ]]: {script: [x]}\n",
            None => return None,
        };
        Some(crate::config::yaml::parse_documents(text).map_err(|e| e.to_string()))
    };
    let doc = yaml(
        "include:\n  - component: gitlab.example.com/ci/kit/lint@2.1\n    inputs: {level: 3}\n  - local: ci/job.yml\n    inputs: {name: build}\n",
    );
    let v = merged(doc, &files, None, &mut super::super::inputs::Budget::new()).unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(v["lint-3"]["stage"].as_str(), Some("test"));
    assert_eq!(v["lint-3"]["script"][0].as_str(), Some("lint --level 3"));
    assert!(v.get("build").is_some(), "{v:?}");
    let e = merged(
        yaml("include:\n  - component: h/ci/kit/lint@2.1\n"),
        &files,
        None,
        &mut super::super::inputs::Budget::new(),
    )
    .unwrap_err();
    assert!(
        e.key == "include.component" && e.message.contains("input `level` is required"),
        "{}",
        e.message
    );
    let expected = [
        ProjectFile {
            project: "ci/kit".into(),
            git_ref: Some("2.1".into()),
            file: "templates/lint.yml".into(),
        }
        .address(),
        ProjectFile {
            project: "ci/kit".into(),
            git_ref: Some("2.1".into()),
            file: "templates/lint/template.yml".into(),
        }
        .address(),
    ];
    assert_eq!(
        local_paths(&yaml("include:\n  - component: h/ci/kit/lint@2.1\n"), None, None).unwrap_or_default(),
        expected
    );
}

#[test]
fn a_project_file_includes_that_projects_files() {
    let files = |address: &str| -> Option<Result<Value, String>> {
        let file = ProjectFile::from_address(address)?;
        Some(Ok(yaml(
            match (file.project.as_str(), file.git_ref.as_deref(), file.file.as_str()) {
                ("ci templates", Some("v2"), "base.yml") => "include: /more.yml\n.base: {script: [from-base]}\n",
                ("ci templates", Some("v2"), "more.yml") => "variables: {FROM: templates-v2}\n",
                _ => return None,
            },
        )))
    };
    let doc = yaml("include:\n  - project: ci templates\n    ref: v2\n    file: [/base.yml]\njob: {extends: .base}\n");
    let both = merged_values(doc, &files, None).unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(both["variables"]["FROM"].as_str(), Some("templates-v2"));
    assert!(both.get(".base").is_some());
    // Its `local` include is not a file of the including repository.
    let mine = |address: &str| match ProjectFile::from_address(address) {
        Some(file) if file.file == "base.yml" => Some(Ok(yaml("include: /more.yml\n"))),
        Some(_) => None,
        None => (address == "more.yml").then(|| Ok(yaml("variables: {FROM: mine}\n"))),
    };
    let doc = yaml("include:\n  - project: ci templates\n    ref: v2\n    file: base.yml\n");
    let e = merged_values(doc, &mine, None).expect_err("more.yml of the project is missing");
    assert!(e.message.contains("`more.yml` of project `ci templates` at `v2`"), "{}", e.message);
    // An address is not a path one may write.
    let address = ProjectFile {
        project: "x".into(),
        git_ref: None,
        file: "a.yml".into(),
    }
    .address();
    assert!(merged_values(yaml(&format!("include: '{address}'\n")), &files, None).is_err());
    assert!(merged_values(yaml(&format!("include: '/{address}'\n")), &files, None).is_err());
}
