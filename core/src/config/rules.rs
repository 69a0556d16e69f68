//! Which jobs a pipeline gets, decided when it is made, with GitLab's meaning: a job's
//! `rules:` (the first rule whose `if`, `changes` and `exists` all hold decides: run it,
//! with which `when`, `allow_failure` and extra variables, or `when: never`; no rule
//! holding leaves the job out), `only:`/`except:` (refs, ref keywords such as `branches`
//! and `tags`, pipeline sources, `variables` expressions), and `workflow: rules:` (whether
//! there is a pipeline at all). `changes` always holds: Usher makes pipelines of a commit,
//! not of a push's difference (GitLab does the same for pipelines not made by a push).

use std::collections::HashMap;

use super::expression::Expression;
use crate::api::When;

/// One entry of `rules:`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub condition: Option<Expression>,
    /// `exists:` globs; the rule holds only if one of them names a file of the commit.
    pub exists: Vec<String>,
    pub when: RuleWhen,
    pub allow_failure: Option<bool>,
    pub variables: Vec<(String, String)>,
    /// `start_in` of a rule that says `when: delayed`, in seconds.
    pub start_in: Option<u64>,
}

/// A rule's `when:`: as the job says (none given), never, or one of the job's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleWhen {
    AsTheJob,
    Never,
    Is(When),
}

/// `only:` or `except:`: the refs (names, `/regex/`, or keywords), and the `variables`
/// expressions (any one holding is enough).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefFilter {
    pub refs: Vec<String>,
    pub variables: Vec<Expression>,
}

/// What a pipeline is made of, for the rules.
pub struct PipelineFacts<'a> {
    /// Every variable the expressions may read: the predefined ones
    /// (`CI_COMMIT_BRANCH`, `CI_COMMIT_TAG`, `CI_PIPELINE_SOURCE`, …), then the project's,
    /// then the file's top-level ones.
    pub variables: &'a HashMap<String, String>,
    pub git_ref: &'a str,
    pub is_tag: bool,
    /// `push`, `web`, `api`, `schedule`, `trigger`.
    pub source: &'a str,
    /// The commit's files (for `exists:` and wildcard includes); none without a
    /// repository, or when nothing asks.
    pub files: &'a [String],
}

impl PipelineFacts<'_> {
    /// The commit's files a glob (`**` any depth, `*` within a name) names, in order.
    pub fn files_matching(&self, glob: &str) -> Vec<&str> {
        let Some(re) = glob_regex(glob) else { return Vec::new() };
        let mut found: Vec<&str> = self.files.iter().map(String::as_str).filter(|f| re.is_match(f)).collect();
        found.sort_unstable();
        found
    }

    /// Whether a glob names a file of the commit (`exists:`).
    pub fn exists(&self, glob: &str) -> bool {
        glob_regex(glob).is_some_and(|re| self.files.iter().any(|f| re.is_match(f)))
    }
}

/// A job's part in a pipeline, when it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub when: When,
    pub allow_failure: Option<bool>,
    pub variables: Vec<(String, String)>,
    /// The rule's `start_in`, when the rule made the job delayed.
    pub start_in: Option<u64>,
}

/// Whether the first rule that holds says to run (no rules: yes); its variables too.
pub fn workflow_decision(rules: &[Rule], facts: &PipelineFacts) -> Option<Vec<(String, String)>> {
    if rules.is_empty() {
        return Some(Vec::new());
    }
    let rule = rules.iter().find(|r| holds(r, facts, facts.variables))?;
    (rule.when != RuleWhen::Never).then(|| rule.variables.clone())
}

