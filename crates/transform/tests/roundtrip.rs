//! The round-trip guarantees of `docs/transform.md`, on generated documents:
//!
//! 1. JSON → XML → JSON is the identity (member order included) on the
//!    documented domain: string and null scalars, attributes before other
//!    members, non-empty objects that are not `#text` alone, arrays of two
//!    or more items (or of one or more at a configured array path).
//! 2. XML → JSON → XML gives back the same bytes for a document in
//!    canonical form (no declaration, no whitespace between tags, siblings
//!    of one name adjacent, no mixed content, the writer's escaping).
//! 3. For any document XML → JSON accepts, one more JSON → XML → JSON
//!    changes nothing (comments, CDATA, references, indentation and
//!    interleaved siblings included).
//! 4. Arbitrary input never panics either way.

use proptest::prelude::*;
use raftgate_model::transform::{JsonToXml, XmlToJson};
use raftgate_transform::{json_to_xml, parse_json, xml_to_json, Json, Limits, Object};

const ROOT: &str = "doc";

fn config() -> JsonToXml {
    JsonToXml { root: ROOT.into(), declaration: false }
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9._-]{0,4}(:[a-z][a-z0-9]{0,3})?"
}

/// Any text XML 1.0 can carry, markup characters and line ends included.
fn text() -> impl Strategy<Value = String> {
    "[ -~\t\n\r\u{e9}\u{4e2d}\u{1F600}]{0,10}"
}

fn nonempty_text() -> impl Strategy<Value = String> {
    text().prop_map(|s| format!("{s}x"))
}

/// Members with distinct keys, first occurrence kept.
fn distinct<T>(items: Vec<(String, T)>) -> Vec<(String, T)> {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect()
}

/// A JSON value in the round-trip domain of JSON → XML → JSON.
fn element_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![Just(Json::Null), nonempty_text().prop_map(Json::String)];
    leaf.prop_recursive(4, 48, 5, |inner| {
        let attrs = prop::collection::vec((name(), text()), 0..3);
        let item = inner.clone();
        let child = prop_oneof![
            3 => inner.clone(),
            1 => prop::collection::vec(item, 2..4).prop_map(Json::Array),
        ];
        let children = prop::collection::vec((name(), child), 0..4);
        let text_at = prop::option::of((0usize..4, nonempty_text()));
        (attrs, children, text_at).prop_filter_map("an object that maps back to itself", |(attrs, children, text)| {
            let mut o = Object::new();
            for (k, v) in distinct(attrs) {
                o.push_new(format!("@{k}"), Json::String(v)).ok()?;
            }
            let children = distinct(children);
            let text = text.map(|(at, t)| (at.min(children.len()), t));
            for (i, (k, v)) in children.iter().enumerate() {
                if let Some((_, t)) = text.as_ref().filter(|(at, _)| *at == i) {
                    o.push_new("#text".into(), Json::String(t.clone())).ok()?;
                }
                o.push_new(k.clone(), v.clone()).ok()?;
            }
            if let Some((_, t)) = text.as_ref().filter(|(at, _)| *at == children.len()) {
                o.push_new("#text".into(), Json::String(t.clone())).ok()?;
            }
            // Empty is null; `#text` alone is the bare string.
            let only_text = o.len() == 1 && o.get("#text").is_some();
            (!o.is_empty() && !only_text).then_some(Json::Object(o))
        })
    })
}

/// A canonical XML element: attributes, then either text or child groups.
#[derive(Clone, Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    content: Content,
}

#[derive(Clone, Debug)]
enum Content {
    Text(String),
    /// Groups of same-named siblings, names distinct across groups.
    Groups(Vec<Vec<Element>>),
}

fn element(name_s: BoxedStrategy<String>) -> impl Strategy<Value = Element> {
    let leaf = (name_s.clone(), prop::collection::vec((name(), text()), 0..3), text())
        .prop_map(|(name, attrs, t)| Element { name, attrs: distinct(attrs), content: Content::Text(t) });
    leaf.prop_recursive(4, 48, 4, move |inner| {
        let groups = prop::collection::vec((name(), 1usize..4, inner), 0..4);
        (name_s.clone(), prop::collection::vec((name(), text()), 0..3), groups).prop_map(|(name, attrs, groups)| {
            let groups = distinct(groups.into_iter().map(|(n, count, e)| (n, (count, e))).collect());
            let groups = groups
                .into_iter()
                .map(|(n, (count, e))| (0..count).map(|_| Element { name: n.clone(), ..e.clone() }).collect())
                .collect();
            Element { name, attrs: distinct(attrs), content: Content::Groups(groups) }
        })
    })
}

fn escape(s: &str, attr: bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '"' if attr => out.push_str("&quot;"),
            '\t' if attr => out.push_str("&#9;"),
            '\n' if attr => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
    out
}

/// The canonical form: what the writer produces.
fn canonical(e: &Element, out: &mut String) {
    out.push('<');
    out.push_str(&e.name);
    for (k, v) in &e.attrs {
        out.push_str(&format!(" {k}=\"{}\"", escape(v, true)));
    }
    let empty = match &e.content {
        Content::Text(t) => t.is_empty(),
        Content::Groups(g) => g.is_empty(),
    };
    if empty {
        out.push_str("/>");
        return;
    }
    out.push('>');
    match &e.content {
        Content::Text(t) => out.push_str(&escape(t, false)),
        Content::Groups(groups) => groups.iter().flatten().for_each(|c| canonical(c, out)),
    }
    out.push_str(&format!("</{}>", e.name));
}

