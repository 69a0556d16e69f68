//! GitLab's inputs: a file meant to be included declares its parameters in a header
//! (`spec: inputs:`, then `---`, then the file), the including entry gives their values
//! (`include: … inputs:`), and `$[[ inputs.name ]]` in the file's keys and values is
//! replaced by them before the file is merged — the whole value, keeping its type, when
//! the block is all of it, else as text. A block may pass its value through functions:
//! `expand_vars` (the pipeline's variables, as `include` sees them), `truncate(offset,
//! length)`, `posix_escape`. An input is required unless it has a `default`; `type`
//! (`string`, `number`, `boolean`, `array`), `options` and `regex` are checked.

use serde_yaml_ng::{Mapping, Value};

/// The most functions one block may apply (GitLab's limit).
const MAX_FUNCTIONS: usize = 3;

/// The longest string a block may make (GitLab's limit).
const MAX_STRING_BYTES: usize = 1 << 20;

/// What interpolation may add in one parse, whatever the number of files and blocks: a
/// block repeated, or a list given as an input and used many times, must not make a
/// small file a huge one.
pub(super) struct Budget {
    bytes: usize,
    nodes: usize,
}

impl Budget {
    /// 4 MiB of text and 100,000 values copied in.
    pub(super) fn new() -> Budget {
        Budget {
            bytes: 4 << 20,
            nodes: 100_000,
        }
    }

    fn spend(&mut self, value: &Value) -> Result<(), String> {
        let (bytes, nodes) = size_of(value);
        match (self.bytes.checked_sub(bytes), self.nodes.checked_sub(nodes)) {
            (Some(b), Some(n)) => {
                (self.bytes, self.nodes) = (b, n);
                Ok(())
            }
            _ => Err("its inputs would make it too large (at most 4 MiB of text and 100,000 values put in, in all)".into()),
        }
    }
}

/// A value's text bytes and number of values.
fn size_of(value: &Value) -> (usize, usize) {
    match value {
        Value::String(s) => (s.len(), 1),
        Value::Sequence(items) => items.iter().map(size_of).fold((0, 1), |(b, n), (ib, inn)| (b + ib, n + inn)),
        Value::Mapping(map) => map.iter().fold((0, 1), |(b, n), (k, v)| {
            let ((kb, kn), (vb, vn)) = (size_of(k), size_of(v));
            (b + kb + vb, n + kn + vn)
        }),
        Value::Tagged(t) => size_of(&t.value),
        _ => (8, 1),
    }
}

/// A file's documents as a header (`spec:`) and the file itself.
pub(super) fn split(mut documents: Vec<Value>) -> Result<(Option<Value>, Value), String> {
    match documents.len() {
        0 => Ok((None, Value::Null)),
        1 => Ok((None, documents.remove(0))),
        2 if is_header(&documents[0]) => {
            let body = documents.remove(1);
            Ok((Some(documents.remove(0)), body))
        }
        _ => Err("a CI file is one YAML document, or a `spec:` header, `---`, and one document".into()),
    }
}

fn is_header(document: &Value) -> bool {
    document.as_mapping().is_some_and(|m| m.len() == 1 && m.contains_key("spec"))
}

/// `body` with its header's inputs put in: `given` values (None: the file is included
/// without `inputs:`, or is the pipeline's own file, so defaults only), checked against
/// the header; `variables` for `expand_vars`. A file without a header takes no inputs,
/// and its `$[[ ]]` stay as written (GitLab's rule).
pub(super) fn apply(
    header: Option<&Value>,
    given: Option<&Mapping>,
    body: Value,
    variables: &[(String, String)],
    budget: &mut Budget,
) -> Result<Value, String> {
    let Some(header) = header else {
        return match given {
            Some(g) if !g.is_empty() => Err("`inputs` are given, but the file has no `spec: inputs` header to take them".into()),
            _ => Ok(body),
        };
    };
    let declared = match &header["spec"]["inputs"] {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m.clone(),
        _ => return Err("`spec: inputs` is a map of input names".into()),
    };
    let empty = Mapping::new();
    let given = given.unwrap_or(&empty);
    if let Some(unknown) = given.keys().find(|k| !declared.contains_key(*k)) {
        let names: Vec<&str> = declared.keys().filter_map(Value::as_str).collect();
        return Err(format!(
            "`{}` is not an input of the file (its inputs: {})",
            text_of(unknown),
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ));
    }
    let mut values = Vec::new();
    for (name, spec) in &declared {
        let name = name.as_str().ok_or("an input's name is a string")?;
        let spec = match spec {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m.clone(),
            _ => {
                return Err(format!(
                    "input `{name}`: its spec is a map (`default`, `type`, `options`, `regex`, `description`)"
                ));
            }
        };
        let value = match given.get(name).or_else(|| spec.get("default")) {
            Some(v) => v.clone(),
            None => return Err(format!("input `{name}` is required (it has no `default`)")),
        };
        check(name, &spec, &value)?;
        values.push((name.to_string(), value));
    }
    interpolate(body, &values, variables, budget)
}

