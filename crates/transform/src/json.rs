//! A JSON tree that keeps object members in document order, read strictly
//! (one key once per object, nothing after the value) within the depth and
//! node bounds, and written back into a bounded buffer.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::bounded::BoundedBuf;
use crate::{Limits, TransformError};

/// A JSON value whose objects keep their members in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Object),
}

/// Members above this count get a hash index, so that building or editing
/// a wide object stays linear.
const INDEX_FROM: usize = 16;

/// An object's members in order, each key once.
#[derive(Clone, Debug, Default)]
pub struct Object {
    entries: Vec<(String, Json)>,
    index: Option<HashMap<String, usize>>,
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Object {
    pub fn new() -> Self {
        Object::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k == key),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// Appends a member whose key is not present yet.
    fn push_unchecked(&mut self, key: String, value: Json) {
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.entries.len());
        }
        self.entries.push((key, value));
        if self.index.is_none() && self.entries.len() > INDEX_FROM {
            self.reindex();
        }
    }

    /// Appends a new member; `Err` gives it back when the key is present.
    pub fn push_new(&mut self, key: String, value: Json) -> Result<(), (String, Json)> {
        if self.position(&key).is_some() {
            return Err((key, value));
        }
        self.push_unchecked(key, value);
        Ok(())
    }

    /// Sets `key`: replaced in place when present, appended otherwise.
    pub fn insert(&mut self, key: String, value: Json) -> Option<Json> {
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.push_unchecked(key, value);
                None
            }
        }
    }

    /// Inserts a new member at `at` (clamped to the end).
    pub(crate) fn insert_at(&mut self, at: usize, key: String, value: Json) {
        let at = at.min(self.entries.len());
        self.entries.insert(at, (key, value));
        self.reindex_if_wide();
    }

    pub fn remove(&mut self, key: &str) -> Option<Json> {
        let i = self.position(key)?;
        let (_, v) = self.entries.remove(i);
        self.reindex_if_wide();
        Some(v)
    }

    /// Renames `from` to `to` in place; a member already called `to` is dropped.
    pub fn rename(&mut self, from: &str, to: &str) {
        if from == to || self.position(from).is_none() {
            return;
        }
        if let Some(j) = self.position(to) {
            self.entries.remove(j);
        }
        if let Some(i) = self.entries.iter().position(|(k, _)| k == from) {
            self.entries[i].0 = to.to_string();
        }
        self.reindex_if_wide();
    }

    fn reindex_if_wide(&mut self) {
        if self.entries.len() > INDEX_FROM {
            self.reindex();
        } else {
            self.index = None;
        }
    }

    fn reindex(&mut self) {
        self.index = Some(self.entries.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect());
    }
}

impl From<&serde_json::Value> for Json {
    fn from(v: &serde_json::Value) -> Json {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(*b),
            serde_json::Value::Number(n) => Json::Number(n.clone()),
            serde_json::Value::String(s) => Json::String(s.clone()),
            serde_json::Value::Array(a) => Json::Array(a.iter().map(Json::from).collect()),
            serde_json::Value::Object(m) => {
                let mut o = Object::new();
                for (k, v) in m {
                    o.push_unchecked(k.clone(), Json::from(v));
                }
                Json::Object(o)
            }
        }
    }
}

