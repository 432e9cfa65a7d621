//! JSON → XML: the tree is written as it is walked, into a buffer bounded by
//! `max_output_bytes`, so an expansion past the bound stops at once.
//!
//! - the document element is `config.root`, wrapping the whole JSON value;
//! - an object's `@name` members are attributes of its element (scalars
//!   only), `#text` is its text, every other member is a child element,
//!   in member order;
//! - an array is its elements repeated under the member's name (an array
//!   directly inside an array, or as the whole body, is refused);
//! - a string, number or boolean is text (numbers and booleans as JSON
//!   writes them); `null` is an empty element.

use std::borrow::Cow;

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::QName;
use quick_xml::Writer;
use raftgate_model::transform::{is_xml_name, JsonToXml, ATTRIBUTE_PREFIX, TEXT_KEY};

use crate::bounded::BoundedBuf;
use crate::json::{Json, Object};
use crate::{Limits, TransformError};

type XmlWriter = Writer<BoundedBuf>;

/// Writes `doc` as an XML document under `config.root`.
pub fn json_to_xml(doc: &Json, config: &JsonToXml, limits: &Limits) -> Result<Vec<u8>, TransformError> {
    if !is_xml_name(&config.root) {
        return Err(TransformError::NotMappable("the root name is not an XML name"));
    }
    if matches!(doc, Json::Array(_)) {
        return Err(TransformError::NotMappable("the body is an array (an XML document has one root)"));
    }
    let mut w = Writer::new(BoundedBuf::new(limits.max_output_bytes, 4096));
    if config.declaration {
        write(&mut w, Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    }
    element(&mut w, &config.root, doc)?;
    Ok(w.into_inner().into_inner())
}

fn write(w: &mut XmlWriter, event: Event<'_>) -> Result<(), TransformError> {
    match w.write_event(event) {
        Ok(()) => Ok(()),
        Err(_) if w.get_ref().overflowed() => Err(TransformError::OutputTooLarge),
        // The bounded buffer is the only writer; it fails only on its bound.
        Err(_) => Err(TransformError::OutputTooLarge),
    }
}

/// One element called `name` holding `value` (not an array: the caller
/// repeats the element for each item).
fn element(w: &mut XmlWriter, name: &str, value: &Json) -> Result<(), TransformError> {
    match value {
        Json::Null => write(w, Event::Empty(BytesStart::new(name))),
        Json::Object(o) => object(w, name, o),
        Json::Array(_) => Err(TransformError::NotMappable("an array directly inside an array")),
        scalar => {
            let text = scalar_text(scalar).ok_or(TransformError::NotMappable("a non-scalar where text belongs"))?;
            write(w, Event::Start(BytesStart::new(name)))?;
            write(w, Event::Text(BytesText::from_escaped(escape_text(&text)?)))?;
            write(w, Event::End(BytesEnd::new(name)))
        }
    }
}

fn object(w: &mut XmlWriter, name: &str, o: &Object) -> Result<(), TransformError> {
    let mut start = BytesStart::new(name);
    let mut has_content = false;
    for (key, value) in o.iter() {
        let Some(attr) = key.strip_prefix(ATTRIBUTE_PREFIX) else {
            has_content = true;
            continue;
        };
        if !is_xml_name(attr) {
            return Err(TransformError::NotMappable("an attribute key is not @ and an XML name"));
        }
        let text = scalar_text(value).ok_or(TransformError::NotMappable("an attribute value is not a scalar"))?;
        // Already escaped: the writer inserts it as it is.
        start.push_attribute(Attribute { key: QName(attr), value: escape_attribute(&text)? });
    }
    if !has_content {
        return write(w, Event::Empty(start));
    }
    write(w, Event::Start(start))?;
    for (key, value) in o.iter().filter(|(k, _)| !k.starts_with(ATTRIBUTE_PREFIX)) {
        if key == TEXT_KEY {
            let text = scalar_text(value).ok_or(TransformError::NotMappable("#text is not a scalar"))?;
            write(w, Event::Text(BytesText::from_escaped(escape_text(&text)?)))?;
            continue;
        }
        if !is_xml_name(key) {
            return Err(TransformError::NotMappable("a key is not an XML name"));
        }
        match value {
            Json::Array(items) => {
                for item in items {
                    element(w, key, item)?;
                }
            }
            v => element(w, key, v)?,
        }
    }
    write(w, Event::End(BytesEnd::new(name)))
}

/// The text of a string, number or boolean; `None` for the rest.
fn scalar_text(v: &Json) -> Option<Cow<'_, str>> {
    match v {
        Json::String(s) => Some(Cow::Borrowed(s)),
        Json::Number(n) => Some(Cow::Owned(n.to_string())),
        Json::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Json::Null | Json::Array(_) | Json::Object(_) => None,
    }
}

