//! A route's body transformation: JSON → XML on the way to an XML upstream,
//! XML → JSON on the way back, and JSON field edits (add, remove, rename) on
//! either side.
//!
//! This module holds the replicated configuration and its validation; the
//! conversion itself lives in the `raftgate-transform` crate and the data
//! plane applies it (see `docs/transform.md` for the mapping). Everything a
//! policy can ask for is bounded here: body bytes in and out, the number of
//! edits, the size of an added value and of every name and path.

use serde::{Deserialize, Serialize};

use crate::route::FieldError;

/// Largest body a route may read for transformation (either way).
pub const MAX_TRANSFORM_BODY_BYTES: u64 = 16 << 20;
/// Largest body a transformation may produce.
pub const MAX_TRANSFORM_OUTPUT_BYTES: u64 = 32 << 20;
/// Default bound on the body read for transformation.
pub const DEFAULT_TRANSFORM_BODY_BYTES: u64 = 1 << 20;
/// Default bound on the body a transformation produces.
pub const DEFAULT_TRANSFORM_OUTPUT_BYTES: u64 = 2 << 20;
/// Edits per side (request or response).
pub const MAX_JSON_EDITS: usize = 32;
/// Serialized size of the value of one `add` edit.
pub const MAX_EDIT_VALUE_BYTES: usize = 4 << 10;
/// Bytes of one JSON pointer.
pub const MAX_POINTER_BYTES: usize = 1_024;
/// Reference tokens of one JSON pointer.
pub const MAX_POINTER_TOKENS: usize = 32;
/// Bytes of one XML name (element or attribute, prefix included).
pub const MAX_XML_NAME_BYTES: usize = 256;
/// Paths in `xml_to_json.array_paths`.
pub const MAX_ARRAY_PATHS: usize = 64;
/// The root element name when `json_to_xml.root` is not given.
pub const DEFAULT_XML_ROOT: &str = "root";
/// The JSON key of an element's text when it also has attributes or children.
pub const TEXT_KEY: &str = "#text";
/// The prefix of a JSON key that is an XML attribute.
pub const ATTRIBUTE_PREFIX: char = '@';

/// What a route does to bodies. At least one side must be set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformPolicy {
    /// What happens to the client's body before it goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestTransform>,
    /// What happens to the upstream's body before it reaches the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseTransform>,
    /// Largest body read whole to transform, each way (default 1 MiB, at
    /// most 16 MiB). Larger: 413 from a client, 502 from the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Largest body a transformation may produce (default 2 MiB, at most
    /// 32 MiB). Larger: 413 on a request, 502 on a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

/// The request side: optional JSON edits, then an optional JSON → XML.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTransform {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_to_xml: Option<JsonToXml>,
    /// Applied in order to the client's JSON, before any conversion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<JsonEdit>,
}

/// The response side: an optional XML → JSON, then optional JSON edits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseTransform {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xml_to_json: Option<XmlToJson>,
    /// Applied in order to the JSON the client receives, after any conversion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<JsonEdit>,
}

/// How a JSON body becomes an XML document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonToXml {
    /// The name of the document element that wraps the JSON value (an XML
    /// name, a prefix allowed: `soap:Envelope`).
    #[serde(default = "default_root")]
    pub root: String,
    /// Start the document with `<?xml version="1.0" encoding="UTF-8"?>`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub declaration: bool,
}

impl Default for JsonToXml {
    fn default() -> Self {
        JsonToXml { root: default_root(), declaration: true }
    }
}

/// How an XML document becomes a JSON body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlToJson {
    /// Elements that are always a JSON array, even when only one is
    /// present: their element names from below the root, joined by `/`
    /// (`items/item` for `<order><items><item/></items></order>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub array_paths: Vec<String>,
}