impl From<&Json> for serde_json::Value {
    fn from(v: &Json) -> serde_json::Value {
        match v {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => serde_json::Value::Bool(*b),
            Json::Number(n) => serde_json::Value::Number(n.clone()),
            Json::String(s) => serde_json::Value::String(s.clone()),
            Json::Array(a) => serde_json::Value::Array(a.iter().map(serde_json::Value::from).collect()),
            Json::Object(o) => serde_json::Value::Object(o.iter().map(|(k, v)| (k.to_string(), v.into())).collect()),
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Json::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o.iter() {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Writes `doc` as compact JSON within `limits.max_output_bytes`.
pub fn write_json(doc: &Json, limits: &Limits) -> Result<Vec<u8>, TransformError> {
    let mut out = BoundedBuf::new(limits.max_output_bytes, 4096);
    match serde_json::to_writer(&mut out, doc) {
        Ok(()) => Ok(out.into_inner()),
        Err(_) if out.overflowed() => Err(TransformError::OutputTooLarge),
        // Serializing the tree has no other way to fail.
        Err(e) => Err(TransformError::InvalidJson(e.to_string())),
    }
}

/// Why the walk stopped, when it was a bound rather than the syntax.
#[derive(Clone, Copy)]
enum Stop {
    Depth,
    Nodes,
}

struct Budget {
    max_depth: usize,
    max_nodes: usize,
    nodes: Cell<usize>,
    stop: Cell<Option<Stop>>,
}

impl Budget {
    fn node<E: de::Error>(&self) -> Result<(), E> {
        let n = self.nodes.get() + 1;
        self.nodes.set(n);
        if n > self.max_nodes {
            self.stop.set(Some(Stop::Nodes));
            return Err(E::custom("too many nodes"));
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Seed<'a> {
    depth: usize,
    budget: &'a Budget,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Json;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl Seed<'_> {
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= self.budget.max_depth {
            self.budget.stop.set(Some(Stop::Depth));
            return Err(E::custom("too deep"));
        }
        Ok(Seed { depth: self.depth + 1, budget: self.budget })
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        self.budget.node()?;
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        self.budget.node()?;
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        self.budget.node()?;
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        self.budget.node()?;
        serde_json::Number::from_f64(v).map(Json::Number).ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        self.visit_string(v.to_string())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        self.budget.node()?;
        Ok(Json::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        self.budget.node()?;
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        self.budget.node()?;
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Json::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        self.budget.node()?;
        let inner = self.nested()?;
        let mut out = Object::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(inner)?;
            // A key twice could be read differently by two parsers.
            out.push_new(key, value).map_err(|_| de::Error::custom("an object has a key twice"))?;
        }
        Ok(Json::Object(out))
    }
}

/// Reads one JSON document: nothing but whitespace after it, no key twice
/// in an object, within the byte, depth and node bounds.
pub fn parse_json(bytes: &[u8], limits: &Limits) -> Result<Json, TransformError> {
    if bytes.len() > limits.max_input_bytes {
        return Err(TransformError::InputTooLarge);
    }
    let budget = Budget {
        max_depth: limits.max_depth.min(crate::MAX_DEPTH),
        max_nodes: limits.max_nodes,
        nodes: Cell::new(0),
        stop: Cell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Seed { depth: 0, budget: &budget }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| match budget.stop.get() {
        Some(Stop::Depth) => TransformError::TooDeep,
        Some(Stop::Nodes) => TransformError::TooManyNodes,
        None => TransformError::InvalidJson(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Json, TransformError> {
        parse_json(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn members_keep_their_document_order_through_parse_and_write() {
        let text = r#"{"zeta":1,"alpha":{"y":true,"b":null},"mid":["x",2.5,-3]}"#;
        let doc = parse(text).unwrap();
        assert_eq!(write_json(&doc, &Limits::default()).unwrap(), text.as_bytes());
    }

    #[test]
    fn a_key_twice_trailing_data_and_bad_syntax_are_invalid_json() {
        for bad in [r#"{"a":1,"a":2}"#, r#"{"a":1} x"#, r#"{"a":"#, "", "nul", "[1,]", "{'a':1}"] {
            assert!(matches!(parse(bad), Err(TransformError::InvalidJson(_))), "{bad}");
        }
    }

    #[test]
    fn depth_nodes_and_bytes_are_bounded() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(parse(&deep), Err(TransformError::TooDeep));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(&ok).is_ok());
        let limits = Limits { max_nodes: 10, ..Limits::default() };
        assert_eq!(parse_json(b"[1,2,3,4,5,6,7,8,9,10]", &limits), Err(TransformError::TooManyNodes));
        let limits = Limits { max_input_bytes: 3, ..Limits::default() };
        assert_eq!(parse_json(b"[1,2]", &limits), Err(TransformError::InputTooLarge));
        let limits = Limits { max_output_bytes: 4, ..Limits::default() };
        assert_eq!(write_json(&parse("[1,2,3]").unwrap(), &limits), Err(TransformError::OutputTooLarge));
    }

    #[test]
    fn a_wide_object_finds_renames_and_removes_members_through_its_index() {
        let mut o = Object::new();
        for i in 0..40 {
            o.push_new(format!("k{i}"), Json::Number(i.into())).unwrap();
        }
        assert!(o.push_new("k3".into(), Json::Null).is_err());
        o.remove("k0");
        assert_eq!(o.get("k39"), Some(&Json::Number(39.into())));
        o.rename("k1", "k39");
        assert_eq!(o.len(), 38);
        assert_eq!(o.iter().next().map(|(k, _)| k), Some("k39"));
        assert_eq!(o.get("k39"), Some(&Json::Number(1.into())));
        assert_eq!(o.position("k2"), Some(1));
    }
}
