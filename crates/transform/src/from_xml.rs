//! XML → JSON. The whole document is held (as a [`Json`] tree) because a
//! child becomes an array only once a second one with its name appears,
//! which may be just before its parent ends.
//!
//! What is refused: input that is not UTF-8 (or declares another
//! encoding), a DOCTYPE (so no entity can be declared, hence none
//! expanded), a reference to any entity but `lt gt amp apos quot`,
//! characters XML 1.0 does not allow, names that are not XML names, text
//! or a second element outside the document element, and whatever
//! quick-xml finds ill-formed (unclosed or mismatched tags, duplicate
//! attributes, bad attribute syntax). Comments and processing instructions
//! are dropped; CDATA is read as text.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use raftgate_model::transform::{is_xml_name, XmlToJson, TEXT_KEY};

use crate::json::{Json, Object};
use crate::to_xml::is_xml_char;
use crate::{Limits, TransformError};

/// An element being read.
struct Open {
    name: String,
    /// Attributes (`@name`) then children, in document order.
    members: Object,
    /// Character data since the last child tag (or the start tag).
    run: String,
    /// The runs that were not whitespace only, when there are children.
    kept: String,
    /// Where `#text` goes among the members: their count at the first kept run.
    text_at: Option<usize>,
    has_children: bool,
    /// Length of the shared path before this element's name was added.
    path_len: usize,
}

struct Doc<'c> {
    stack: Vec<Open>,
    root: Option<Json>,
    /// `a/b/c` for the element being read, below the root; kept only when
    /// array paths are configured.
    path: String,
    config: &'c XmlToJson,
    limits: &'c Limits,
    nodes: usize,
}

/// Reads an XML document as JSON (the value of the document element; its
/// name is not kept).
pub fn xml_to_json(input: &[u8], config: &XmlToJson, limits: &Limits) -> Result<Json, TransformError> {
    if input.len() > limits.max_input_bytes {
        return Err(TransformError::InputTooLarge);
    }
    let text = std::str::from_utf8(input).map_err(|_| TransformError::InvalidXml("not UTF-8".into()))?;
    let mut reader = Reader::from_str(text);
    let mut doc = Doc { stack: Vec::new(), root: None, path: String::new(), config, limits, nodes: 0 };
    loop {
        let event = reader.read_event().map_err(|e| TransformError::InvalidXml(e.to_string()))?;
        match event {
            Event::Decl(d) => {
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|e| TransformError::InvalidXml(e.to_string()))?;
                    if !enc.eq_ignore_ascii_case("utf-8") {
                        return Err(TransformError::InvalidXml("an encoding other than UTF-8".into()));
                    }
                }
            }
            Event::DocType(_) => return Err(TransformError::Doctype),
            Event::PI(_) | Event::Comment(_) => {}
            Event::Start(e) => doc.open(&e)?,
            Event::Empty(e) => {
                doc.open(&e)?;
                doc.close()?;
            }
            Event::End(_) => doc.close()?,
            Event::Text(t) => doc.text(&t.xml10_content())?,
            Event::CData(c) => doc.text(&c.xml10_content())?,
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| TransformError::InvalidXml(e.to_string()))? {
                    Some(c) => c,
                    None => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        _ => return Err(TransformError::UndefinedEntity),
                    },
                };
                doc.text(c.encode_utf8(&mut [0; 4]))?;
            }
            Event::Eof => break,
        }
    }
    if !doc.stack.is_empty() {
        return Err(TransformError::InvalidXml("an element is not closed".into()));
    }
    doc.root.ok_or_else(|| TransformError::InvalidXml("no document element".into()))
}