/// One edit of a JSON body. Paths are JSON pointers (RFC 6901) into the
/// body; an edit whose target's parent is missing or is not a container is
/// skipped, so edits never fail a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonEdit {
    /// Set the member (or insert the array element; `-` appends) at `path`.
    Add(AddField),
    /// Remove the member or array element at `path`, if present.
    Remove(RemoveField),
    /// Give the member at `path` the key `to`, in place; a member already
    /// called `to` in the same object is replaced.
    Rename(RenameField),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddField {
    pub path: String,
    pub value: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveField {
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameField {
    pub path: String,
    pub to: String,
}

impl JsonEdit {
    /// The pointer this edit targets.
    pub fn path(&self) -> &str {
        match self {
            JsonEdit::Add(a) => &a.path,
            JsonEdit::Remove(r) => &r.path,
            JsonEdit::Rename(r) => &r.path,
        }
    }
}

fn default_root() -> String {
    DEFAULT_XML_ROOT.to_string()
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

impl TransformPolicy {
    /// The bound on bytes read whole, default applied.
    pub fn body_limit(&self) -> u64 {
        self.max_body_bytes.unwrap_or(DEFAULT_TRANSFORM_BODY_BYTES)
    }

    /// The bound on bytes produced, default applied.
    pub fn output_limit(&self) -> u64 {
        self.max_output_bytes.unwrap_or(DEFAULT_TRANSFORM_OUTPUT_BYTES)
    }

    /// The request side, when it does anything.
    pub fn request_side(&self) -> Option<&RequestTransform> {
        self.request.as_ref().filter(|r| r.json_to_xml.is_some() || !r.json.is_empty())
    }

    /// The response side, when it does anything.
    pub fn response_side(&self) -> Option<&ResponseTransform> {
        self.response.as_ref().filter(|r| r.xml_to_json.is_some() || !r.json.is_empty())
    }

    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if self.request_side().is_none() && self.response_side().is_none() {
            return Err(field_err(at, "needs a request or a response transformation"));
        }
        if let Some(b) = self.max_body_bytes {
            if b == 0 || b > MAX_TRANSFORM_BODY_BYTES {
                return Err(field_err(
                    format!("{at}.max_body_bytes"),
                    format!("must be 1 to {MAX_TRANSFORM_BODY_BYTES}"),
                ));
            }
        }
        if let Some(b) = self.max_output_bytes {
            if b == 0 || b > MAX_TRANSFORM_OUTPUT_BYTES {
                return Err(field_err(
                    format!("{at}.max_output_bytes"),
                    format!("must be 1 to {MAX_TRANSFORM_OUTPUT_BYTES}"),
                ));
            }
        }
        if let Some(req) = &self.request {
            let at = format!("{at}.request");
            if let Some(x) = &req.json_to_xml {
                if !is_xml_name(&x.root) {
                    return Err(field_err(format!("{at}.json_to_xml.root"), "must be an XML name"));
                }
            }
            validate_edits(&req.json, &format!("{at}.json"), req.json_to_xml.is_some())?;
        }
        if let Some(resp) = &self.response {
            let at = format!("{at}.response");
            if let Some(x) = &resp.xml_to_json {
                if x.array_paths.len() > MAX_ARRAY_PATHS {
                    return Err(field_err(
                        format!("{at}.xml_to_json.array_paths"),
                        format!("at most {MAX_ARRAY_PATHS} paths"),
                    ));
                }
                for (i, p) in x.array_paths.iter().enumerate() {
                    let field = format!("{at}.xml_to_json.array_paths[{i}]");
                    if p.len() > MAX_POINTER_BYTES || p.split('/').any(|n| !is_xml_name(n)) {
                        return Err(field_err(field, "must be XML element names joined by '/', e.g. items/item"));
                    }
                    if x.array_paths[..i].contains(p) {
                        return Err(field_err(field, "listed twice"));
                    }
                }
            }
            validate_edits(&resp.json, &format!("{at}.json"), false)?;
        }
        Ok(())
    }
}

/// `to_xml`: the edits run before a JSON → XML conversion, so what they
/// add must be expressible as XML (checked here, not per request).
fn validate_edits(edits: &[JsonEdit], at: &str, to_xml: bool) -> Result<(), FieldError> {
    if edits.len() > MAX_JSON_EDITS {
        return Err(field_err(at, format!("at most {MAX_JSON_EDITS} edits")));
    }
    for (i, e) in edits.iter().enumerate() {
        let field = format!("{at}[{i}]");
        let tokens = parse_pointer(e.path()).map_err(|m| field_err(format!("{field}.path"), m))?;
        match e {
            JsonEdit::Add(a) => {
                if serde_json::to_vec(&a.value).map_or(usize::MAX, |b| b.len()) > MAX_EDIT_VALUE_BYTES {
                    return Err(field_err(format!("{field}.value"), format!("at most {MAX_EDIT_VALUE_BYTES} bytes")));
                }
                if to_xml {
                    let key = tokens.last().map(String::as_str).unwrap_or("");
                    let key_ok = key == "-" || key.parse::<usize>().is_ok() || is_mapping_key(key);
                    if !key_ok || !value_maps_to_xml(&a.value, 0) {
                        return Err(field_err(
                            format!("{field}.value"),
                            "must be expressible as XML (keys: XML names, @attribute or #text)",
                        ));
                    }
                }
            }
            JsonEdit::Remove(_) => {}
            JsonEdit::Rename(r) => {
                if r.to.is_empty() || r.to.len() > MAX_XML_NAME_BYTES {
                    return Err(field_err(format!("{field}.to"), format!("1 to {MAX_XML_NAME_BYTES} bytes")));
                }
                if to_xml && !is_mapping_key(&r.to) {
                    return Err(field_err(format!("{field}.to"), "must be an XML name, @attribute or #text"));
                }
            }
        }
    }
    Ok(())
}

/// A JSON key the XML mapping accepts: an element name, `@` + an attribute
/// name, or `#text`.
pub fn is_mapping_key(key: &str) -> bool {
    key == TEXT_KEY || is_xml_name(key.strip_prefix(ATTRIBUTE_PREFIX).unwrap_or(key))
}

fn value_maps_to_xml(v: &serde_json::Value, depth: usize) -> bool {
    match v {
        _ if depth > 16 => false,
        serde_json::Value::Object(m) => m.iter().all(|(k, v)| is_mapping_key(k) && value_maps_to_xml(v, depth + 1)),
        serde_json::Value::Array(a) => a.iter().all(|v| !v.is_array() && value_maps_to_xml(v, depth + 1)),
        _ => true,
    }
}

/// The reference tokens of a non-empty RFC 6901 pointer, unescaped.
pub fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.len() > MAX_POINTER_BYTES {
        return Err(format!("at most {MAX_POINTER_BYTES} bytes"));
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("must be a JSON pointer below the root, e.g. /order/id".into());
    };
    let tokens: Vec<&str> = rest.split('/').collect();
    if tokens.len() > MAX_POINTER_TOKENS {
        return Err(format!("at most {MAX_POINTER_TOKENS} tokens"));
    }
    tokens
        .into_iter()
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, true) => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err("'~' must be followed by 0 or 1".to_string()),
                    },
                    (c, false) => out.push(c),
                }
            }
            Ok(out)
        })
        .collect()
}

