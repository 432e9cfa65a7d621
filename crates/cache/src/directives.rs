//! Parsers for the header fields the cache reads: `Cache-Control`, `Vary`,
//! `Age` and HTTP-dates (`Date`, `Expires`).
//!
//! They work on raw header bytes and never panic. A field that cannot be
//! parsed is reported as [`Malformed`] (or, for a date or `Age`, as absent)
//! and the caller decides what that means: the policy treats a malformed
//! `Cache-Control` or `Vary` as "do not cache".

use http::header::{HeaderMap, HeaderName};

/// The largest delta-seconds value kept, in seconds: larger values (and
/// overflowing ones) are read as this, as RFC 9111 §1.2.2 asks.
pub const DELTA_SECONDS_MAX_S: u64 = 1 << 31;

/// The most field names a stored response's `Vary` may list; a response
/// that lists more is not stored.
pub const MAX_VARY_FIELDS: usize = 16;

/// A header field that could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed header field")]
pub struct Malformed;

/// The `Cache-Control` directives the cache acts on, from all of a
/// message's `Cache-Control` field lines. Unknown directives are ignored;
/// of a repeated directive with a value, the first occurrence counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    /// `no-cache`, with or without a list of field names.
    pub no_cache: bool,
    /// `private`, with or without a list of field names.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    /// `max-age`, in seconds.
    pub max_age_s: Option<u64>,
    /// `s-maxage`, in seconds.
    pub s_maxage_s: Option<u64>,
}

impl CacheControl {
    /// The directives of `headers`' `Cache-Control` field lines (all default when there is none).
    pub fn parse(headers: &HeaderMap) -> Result<Self, Malformed> {
        let mut cc = CacheControl::default();
        for value in headers.get_all(http::header::CACHE_CONTROL) {
            for_each_directive(value.as_bytes(), |name, arg| {
                if name.eq_ignore_ascii_case(b"no-store") {
                    cc.no_store = true;
                } else if name.eq_ignore_ascii_case(b"no-cache") {
                    cc.no_cache = true;
                } else if name.eq_ignore_ascii_case(b"private") {
                    cc.private = true;
                } else if name.eq_ignore_ascii_case(b"public") {
                    cc.public = true;
                } else if name.eq_ignore_ascii_case(b"must-revalidate") {
                    cc.must_revalidate = true;
                } else if name.eq_ignore_ascii_case(b"max-age") {
                    let v = delta_seconds(arg.ok_or(Malformed)?)?;
                    cc.max_age_s.get_or_insert(v);
                } else if name.eq_ignore_ascii_case(b"s-maxage") {
                    let v = delta_seconds(arg.ok_or(Malformed)?)?;
                    cc.s_maxage_s.get_or_insert(v);
                }
                Ok(())
            })?;
        }
        Ok(cc)
    }
}

/// Calls `f(name, argument)` for each directive of one `Cache-Control`
/// field line: `token [ "=" ( token / quoted-string ) ]`, separated by
/// commas and optional whitespace. A quoted argument is passed without its
/// quotes and with its backslash escapes left in.
fn for_each_directive(
    line: &[u8],
    mut f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    let n = line.len();
    let mut i = 0;
    loop {
        while i < n && (line[i] == b',' || is_ows(line[i])) {
            i += 1;
        }
        if i >= n {
            return Ok(());
        }
        let start = i;
        while i < n && is_tchar(line[i]) {
            i += 1;
        }
        let name = &line[start..i];
        if name.is_empty() {
            return Err(Malformed);
        }
        let mut arg = None;
        if i < n && line[i] == b'=' {
            i += 1;
            if i < n && line[i] == b'"' {
                i += 1;
                let start = i;
                loop {
                    match line.get(i) {
                        None => return Err(Malformed),
                        Some(b'"') => break,
                        Some(b'\\') => i += 2,
                        Some(&c) if c == b'\t' || (0x20..0x7f).contains(&c) => i += 1,
                        Some(_) => return Err(Malformed),
                    }
                }
                arg = Some(&line[start..i]);
                i += 1;
            } else {
                let start = i;
                while i < n && is_tchar(line[i]) {
                    i += 1;
                }
                arg = Some(&line[start..i]);
            }
        }
        while i < n && is_ows(line[i]) {
            i += 1;
        }
        if i < n && line[i] != b',' {
            return Err(Malformed);
        }
        f(name, arg)?;
    }
}

