//! What may be compressed, and how hard: the codings and their levels, the
//! route's [`Policy`], and [`should_compress`], which decides from the
//! response head alone whether a response may be transformed at all.
//!
//! Every header is read defensively: a value that is not visible ASCII, or
//! that cannot be parsed, makes the answer "do not compress" rather than a
//! guess, since sending a body in a coding the head does not describe breaks
//! the client while leaving a body uncompressed only costs bytes.

use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// Responses whose known `Content-Length` is below this many bytes are sent
/// as they are: below about one TCP segment compression saves no round trip
/// and a gzip stream alone costs 20 bytes of framing.
pub const DEFAULT_MIN_BYTES: u64 = 1024;

/// gzip (zlib) levels, 1 to 9. 6 is zlib's own default, the usual balance;
/// 9 saves under 1% more on JSON.
const GZIP_LEVEL_FASTEST: i32 = 1;
const GZIP_LEVEL_DEFAULT: i32 = 6;
const GZIP_LEVEL_BEST: i32 = 9;

/// brotli qualities, 0 to 11. The default is 4, not brotli's own 11: on a
/// 16 KiB JSON response quality 4 costs about what gzip 6 does (a few
/// hundred microseconds) for output at least as small, quality 5 costs
/// about 1.7 times that for 8% less, and 11 costs some hundred times more,
/// which suits precompressed static files, not a proxy compressing every
/// response on the fly. "Best" stops at 6: from 7 on the cost doubles with
/// each step (9 took 15 ms per 16 KiB response) for under 1% less output.
const BROTLI_QUALITY_FASTEST: i32 = 1;
const BROTLI_QUALITY_DEFAULT: i32 = 4;
const BROTLI_QUALITY_BEST: i32 = 6;
/// brotli window, as a power of two of bytes (2^20 = 1 MiB, brotli's own
/// default is 4 MiB). The window bounds the encoder's memory per response;
/// typical API responses are far smaller than either, so the ratio is the
/// same.
pub(crate) const BROTLI_WINDOW_LOG: i32 = 20;

/// zstd levels. 3 is zstd's own default. "Best" is 8, not 19 or 22: above
/// it the cost per response grows steeply (level 12 took 66 ms per 16 KiB
/// response, most of it setting up its larger tables) for 1 or 2% less.
const ZSTD_LEVEL_FASTEST: i32 = 1;
const ZSTD_LEVEL_DEFAULT: i32 = 3;
const ZSTD_LEVEL_BEST: i32 = 8;
/// zstd window, as a power of two of bytes (2^20 = 1 MiB). It bounds the
/// encoder's memory per response (zstd allocates its whole window up front
/// when the size is not known in advance) and stays well under the 8 MiB that
/// browsers accept.
pub(crate) const ZSTD_WINDOW_LOG: u32 = 20;

/// Media types never compressed, whatever the policy lists: formats that are
/// compressed already (images other than SVG, audio, video, fonts, archives),
/// `application/octet-stream` (unknown bytes, most often an archive or media
/// file), and streams that must not be held back or are framed by the
/// caller (`text/event-stream`, gRPC, `multipart/x-mixed-replace`). Same
/// pattern forms as [`Policy::content_types`].
pub const NEVER_COMPRESSED: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/heic",
    "image/heif",
    "image/jxl",
    "video/*",
    "audio/*",
    "font/woff",
    "font/woff2",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/x-7z-compressed",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-rar-compressed",
    "application/vnd.rar",
    "application/zstd",
    "application/pdf",
    "application/octet-stream",
    "application/grpc*",
    "text/event-stream",
    "multipart/x-mixed-replace",
];

/// Header fields that carry a digest of the body as sent: compressing would
/// make them false, so a response that has one is left alone.
const DIGEST_HEADERS: &[&str] = &["content-digest", "repr-digest", "digest", "content-md5"];

/// A content coding this crate can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Gzip,
    Brotli,
    Zstd,
}

impl Encoding {
    /// The coding's token in `Content-Encoding` and `Accept-Encoding`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// The coding a token names, case-insensitively (`x-gzip` is gzip, as
    /// RFC 9110 §8.4.1.3 asks), for reading route configuration and
    /// `Accept-Encoding`.
    pub fn from_token(token: &str) -> Option<Encoding> {
        if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Some(Encoding::Gzip)
        } else if token.eq_ignore_ascii_case("br") {
            Some(Encoding::Brotli)
        } else if token.eq_ignore_ascii_case("zstd") {
            Some(Encoding::Zstd)
        } else {
            None
        }
    }

    pub(crate) fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// How hard to compress, mapped to a level of each codec (see the constants
/// above for the numbers and why).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Level {
    Fastest,
    #[default]
    Default,
    Best,
}

impl Level {
    pub(crate) fn gzip(self) -> i32 {
        match self {
            Level::Fastest => GZIP_LEVEL_FASTEST,
            Level::Default => GZIP_LEVEL_DEFAULT,
            Level::Best => GZIP_LEVEL_BEST,
        }
    }

    pub(crate) fn brotli(self) -> i32 {
        match self {
            Level::Fastest => BROTLI_QUALITY_FASTEST,
            Level::Default => BROTLI_QUALITY_DEFAULT,
            Level::Best => BROTLI_QUALITY_BEST,
        }
    }

    pub(crate) fn zstd(self) -> i32 {
        match self {
            Level::Fastest => ZSTD_LEVEL_FASTEST,
            Level::Default => ZSTD_LEVEL_DEFAULT,
            Level::Best => ZSTD_LEVEL_BEST,
        }
    }
}

