//! A CI file's YAML read as GitLab reads it (Ruby's Psych), which is more forgiving than
//! the YAML specification in two ways real files rely on: a key given twice in one map
//! keeps its last value, and a `<<` merge key takes effect where it stands — it overrides
//! the keys before it, and the keys after it override it — including a second `<<` in
//! the same map and a merged map that has `<<` merges of its own. Tags (`!reference`)
//! are kept for `expand` to resolve.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_yaml_ng::value::{Tag, TaggedValue};
use serde_yaml_ng::{Mapping, Number, Value};

/// The most values a file may hold once its aliases are replayed. An alias replays its
/// anchor's whole value, so a small file of aliases of aliases could otherwise grow to
/// billions of values (the YAML parser only counts the jumps, not what each replays).
pub(super) const MAX_NODES: usize = 1_000_000;

thread_local! {
    /// Values read so far by this thread's [`parse`].
    static NODES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Parses `source`, one document, as GitLab would (see the module's paragraph).
#[cfg(test)]
pub(super) fn parse(source: &str) -> Result<Value, serde_yaml_ng::Error> {
    NODES.with(|n| n.set(0));
    serde_yaml_ng::from_str::<Lenient>(source).map(|l| l.0)
}

/// Parses every document of `source` (`---` between them), each as [`parse`] does; the
/// node limit counts them all together.
pub(super) fn parse_documents(source: &str) -> Result<Vec<Value>, serde_yaml_ng::Error> {
    NODES.with(|n| n.set(0));
    serde_yaml_ng::Deserializer::from_str(source)
        .map(|document| Lenient::deserialize(document).map(|l| l.0))
        .collect()
}

/// Counts one more value; an error once there are more than [`MAX_NODES`].
fn count<E: de::Error>() -> Result<(), E> {
    NODES.with(|n| {
        n.set(n.get() + 1);
        if n.get() > MAX_NODES {
            Err(E::custom(format!(
                "the file holds more than {MAX_NODES} values once its aliases are replayed"
            )))
        } else {
            Ok(())
        }
    })
}

struct Lenient(Value);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        count::<D::Error>()?;
        d.deserialize_any(LenientVisitor).map(Lenient)
    }
}

struct LenientVisitor;

impl<'de> Visitor<'de> for LenientVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Value::Number(Number::from(n)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(LenientVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Lenient(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Mapping::new();
        while let Some(Lenient(key)) = map.next_key()? {
            let Lenient(value) = map.next_value()?;
            if key.as_str() == Some("<<") {
                merge_into(&mut out, value).map_err(de::Error::custom)?;
            } else {
                // A key given twice keeps its last value.
                out.insert(key, value);
            }
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, variant): (String, A::Variant) = data.variant()?;
        let Lenient(value) = variant.newtype_variant()?;
        Ok(Value::Tagged(Box::new(TaggedValue { tag: Tag::new(tag), value })))
    }
}

/// `<<: value` where it stands: a map's keys override those before; of a list of maps,
/// the first map that has a key gives it.
fn merge_into(out: &mut Mapping, value: Value) -> Result<(), String> {
    match value {
        Value::Mapping(merged) => {
            for (k, v) in merged {
                out.insert(k, v);
            }
            Ok(())
        }
        Value::Sequence(maps) => {
            let mut combined = Mapping::new();
            for map in maps {
                let Value::Mapping(map) = map else {
                    return Err("a `<<` merge takes a map or a list of maps".into());
                };
                for (k, v) in map {
                    combined.entry(k).or_insert(v);
                }
            }
            for (k, v) in combined {
                out.insert(k, v);
            }
            Ok(())
        }
        _ => Err("a `<<` merge takes a map or a list of maps".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: &str) -> Value {
        parse(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn duplicate_keys_keep_the_last_and_merges_take_effect_where_they_stand() {
        let v = read("a: 1\na: 2\n");
        assert_eq!(v["a"], Value::Number(2.into()));
        let v = read("x: &x {script: x, image: ix}\ny: &y {script: y, tags: [t]}\njob:\n  script: own\n  <<: *x\n  <<: *y\n  image: own\n");
        let job = &v["job"];
        assert_eq!(
            job["script"],
            Value::String("y".into()),
            "the later merge overrides what came before"
        );
        assert_eq!(job["image"], Value::String("own".into()), "a key after the merges overrides them");
        assert_eq!(job["tags"][0], Value::String("t".into()));
        let v = read("a: &a {k: a, only_a: 1}\nb: &b {k: b}\njob:\n  <<: [*a, *b]\n");
        assert_eq!(v["job"]["k"], Value::String("a".into()), "in a list, the first map wins");
    }

    #[test]
    fn a_merged_map_with_merges_of_its_own_brings_them_along() {
        let v =
            read("base: &base {image: alpine, script: b}\nextra: &extra\n  <<: *base\n  tags: [x]\njob:\n  <<: *extra\n  script: own\n");
        let job = v["job"].as_mapping().unwrap();
        assert_eq!(job["image"], Value::String("alpine".into()));
        assert_eq!(job["script"], Value::String("own".into()));
        assert!(!job.contains_key("<<"));
    }

    #[test]
    fn aliases_of_aliases_cannot_blow_up() {
        let list = format!("[{}]", vec!["x"; 2000].join(","));
        let aliases = format!("[{}]", vec!["*a"; 1000].join(","));
        let e = parse(&format!("a: &a {list}\nb: {aliases}\n")).unwrap_err();
        assert!(e.to_string().contains("aliases are replayed"), "{e}");
    }

    #[test]
    fn documents_are_read_one_by_one() {
        let docs = parse_documents("spec:\n  inputs: {a: }\n---\njob: {script: x}\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[0]["spec"]["inputs"].as_mapping().is_some() && docs[1]["job"].is_mapping());
        assert_eq!(parse_documents("a: 1\n").unwrap().len(), 1);
    }

    #[test]
    fn tags_are_kept() {
        let v = read("job:\n  script: !reference [.a, script]\n");
        let Value::Tagged(t) = &v["job"]["script"] else { panic!("{v:?}") };
        assert_eq!(t.tag, Tag::new("reference"));
    }
}