/// A delta-seconds value (digits only), saturating at [`DELTA_SECONDS_MAX_S`].
pub fn delta_seconds(digits: &[u8]) -> Result<u64, Malformed> {
    if digits.is_empty() {
        return Err(Malformed);
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return Err(Malformed);
        }
        v = v.saturating_mul(10).saturating_add(u64::from(c - b'0')).min(DELTA_SECONDS_MAX_S);
    }
    Ok(v)
}

/// The response's `Age`, in seconds: the first field line, absent (`None`)
/// when missing or not a delta-seconds value.
pub fn age_s(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(http::header::AGE)?;
    delta_seconds(trim_ows(value.as_bytes())).ok()
}

/// What a response's `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// `Vary: *`: the response varies on things outside the request.
    Any,
    /// The request fields (lower-case, deduplicated, in order of first
    /// mention) whose values selected this response; empty when there is no `Vary`.
    Fields(Vec<HeaderName>),
}

impl Vary {
    /// `headers`' `Vary`, from all its field lines.
    pub fn parse(headers: &HeaderMap) -> Result<Self, Malformed> {
        let mut fields: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(http::header::VARY) {
            for item in value.as_bytes().split(|&c| c == b',') {
                let item = trim_ows(item);
                if item.is_empty() {
                    continue;
                }
                if item == b"*" {
                    return Ok(Vary::Any);
                }
                let name = HeaderName::from_bytes(item).map_err(|_| Malformed)?;
                if !fields.contains(&name) {
                    if fields.len() == MAX_VARY_FIELDS {
                        return Err(Malformed);
                    }
                    fields.push(name);
                }
            }
        }
        Ok(Vary::Fields(fields))
    }
}

/// The tokens of a `Connection` header (the names of further hop-by-hop
/// fields), lower-case; items that are not header names are skipped.
pub fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names = Vec::new();
    for value in headers.get_all(http::header::CONNECTION) {
        for item in value.as_bytes().split(|&c| c == b',') {
            if let Ok(name) = HeaderName::from_bytes(trim_ows(item)) {
                names.push(name);
            }
        }
    }
    names
}

/// An HTTP-date (RFC 9110 §5.6.7) as seconds since the Unix epoch: the
/// preferred IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) and the two
/// obsolete forms a recipient must accept, RFC 850 (`Sunday, 06-Nov-94
/// 08:49:37 GMT`, two-digit years below 70 read as 20xx) and asctime
/// (`Sun Nov  6 08:49:37 1994`). `None` when it is none of these.
pub fn http_date_s(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let parts: Vec<&str> = text.split_ascii_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        [weekday, day, month, year, time, "GMT"] if is_weekday(weekday, true) => {
            (num(day, 2)?, month_number(month)?, num(year, 4)?, *time)
        }
        [weekday, date, time, "GMT"] if is_weekday(weekday, true) => {
            let mut dmy = date.split('-');
            let (d, m, y) = (dmy.next()?, dmy.next()?, dmy.next()?);
            if dmy.next().is_some() {
                return None;
            }
            let yy = num(y, 2)?;
            (num(d, 2)?, month_number(m)?, if yy < 70 { 2000 + yy } else { 1900 + yy }, *time)
        }
        [weekday, month, day, time, year] if is_weekday(weekday, false) => {
            let day = match day.len() {
                1 | 2 => num(day, day.len())?,
                _ => return None,
            };
            (day, month_number(month)?, num(year, 4)?, *time)
        }
        _ => return None,
    };
    let mut hms = time.split(':');
    let (h, m, s) = (num(hms.next()?, 2)?, num(hms.next()?, 2)?, num(hms.next()?, 2)?);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3_600 + m * 60 + s)
}

fn is_weekday(word: &str, with_comma: bool) -> bool {
    let word = if with_comma {
        match word.strip_suffix(',') {
            Some(w) => w,
            None => return false,
        }
    } else {
        word
    };
    word.len() >= 3 && word.bytes().all(|c| c.is_ascii_alphabetic())
}