/// Whether a job is in the pipeline, and how: by its `rules` (the job's own variables
/// are visible to them), else by `only`/`except`.
pub fn job_decision(
    rules: Option<&[Rule]>,
    only: Option<&RefFilter>,
    except: Option<&RefFilter>,
    own_when: When,
    job_variables: &[(String, String)],
    facts: &PipelineFacts,
) -> Option<Decision> {
    if let Some(rules) = rules {
        let mut variables = facts.variables.clone();
        variables.extend(job_variables.iter().cloned());
        let rule = rules.iter().find(|r| holds(r, facts, &variables))?;
        let when = match rule.when {
            RuleWhen::Never => return None,
            RuleWhen::AsTheJob => own_when,
            RuleWhen::Is(w) => w,
        };
        // GitLab: a rule that makes a job manual makes it blocking unless it says
        // `allow_failure: true` (a job manual by its own `when` keeps its default).
        // A rule that makes a job delayed makes it required too: a manual job's optional
        // default must not let the pipeline end before it has run.
        let made_manual = when == When::Manual && own_when != When::Manual;
        let made_delayed = when == When::Delayed && own_when != When::Delayed;
        return Some(Decision {
            when,
            allow_failure: rule.allow_failure.or((made_manual || made_delayed).then_some(false)),
            variables: rule.variables.clone(),
            start_in: rule.start_in,
        });
    }
    // GitLab's default `only` is `branches` and `tags`: every pipeline Usher makes.
    if only.is_some_and(|f| !f.matches(facts)) || except.is_some_and(|f| f.matches(facts)) {
        return None;
    }
    Some(Decision {
        when: own_when,
        allow_failure: None,
        variables: Vec::new(),
        start_in: None,
    })
}

fn holds(rule: &Rule, facts: &PipelineFacts, variables: &HashMap<String, String>) -> bool {
    rule.condition.as_ref().is_none_or(|c| c.evaluate(variables))
        && (rule.exists.is_empty() || rule.exists.iter().any(|glob| facts.exists(glob)))
}

impl RefFilter {
    /// Whether the pipeline is one this filter names: a ref entry matching (if any are
    /// given) and a variables expression holding (if any are given).
    pub fn matches(&self, facts: &PipelineFacts) -> bool {
        let refs = self.refs.is_empty() || self.refs.iter().any(|r| ref_matches(r, facts));
        let variables = self.variables.is_empty() || self.variables.iter().any(|e| e.evaluate(facts.variables));
        refs && variables
    }
}

/// The `only`/`except` ref keywords GitLab knows, and the pipeline sources they name.
const SOURCE_KEYWORDS: &[(&str, &str)] = &[
    ("api", "api"),
    ("web", "web"),
    ("pushes", "push"),
    ("schedules", "schedule"),
    ("triggers", "trigger"),
    ("pipelines", "pipeline"),
    ("merge_requests", "merge_request_event"),
    ("external", "external"),
    ("external_pull_requests", "external_pull_request_event"),
    ("chat", "chat"),
];

/// Every word `only`/`except` may hold that is not a ref name.
pub fn is_ref_keyword(word: &str) -> bool {
    word == "branches" || word == "tags" || SOURCE_KEYWORDS.iter().any(|(k, _)| *k == word)
}

fn ref_matches(entry: &str, facts: &PipelineFacts) -> bool {
    match entry {
        "branches" => return !facts.is_tag,
        "tags" => return facts.is_tag,
        _ => {}
    }
    if let Some((_, source)) = SOURCE_KEYWORDS.iter().find(|(k, _)| *k == entry) {
        return facts.source == *source;
    }
    // `ref@namespace/project` limits an entry to one project's pipelines: the ref part.
    let entry = entry.rsplit_once('@').map_or(entry, |(r, _)| r);
    match entry.strip_prefix('/').and_then(|r| r.rsplit_once('/')) {
        Some((pattern, flags)) => regex::RegexBuilder::new(pattern)
            .case_insensitive(flags.contains('i'))
            .build()
            .is_ok_and(|re| re.is_match(facts.git_ref)),
        None => entry == facts.git_ref,
    }
}