/// An XML 1.0 name (fifth edition) with at most one `:` between a prefix
/// and a local part, within [`MAX_XML_NAME_BYTES`].
pub fn is_xml_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_XML_NAME_BYTES {
        return false;
    }
    let mut parts = name.split(':');
    let (Some(first), second, None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    is_ncname(first) && second.is_none_or(is_ncname)
}

fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
}

fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> Result<TransformPolicy, String> {
        let p: TransformPolicy = serde_json::from_value(v).map_err(|e| e.to_string())?;
        p.validate("transform").map_err(|e| e.to_string())?;
        Ok(p)
    }

    #[test]
    fn a_full_policy_parses_validates_and_round_trips_through_serde() {
        let v = json!({
            "request": {"json_to_xml": {"root": "ord:order", "declaration": false},
                        "json": [{"add": {"path": "/@xmlns:ord", "value": "urn:orders"}},
                                 {"remove": {"path": "/debug"}},
                                 {"rename": {"path": "/id", "to": "orderId"}}]},
            "response": {"xml_to_json": {"array_paths": ["items/item"]},
                         "json": [{"remove": {"path": "/internal"}}]},
            "max_body_bytes": 65536,
        });
        let p = policy(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), v);
        assert_eq!(p.body_limit(), 65536);
        assert_eq!(p.output_limit(), DEFAULT_TRANSFORM_OUTPUT_BYTES);
    }

    #[test]
    fn the_root_defaults_to_root_with_a_declaration() {
        let p = policy(json!({"request": {"json_to_xml": {}}})).unwrap();
        assert_eq!(p.request.unwrap().json_to_xml.unwrap(), JsonToXml::default());
    }

    #[test]
    fn bad_policies_are_refused_with_the_field() {
        for (v, field) in [
            (json!({}), "transform"),
            (json!({"request": {}}), "transform"),
            (json!({"request": {"json_to_xml": {"root": "1abc"}}}), "transform.request.json_to_xml.root"),
            (json!({"request": {"json_to_xml": {"root": "a:b:c"}}}), "transform.request.json_to_xml.root"),
            (json!({"request": {"json": [{"remove": {"path": "a"}}]}}), "transform.request.json[0].path"),
            (json!({"request": {"json": [{"remove": {"path": ""}}]}}), "transform.request.json[0].path"),
            (json!({"request": {"json": [{"remove": {"path": "/a~2"}}]}}), "transform.request.json[0].path"),
            (json!({"request": {"json": [{"rename": {"path": "/a", "to": ""}}]}}), "transform.request.json[0].to"),
            (
                json!({"request": {"json_to_xml": {}, "json": [{"rename": {"path": "/a", "to": "has space"}}]}}),
                "transform.request.json[0].to",
            ),
            (
                json!({"request": {"json_to_xml": {}, "json": [{"add": {"path": "/a", "value": {"b c": 1}}}]}}),
                "transform.request.json[0].value",
            ),
            (
                json!({"request": {"json_to_xml": {}, "json": [{"add": {"path": "/a", "value": [[1]]}}]}}),
                "transform.request.json[0].value",
            ),
            (
                json!({"request": {"json": [{"add": {"path": "/a", "value": "x".repeat(5000)}}]}}),
                "transform.request.json[0].value",
            ),
            (
                json!({"response": {"xml_to_json": {"array_paths": ["a//b"]}}}),
                "transform.response.xml_to_json.array_paths[0]",
            ),
            (
                json!({"response": {"xml_to_json": {"array_paths": ["a", "a"]}}}),
                "transform.response.xml_to_json.array_paths[1]",
            ),
            (
                json!({"response": {"json": [{"remove": {"path": "/x"}}]}, "max_body_bytes": 0}),
                "transform.max_body_bytes",
            ),
            (
                json!({"response": {"json": [{"remove": {"path": "/x"}}]}, "max_output_bytes": MAX_TRANSFORM_OUTPUT_BYTES + 1}),
                "transform.max_output_bytes",
            ),
        ] {
            let p: TransformPolicy = serde_json::from_value(v.clone()).unwrap();
            let err = p.validate("transform").unwrap_err();
            assert_eq!(err.field, field, "{v}");
        }
        let too_many: Vec<_> = (0..=MAX_JSON_EDITS).map(|i| json!({"remove": {"path": format!("/f{i}")}})).collect();
        assert!(policy(json!({"request": {"json": too_many}})).unwrap_err().contains("at most 32 edits"));
    }

    #[test]
    fn unknown_fields_and_unknown_edits_are_refused() {
        assert!(serde_json::from_value::<TransformPolicy>(json!({"request": {"xml": {}}})).is_err());
        assert!(serde_json::from_value::<TransformPolicy>(json!({"request": {"json": [{"move": {"path": "/a"}}]}}))
            .is_err());
        assert!(serde_json::from_value::<TransformPolicy>(
            json!({"request": {"json": [{"remove": {"path": "/a", "extra": 1}}]}})
        )
        .is_err());
    }

    #[test]
    fn xml_names_follow_the_xml_production_with_one_prefix() {
        for ok in ["a", "_a", "soap:Envelope", "a-b.c_d1", "été", "x·y"] {
            assert!(is_xml_name(ok), "{ok}");
        }
        for bad in ["", "1a", "-a", ":a", "a:", "a:b:c", "a b", "a<b", "#text", "@a", &"a".repeat(257)] {
            assert!(!is_xml_name(bad), "{bad}");
        }
        assert!(is_mapping_key("#text") && is_mapping_key("@id") && is_mapping_key("@xmlns:x"));
        assert!(!is_mapping_key("@") && !is_mapping_key("#tail"));
    }

    #[test]
    fn pointers_unescape_tilde_zero_and_one() {
        assert_eq!(parse_pointer("/a~1b/c~0d/").unwrap(), vec!["a/b", "c~d", ""]);
    }
}