/// The same document written the way an upstream might: a declaration,
/// comments, indentation, CDATA and references, siblings interleaved.
fn noisy(e: &Element, out: &mut String, style: u8) {
    out.push_str(&format!("<{}", e.name));
    for (k, v) in &e.attrs {
        let v = escape(v, true).replace('é', "&#xE9;");
        out.push_str(&format!(" {k} = '{}'", v.replace('\'', "&apos;")));
    }
    out.push('>');
    match &e.content {
        Content::Text(t) if style.is_multiple_of(2) && !t.contains("]]>") && !t.contains('\r') => {
            out.push_str(&format!("<![CDATA[{t}]]>"));
        }
        Content::Text(t) => out.push_str(&escape(t, false).replace('"', "&quot;")),
        Content::Groups(groups) => {
            // Round-robin over the groups: same-named siblings not adjacent.
            let longest = groups.iter().map(Vec::len).max().unwrap_or(0);
            for i in 0..longest {
                for g in groups {
                    if let Some(c) = g.get(i) {
                        out.push_str("\n  <!-- a comment -->");
                        noisy(c, out, style.wrapping_add(1));
                    }
                }
            }
            out.push('\n');
        }
    }
    out.push_str(&format!("</{}>", e.name));
}

fn to_json(xml: &str, arrays: &[&str]) -> Result<Json, raftgate_transform::TransformError> {
    let config = XmlToJson { array_paths: arrays.iter().map(|s| s.to_string()).collect() };
    xml_to_json(xml.as_bytes(), &config, &Limits::default())
}

fn to_xml(doc: &Json) -> String {
    String::from_utf8(json_to_xml(doc, &config(), &Limits::default()).expect("maps to XML")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn json_to_xml_to_json_is_the_identity_on_the_documented_domain(doc in element_value()) {
        let xml = to_xml(&doc);
        prop_assert_eq!(to_json(&xml, &[]).unwrap(), doc, "via {}", xml);
    }

    #[test]
    fn a_configured_array_path_keeps_one_element_arrays(items in prop::collection::vec(element_value(), 1..4)) {
        let mut list = Object::new();
        list.push_new("entry".into(), Json::Array(items)).unwrap();
        let mut root = Object::new();
        root.push_new("list".into(), Json::Object(list)).unwrap();
        let doc = Json::Object(root);
        let xml = to_xml(&doc);
        prop_assert_eq!(to_json(&xml, &["list/entry"]).unwrap(), doc, "via {}", xml);
    }

    #[test]
    fn xml_to_json_to_xml_gives_back_a_canonical_document(e in element(Just(ROOT.to_string()).boxed())) {
        let mut xml = String::new();
        canonical(&e, &mut xml);
        let json = to_json(&xml, &[]).unwrap();
        prop_assert_eq!(to_xml(&json), xml);
    }

    #[test]
    fn after_one_round_trip_xml_to_json_is_stable(e in element(name().boxed()), style in 0u8..4) {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- head -->");
        noisy(&e, &mut xml, style);
        xml.push_str("\n<?trailing pi?>\n");
        let first = to_json(&xml, &[]).unwrap();
        let again = to_json(&to_xml(&first), &[]).unwrap();
        prop_assert_eq!(again, first, "from {}", xml);
    }

    #[test]
    fn arbitrary_input_is_refused_or_read_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = to_json(&String::from_utf8_lossy(&bytes), &[]);
        let _ = xml_to_json(&bytes, &XmlToJson::default(), &Limits::default());
        if let Ok(doc) = parse_json(&bytes, &Limits::default()) {
            let _ = json_to_xml(&doc, &config(), &Limits::default());
        }
    }

    #[test]
    fn markup_shaped_input_is_refused_or_read_never_a_panic(s in "[<>/a-c =\"'&;#x!\\[\\]?-]{0,80}") {
        let _ = to_json(&s, &[]);
        let _ = to_json(&format!("<a>{s}</a>"), &[]);
    }
}

#[test]
fn numbers_and_booleans_come_back_as_their_text() {
    let doc = parse_json(br#"{"n":-1.5e3,"i":42,"b":true}"#, &Limits::default()).unwrap();
    let back = to_json(&to_xml(&doc), &[]).unwrap();
    let expected = parse_json(br#"{"n":"-1500.0","i":"42","b":"true"}"#, &Limits::default()).unwrap();
    assert_eq!(back, expected);
}

#[test]
fn what_the_domain_excludes_changes_as_documented() {
    let cases: [(&[u8], &[u8]); 5] = [
        (br#"{"a":""}"#, br#"{"a":null}"#),
        (br#"{"a":{}}"#, br#"{"a":null}"#),
        (br#"{"a":[]}"#, br#"null"#),
        (br##"{"a":{"#text":"t"}}"##, br#"{"a":"t"}"#),
        (br#"{"a":["one"]}"#, br#"{"a":"one"}"#),
    ];
    for (input, expected) in cases {
        let doc = parse_json(input, &Limits::default()).unwrap();
        let back = to_json(&to_xml(&doc), &[]).unwrap();
        assert_eq!(back, parse_json(expected, &Limits::default()).unwrap(), "{}", String::from_utf8_lossy(input));
    }
}
