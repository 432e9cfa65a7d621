//! Taking a request body (and a query string) apart into the values the
//! rules scan.
//!
//! A JSON body is first pre-scanned in one iterative pass for its nesting
//! depth and its number of strings, so that 100,000 nested `[` are refused as
//! too deep before any parser recursion starts. It is then walked with a
//! serde visitor that scans each key and string value as the parser produces
//! it (no tree is built, a duplicated key cannot hide an earlier value, and
//! the walk stops at the first finding), keeping a JSON pointer to report
//! where. Form bodies and query strings are `&`-separated `name=value` pairs.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::{normalize, truncate, BodyError, Encoding, Finding, Inspector, Location, MAX_LOCATION_CHARS};

/// How a body is taken apart, by its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Json,
    Form,
    Text,
}

impl Kind {
    pub(crate) fn of(content_type: Option<&str>) -> Kind {
        let Some(ct) = content_type else {
            return Kind::Text;
        };
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
            Kind::Json
        } else if essence == "application/x-www-form-urlencoded" {
            Kind::Form
        } else {
            Kind::Text
        }
    }
}

/// The `name=value` pairs of a query string or form body; a pair without
/// `=` is a name with an empty value, and empty pairs are skipped.
pub(crate) fn pairs(input: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    input.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|pair| match pair.iter().position(|&b| b == b'=') {
        Some(eq) => (&pair[..eq], &pair[eq + 1..]),
        None => (pair, &pair[pair.len()..]),
    })
}

/// A parameter name as a location: decoded once, lossy, cut.
pub(crate) fn display_name(name: &[u8]) -> String {
    // Enough bytes for MAX_LOCATION_CHARS characters of up to four bytes,
    // times three for percent-encoding.
    let cut = &name[..name.len().min(MAX_LOCATION_CHARS * 12)];
    truncate(&String::from_utf8_lossy(&normalize::percent_decode(cut, true, 1)))
}

pub(crate) fn inspect_form(inspector: &Inspector, body: &[u8]) -> Result<Option<Finding>, BodyError> {
    let limit = inspector.limits().max_values;
    if pairs(body).count() > limit {
        return Err(BodyError::TooManyValues { limit });
    }
    for (name, value) in pairs(body) {
        if let Some((category, rule)) =
            inspector.scan(name, Encoding::Form).or_else(|| inspector.scan(value, Encoding::Form))
        {
            return Ok(Some(Finding { category, rule, location: Location::Body(display_name(name)) }));
        }
    }
    Ok(None)
}

/// One iterative pass over the bytes: refuses nesting deeper than
/// `max_depth` and more than `max_values` strings. It trusts nothing about
/// validity; the parser checks that afterwards.
fn prescan(body: &[u8], max_depth: usize, max_values: usize) -> Result<(), BodyError> {
    let mut depth = 0usize;
    let mut strings = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                strings += 1;
                if strings > max_values {
                    return Err(BodyError::TooManyValues { limit: max_values });
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(BodyError::TooDeep { limit_levels: max_depth });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn inspect_json(inspector: &Inspector, body: &[u8]) -> Result<Option<Finding>, BodyError> {
    let limits = inspector.limits();
    prescan(body, limits.max_json_depth, limits.max_values)?;
    let mut walk = Walk { inspector, pointer: String::new(), values: 0, stop: None };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = ValueSeed { walk: &mut walk }.deserialize(&mut de).and_then(|()| de.end());
    match (walk.stop, parsed) {
        (Some(Stop::Found(finding)), _) => Ok(Some(finding)),
        (Some(Stop::TooManyValues), _) => Err(BodyError::TooManyValues { limit: limits.max_values }),
        (None, Ok(())) => Ok(None),
        (None, Err(e)) => Err(BodyError::InvalidJson { line: e.line(), column: e.column() }),
    }
}

enum Stop {
    Found(Finding),
    TooManyValues,
}

struct Walk<'i> {
    inspector: &'i Inspector,
    /// The JSON pointer of the value being read; each segment is cut to
    /// [`MAX_LOCATION_CHARS`] characters.
    pointer: String,
    values: usize,
    stop: Option<Stop>,
}

impl Walk<'_> {
    /// Counts and scans one string; `Err` stops the walk.
    fn string<E: de::Error>(&mut self, s: &str) -> Result<(), E> {
        self.values += 1;
        if self.values > self.inspector.limits().max_values {
            self.stop = Some(Stop::TooManyValues);
            return Err(E::custom("too many values"));
        }
        if let Some((category, rule)) = self.inspector.scan(s.as_bytes(), Encoding::Plain) {
            self.stop =
                Some(Stop::Found(Finding { category, rule, location: Location::Body(truncate(&self.pointer)) }));
            return Err(E::custom("finding"));
        }
        Ok(())
    }

    fn push_key(&mut self, key: &str) {
        self.pointer.push('/');
        for c in key.chars().take(MAX_LOCATION_CHARS) {
            match c {
                '~' => self.pointer.push_str("~0"),
                '/' => self.pointer.push_str("~1"),
                c => self.pointer.push(c),
            }
        }
    }
}

struct ValueSeed<'w, 'i> {
    walk: &'w mut Walk<'i>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.walk.string(s)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let len = self.walk.pointer.len();
            self.walk.pointer.push('/');
            self.walk.pointer.push_str(&index.to_string());
            let more = seq.next_element_seed(ValueSeed { walk: &mut *self.walk })?;
            self.walk.pointer.truncate(len);
            if more.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        loop {
            let len = self.walk.pointer.len();
            if map.next_key_seed(KeySeed { walk: &mut *self.walk })?.is_none() {
                return Ok(());
            }
            map.next_value_seed(ValueSeed { walk: &mut *self.walk })?;
            self.walk.pointer.truncate(len);
        }
    }
}

/// Reads an object key: extends the pointer and scans the key.
struct KeySeed<'w, 'i> {
    walk: &'w mut Walk<'i>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        self.walk.push_key(key);
        self.walk.string(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_choose_how_a_body_is_read() {
        assert_eq!(Kind::of(Some("application/json; charset=utf-8")), Kind::Json);
        assert_eq!(Kind::of(Some("Application/Problem+JSON")), Kind::Json);
        assert_eq!(Kind::of(Some("application/x-www-form-urlencoded")), Kind::Form);
        assert_eq!(Kind::of(Some("text/plain")), Kind::Text);
        assert_eq!(Kind::of(Some("")), Kind::Text);
        assert_eq!(Kind::of(None), Kind::Text);
    }

    #[test]
    fn pairs_split_on_ampersand_and_the_first_equals() {
        let got: Vec<_> = pairs(b"a=1&&b&c=x=y").collect();
        assert_eq!(got, [(&b"a"[..], &b"1"[..]), (b"b", b""), (b"c", b"x=y")]);
    }

    #[test]
    fn prescan_ignores_brackets_inside_strings() {
        assert_eq!(prescan(br#"{"a": "[[[[\"[[["}"#, 1, 10), Ok(()));
        assert_eq!(prescan(b"[[", 1, 10), Err(BodyError::TooDeep { limit_levels: 1 }));
    }
}