impl Doc<'_> {
    fn count(&mut self) -> Result<(), TransformError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(TransformError::TooManyNodes);
        }
        Ok(())
    }

    fn open(&mut self, start: &BytesStart<'_>) -> Result<(), TransformError> {
        if self.stack.is_empty() && self.root.is_some() {
            return Err(TransformError::InvalidXml("more than one document element".into()));
        }
        if self.stack.len() >= self.limits.max_depth.min(crate::MAX_DEPTH) {
            return Err(TransformError::TooDeep);
        }
        self.count()?;
        let name = start.name().0;
        if !is_xml_name(name) {
            return Err(TransformError::InvalidXml("an element name is not an XML name".into()));
        }
        let mut members = Object::new();
        for attr in start.attributes() {
            let attr = attr.map_err(|e| TransformError::InvalidXml(e.to_string()))?;
            self.count()?;
            let key = attr.key.0;
            if !is_xml_name(key) {
                return Err(TransformError::InvalidXml("an attribute name is not an XML name".into()));
            }
            let value = attr.normalized_value(XmlVersion::Implicit1_0).map_err(|e| match e {
                quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(..)) => {
                    TransformError::UndefinedEntity
                }
                e => TransformError::InvalidXml(e.to_string()),
            })?;
            check_chars(&value)?;
            // quick-xml refuses a duplicate attribute before this.
            let _ = members.push_new(format!("@{key}"), Json::String(value.into_owned()));
        }
        let path_len = self.path.len();
        if let Some(parent) = self.stack.last_mut() {
            parent.flush_run();
            parent.has_children = true;
            if !self.config.array_paths.is_empty() {
                if self.stack.len() > 1 {
                    self.path.push('/');
                }
                self.path.push_str(name);
            }
        }
        self.stack.push(Open {
            name: name.to_string(),
            members,
            run: String::new(),
            kept: String::new(),
            text_at: None,
            has_children: false,
            path_len,
        });
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), TransformError> {
        check_chars(text)?;
        match self.stack.last_mut() {
            Some(open) => {
                if open.run.len() + text.len() > self.limits.max_input_bytes {
                    return Err(TransformError::InputTooLarge);
                }
                open.run.push_str(text);
                Ok(())
            }
            None if text.chars().all(is_xml_space) => Ok(()),
            None => Err(TransformError::InvalidXml("text outside the document element".into())),
        }
    }

    fn close(&mut self) -> Result<(), TransformError> {
        let Some(mut open) = self.stack.pop() else {
            return Err(TransformError::InvalidXml("an end tag without a start tag".into()));
        };
        let value = if open.has_children {
            open.flush_run();
            if let Some(at) = open.text_at {
                open.members.insert_at(at, TEXT_KEY.to_string(), Json::String(open.kept));
            }
            Json::Object(open.members)
        } else if open.members.is_empty() {
            match open.run.is_empty() {
                true => Json::Null,
                false => Json::String(open.run),
            }
        } else {
            if !open.run.is_empty() {
                let end = open.members.len();
                open.members.insert_at(end, TEXT_KEY.to_string(), Json::String(open.run));
            }
            Json::Object(open.members)
        };
        let forced = !self.config.array_paths.is_empty() && self.config.array_paths.contains(&self.path);
        self.path.truncate(open.path_len);
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(value);
            return Ok(());
        };
        match parent.members.get_mut(&open.name) {
            // A child's own value is never an array: an array here is the
            // siblings of this name.
            Some(Json::Array(items)) => items.push(value),
            Some(single) => {
                let first = std::mem::replace(single, Json::Null);
                *single = Json::Array(vec![first, value]);
            }
            None => {
                let value = if forced { Json::Array(vec![value]) } else { value };
                let _ = parent.members.push_new(open.name, value);
            }
        }
        Ok(())
    }
}