/// A character XML 1.0 can carry (`Char` in the specification).
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text content. `>` is escaped so that `]]>` cannot appear, and
/// `\r` as a character reference, which XML does not turn into `\n`.
fn escape_text(s: &str) -> Result<Cow<'_, str>, TransformError> {
    escape(s, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '\r' => Some("&#13;"),
        _ => None,
    })
}

/// Escapes an attribute value (written between double quotes). Tab, line
/// feed and carriage return are character references, which attribute
/// value normalisation leaves alone.
fn escape_attribute(s: &str) -> Result<Cow<'_, str>, TransformError> {
    escape(s, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\t' => Some("&#9;"),
        '\n' => Some("&#10;"),
        '\r' => Some("&#13;"),
        _ => None,
    })
}

fn escape(s: &str, replace: impl Fn(char) -> Option<&'static str>) -> Result<Cow<'_, str>, TransformError> {
    let Some(first) = s.find(|c: char| replace(c).is_some() || !is_xml_char(c)) else {
        return Ok(Cow::Borrowed(s));
    };
    let mut out = String::with_capacity(s.len() + 16);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        match replace(c) {
            Some(r) => out.push_str(r),
            None if is_xml_char(c) => out.push(c),
            None => return Err(TransformError::NotMappable("a string holds a character XML cannot carry")),
        }
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    fn xml(json: &str, root: &str) -> Result<String, TransformError> {
        let doc = parse_json(json.as_bytes(), &Limits::default())?;
        let config = JsonToXml { root: root.into(), declaration: false };
        json_to_xml(&doc, &config, &Limits::default()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn objects_attributes_text_arrays_and_scalars_map_as_documented() {
        let out = xml(
            r##"{"@id":"o-1","customer":{"@vip":true,"#text":"Ann & Bob"},"item":[{"sku":"A"},{"sku":"B"}],
                "qty":3,"paid":false,"note":null,"price":{"@currency":"EUR","#text":9.5}}"##,
            "order",
        )
        .unwrap();
        assert_eq!(
            out,
            r#"<order id="o-1"><customer vip="true">Ann &amp; Bob</customer><item><sku>A</sku></item><item><sku>B</sku></item><qty>3</qty><paid>false</paid><note/><price currency="EUR">9.5</price></order>"#
        );
    }

    #[test]
    fn a_declaration_is_written_when_asked() {
        let doc = parse_json(b"\"x\"", &Limits::default()).unwrap();
        let out = json_to_xml(&doc, &JsonToXml::default(), &Limits::default()).unwrap();
        assert_eq!(out, br#"<?xml version="1.0" encoding="UTF-8"?><root>x</root>"#);
    }

    #[test]
    fn markup_and_line_ends_are_escaped_so_they_read_back_exactly() {
        let out = xml(r#"{"@a":"x\"<\n\t\r&","t":"]]> <b>\r\n"}"#, "r").unwrap();
        assert_eq!(
            out,
            r#"<r a="x&quot;&lt;&#10;&#9;&#13;&amp;"><t>]]&gt; &lt;b&gt;&#13;
</t></r>"#
        );
    }

    #[test]
    fn what_xml_cannot_express_is_refused() {
        for bad in [
            r#"[1,2]"#,
            r#"{"a":[[1]]}"#,
            r#"{"first name":1}"#,
            r#"{"1st":1}"#,
            r#"{"@a":{"b":1}}"#,
            r#"{"@a":null}"#,
            r#"{"@":1}"#,
            r##"{"#text":[1]}"##,
            r##"{"#tail":1}"##,
            r#"{"a":"bell\u0007"}"#,
            r#"{"a":"\uFFFF"}"#,
        ] {
            assert!(matches!(xml(bad, "r"), Err(TransformError::NotMappable(_))), "{bad}");
        }
        assert!(matches!(xml("{}", "not a name"), Err(TransformError::NotMappable(_))));
    }

    #[test]
    fn the_output_bound_stops_the_writer() {
        let doc = parse_json(br#"{"a":"0123456789"}"#, &Limits::default()).unwrap();
        let limits = Limits { max_output_bytes: 16, ..Limits::default() };
        let config = JsonToXml { root: "r".into(), declaration: false };
        assert_eq!(json_to_xml(&doc, &config, &limits), Err(TransformError::OutputTooLarge));
    }
}
