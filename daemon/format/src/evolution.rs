//! How a document's format evolves across a fleet that never upgrades all
//! at once (docs/format.md, "Format versions and evolution").
//!
//! Every JSON document this project reads (the index, a package manifest,
//! the state record) carries an integer `format`; a document without one is
//! format 1. The rule, the same for each:
//!
//! * A reader accepts every format up to its own and refuses a higher one
//!   with a typed error that says to upgrade milspecd. It changes nothing.
//! * Within one format, a writer may add a field only if a reader that does
//!   not know it may safely go on as if it were absent. The writer says so,
//!   inside the document, by naming the field in the top-level `optional`
//!   list; a reader drops such a field where it does not know it
//!   ([`strip`]) and keeps every check on the fields it knows.
//! * A field a reader does not know and that is *not* listed in `optional`
//!   is refused as today ("unknown field"). A field an older reader must not
//!   ignore therefore needs no new mechanism: it is simply never listed, and
//!   the writer bumps `format` so older readers refuse with the clear error.
//!
//! The signatures of a signed document are over its exact bytes, checked
//! before any of this runs: dropping an optional field from the parsed
//! value never changes what was verified.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The top-level key that lists the fields a reader may ignore.
pub const OPTIONAL_KEY: &str = "optional";
/// The top-level key of the format number.
pub const FORMAT_KEY: &str = "format";
/// Most names in one `optional` list.
pub const MAX_OPTIONAL: usize = 64;
/// Longest name in an `optional` list.
pub const MAX_OPTIONAL_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvolutionError {
    #[error("the document is not a JSON object")]
    NotObject,
    #[error("`format` is not a whole number of at least 1")]
    BadFormat,
    #[error("`optional` must be a list of at most {MAX_OPTIONAL} field names (1-{MAX_OPTIONAL_NAME} characters of a-z, 0-9 and _)")]
    BadOptional,
}

/// The fields a document declares optional, read from its top level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Optional {
    names: BTreeSet<String>,
}

impl Optional {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_OPTIONAL_NAME
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Parses a document into a JSON object, refusing a key given twice in any
/// object (as the typed parsers do: two readers must never see two
/// different values in one signed text).
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    serde_json::from_slice::<NoDuplicates>(bytes).map_err(|e| e.to_string())?;
    match serde_json::from_slice::<Value>(bytes).map_err(|e| e.to_string())? {
        Value::Object(o) => Ok(o),
        _ => Err(EvolutionError::NotObject.to_string()),
    }
}

