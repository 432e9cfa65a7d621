//! Normalisation of one value before the rules look at it.
//!
//! Attackers hide payloads behind encodings that the application (or a
//! component in front of it) undoes: percent-encoding, sometimes twice,
//! IIS-style `%uXXXX`, overlong UTF-8 (`%c0%af` for `/`), full-width forms,
//! NUL bytes, mixed case, HTML entities and JavaScript escapes. The functions
//! here undo those on bytes, so invalid UTF-8 is carried along instead of
//! failing, and every step is a single linear pass whose output is never
//! longer than its input (plus, for HTML entities, at most four bytes per
//! entity, which is shorter than the entity itself).

use std::borrow::Cow;

/// Percent-decodes `input` until it stops changing, at most `passes` times.
/// `plus_as_space` applies the form rule (`+` is a space) on the first pass
/// only: a `%2B` that decodes to `+` is a literal plus.
pub(crate) fn percent_decode(input: &[u8], plus_as_space: bool, passes: usize) -> Cow<'_, [u8]> {
    let mut current = Cow::Borrowed(input);
    for pass in 0..passes {
        let plus = plus_as_space && pass == 0;
        if !needs_percent_decoding(&current, plus) {
            break;
        }
        let mut out = Vec::with_capacity(current.len());
        percent_decode_once(&current, plus, &mut out);
        if out.as_slice() == current.as_ref() {
            break;
        }
        current = Cow::Owned(out);
    }
    current
}

