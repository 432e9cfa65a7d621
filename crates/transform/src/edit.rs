//! JSON field edits, applied in order. Each targets a JSON pointer; an edit
//! whose parent is missing, or is a scalar, or whose array index is out of
//! range does nothing: the body decides which fields exist, not the route,
//! so an edit never fails a request.

use raftgate_model::transform::{parse_pointer, JsonEdit};

use crate::json::Json;

/// Applies `edits` to `doc` in order.
pub fn apply_edits(doc: &mut Json, edits: &[JsonEdit]) {
    for edit in edits {
        // Paths were validated with the route; one that is not a pointer is skipped.
        let Ok(tokens) = parse_pointer(edit.path()) else { continue };
        let Some((last, parents)) = tokens.split_last() else { continue };
        let Some(parent) = walk(doc, parents) else { continue };
        match edit {
            JsonEdit::Add(a) => add(parent, last, Json::from(&a.value)),
            JsonEdit::Remove(_) => remove(parent, last),
            JsonEdit::Rename(r) => {
                if let Json::Object(o) = parent {
                    o.rename(last, &r.to);
                }
            }
        }
    }
}

fn walk<'a>(mut at: &'a mut Json, tokens: &[String]) -> Option<&'a mut Json> {
    for t in tokens {
        at = match at {
            Json::Object(o) => o.get_mut(t)?,
            Json::Array(a) => a.get_mut(array_index(t)?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// An RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let canonical = token == "0" || (!token.starts_with('0') && token.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| token.parse().ok()).flatten()
}

fn add(parent: &mut Json, key: &str, value: Json) {
    match parent {
        Json::Object(o) => {
            o.insert(key.to_string(), value);
        }
        Json::Array(a) if key == "-" => a.push(value),
        Json::Array(a) => {
            if let Some(i) = array_index(key).filter(|&i| i <= a.len()) {
                a.insert(i, value);
            }
        }
        _ => {}
    }
}

fn remove(parent: &mut Json, key: &str) {
    match parent {
        Json::Object(o) => {
            o.remove(key);
        }
        Json::Array(a) => {
            if let Some(i) = array_index(key).filter(|&i| i < a.len()) {
                a.remove(i);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_json, write_json, Limits};
    use serde_json::json;

    fn run(body: &str, edits: serde_json::Value) -> String {
        let edits: Vec<JsonEdit> = serde_json::from_value(edits).unwrap();
        let mut doc = parse_json(body.as_bytes(), &Limits::default()).unwrap();
        apply_edits(&mut doc, &edits);
        String::from_utf8(write_json(&doc, &Limits::default()).unwrap()).unwrap()
    }

    #[test]
    fn add_remove_and_rename_apply_in_order_and_keep_member_order() {
        let out = run(
            r#"{"id":7,"secret":"s","customer":{"name":"Ann"},"items":[1,2]}"#,
            json!([
                {"rename": {"path": "/id", "to": "orderId"}},
                {"remove": {"path": "/secret"}},
                {"add": {"path": "/customer/tier", "value": "gold"}},
                {"add": {"path": "/items/-", "value": 3}},
                {"add": {"path": "/items/0", "value": 0}},
                {"remove": {"path": "/items/1"}},
                {"add": {"path": "/source", "value": {"via": "gateway"}}},
            ]),
        );
        assert_eq!(
            out,
            r#"{"orderId":7,"customer":{"name":"Ann","tier":"gold"},"items":[0,2,3],"source":{"via":"gateway"}}"#
        );
    }

    #[test]
    fn an_edit_whose_target_is_missing_changes_nothing() {
        let body = r#"{"a":{"b":1},"n":5,"list":[1]}"#;
        let out = run(
            body,
            json!([
                {"add": {"path": "/missing/x", "value": 1}},
                {"add": {"path": "/n/x", "value": 1}},
                {"add": {"path": "/list/5", "value": 1}},
                {"add": {"path": "/list/01", "value": 1}},
                {"remove": {"path": "/nope"}},
                {"remove": {"path": "/list/9"}},
                {"rename": {"path": "/zzz", "to": "y"}},
                {"rename": {"path": "/list/0", "to": "y"}},
            ]),
        );
        assert_eq!(out, body);
    }

    #[test]
    fn renaming_onto_an_existing_key_replaces_it_and_escaped_pointers_work() {
        let out = run(
            r#"{"a/b":1,"c~d":2,"x":3}"#,
            json!([{"rename": {"path": "/a~1b", "to": "x"}}, {"remove": {"path": "/c~0d"}}]),
        );
        assert_eq!(out, r#"{"x":1}"#);
    }
}
