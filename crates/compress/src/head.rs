//! The response head of a compressed response: `Content-Encoding` set,
//! `Content-Length` and `Accept-Ranges` gone (the length is no longer known
//! and byte ranges of the original no longer apply), `Vary: Accept-Encoding`
//! so shared caches keep the codings apart, and a strong `ETag` weakened,
//! since the compressed bytes are not the bytes the tag names.

use bytes::Bytes;
use http::header::{ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, ETAG, VARY};
use http::{HeaderMap, HeaderValue, Response};

use crate::body::{BodyError, CompressedBody};
use crate::policy::{list_elements, Encoding, Level};

const ACCEPT_ENCODING_NAME: &str = "Accept-Encoding";

/// Rewrites the response head for `enc` and wraps the body so that it is
/// compressed as it flows. Call it only for a response [`should_compress`]
/// accepted, with the coding [`negotiate`] chose.
///
/// A strong `ETag` becomes weak (`"x"` → `W/"x"`), a weak one stays, and one
/// that is neither (not a quoted entity-tag) is removed: it cannot be
/// weakened correctly and must not validate the compressed bytes.
///
/// [`should_compress`]: crate::should_compress
/// [`negotiate`]: crate::negotiate
pub fn compress_response<B>(resp: Response<B>, enc: Encoding, level: Level) -> Response<CompressedBody<B>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BodyError>,
{
    let (mut parts, body) = resp.into_parts();
    let headers = &mut parts.headers;
    headers.insert(CONTENT_ENCODING, enc.header_value());
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    add_vary_accept_encoding(headers);
    weaken_etag(headers);
    Response::from_parts(parts, CompressedBody::new(body, enc, level))
}

/// Adds `Accept-Encoding` to `Vary`, merged into the existing list rather
/// than repeated; nothing changes if `Vary` already names it or is `*`. Call
/// it also for a compressible response sent uncompressed because the client
/// did not ask for a coding.
pub fn add_vary_accept_encoding(headers: &mut HeaderMap) {
    let existing: Vec<HeaderValue> = headers.get_all(VARY).iter().cloned().collect();
    let Some(fields) = list_elements(existing.iter()) else {
        // Not readable as a list: add ours beside it rather than lose it.
        headers.append(VARY, HeaderValue::from_static(ACCEPT_ENCODING_NAME));
        return;
    };
    if fields.iter().any(|f| *f == "*" || f.eq_ignore_ascii_case(ACCEPT_ENCODING_NAME)) {
        return;
    }
    let mut merged = fields.join(", ");
    if !merged.is_empty() {
        merged.push_str(", ");
    }
    merged.push_str(ACCEPT_ENCODING_NAME);
    match HeaderValue::from_str(&merged) {
        Ok(value) => {
            headers.insert(VARY, value);
        }
        Err(_) => {
            headers.append(VARY, HeaderValue::from_static(ACCEPT_ENCODING_NAME));
        }
    }
}

fn weaken_etag(headers: &mut HeaderMap) {
    let tags: Vec<HeaderValue> = headers.get_all(ETAG).iter().cloned().collect();
    if tags.is_empty() {
        return;
    }
    headers.remove(ETAG);
    for tag in tags {
        if let Some(weak) = weakened(&tag) {
            headers.append(ETAG, weak);
        }
    }
}

/// `W/"x"` for `"x"`, the tag itself if already weak, `None` if it is not an
/// entity-tag.
fn weakened(tag: &HeaderValue) -> Option<HeaderValue> {
    let text = tag.to_str().ok()?.trim();
    let opaque = text.strip_prefix("W/").unwrap_or(text);
    let quoted = opaque.len() >= 2 && opaque.starts_with('"') && opaque.ends_with('"');
    let inner_ok = quoted && !opaque[1..opaque.len() - 1].contains('"');
    if !inner_ok {
        return None;
    }
    if text.starts_with("W/") {
        return Some(tag.clone());
    }
    HeaderValue::from_str(&format!("W/{opaque}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_weaken_or_go() {
        let w = |s: &'static str| weakened(&HeaderValue::from_static(s)).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(w("\"abc\"").as_deref(), Some("W/\"abc\""));
        assert_eq!(w("W/\"abc\"").as_deref(), Some("W/\"abc\""));
        assert_eq!(w("\"\"").as_deref(), Some("W/\"\""));
        assert_eq!(w("abc"), None);
        assert_eq!(w("\""), None);
        assert_eq!(w("W/abc"), None);
        assert_eq!(w("\"a\"b\""), None);
    }
}