impl Open {
    /// A child tag ends the current run of text: kept unless whitespace only.
    fn flush_run(&mut self) {
        if self.run.chars().all(is_xml_space) {
            self.run.clear();
            return;
        }
        if self.text_at.is_none() {
            self.text_at = Some(self.members.len());
        }
        self.kept.push_str(&self.run);
        self.run.clear();
    }
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn check_chars(s: &str) -> Result<(), TransformError> {
    match s.chars().all(is_xml_char) {
        true => Ok(()),
        false => Err(TransformError::InvalidXml("a character XML 1.0 does not allow".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(xml: &str, arrays: &[&str]) -> Result<serde_json::Value, TransformError> {
        let config = XmlToJson { array_paths: arrays.iter().map(|s| s.to_string()).collect() };
        xml_to_json(xml.as_bytes(), &config, &Limits::default()).map(|j| serde_json::Value::from(&j))
    }

    #[test]
    fn elements_attributes_text_and_repeats_map_as_documented() {
        let got = read(
            r#"<?xml version="1.0" encoding="utf-8"?>
            <!-- dropped --><order id="o-1">
              <customer vip="true">Ann &amp; Bob</customer>
              <item><sku>A</sku></item>
              <item><sku>B</sku></item>
              <note/><empty></empty>
              <price currency="EUR">9.5</price>
              <?pi dropped?>
              <code><![CDATA[<x> & y]]></code>
              <spaces>  two  </spaces>
            </order>"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            got,
            json!({"@id": "o-1", "customer": {"@vip": "true", "#text": "Ann & Bob"},
                   "item": [{"sku": "A"}, {"sku": "B"}], "note": null, "empty": null,
                   "price": {"@currency": "EUR", "#text": "9.5"}, "code": "<x> & y", "spaces": "  two  "})
        );
    }

    #[test]
    fn array_paths_make_a_single_child_an_array() {
        let xml = "<o><items><item>1</item></items><other><item>2</item></other></o>";
        assert_eq!(read(xml, &["items/item"]).unwrap(), json!({"items": {"item": ["1"]}, "other": {"item": "2"}}));
        assert_eq!(read(xml, &[]).unwrap(), json!({"items": {"item": "1"}, "other": {"item": "2"}}));
    }

    #[test]
    fn mixed_content_keeps_text_that_is_not_only_whitespace() {
        assert_eq!(read("<p>Hello <b>you</b> there</p>", &[]).unwrap(), json!({"#text": "Hello  there", "b": "you"}));
        let v = xml_to_json(b"<p><b>x</b> tail</p>", &XmlToJson::default(), &Limits::default()).unwrap();
        let Json::Object(o) = v else { panic!("an object") };
        assert_eq!(o.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["b", "#text"]);
    }

    #[test]
    fn references_resolve_to_characters_and_namespaces_stay_in_names() {
        let got =
            read(r#"<s:E xmlns:s="urn:s" a="&lt;&#65;&#x42;&#10;"><s:B>&#13;&quot;&apos;</s:B></s:E>"#, &[]).unwrap();
        assert_eq!(got, json!({"@xmlns:s": "urn:s", "@a": "<AB\n", "s:B": "\r\"'"}));
    }

    #[test]
    fn doctype_and_entity_tricks_are_refused() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert_eq!(read(laughs, &[]), Err(TransformError::Doctype));
        let xxe = r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert_eq!(read(xxe, &[]), Err(TransformError::Doctype));
        assert_eq!(read("<r>&x;</r>", &[]), Err(TransformError::UndefinedEntity));
        assert_eq!(read(r#"<r a="&x;"/>"#, &[]), Err(TransformError::UndefinedEntity));
    }

    #[test]
    fn ill_formed_documents_are_invalid_xml() {
        for bad in [
            "",
            "   ",
            "just text",
            "<a>",
            "<a></b>",
            "</a>",
            "<a/><b/>",
            "<a/>tail",
            r#"<a x="1" x="2"/>"#,
            "<a x=1/>",
            "<a>\u{1}</a>",
            "<a>&#0;</a>",
            r#"<?xml version="1.0" encoding="ISO-8859-1"?><a/>"#,
            "<1a/>",
            "<a><</a>",
        ] {
            assert!(matches!(read(bad, &[]), Err(TransformError::InvalidXml(_))), "{bad:?}: {:?}", read(bad, &[]));
        }
        let latin1 = b"<a>\xe9</a>";
        assert!(matches!(
            xml_to_json(latin1, &XmlToJson::default(), &Limits::default()),
            Err(TransformError::InvalidXml(_))
        ));
    }

    #[test]
    fn depth_nodes_and_bytes_are_bounded() {
        let deep = format!("{}{}", "<a>".repeat(65), "</a>".repeat(65));
        assert_eq!(read(&deep, &[]), Err(TransformError::TooDeep));
        let ok = format!("{}{}", "<a>".repeat(64), "</a>".repeat(64));
        assert!(read(&ok, &[]).is_ok());
        let limits = Limits { max_nodes: 3, ..Limits::default() };
        assert_eq!(
            xml_to_json(b"<a><b/><c/><d/></a>", &XmlToJson::default(), &limits),
            Err(TransformError::TooManyNodes)
        );
        let limits = Limits { max_input_bytes: 5, ..Limits::default() };
        assert_eq!(xml_to_json(b"<a></a>", &XmlToJson::default(), &limits), Err(TransformError::InputTooLarge));
    }
}
