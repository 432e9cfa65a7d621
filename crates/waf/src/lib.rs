//! WAF-style inspection of HTTP requests.
//!
//! An [`Inspector`] looks at the parts of a request (path, query, headers,
//! body) for SQL injection, cross-site scripting, command injection and path
//! traversal, and reports the first [`Finding`]. It only detects: whether a
//! route blocks or only logs a finding is the caller's decision. Detection is
//! a compiled rule set (`rules`: linear-time `RegexSet`s, per category and
//! combined) plus an SQL tokenizer (`sqli`) that looks for injected shapes
//! rather than words, both run on values normalised by `normalize` (percent-decoding in
//! bounded passes, look-alike folding, lower-casing, entity decoding for
//! markup). All work is bounded by [`Limits`]: values are scanned in windows
//! of at most `max_value_bytes`, bodies are capped, JSON depth and value
//! counts are checked before and while walking, and nothing recurses on input
//! structure beyond the JSON depth bound.

#![forbid(unsafe_code)]

mod body;
mod normalize;
mod rules;
mod sqli;

use std::borrow::Cow;

use rules::RuleSets;

/// The longest parameter name, header name or JSON pointer a [`Location`]
/// carries, in characters; longer ones are cut.
pub const MAX_LOCATION_CHARS: usize = 128;

/// How many bytes consecutive windows of a long value share, so that a
/// payload shorter than this that straddles a window boundary is still seen
/// whole (capped at half the window).
pub const WINDOW_OVERLAP_BYTES: usize = 512;

/// The smallest window, in bytes, whatever `max_value_bytes` says.
pub const MIN_WINDOW_BYTES: usize = 64;

/// The deepest JSON nesting the parser itself accepts (serde_json's
/// recursion limit), in levels; `max_json_depth` is capped to it.
pub const JSON_PARSER_MAX_DEPTH: usize = 127;

/// Bounds on the work one inspection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body inspected, in bytes; a larger one is refused with
    /// [`BodyError::TooLarge`] (the caller should cap reading it as well).
    pub max_body_bytes: usize,
    /// Deepest JSON nesting of arrays and objects, in levels (capped at
    /// [`JSON_PARSER_MAX_DEPTH`]); deeper is [`BodyError::TooDeep`].
    pub max_json_depth: usize,
    /// Most strings (keys and values) in a JSON body, or fields in a form
    /// body; more is [`BodyError::TooManyValues`].
    pub max_values: usize,
    /// Largest slice of one value scanned at once, in bytes. A longer value
    /// is scanned in windows of this size that overlap by
    /// [`WINDOW_OVERLAP_BYTES`], so padding cannot push a payload out of
    /// sight, and the cost of one scan stays bounded.
    pub max_value_bytes: usize,
    /// Most percent-decoding passes over one value (3 undoes triple
    /// encoding); also bounds HTML entity decoding passes.
    pub max_decode_passes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_json_depth: 64,
            max_values: 10_000,
            max_value_bytes: 8 * 1024,
            max_decode_passes: 3,
        }
    }
}

/// What kind of attack a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    SqlInjection,
    Xss,
    CommandInjection,
    PathTraversal,
}

impl Category {
    /// Short stable name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::SqlInjection => "sqli",
            Category::Xss => "xss",
            Category::CommandInjection => "cmdi",
            Category::PathTraversal => "traversal",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the request a finding is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    Path,
    /// The query parameter's (decoded, cut) name.
    Query(String),
    /// The header's name, as given.
    Header(String),
    /// A JSON pointer (`/user/name`, `""` for the whole document) or a form
    /// field's name; empty for a text body.
    Body(String),
}

/// One detection: what, by which rule, where.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    pub category: Category,
    /// A stable rule id, prefixed by the category (`sqli-tautology`).
    pub rule: &'static str,
    pub location: Location,
}

/// Why a body could not be inspected. The messages name only limits and
/// positions, never request content, so they are safe to return to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    #[error("JSON body is nested deeper than {limit_levels} levels")]
    TooDeep { limit_levels: usize },
    #[error("request body has more than {limit} values")]
    TooManyValues { limit: usize },
    #[error("request body is not valid JSON (line {line}, column {column})")]
    InvalidJson { line: usize, column: usize },
}

/// How a value's bytes were encoded by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Query strings and form bodies: `+` is a space.
    Form,
    /// Paths, headers, JSON strings, text.
    Plain,
}