/// Whether `value` is what the input's spec allows.
fn check(name: &str, spec: &Mapping, value: &Value) -> Result<(), String> {
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("string");
    let fits = match kind {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "boolean" => value.is_bool(),
        "array" => value.is_sequence(),
        other => {
            return Err(format!(
                "input `{name}`: `type: {other}` is not one of string, number, boolean, array"
            ));
        }
    };
    if !fits {
        return Err(format!("input `{name}` must be a {kind}, not `{}`", text_of(value)));
    }
    if let Some(options) = spec.get("options").and_then(Value::as_sequence)
        && !options.contains(value)
    {
        let options: Vec<String> = options.iter().map(text_of).collect();
        return Err(format!(
            "input `{name}` is `{}`, not one of its options ({})",
            text_of(value),
            options.join(", ")
        ));
    }
    if let Some(pattern) = spec.get("regex").and_then(Value::as_str) {
        let pattern = pattern.strip_prefix('/').and_then(|p| p.strip_suffix('/')).unwrap_or(pattern);
        // An untrusted pattern: small, or refused.
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 18)
            .dfa_size_limit(1 << 18)
            .build()
            .map_err(|e| format!("input `{name}`: `regex` does not read: {e}"))?;
        if !re.is_match(&text_of(value)) {
            return Err(format!("input `{name}` is `{}`, which its `regex` does not match", text_of(value)));
        }
    }
    Ok(())
}

fn interpolate(value: Value, inputs: &[(String, Value)], variables: &[(String, String)], budget: &mut Budget) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => put_in(&s, inputs, variables, budget)?,
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .map(|v| interpolate(v, inputs, variables, budget))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(map) => {
            let mut out = Mapping::new();
            for (k, v) in map {
                let k = match k {
                    Value::String(s) => Value::String(text_of(&put_in(&s, inputs, variables, budget)?)),
                    other => other,
                };
                out.insert(k, interpolate(v, inputs, variables, budget)?);
            }
            Value::Mapping(out)
        }
        Value::Tagged(mut tagged) => {
            tagged.value = interpolate(tagged.value, inputs, variables, budget)?;
            Value::Tagged(tagged)
        }
        other => other,
    })
}

/// A string with its blocks replaced: the value itself when one block is all of it.
fn put_in(text: &str, inputs: &[(String, Value)], variables: &[(String, String)], budget: &mut Budget) -> Result<Value, String> {
    if !text.contains("$[[") {
        return Ok(Value::String(text.to_string()));
    }
    let mut out = String::new();
    let mut rest = text;
    let mut whole = None;
    while let Some(at) = rest.find("$[[") {
        let Some(end) = rest[at..].find("]]") else {
            return Err(format!("`{text}`: a `$[[` without its `]]`"));
        };
        let value = block(&rest[at + 3..at + end], inputs, variables)?;
        budget.spend(&value)?;
        if at == 0 && at + end + 2 == rest.len() && out.is_empty() {
            whole = Some(value.clone());
        }
        out.push_str(&rest[..at]);
        out.push_str(&text_of(&value));
        if out.len() > MAX_STRING_BYTES {
            return Err(format!("a value its inputs make is longer than {MAX_STRING_BYTES} bytes"));
        }
        rest = &rest[at + end + 2..];
    }
    out.push_str(rest);
    Ok(whole.unwrap_or(Value::String(out)))
}

