//! Request path normalisation.
//!
//! Routes are matched, and policies chosen, on the normalised path, and the
//! normalised path is what the upstream receives. So `/admin/../admin`,
//! `/%61dmin` and `//admin` all become `/admin` and cannot slip past the
//! route that guards `/admin`. The rules, in order:
//!
//! 1. The path must start with `/` (origin form); anything else is refused.
//! 2. Percent-encodings must be `%` and two hex digits. Those that encode an
//!    unreserved character (`A-Z a-z 0-9 - . _ ~`) are decoded; the others
//!    are kept with upper-case hex. Encoded `/` (`%2F`), `\` (`%5C`), `;`
//!    (`%3B`) and NUL (`%00`) are refused: an upstream that decodes them would see a
//!    different path from the one that was matched.
//! 3. Runs of `/` collapse to one (`//a///b` → `/a/b`).
//! 4. Dot segments are removed as in RFC 3986 §5.2.4; `..` at the root stays
//!    at the root (`/../a` → `/a`).
//!
//! Path parameters (`;`, also encoded as `%3B`) are refused: upstreams such
//! as servlet containers strip them, so `/admin;x` or `/public/..;/admin`
//! would reach `/admin` past the route that guards it.
//!
//! A trailing slash is kept (`/a/` and `/a` are different paths for exact
//! matches). Matching is case-sensitive. The query string is not part of the
//! path and is passed through untouched.

use std::borrow::Cow;

/// Longest path accepted, before normalisation (the URI limit covers the rest).
pub const MAX_PATH_BYTES: usize = 8_192;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("path has a malformed percent-encoding")]
    BadEncoding,
    #[error("path has an encoded '/', '\\', ';' or NUL")]
    ForbiddenEncoding,
    #[error("path has a character that is not allowed in a URI path")]
    BadCharacter,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` minus percent (handled apart) and `;`, plus `/`.
/// `;` is refused: servlet containers read `/admin;x` and `/..;/admin` as
/// `/admin`, a path the router did not match.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=')
        || matches!(b, b':' | b'@' | b'/')
}

/// Normalises `path` (without its query). Borrows when it is already normal.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes)? {
        return Ok(Cow::Borrowed(path));
    }
    // Decode, then split into segments and resolve dot segments.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (hi, lo) = percent_pair(bytes, i)?;
            let c = hi << 4 | lo;
            if matches!(c, b'/' | b'\\' | 0 | b';') {
                return Err(PathError::ForbiddenEncoding);
            }
            if is_unreserved(c) {
                decoded.push(c);
            } else {
                decoded.push(b'%');
                decoded.push(HEX_UPPER[usize::from(hi)]);
                decoded.push(HEX_UPPER[usize::from(lo)]);
            }
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    let mut out: Vec<&[u8]> = Vec::new();
    let trailing = decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    for seg in decoded.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        match seg {
            b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for seg in &out {
        normal.push('/');
        // Only ASCII path characters and %XX survive the checks above.
        normal.push_str(std::str::from_utf8(seg).map_err(|_| PathError::BadCharacter)?);
    }
    if normal.is_empty() || (trailing && !out.is_empty()) {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn percent_pair(bytes: &[u8], i: usize) -> Result<(u8, u8), PathError> {
    let hi = bytes.get(i + 1).copied().and_then(hex).ok_or(PathError::BadEncoding)?;
    let lo = bytes.get(i + 2).copied().and_then(hex).ok_or(PathError::BadEncoding)?;
    Ok((hi, lo))
}

/// True when normalising would not change `bytes`; errors on bad characters.
fn is_normal(bytes: &[u8]) -> Result<bool, PathError> {
    let mut normal = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (hi, lo) = percent_pair(bytes, i)?;
            let c = hi << 4 | lo;
            if matches!(c, b'/' | b'\\' | 0 | b';') {
                return Err(PathError::ForbiddenEncoding);
            }
            if is_unreserved(c) || bytes[i + 1].is_ascii_lowercase() || bytes[i + 2].is_ascii_lowercase() {
                normal = false;
            }
            i += 3;
            continue;
        }
        if !is_path_char(b) {
            return Err(PathError::BadCharacter);
        }
        if b == b'/' {
            let rest = &bytes[i + 1..];
            if rest.first() == Some(&b'/')
                || rest == b"."
                || rest == b".."
                || rest.starts_with(b"./")
                || rest.starts_with(b"../")
            {
                normal = false;
            }
        }
        i += 1;
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize_path(p).unwrap().into_owned()
    }

    #[test]
    fn bypass_attempts_normalise_to_the_guarded_path() {
        for p in [
            "/admin",
            "/admin/../admin",
            "/%61dmin",
            "//admin",
            "/./admin",
            "/x/../admin",
            "/../admin",
            "/%2e%2e/admin",
            "/a/%2E%2E/admin",
            "///admin",
        ] {
            assert_eq!(n(p), "/admin", "{p}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in ["/", "/a/b", "/a/b/", "/users/42", "/a%20b", "/a:b@c,d=e", "/.well-known/x", "/a..b", "/..a"] {
            assert!(matches!(normalize_path(p).unwrap(), Cow::Borrowed(_)), "{p}");
        }
    }

    #[test]
    fn trailing_slashes_and_dot_segments_follow_rfc_3986() {
        assert_eq!(n("/a/b/"), "/a/b/");
        assert_eq!(n("/a/b/."), "/a/b/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/./b/../c"), "/a/c");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/a//"), "/a/");
        assert_eq!(n("/a%2fb".replace("2f", "20").as_str()), "/a%20b");
        assert_eq!(n("/a%7e"), "/a~");
        assert_eq!(n("/a%3a"), "/a%3A");
    }

    #[test]
    fn malformed_and_forbidden_paths_are_refused() {
        assert_eq!(normalize_path("admin"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadEncoding));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(normalize_path("/a%2Fb"), Err(PathError::ForbiddenEncoding));
        assert_eq!(normalize_path("/a%5cb"), Err(PathError::ForbiddenEncoding));
        assert_eq!(normalize_path("/a%00"), Err(PathError::ForbiddenEncoding));
        assert_eq!(normalize_path("/a b"), Err(PathError::BadCharacter));
        assert_eq!(normalize_path("/a\\b"), Err(PathError::BadCharacter));
        assert_eq!(normalize_path("/admin;x"), Err(PathError::BadCharacter));
        assert_eq!(normalize_path("/public/..;/admin"), Err(PathError::BadCharacter));
        assert_eq!(normalize_path("/admin%3bx"), Err(PathError::ForbiddenEncoding));
        assert_eq!(normalize_path(&format!("/{}", "a".repeat(MAX_PATH_BYTES))), Err(PathError::TooLong));
    }

    #[test]
    fn normalising_is_idempotent() {
        for p in ["/a/../b//c/./d/", "/%61%62/%2e/x", "/a/b/..", "//", "/a%3a"] {
            let once = n(p);
            assert_eq!(n(&once), once, "{p}");
            assert!(matches!(normalize_path(&once).unwrap(), Cow::Borrowed(_)), "{p}");
        }
    }
}
