//! `raftgatectl import openapi SPEC --upstream U`: routes for every path and
//! method of an OpenAPI 3 document, written in one atomic apply. With
//! `--validate`, a JSON request body schema becomes the route's
//! `request_schema` (local `#/components/schemas/…` references kept, as
//! `$defs`), so the gateway answers 400 to a body that does not match.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];
const MAX_ID: usize = 64;

/// The routes a spec describes, as a declarative document.
pub fn routes(spec: &Value, upstream: &str, validate: bool) -> Result<Value, String> {
    let version = spec["openapi"].as_str().unwrap_or("");
    if !version.starts_with("3.") {
        return Err(format!("not an OpenAPI 3 document (openapi: {:?})", spec["openapi"]));
    }
    let title = spec["info"]["title"].as_str().ok_or("info.title is required")?;
    let api_version = spec["info"]["version"].as_str().unwrap_or("");
    let paths = spec["paths"].as_object().ok_or("paths must be a mapping")?;
    let defs = spec["components"]["schemas"].as_object().cloned().unwrap_or_default();
    let mut ids = BTreeSet::new();
    let mut routes = Vec::new();
    for (path, item) in paths {
        if !path.starts_with('/') {
            return Err(format!("paths[{path:?}]: must start with '/'"));
        }
        let pattern = path_pattern(path)?;
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = route_id(title, method, path, &mut ids);
            let mut route = json!({
                "id": id,
                "upstream": upstream,
                "paths": [pattern],
                "methods": [method.to_ascii_uppercase()],
                "api": { "name": title, "version": api_version },
            });
            if validate {
                if let Some(schema) = op["requestBody"]["content"]["application/json"]["schema"].as_object() {
                    route["request_schema"] = with_defs(Value::Object(schema.clone()), &defs);
                }
            }
            routes.push(route);
        }
    }
    if routes.is_empty() {
        return Err("the document has no operations under paths".into());
    }
    Ok(json!({ "routes": routes }))
}

/// `{param}` as a whole segment maps to a template; anything else to a regex.
fn path_pattern(path: &str) -> Result<Value, String> {
    if !path.contains('{') {
        return Ok(json!({ "exact": path }));
    }
    let whole = path
        .split('/')
        .all(|seg| !seg.contains('{') || (seg.starts_with('{') && seg.ends_with('}') && seg.matches('{').count() == 1));
    if whole {
        return Ok(json!({ "template": path }));
    }
    let mut re = String::from("^");
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        re.push_str(&regex_escape(&rest[..open]));
        let close = rest[open..].find('}').ok_or_else(|| format!("paths[{path:?}]: unclosed '{{'"))? + open;
        re.push_str("[^/]+");
        rest = &rest[close + 1..];
    }
    re.push_str(&regex_escape(rest));
    re.push('$');
    Ok(json!({ "regex": re }))
}

fn regex_escape(s: &str) -> String {
    s.chars().flat_map(|c| if "\\.+*?()|[]{}^$".contains(c) { vec!['\\', c] } else { vec![c] }).collect()
}

/// `<api>-<method>-<path>` in id characters, unique, at most 64 characters.
fn route_id(title: &str, method: &str, path: &str, taken: &mut BTreeSet<String>) -> String {
    let slug = |s: &str| -> String {
        let mut out = String::new();
        for c in s.chars().map(|c| c.to_ascii_lowercase()) {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        out.trim_matches('-').to_string()
    };
    let mut base = format!("{}-{method}-{}", slug(title), slug(path));
    base = base.trim_matches('-').to_string();
    if base.is_empty() || !base.as_bytes()[0].is_ascii_alphanumeric() {
        base = format!("api-{base}");
    }
    base.truncate(MAX_ID - 4);
    let base = base.trim_end_matches('-').to_string();
    let mut id = base.clone();
    let mut n = 2;
    while !taken.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// The schema with the document's component schemas as `$defs`, and its
/// `#/components/schemas/X` references pointed at them.
fn with_defs(schema: Value, defs: &Map<String, Value>) -> Value {
    fn rewrite(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get_mut("$ref") {
                    if let Some(name) = r.strip_prefix("#/components/schemas/") {
                        *r = format!("#/$defs/{name}");
                    }
                }
                m.values_mut().for_each(rewrite);
            }
            Value::Array(a) => a.iter_mut().for_each(rewrite),
            _ => {}
        }
    }
    let mut out = schema;
    if !defs.is_empty() {
        out["$defs"] = Value::Object(defs.clone());
    }
    rewrite(&mut out);
    out
}

pub fn read(path: &PathBuf) -> Result<Value, String> {
    crate::objects::read_document(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods_become_routes_with_schemas_and_ids() {
        let spec = json!({
            "openapi": "3.0.3",
            "info": { "title": "Pet Store", "version": "1.2" },
            "paths": {
                "/pets": { "get": {}, "post": { "requestBody": { "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Pet" } } } } } },
                "/pets/{id}": { "get": {} },
                "/files/{name}.json": { "get": {} },
            },
            "components": { "schemas": { "Pet": { "type": "object", "required": ["name"],
                "properties": { "name": { "type": "string" } } } } }
        });
        let doc = routes(&spec, "pets", true).unwrap();
        let r = doc["routes"].as_array().unwrap();
        assert_eq!(r.len(), 4);
        let post = r.iter().find(|r| r["methods"][0] == "POST").unwrap();
        assert_eq!(post["id"], "pet-store-post-pets");
        assert_eq!(post["paths"][0]["exact"], "/pets");
        assert_eq!(post["request_schema"]["$ref"], "#/$defs/Pet");
        assert_eq!(post["request_schema"]["$defs"]["Pet"]["required"][0], "name");
        assert_eq!(post["api"]["version"], "1.2");
        let one = r.iter().find(|r| r["id"] == "pet-store-get-pets-id").unwrap();
        assert_eq!(one["paths"][0]["template"], "/pets/{id}");
        let file = r.iter().find(|r| r["id"] == "pet-store-get-files-name-json").unwrap();
        assert_eq!(file["paths"][0]["regex"], r"^/files/[^/]+\.json$");
        assert!(routes(&json!({"swagger": "2.0"}), "u", false).is_err());
    }
}