fn needs_percent_decoding(input: &[u8], plus_as_space: bool) -> bool {
    input.iter().any(|&b| b == b'%' || (plus_as_space && b == b'+'))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_at(input: &[u8], at: usize, digits: usize) -> Option<u32> {
    let slice = input.get(at..at + digits)?;
    let mut value = 0u32;
    for &b in slice {
        value = value * 16 + u32::from(hex_value(b)?);
    }
    Some(value)
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

fn percent_decode_once(input: &[u8], plus_as_space: bool, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'+' && plus_as_space {
            out.push(b' ');
            i += 1;
        } else if b == b'%' {
            if let Some(v) = hex_at(input, i + 1, 2) {
                // Two hex digits are at most 0xff.
                out.push(v as u8);
                i += 3;
            } else if matches!(input.get(i + 1), Some(b'u' | b'U')) {
                match hex_at(input, i + 2, 4).and_then(char::from_u32) {
                    Some(c) => {
                        push_char(out, c);
                        i += 6;
                    }
                    None => {
                        out.push(b);
                        i += 1;
                    }
                }
            } else {
                out.push(b);
                i += 1;
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
}

/// Folds look-alike encodings to ASCII, drops NUL bytes and lower-cases ASCII:
/// overlong UTF-8 forms of ASCII (`c0 af` is `/`), full-width forms
/// (U+FF01..U+FF5E), the division and fraction slashes, the set-minus
/// backslash, the one-dot leader and the no-break space. Anything else,
/// including invalid UTF-8, is copied as it is.
pub(crate) fn fold(input: &[u8]) -> Vec<u8> {
    // Most values are plain ASCII: nothing to fold but the case.
    if input.iter().all(|&b| b != 0 && b.is_ascii()) {
        return input.to_ascii_lowercase();
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        let next = input.get(i + 1).copied();
        let third = input.get(i + 2).copied();
        let continuation = |x: Option<u8>| matches!(x, Some(0x80..=0xbf));
        match b {
            0 => i += 1,
            // Two-byte overlong encodings of U+0000..U+007F.
            0xc0 | 0xc1 if continuation(next) => {
                let v = ((b & 0x01) << 6) | (next.unwrap_or(0) & 0x3f);
                push_ascii(&mut out, v);
                i += 2;
            }
            // Three-byte overlong encodings of U+0000..U+07FF.
            0xe0 if matches!(next, Some(0x80..=0x9f)) && continuation(third) => {
                let v = (u32::from(next.unwrap_or(0) & 0x3f) << 6) | u32::from(third.unwrap_or(0) & 0x3f);
                match u8::try_from(v) {
                    Ok(ascii) if ascii < 0x80 => push_ascii(&mut out, ascii),
                    _ => out.extend_from_slice(&input[i..i + 3]),
                }
                i += 3;
            }
            // Full-width forms U+FF01..U+FF3F and U+FF40..U+FF5E.
            0xef if next == Some(0xbc) && matches!(third, Some(0x81..=0xbf)) => {
                push_ascii(&mut out, 0x21 + (third.unwrap_or(0x81) - 0x81));
                i += 3;
            }
            0xef if next == Some(0xbd) && matches!(third, Some(0x80..=0x9e)) => {
                push_ascii(&mut out, 0x60 + (third.unwrap_or(0x80) - 0x80));
                i += 3;
            }
            // U+2215 division slash, U+2216 set minus, U+2044 fraction slash, U+2024 one dot leader.
            0xe2 if next == Some(0x88) && third == Some(0x95) => {
                out.push(b'/');
                i += 3;
            }
            0xe2 if next == Some(0x88) && third == Some(0x96) => {
                out.push(b'\\');
                i += 3;
            }
            0xe2 if next == Some(0x81) && third == Some(0x84) => {
                out.push(b'/');
                i += 3;
            }
            0xe2 if next == Some(0x80) && third == Some(0xa4) => {
                out.push(b'.');
                i += 3;
            }
            // U+00A0 no-break space.
            0xc2 if next == Some(0xa0) => {
                out.push(b' ');
                i += 2;
            }
            _ => {
                out.push(b.to_ascii_lowercase());
                i += 1;
            }
        }
    }
    out
}

fn push_ascii(out: &mut Vec<u8>, v: u8) {
    if v != 0 {
        out.push(v.to_ascii_lowercase());
    }
}

/// The text every rule starts from: percent-decoded (bounded passes), folded,
/// NUL-free and lower-cased.
pub(crate) fn base(input: &[u8], plus_as_space: bool, passes: usize) -> Vec<u8> {
    fold(&percent_decode(input, plus_as_space, passes))
}

/// Named HTML entities that matter for markup and script, by lower-cased
/// name. Those marked `true` are also recognised without the `;`, as
/// browsers do for the legacy ones.
const NAMED_ENTITIES: &[(&[u8], char, bool)] = &[
    (b"lt", '<', true),
    (b"gt", '>', true),
    (b"quot", '"', true),
    (b"amp", '&', true),
    (b"apos", '\'', false),
    (b"colon", ':', false),
    (b"semi", ';', false),
    (b"comma", ',', false),
    (b"period", '.', false),
    (b"sol", '/', false),
    (b"bsol", '\\', false),
    (b"lpar", '(', false),
    (b"rpar", ')', false),
    (b"lsqb", '[', false),
    (b"rsqb", ']', false),
    (b"lbrack", '[', false),
    (b"rbrack", ']', false),
    (b"lcub", '{', false),
    (b"rcub", '}', false),
    (b"grave", '`', false),
    (b"equals", '=', false),
    (b"excl", '!', false),
    (b"num", '#', false),
    (b"plus", '+', false),
    (b"percnt", '%', false),
    (b"ast", '*', false),
    (b"dollar", '$', false),
    (b"vert", '|', false),
    (b"tab", '\t', false),
    (b"newline", '\n', false),
    (b"nbsp", ' ', true),
];

/// Decodes HTML character references (`&lt;`, `&#60;`, `&#x3c;`, with or
/// without the `;`, any number of leading zeros) and JavaScript escapes
/// (`\x3c`, `\u003c`), repeating up to `passes` times for `&amp;lt;`, then
/// folds again. Input without `&` or `\` is returned as it is.
pub(crate) fn for_markup(base: &[u8], passes: usize) -> Cow<'_, [u8]> {
    let mut current = Cow::Borrowed(base);
    for _ in 0..passes.max(1) {
        if !has_reference(&current) {
            break;
        }
        let mut out = Vec::with_capacity(current.len());
        decode_references_once(&current, &mut out);
        if out.as_slice() == current.as_ref() {
            break;
        }
        current = Cow::Owned(fold(&out));
    }
    current
}

/// Whether `text` has something that looks like the start of a character
/// reference (`&` then `#` or a letter) or of a `\\x`/`\\u` escape.
fn has_reference(text: &[u8]) -> bool {
    text.windows(2).any(|w| match w {
        [b'&', c] => *c == b'#' || c.is_ascii_alphabetic(),
        [b'\\', c] => *c == b'x' || *c == b'u',
        _ => false,
    })
}

fn decode_references_once(input: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        let consumed = match b {
            b'&' => decode_entity(input, i, out),
            b'\\' => decode_js_escape(input, i, out),
            _ => 0,
        };
        if consumed == 0 {
            out.push(b);
            i += 1;
        } else {
            i += consumed;
        }
    }
}

/// Decodes the character reference at `input[at]` (an `&`) into `out` and
/// returns how many bytes it used, or 0 if there is none.
fn decode_entity(input: &[u8], at: usize, out: &mut Vec<u8>) -> usize {
    let rest = &input[at + 1..];
    if rest.first() == Some(&b'#') {
        let (radix, digits_from) = match rest.get(1) {
            Some(b'x' | b'X') => (16u32, 2),
            _ => (10u32, 1),
        };
        let mut value: u32 = 0;
        let mut n = digits_from;
        while let Some(d) = rest.get(n).and_then(|&c| (c as char).to_digit(radix)) {
            value = value.saturating_mul(radix).saturating_add(d);
            n += 1;
        }
        if n == digits_from {
            return 0;
        }
        if rest.get(n) == Some(&b';') {
            n += 1;
        }
        if let Some(c) = char::from_u32(value).filter(|&c| c != '\0') {
            push_char(out, c);
        }
        return 1 + n;
    }
    for &(name, c, semicolon_optional) in NAMED_ENTITIES {
        if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name) {
            let after = rest.get(name.len());
            if after == Some(&b';') {
                push_char(out, c);
                return 1 + name.len() + 1;
            }
            if semicolon_optional && !after.is_some_and(|b| b.is_ascii_alphanumeric()) {
                push_char(out, c);
                return 1 + name.len();
            }
        }
    }
    0
}

/// Decodes `\xHH` and `\uHHHH` at `input[at]` (a backslash).
fn decode_js_escape(input: &[u8], at: usize, out: &mut Vec<u8>) -> usize {
    let (digits, skip) = match input.get(at + 1) {
        Some(b'x') => (2, 2),
        Some(b'u') => (4, 2),
        _ => return 0,
    };
    match hex_at(input, at + skip, digits).and_then(char::from_u32) {
        Some(c) if c != '\0' => {
            push_char(out, c);
            skip + digits
        }
        _ => 0,
    }
}

/// For shell rules: removes the quoting and expansion tricks that a shell
/// ignores inside a word (`c'a't`, `w\h\o\a\m\i`, `c$@at`) and turns `$IFS`
/// spellings into spaces. Returns `None` when there is nothing to remove.
pub(crate) fn for_shell(base: &[u8]) -> Option<Vec<u8>> {
    if !base.iter().any(|&b| matches!(b, b'\'' | b'"' | b'\\' | b'$')) {
        return None;
    }
    let mut out = Vec::with_capacity(base.len());
    let mut i = 0;
    while i < base.len() {
        let rest = &base[i..];
        if let Some(n) = ifs_spelling(rest) {
            out.push(b' ');
            i += n;
            continue;
        }
        match rest {
            [b'$', b'@' | b'*', ..] => i += 2,
            [b'\'' | b'"' | b'\\', ..] => i += 1,
            _ => {
                out.push(base[i]);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Length of a `$IFS`, `${IFS}` or `$IFS$9` spelling at the start of `rest`.
fn ifs_spelling(rest: &[u8]) -> Option<usize> {
    let n = if rest.starts_with(b"${ifs}") {
        6
    } else if rest.starts_with(b"$ifs") {
        4
    } else {
        return None;
    };
    match rest.get(n..n + 2) {
        Some([b'$', d]) if d.is_ascii_digit() => Some(n + 2),
        _ => Some(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn double_percent_encoding_is_undone_within_the_pass_bound() {
        assert_eq!(text(&base(b"%252e%252e%252f", false, 3)), "../");
        assert_eq!(text(&base(b"%252e", false, 1)), "%2e");
    }

    #[test]
    fn plus_is_a_space_only_in_forms_and_only_before_decoding() {
        assert_eq!(text(&base(b"a+b%2Bc", true, 3)), "a b+c");
        assert_eq!(text(&base(b"a+b", false, 3)), "a+b");
    }

    #[test]
    fn overlong_and_full_width_forms_fold_to_ascii() {
        assert_eq!(text(&base(b"..%c0%af..%c1%9c", false, 3)), "../..\\");
        assert_eq!(text(&base("ＳＥＬＥＣＴ".as_bytes(), false, 3)), "select");
        assert_eq!(text(&base(b"%uff0e%uff0e%u2215", false, 3)), "../");
    }

    #[test]
    fn nul_bytes_are_dropped_and_invalid_utf8_is_kept() {
        assert_eq!(base(b"<scr\0ipt%00>", false, 3), b"<script>");
        assert_eq!(base(b"\xff\xfeA", false, 3), b"\xff\xfea");
    }

    #[test]
    fn html_entities_and_js_escapes_decode_for_markup() {
        let b = base(b"&lt;img src=x &#X6F;nerror&#0000061;1&gt; \\u003cscript\\x3e &amp;lt;", false, 3);
        assert_eq!(text(&for_markup(&b, 3)), "<img src=x onerror=1> <script> <");
    }

    #[test]
    fn shell_quoting_tricks_are_removed() {
        assert_eq!(for_shell(b";c'a't${ifs}/etc/pa\\sswd").map(|v| text(&v)), Some(";cat /etc/passwd".into()));
        assert_eq!(for_shell(b"plain"), None);
    }
}