/// One block's value: `inputs.name`, then ` | function` each.
fn block(inner: &str, inputs: &[(String, Value)], variables: &[(String, String)]) -> Result<Value, String> {
    let mut parts = inner.split('|').map(str::trim);
    let reference = parts.next().unwrap_or_default();
    let Some(name) = reference.strip_prefix("inputs.") else {
        return Err(format!("`$[[ {} ]]`: only `inputs.NAME` can be put in", inner.trim()));
    };
    let mut value = inputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| format!("`$[[ {} ]]`: the file has no input `{name}`", inner.trim()))?;
    let functions: Vec<&str> = parts.collect();
    if functions.len() > MAX_FUNCTIONS {
        return Err(format!("`$[[ {} ]]`: at most {MAX_FUNCTIONS} functions a block", inner.trim()));
    }
    for function in functions {
        let text = text_of(&value);
        value = Value::String(match function {
            "expand_vars" => crate::variables::expand(&text, variables, crate::variables::Unset::Kept),
            "posix_escape" => posix_escape(&text),
            f if f.starts_with("truncate(") && f.ends_with(')') => {
                let args: Vec<usize> = f["truncate(".len()..f.len() - 1]
                    .split(',')
                    .map(|a| a.trim().parse())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("`{f}`: truncate takes two numbers (offset, length)"))?;
                let [offset, length] = args[..] else {
                    return Err(format!("`{f}`: truncate takes two numbers (offset, length)"));
                };
                text.chars().skip(offset).take(length).collect()
            }
            other => {
                return Err(format!(
                    "`{other}` is not a function of inputs (expand_vars, truncate(offset, length), posix_escape)"
                ));
            }
        });
    }
    Ok(value)
}

/// A value as text: strings as they are, the rest as YAML's flow form would write it.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        Value::Sequence(items) => format!(
            "[{}]",
            items.iter().map(|i| format!("{:?}", text_of(i))).collect::<Vec<_>>().join(", ")
        ),
        other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// `text` safe as one word of a POSIX shell: what is not a letter, a digit or one of