/// A route's compression settings, filled by the caller from route config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The codings offered, the server's preference first; a client's equal
    /// q-values are broken by this order. An empty list turns compression
    /// off. Default: zstd, brotli, gzip. zstd first because it is the
    /// cheapest by far (on a 16 KiB JSON response about a third of the CPU
    /// of brotli 4 or gzip 6) for output only about 4% larger, and CPU is
    /// what on-the-fly compression costs a gateway; brotli next, which every
    /// current browser has and which gains most on HTML, CSS and JS; gzip
    /// last, which every client has.
    pub encodings: Vec<Encoding>,
    /// Responses with a known `Content-Length` below this are sent as they
    /// are. Bodies of unknown length are compressed. Default
    /// [`DEFAULT_MIN_BYTES`].
    pub min_bytes: u64,
    /// Media types compressed, matched case-insensitively against the
    /// `Content-Type` without parameters. Forms: exact (`application/json`),
    /// a trailing `*` matching any rest (`text/*`), a structured-syntax
    /// suffix (`+json` matches `application/problem+json`), and `*/*` for
    /// any type. [`NEVER_COMPRESSED`] wins over this list.
    pub content_types: Vec<String>,
    /// How hard to compress.
    pub level: Level,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            encodings: vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip],
            min_bytes: DEFAULT_MIN_BYTES,
            content_types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/wasm",
                "+json",
                "+xml",
                "image/svg+xml",
            ]
            .iter()
            .map(|t| (*t).to_owned())
            .collect(),
            level: Level::Default,
        }
    }
}

/// Whether this response may be compressed at all. Not when: it is a
/// 1xx, 204, 304 or 206 answer; it answers HEAD or CONNECT; it has a
/// `Content-Range`; it already has a `Content-Encoding` other than
/// `identity`; `Cache-Control` says `no-transform`; it carries a digest of
/// its body (`Content-Digest`, `Repr-Digest`, `Digest`, `Content-MD5`); its
/// type is missing, in [`NEVER_COMPRESSED`] or not in the policy's list; its
/// known `Content-Length` is below `min_bytes`; or the policy offers no
/// coding. Any of these headers that cannot be read also means no.
pub fn should_compress(
    status: StatusCode,
    request_method: &Method,
    response_headers: &HeaderMap,
    policy: &Policy,
) -> bool {
    if policy.encodings.is_empty()
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::PARTIAL_CONTENT
        || request_method == Method::HEAD
        || request_method == Method::CONNECT
        || response_headers.contains_key(CONTENT_RANGE)
        || DIGEST_HEADERS.iter().any(|h| response_headers.contains_key(*h))
    {
        return false;
    }
    if !content_encoding_is_identity(response_headers) || forbids_transform(response_headers) {
        return false;
    }
    let Some(media) = single_media_type(response_headers) else {
        return false;
    };
    if NEVER_COMPRESSED.iter().any(|p| media_matches(p, media))
        || !policy.content_types.iter().any(|p| media_matches(p, media))
    {
        return false;
    }
    match content_length(response_headers) {
        Length::Unknown => true,
        Length::Known(n) => n >= policy.min_bytes,
        Length::Invalid => false,
    }
}

/// The comma-separated elements of every value of a header field, trimmed
/// and without empty ones; `None` if a value is not visible ASCII.
pub(crate) fn list_elements<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Option<Vec<&'a str>> {
    let mut out = Vec::new();
    for value in values {
        let text = value.to_str().ok()?;
        out.extend(text.split(',').map(str::trim).filter(|e| !e.is_empty()));
    }
    Some(out)
}

fn content_encoding_is_identity(headers: &HeaderMap) -> bool {
    match list_elements(headers.get_all(CONTENT_ENCODING).iter()) {
        Some(codings) => codings.iter().all(|c| c.eq_ignore_ascii_case("identity")),
        None => false,
    }
}

/// `Cache-Control: no-transform` anywhere, or a `Cache-Control` that cannot
/// be read (and so might say it).
fn forbids_transform(headers: &HeaderMap) -> bool {
    match list_elements(headers.get_all(CACHE_CONTROL).iter()) {
        Some(directives) => directives.iter().any(|d| {
            let name = d.split('=').next().unwrap_or(d).trim();
            name.eq_ignore_ascii_case("no-transform")
        }),
        None => true,
    }
}

/// The media type (`type/subtype`, no parameters) of the one `Content-Type`.
fn single_media_type(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let media = value.to_str().ok()?.split(';').next()?.trim();
    let (kind, subtype) = media.split_once('/')?;
    let is_token = |s: &str| !s.is_empty() && !s.bytes().any(|b| b.is_ascii_whitespace() || b == b'/');
    (is_token(kind) && is_token(subtype)).then_some(media)
}

/// Whether `media` matches one pattern of [`Policy::content_types`].
pub(crate) fn media_matches(pattern: &str, media: &str) -> bool {
    let pattern = pattern.trim();
    if pattern == "*/*" || pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        starts_with_ignore_case(media, prefix)
    } else if pattern.starts_with('+') {
        ends_with_ignore_case(media, pattern)
    } else {
        media.eq_ignore_ascii_case(pattern)
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

enum Length {
    Unknown,
    Known(u64),
    Invalid,
}

fn content_length(headers: &HeaderMap) -> Length {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let Some(value) = values.next() else {
        return Length::Unknown;
    };
    if values.next().is_some() {
        return Length::Invalid;
    }
    let Ok(text) = value.to_str() else {
        return Length::Invalid;
    };
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Length::Invalid;
    }
    text.parse().map_or(Length::Invalid, Length::Known)
}