/// Exactly `width` ASCII digits.
fn num(s: &str, width: usize) -> Option<i64> {
    if s.len() != width || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_number(name: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    MONTHS.iter().position(|m| *m == name).map(|i| i as i64 + 1)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date, counting
/// years from March so that the leap day ends the year.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn is_ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// `s` without leading and trailing spaces and tabs.
pub fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| !is_ows(c)).unwrap_or(s.len());
    let end = s.iter().rposition(|&c| !is_ows(c)).map_or(start, |i| i + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: &'static str, values: &[&'static [u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_bytes(v).expect("test header value"));
        }
        h
    }

    #[test]
    fn cache_control_reads_directives_across_lines_case_insensitively() {
        let cc = CacheControl::parse(&headers("cache-control", &[b"Public, MAX-AGE=60", b"s-maxage=\"30\""]))
            .expect("valid");
        assert!(cc.public);
        assert_eq!(cc.max_age_s, Some(60));
        assert_eq!(cc.s_maxage_s, Some(30));
        assert!(!cc.no_store && !cc.private && !cc.no_cache);
    }

    #[test]
    fn cache_control_quoted_field_lists_may_hold_commas() {
        let cc = CacheControl::parse(&headers("cache-control", &[b"private=\"set-cookie, x-a\", max-age=5"]))
            .expect("valid");
        assert!(cc.private);
        assert_eq!(cc.max_age_s, Some(5));
    }

    #[test]
    fn cache_control_first_max_age_wins() {
        let cc = CacheControl::parse(&headers("cache-control", &[b"max-age=10, max-age=99"])).expect("valid");
        assert_eq!(cc.max_age_s, Some(10));
    }

    #[test]
    fn cache_control_rejects_bad_syntax_and_bytes() {
        for bad in [&b"max-age=abc"[..], b"max-age", b"max-age=", b"private=\"unterminated", b"a b", b"=5", b"\xff"] {
            assert_eq!(CacheControl::parse(&headers("cache-control", &[bad])), Err(Malformed), "{bad:?}");
        }
    }

    #[test]
    fn delta_seconds_saturates_at_two_to_the_31() {
        assert_eq!(delta_seconds(b"99999999999999999999999"), Ok(DELTA_SECONDS_MAX_S));
        assert_eq!(delta_seconds(b"0"), Ok(0));
        assert_eq!(delta_seconds(b"-1"), Err(Malformed));
    }

    #[test]
    fn vary_lists_fields_lower_case_once_or_says_any() {
        let v = Vary::parse(&headers("vary", &[b"Accept-Encoding, accept-language", b"ACCEPT-ENCODING"])).expect("ok");
        assert_eq!(
            v,
            Vary::Fields(vec![HeaderName::from_static("accept-encoding"), HeaderName::from_static("accept-language")])
        );
        assert_eq!(Vary::parse(&headers("vary", &[b"accept, *"])), Ok(Vary::Any));
        assert_eq!(Vary::parse(&headers("vary", &[b"bad name"])), Err(Malformed));
        assert_eq!(Vary::parse(&HeaderMap::new()), Ok(Vary::Fields(Vec::new())));
    }

    #[test]
    fn vary_with_too_many_fields_is_malformed() {
        let many: String = (0..=MAX_VARY_FIELDS).map(|i| format!("x-{i},")).collect();
        let mut h = HeaderMap::new();
        h.insert("vary", HeaderValue::from_str(&many).expect("ascii"));
        assert_eq!(Vary::parse(&h), Err(Malformed));
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        let t = 784_111_777; // 1994-11-06T08:49:37Z
        assert_eq!(http_date_s(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(http_date_s(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(http_date_s(b"Sun Nov  6 08:49:37 1994"), Some(t));
        assert_eq!(http_date_s(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_date_s(b"Tue, 29 Feb 2000 23:59:59 GMT"), Some(951_868_799));
        for bad in [&b"0"[..], b"", b"Sun, 06 Nov 1994 08:49:37 UTC", b"Sun, 6 Nov 1994 08:49:37 GMT", b"\xff\xfe"] {
            assert_eq!(http_date_s(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn age_is_absent_when_invalid() {
        assert_eq!(age_s(&headers("age", &[b" 42 "])), Some(42));
        assert_eq!(age_s(&headers("age", &[b"-3"])), None);
        assert_eq!(age_s(&HeaderMap::new()), None);
    }
}