/// Compiled rules and limits. Build once and share: it is `Send + Sync`
/// and inspection takes `&self`.
pub struct Inspector {
    limits: Limits,
    rules: RuleSets,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Default for Inspector {
    fn default() -> Self {
        Inspector::new(Limits::default())
    }
}

impl Inspector {
    /// Compiles the rule set (a few milliseconds).
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            max_json_depth: limits.max_json_depth.min(JSON_PARSER_MAX_DEPTH),
            max_value_bytes: limits.max_value_bytes.max(MIN_WINDOW_BYTES),
            ..limits
        };
        Inspector { limits, rules: RuleSets::compile() }
    }

    /// The limits in force (after capping).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Inspects a request path as received (percent-encoded or not).
    pub fn inspect_path(&self, path: &str) -> Option<Finding> {
        self.scan(path.as_bytes(), Encoding::Plain).map(|(category, rule)| Finding {
            category,
            rule,
            location: Location::Path,
        })
    }

    /// Inspects a query string (without the `?`): every `name=value` pair,
    /// names and values, percent- and plus-decoded.
    pub fn inspect_query(&self, query: &str) -> Option<Finding> {
        for (name, value) in body::pairs(query.as_bytes()) {
            if let Some((category, rule)) = self.scan(name, Encoding::Form).or_else(|| self.scan(value, Encoding::Form))
            {
                return Some(Finding { category, rule, location: Location::Query(body::display_name(name)) });
            }
        }
        None
    }

    /// Inspects one header value (percent-decoded, `+` kept). Invalid UTF-8
    /// is inspected as bytes.
    pub fn inspect_header(&self, name: &str, value: &[u8]) -> Option<Finding> {
        self.scan(value, Encoding::Plain).map(|(category, rule)| Finding {
            category,
            rule,
            location: Location::Header(truncate(name)),
        })
    }

    /// Inspects a body by its Content-Type: JSON (`application/json`,
    /// `*/*+json`) walks keys and string values; a form
    /// (`application/x-www-form-urlencoded`) decodes its pairs; anything else
    /// (text, unknown, none) is scanned as text.
    pub fn inspect_body(&self, content_type: Option<&str>, body: &[u8]) -> Result<Option<Finding>, BodyError> {
        if body.len() > self.limits.max_body_bytes {
            return Err(BodyError::TooLarge { limit_bytes: self.limits.max_body_bytes });
        }
        match body::Kind::of(content_type) {
            body::Kind::Json => body::inspect_json(self, body),
            body::Kind::Form => body::inspect_form(self, body),
            body::Kind::Text => Ok(self.scan(body, Encoding::Plain).map(|(category, rule)| Finding {
                category,
                rule,
                location: Location::Body(String::new()),
            })),
        }
    }

    /// Scans one value, window by window.
    pub(crate) fn scan(&self, raw: &[u8], encoding: Encoding) -> Option<(Category, &'static str)> {
        let window = self.limits.max_value_bytes;
        if raw.len() <= window {
            return self.scan_window(raw, encoding);
        }
        let overlap = WINDOW_OVERLAP_BYTES.min(window / 2);
        let step = window - overlap;
        let mut start = 0;
        loop {
            let end = (start + window).min(raw.len());
            if let Some(hit) = self.scan_window(&raw[start..end], encoding) {
                return Some(hit);
            }
            if end == raw.len() {
                return None;
            }
            start += step;
        }
    }

    fn scan_window(&self, raw: &[u8], encoding: Encoding) -> Option<(Category, &'static str)> {
        let passes = self.limits.max_decode_passes;
        let base = normalize::base(raw, encoding == Encoding::Form, passes);
        let present = Bytes::of(&base);
        if sqli::worth_tokenizing(&base, present.any(sqli::SPECIAL_BYTES)) {
            if let Some(rule) = sqli::detect(&base) {
                return Some((Category::SqlInjection, rule));
            }
        }
        let rules = &self.rules;
        let sqli_words = || rules::SQLI_TRIGGER_WORDS.iter().any(|w| contains(&base, w));
        let sqli_set = present.any(rules::SQLI_TRIGGERS) || sqli_words();
        let markup = normalize::for_markup(&base, passes);
        let hit = if let Cow::Borrowed(_) = markup {
            // Nothing to decode for markup: one pass of every rule.
            (sqli_set || present.any(rules::ALL_TRIGGERS)).then(|| rules.all.first_match(&base)).flatten()
        } else {
            let sqli = || sqli_set.then(|| rules.sqli.first_match(&base)).flatten();
            let others = [&rules.cmdi, &rules.traversal];
            sqli()
                .or_else(|| rules.xss.first_match(&markup))
                .or_else(|| others.iter().find_map(|r| r.first_match(&base)))
        };
        if hit.is_some_and(|(category, _)| category != Category::PathTraversal) {
            return hit;
        }
        // Shell quoting tricks (`c'a't /etc/passwd`) outrank the traversal
        // rule that the target alone would match.
        let shell = present.any(rules::CMDI_TRIGGERS).then(|| normalize::for_shell(&base)).flatten();
        shell.and_then(|s| rules.cmdi.first_match(&s)).or(hit)
    }
}

/// Which ASCII bytes occur in a value, as a bit set (one cheap pass that
/// lets a rule set be skipped when none of the bytes it needs is there).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bytes(u128);

impl Bytes {
    pub(crate) fn of(text: &[u8]) -> Bytes {
        Bytes(text.iter().filter(|b| b.is_ascii()).fold(0u128, |set, &b| set | (1u128 << b)))
    }

    /// The set of the given bytes (all ASCII).
    pub(crate) const fn set(bytes: &[u8]) -> u128 {
        let mut set = 0u128;
        let mut i = 0;
        while i < bytes.len() {
            set |= 1u128 << (bytes[i] & 0x7f);
            i += 1;
        }
        set
    }

    pub(crate) fn any(self, set: u128) -> bool {
        self.0 & set != 0
    }
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Cuts a location name to [`MAX_LOCATION_CHARS`] characters.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(MAX_LOCATION_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inspector_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Inspector>();
    }

    #[test]
    fn category_names_are_stable() {
        let names: Vec<_> =
            [Category::SqlInjection, Category::Xss, Category::CommandInjection, Category::PathTraversal]
                .iter()
                .map(|c| c.as_str())
                .collect();
        assert_eq!(names, ["sqli", "xss", "cmdi", "traversal"]);
    }

    #[test]
    fn limits_are_capped_to_what_the_parser_and_windows_allow() {
        let i = Inspector::new(Limits { max_json_depth: 10_000, max_value_bytes: 0, ..Limits::default() });
        assert_eq!(i.limits().max_json_depth, JSON_PARSER_MAX_DEPTH);
        assert_eq!(i.limits().max_value_bytes, MIN_WINDOW_BYTES);
    }
}
