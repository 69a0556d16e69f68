//! Request bodies as the engine's Go decoder reads them: a JSON tree that keeps every
//! key (serde_json's own map would let a second `"HostConfig"` silently replace the
//! first), struct fields looked up without regard to ASCII case as `encoding/json`
//! matches them, and the canonical JSON the policy forwards in place of what it read.
//!
//! A body is refused when an object repeats a key exactly, or a struct repeats a field
//! under another case: Go would merge or keep the last one, and what the policy checked
//! would not be what the engine used. A field the policy does not know is dropped when
//! it is empty (`null`, `false`, `0`, `""`, `[]`, `{}` — what clients send for unset
//! fields) and refused otherwise, so nothing unknown ever reaches the engine.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::Refusal;

/// A JSON value with its object keys in order, duplicates kept.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum J {
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    /// Parses a body; an empty one reads as `{}`.
    pub(crate) fn parse(bytes: &[u8]) -> Result<J, Refusal> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(J::Obj(Vec::new()));
        }
        let value: J = serde_json::from_slice(bytes).map_err(|e| Refusal::bad(format!("usher: bad JSON: {e}")))?;
        value.refuse_repeated_keys()?;
        Ok(value)
    }

    /// What a client sends for a field it does not set.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            J::Null | J::Bool(false) => true,
            J::Num(n) => n.as_f64() == Some(0.0),
            J::Str(s) => s.is_empty(),
            J::Arr(a) => a.is_empty(),
            J::Obj(o) => o.is_empty(),
            J::Bool(true) => false,
        }
    }

    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            J::Num(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The elements of an array; `null` is none. Anything else is refused.
    pub(crate) fn items(&self, at: &str) -> Result<&[J], Refusal> {
        match self {
            J::Null => Ok(&[]),
            J::Arr(a) => Ok(a),
            _ => Err(Refusal::bad(format!("usher: {at} must be an array"))),
        }
    }

    /// A string field: `null` reads as "", as Go decodes it.
    pub(crate) fn text(&self, at: &str) -> Result<&str, Refusal> {
        match self {
            J::Null => Ok(""),
            J::Str(s) => Ok(s),
            _ => Err(Refusal::bad(format!("usher: {at} must be a string"))),
        }
    }

    /// A `map[string]string` (labels, options): `null` is empty.
    pub(crate) fn string_map(&self, at: &str) -> Result<Vec<(String, String)>, Refusal> {
        match self {
            J::Null => Ok(Vec::new()),
            J::Obj(o) => o
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.text(&format!("{at}.{k}"))?.to_string())))
                .collect(),
            _ => Err(Refusal::bad(format!("usher: {at} must be an object"))),
        }
    }

    fn refuse_repeated_keys(&self) -> Result<(), Refusal> {
        match self {
            J::Arr(items) => items.iter().try_for_each(J::refuse_repeated_keys),
            J::Obj(entries) => {
                let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort_unstable();
                if let Some(pair) = keys.windows(2).find(|w| w[0] == w[1]) {
                    return Err(Refusal::bad(format!("usher: the key {:?} appears twice", pair[0])));
                }
                entries.iter().try_for_each(|(_, v)| v.refuse_repeated_keys())
            }
            _ => Ok(()),
        }
    }

    /// The value as serde_json's (keys are unique by now).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Num(n) => Value::Number(n.clone()),
            J::Str(s) => Value::String(s.clone()),
            J::Arr(a) => Value::Array(a.iter().map(J::to_value).collect()),
            J::Obj(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
        }
    }
}

/// `at.name`, or `name` at the top of the body (`at` empty).
pub(crate) fn field_path(at: &str, name: &str) -> String {
    if at.is_empty() { name.to_string() } else { format!("{at}.{name}") }
}

/// The fields of a Go struct found in an object: each key matched to its field without
/// regard to ASCII case, as `encoding/json` does.
pub(crate) struct Fields<'a> {
    /// Where the struct is (`HostConfig`, `HostConfig.Mounts[0]`; empty for the body),
    /// for messages.
    pub at: String,
    found: Vec<(&'static str, &'a J)>,
}

impl<'a> Fields<'a> {
    /// Reads `value` (an object, or `null` for none) as a struct with the fields `known`.
    /// Refused: a field given twice (in any case), and an unknown field that is not
    /// empty (`unknown(name)` says why); empty unknown fields are dropped.
    pub(crate) fn of(value: &'a J, at: &str, known: &[&'static str], unknown: impl Fn(&str) -> String) -> Result<Fields<'a>, Refusal> {
        let here = if at.is_empty() { "the body" } else { at };
        let entries: &[(String, J)] = match value {
            J::Null => &[],
            J::Obj(o) => o,
            _ => return Err(Refusal::bad(format!("usher: {here} must be an object"))),
        };
        let mut folded: Vec<String> = entries.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
        folded.sort_unstable();
        if let Some(pair) = folded.windows(2).find(|w| w[0] == w[1]) {
            return Err(Refusal::bad(format!(
                "usher: {here} has the field {:?} twice (the engine matches field names in any case)",
                pair[0]
            )));
        }
        let mut found = Vec::new();
        for (key, v) in entries {
            match known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                Some(name) => found.push((*name, v)),
                None if v.is_empty() => {}
                None => return Err(Refusal::forbidden(unknown(&field_path(at, key)))),
            }
        }
        Ok(Fields { at: at.to_string(), found })
    }

    /// The field's value, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&'a J> {
        self.found.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// The field's value, `null` when not given.
    pub(crate) fn or_null(&self, name: &str) -> &'a J {
        self.get(name).unwrap_or(&J::Null)
    }

    /// Copies the given `names` into `out` under their canonical names.
    pub(crate) fn copy(&self, names: &[&str], out: &mut Map<String, Value>) {
        for (name, v) in &self.found {
            if names.contains(name) {
                out.insert(name.to_string(), v.to_value());
            }
        }
    }

    /// `Err` naming the first of `names` that is set (not empty), with `why`.
    pub(crate) fn refuse_set(&self, names: &[&str], why: impl Fn(&str) -> String) -> Result<(), Refusal> {
        match self.found.iter().find(|(k, v)| names.contains(k) && !v.is_empty()) {
            Some((name, _)) => Err(Refusal::forbidden(why(&field_path(&self.at, name)))),
            None => Ok(()),
        }
    }
}

/// A labels object with the job's labels set over whatever the client gave.
pub(crate) fn labels(given: &J, at: &str, ours: &[(String, String)]) -> Result<Value, Refusal> {
    let mut out: Map<String, Value> = given.string_map(at)?.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    for (k, v) in ours {
        out.insert(k.clone(), Value::String(v.clone()));
    }
    Ok(Value::Object(out))
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<J, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = J;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<J, E> {
        Ok(J::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<J, E> {
        Ok(J::Num(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<J, E> {
        Ok(J::Num(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<J, E> {
        Number::from_f64(n).map(J::Num).ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, s: &str) -> Result<J, E> {
        Ok(J::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<J, E> {
        Ok(J::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(J::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, J>()? {
            entries.push((key, value));
        }
        Ok(J::Obj(entries))
    }
}