/// `_-.,:/@+=` gets a backslash (a line break is quoted); empty is `''`.
fn posix_escape(text: &str) -> String {
    if text.is_empty() {
        return "''".into();
    }
    let mut out = String::new();
    for c in text.chars() {
        if c == '\n' {
            out.push_str("'\n'");
        } else {
            if !(c.is_ascii_alphanumeric() || "_-.,:/@+=".contains(c)) {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Vec<Value> {
        crate::config::yaml::parse_documents(yaml).unwrap()
    }

    fn given(yaml: &str) -> Mapping {
        crate::config::yaml::parse(yaml).unwrap().as_mapping().unwrap().clone()
    }

    const FILE: &str = r#"spec:
  inputs:
    job-name:
      default: release
    stage:
      options: [test, deploy]
    retries:
      type: number
      default: 1
    strict:
      type: boolean
      default: false
    flags:
      type: array
      default: [--quiet]
    version:
      regex: ^v\d+$
      default: v1
---
"$[[ inputs.job-name ]]":
  stage: $[[ inputs.stage ]]
  retry: $[[ inputs.retries ]]
  allow_failure: $[[ inputs.strict ]]
  script:
    - tool $[[ inputs.flags ]] --stage=$[[ inputs.stage ]] $[[ inputs.version | expand_vars ]]
    - echo $[[ inputs.job-name | truncate(0,3) | posix_escape ]]
  variables:
    LIST: $[[ inputs.flags ]]
"#;

    fn applied(inputs: &str) -> Result<Value, String> {
        let (header, body) = split(doc(FILE)).unwrap();
        apply(
            header.as_ref(),
            Some(&given(inputs)),
            body,
            &[("V".into(), "v7".into())],
            &mut Budget::new(),
        )
    }

    #[test]
    fn values_keep_their_type_when_a_block_is_the_whole_value() {
        let v = applied("stage: deploy\nretries: 2\nstrict: true\nversion: v2\n").unwrap();
        let job = &v["release"];
        assert_eq!(job["stage"], Value::String("deploy".into()));
        assert_eq!(job["retry"], Value::Number(2.into()));
        assert_eq!(job["allow_failure"], Value::Bool(true));
        assert_eq!(job["variables"]["LIST"], Value::Sequence(vec![Value::String("--quiet".into())]));
        assert_eq!(job["script"][0], Value::String("tool [\"--quiet\"] --stage=deploy v2".into()));
        assert_eq!(job["script"][1], Value::String("echo rel".into()));
    }

    #[test]
    fn keys_functions_and_defaults() {
        let v = applied("job-name: \"my job\"\nstage: test\nversion: v3\n").unwrap();
        let job = &v["my job"];
        assert_eq!(job["script"][1], Value::String("echo my\\ ".into()), "truncated, then escaped");
        assert_eq!(job["retry"], Value::Number(1.into()));
        // expand_vars puts the pipeline's variables in.
        let (header, body) = split(doc(FILE)).unwrap();
        let v = apply(
            header.as_ref(),
            Some(&given("stage: test\nversion: v9\n")),
            body,
            &[],
            &mut Budget::new(),
        )
        .unwrap();
        assert!(v["release"]["script"][0].as_str().unwrap().ends_with("v9"));
    }

    #[test]
    fn wrong_inputs_are_refused_saying_which() {
        for (inputs, says) in [
            ("{}", "input `stage` is required"),
            ("stage: prod", "not one of its options (test, deploy)"),
            ("stage: test\nretries: many", "`retries` must be a number"),
            ("stage: test\nversion: 2.0", "must be a string"),
            ("stage: test\nversion: x2", "its `regex` does not match"),
            ("stage: test\ncolour: red", "`colour` is not an input of the file"),
        ] {
            let e = applied(inputs).unwrap_err();
            assert!(e.contains(says), "{inputs}: {e}");
        }
        let e = apply(None, Some(&given("a: 1")), Value::Null, &[], &mut Budget::new()).unwrap_err();
        assert!(e.contains("no `spec: inputs` header"), "{e}");
        let body = crate::config::yaml::parse("a: $[[ inputs.x | shout ]]\n").unwrap();
        let header = crate::config::yaml::parse("spec: {inputs: {x: {default: y}}}\n").unwrap();
        let e = apply(Some(&header), None, body, &[], &mut Budget::new()).unwrap_err();
        assert!(e.contains("`shout` is not a function"), "{e}");
    }

    /// A block repeated, or a list used many times, cannot make a small file huge.
    #[test]
    fn what_inputs_put_in_is_bounded() {
        let blocks = "$[[ inputs.x ]]".repeat(100);
        let file = format!(
            "spec:\n  inputs:\n    x:\n      default: \"{}\"\n---\na: \"{blocks}\"\n",
            "A".repeat(20_000)
        );
        let (header, body) = split(doc(&file)).unwrap();
        let e = apply(header.as_ref(), None, body, &[], &mut Budget::new()).unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        let uses = "  - $[[ inputs.list ]]\n".repeat(200);
        let file = format!("spec:\n  inputs:\n    list:\n      type: array\n---\na:\n{uses}");
        let list = format!("list: [{}]\n", vec!["x"; 1000].join(", "));
        let (header, body) = split(doc(&file)).unwrap();
        let e = apply(header.as_ref(), Some(&given(&list)), body, &[], &mut Budget::new()).unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = check("p", &given("regex: \"(a{1000}){1000}\""), &Value::String("a".into())).unwrap_err();
        assert!(e.contains("does not read"), "{e}");
    }

    #[test]
    fn a_file_without_a_header_keeps_its_blocks_and_three_documents_are_refused() {
        let body = crate::config::yaml::parse("a: $[[ inputs.x ]]\n").unwrap();
        assert_eq!(apply(None, None, body.clone(), &[], &mut Budget::new()).unwrap(), body);
        assert!(split(doc("a: 1\n---\nb: 2\n")).is_err(), "two documents without a spec header");
        assert!(split(doc("spec: {}\n---\nb: 2\n---\nc: 3\n")).is_err());
    }
}