/// Walks any JSON value and fails on a duplicate key.
struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<NoDuplicates, A::Error> {
        while s.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = BTreeSet::new();
        while let Some(k) = m.next_key::<String>()? {
            if !seen.insert(k.clone()) {
                return Err(de::Error::custom(format!("duplicate field `{k}`")));
            }
            m.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

/// The document's format number: 1 when it has none.
pub fn format_of(doc: &Map<String, Value>) -> Result<u32, EvolutionError> {
    match doc.get(FORMAT_KEY) {
        None => Ok(1),
        Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n >= 1).ok_or(EvolutionError::BadFormat),
    }
}

/// Takes the `optional` list out of the document's top level (absent: no
/// field is optional).
pub fn take_optional(doc: &mut Map<String, Value>) -> Result<Optional, EvolutionError> {
    let Some(list) = doc.remove(OPTIONAL_KEY) else {
        return Ok(Optional::default());
    };
    let items = list.as_array().ok_or(EvolutionError::BadOptional)?;
    if items.len() > MAX_OPTIONAL {
        return Err(EvolutionError::BadOptional);
    }
    let mut names = BTreeSet::new();
    for i in items {
        let n = i.as_str().filter(|n| valid_name(n)).ok_or(EvolutionError::BadOptional)?;
        names.insert(n.to_string());
    }
    Ok(Optional { names })
}

/// Removes from one object of the document the fields this reader does not
/// know (`known`) and the document lists as optional, and returns them. A
/// known field is never removed, whatever the list says; an unknown field
/// the list does not name is left in place for the strict parser to refuse.
pub fn strip(obj: &mut Map<String, Value>, known: &[&str], optional: &Optional) -> Map<String, Value> {
    let drop: Vec<String> =
        obj.keys().filter(|k| !known.contains(&k.as_str()) && optional.contains(k)).cloned().collect();
    let mut removed = Map::new();
    for k in drop {
        if let Some(v) = obj.remove(&k) {
            removed.insert(k, v);
        }
    }
    removed
}

/// [`strip`] on every object of the array at `obj[key]`, if there is one.
pub fn strip_each(obj: &mut Map<String, Value>, key: &str, known: &[&str], optional: &Optional) {
    if let Some(Value::Array(items)) = obj.get_mut(key) {
        for item in items {
            if let Value::Object(o) = item {
                strip(o, known, optional);
            }
        }
    }
}

/// [`strip`] on the object at `obj[key]`, if there is one.
pub fn strip_in(obj: &mut Map<String, Value>, key: &str, known: &[&str], optional: &Optional) {
    if let Some(Value::Object(o)) = obj.get_mut(key) {
        strip(o, known, optional);
    }
}

/// Every key of every object in `v`, at any depth, except below the keys
/// named in `opaque` (maps whose keys are data, such as module parameters).
#[cfg(test)]
pub(crate) fn all_keys(v: &Value, opaque: &[&str], out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                out.insert(k.clone());
                if !opaque.contains(&k.as_str()) {
                    all_keys(x, opaque, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| all_keys(x, opaque, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse_object(br#"{"a":1,"b":{"c":[{"d":1}]}}"#).is_ok());
        for bad in [&br#"{"a":1,"a":1}"#[..], br#"{"b":{"c":[{"d":1,"d":2}]}}"#, b"[1]", b"{"] {
            assert!(parse_object(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse_object(br#"{"a":1,"a":2}"#).unwrap_err().contains("duplicate field `a`"));
    }

    #[test]
    fn format_missing_is_one_and_bad_ones_are_refused() {
        assert_eq!(format_of(&obj(json!({}))), Ok(1));
        assert_eq!(format_of(&obj(json!({"format": 3}))), Ok(3));
        for bad in [json!(0), json!(-1), json!("1"), json!(1.5), json!(u64::MAX)] {
            assert_eq!(format_of(&obj(json!({ "format": bad }))), Err(EvolutionError::BadFormat));
        }
    }

    #[test]
    fn optional_list_is_bounded_and_named() {
        let mut d = obj(json!({"optional": ["a_b", "c1"], "x": 1}));
        let o = take_optional(&mut d).unwrap();
        assert!(o.contains("a_b") && o.contains("c1") && !d.contains_key("optional"));
        for bad in [json!("a"), json!([1]), json!(["A"]), json!([""]), json!(["a\u{1b}"]), json!(["x".repeat(65)])] {
            let mut d = obj(json!({ "optional": bad }));
            assert_eq!(take_optional(&mut d), Err(EvolutionError::BadOptional));
        }
        let many: Vec<String> = (0..=MAX_OPTIONAL).map(|i| format!("f{i}")).collect();
        assert_eq!(take_optional(&mut obj(json!({ "optional": many }))), Err(EvolutionError::BadOptional));
    }

    #[test]
    fn strip_drops_only_unknown_listed_fields() {
        let mut d = obj(json!({"optional": ["new", "name", "list"], "name": "n", "new": 1, "other": 2,
            "items": [{"list": 1, "name": 2}], "sub": {"new": 3}}));
        let o = take_optional(&mut d).unwrap();
        let removed = strip(&mut d, &["name", "items", "sub"], &o);
        assert_eq!(removed, obj(json!({"new": 1})));
        // Known fields stay whatever the list says; unlisted unknown ones stay for the parser to refuse.
        assert_eq!(d["name"], json!("n"));
        assert_eq!(d["other"], json!(2));
        strip_each(&mut d, "items", &["name"], &o);
        assert_eq!(d["items"], json!([{"name": 2}]));
        strip_in(&mut d, "sub", &[], &o);
        assert_eq!(d["sub"], json!({}));
    }
}