/// The coverage a log reports by `pattern` (a job's `coverage:`): GitLab's way — the
/// last line that matches, its first group if the pattern has one (else the whole
/// match), and the first number in that.
pub fn coverage_of(pattern: &str, log: &str) -> Option<f64> {
    let re = regex::RegexBuilder::new(pattern).size_limit(1 << 20).build().ok()?;
    let number = regex::Regex::new(r"\d+(?:\.\d+)?").ok()?;
    log.lines().rev().find_map(|line| {
        let caps = re.captures(line)?;
        let text = caps.get(1).or_else(|| caps.get(0))?.as_str();
        number.find(text)?.as_str().parse().ok()
    })
}

/// A glob of `exists:`/`changes:` (`**` any depth, `*` and `?` within a name, `{a,b}`) as
/// a regular expression over a path.
pub fn glob_regex(glob: &str) -> Option<regex::Regex> {
    let mut re = String::from("^");
    let mut chars = glob.trim_start_matches("./").chars().peekable();
    let mut braces = 0;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                    re.push_str("(?:.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '{' => {
                braces += 1;
                re.push_str("(?:");
            }
            '}' if braces > 0 => {
                braces -= 1;
                re.push(')');
            }
            ',' if braces > 0 => re.push('|'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(vars: &'a HashMap<String, String>, git_ref: &'a str, is_tag: bool, source: &'a str) -> PipelineFacts<'a> {
        PipelineFacts {
            variables: vars,
            git_ref,
            is_tag,
            source,
            files: Box::leak(Box::new(["docs/index.md".to_string()])),
        }
    }

    fn rule(condition: &str, when: RuleWhen) -> Rule {
        Rule {
            condition: Some(Expression::parse(condition).unwrap()),
            exists: Vec::new(),
            when,
            allow_failure: None,
            variables: Vec::new(),
            start_in: None,
        }
    }

    #[test]
    fn the_first_rule_that_holds_decides_and_none_leaves_the_job_out() {
        let vars: HashMap<String, String> = [("CI_COMMIT_BRANCH", "main")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let f = facts(&vars, "main", false, "push");
        let rules = [
            rule("$CI_COMMIT_TAG", RuleWhen::Never),
            rule("$CI_COMMIT_BRANCH == \"main\"", RuleWhen::Is(When::Always)),
            rule("$CI_COMMIT_BRANCH", RuleWhen::AsTheJob),
        ];
        let d = job_decision(Some(&rules), None, None, When::OnSuccess, &[], &f).unwrap();
        assert_eq!(d.when, When::Always);
        let d = job_decision(Some(&rules[2..]), None, None, When::OnFailure, &[], &f).unwrap();
        assert_eq!(d.when, When::OnFailure, "no `when`: the job's own");
        assert_eq!(job_decision(Some(&rules[..1]), None, None, When::OnSuccess, &[], &f), None);
        assert_eq!(
            job_decision(Some(&[]), None, None, When::OnSuccess, &[], &f),
            None,
            "empty rules: never"
        );
        // A rule that makes a (by default optional) manual job delayed makes it required,
        // with the rule's start_in.
        let delayed = Rule {
            start_in: Some(60),
            ..rule("$CI_COMMIT_BRANCH", RuleWhen::Is(When::Delayed))
        };
        let d = job_decision(Some(std::slice::from_ref(&delayed)), None, None, When::Manual, &[], &f).unwrap();
        assert_eq!((d.when, d.allow_failure, d.start_in), (When::Delayed, Some(false), Some(60)));
        // The job's own variables are visible to its rules.
        let own = rule("$DEPLOY == \"yes\"", RuleWhen::AsTheJob);
        assert!(job_decision(Some(&[own]), None, None, When::OnSuccess, &[("DEPLOY".into(), "yes".into())], &f).is_some());
        // exists
        let mut docs = rule("$CI_COMMIT_BRANCH", RuleWhen::AsTheJob);
        docs.exists = vec!["docs/**/*.md".into()];
        assert!(job_decision(Some(std::slice::from_ref(&docs)), None, None, When::OnSuccess, &[], &f).is_some());
        docs.exists = vec!["Cargo.toml".into()];
        assert!(job_decision(Some(&[docs]), None, None, When::OnSuccess, &[], &f).is_none());
    }

    #[test]
    fn only_and_except_match_refs_keywords_sources_and_variables() {
        let vars = HashMap::new();
        let filter = |refs: &[&str]| RefFilter {
            refs: refs.iter().map(|r| r.to_string()).collect(),
            variables: Vec::new(),
        };
        let main_push = facts(&vars, "main", false, "push");
        let tag = facts(&vars, "v1.2", true, "push");
        let web = facts(&vars, "feature/x", false, "web");
        let runs = |only: Option<RefFilter>, except: Option<RefFilter>, f: &PipelineFacts| {
            job_decision(None, only.as_ref(), except.as_ref(), When::OnSuccess, &[], f).is_some()
        };
        assert!(runs(Some(filter(&["main"])), None, &main_push));
        assert!(!runs(Some(filter(&["main"])), None, &web));
        assert!(runs(Some(filter(&["tags"])), None, &tag));
        assert!(!runs(Some(filter(&["tags"])), None, &main_push));
        assert!(runs(Some(filter(&["/^feature\\/.*$/"])), None, &web));
        assert!(runs(Some(filter(&["web"])), None, &web));
        assert!(runs(Some(filter(&["master@gnome/gtk", "main@gnome/gtk"])), None, &main_push));
        assert!(!runs(None, Some(filter(&["branches"])), &main_push));
        assert!(runs(None, Some(filter(&["branches"])), &tag));
        assert!(runs(None, None, &web), "no only/except: every pipeline");
        let with_variables = RefFilter {
            refs: vec!["branches".into()],
            variables: vec![Expression::parse("$RELEASE").unwrap()],
        };
        assert!(!runs(Some(with_variables), None, &main_push), "refs and variables must both hold");
    }

    #[test]
    fn workflow_rules_decide_whether_there_is_a_pipeline() {
        let vars: HashMap<String, String> = [("CI_PIPELINE_SOURCE", "push")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let f = facts(&vars, "main", false, "push");
        assert_eq!(workflow_decision(&[], &f), Some(vec![]));
        let skip_push = [
            rule("$CI_PIPELINE_SOURCE == \"push\"", RuleWhen::Never),
            rule("$CI_COMMIT_REF_NAME", RuleWhen::AsTheJob),
        ];
        assert_eq!(workflow_decision(&skip_push, &f), None);
        assert_eq!(workflow_decision(&skip_push[1..], &f), None, "no rule holds: no pipeline");
    }

    #[test]
    fn coverage_is_the_last_matching_lines_number() {
        let log = "Total: 10%\nsomething\nTOTAL      120     12    90.5%\ndone\n";
        assert_eq!(coverage_of(r"^TOTAL.+?(\d+(?:\.\d+)?%)$", log), Some(90.5));
        assert_eq!(coverage_of(r"Total: \d+%", log), Some(10.0));
        assert_eq!(coverage_of(r"nothing", log), None);
    }

    #[test]
    fn globs_match_as_gitlab_reads_them() {
        let m = |glob: &str, path: &str| glob_regex(glob).unwrap().is_match(path);
        assert!(m("**/*.md", "README.md"));
        assert!(m("**/*.md", "docs/a/b.md"));
        assert!(m("src/*.rs", "src/main.rs"));
        assert!(!m("src/*.rs", "src/a/main.rs"));
        assert!(m("{Cargo.toml,package.json}", "package.json"));
        assert!(m("./Dockerfile", "Dockerfile"));
        assert!(m("a,b.txt", "a,b.txt") && !m("a,b.txt", "a"), "a comma outside braces is a comma");
    }
}
