//! Content-coding negotiation: which of the policy's codings to use for a
//! response, from the request's `Accept-Encoding` (RFC 9110 §12.5.3).
//!
//! q-values are kept in thousandths, as the grammar defines them, so no
//! floating point is involved. An element that does not follow the grammar
//! (a bad token, a bad or repeated q, an unknown parameter) is ignored on its
//! own; the rest of the header still counts.

use http::HeaderValue;

use crate::policy::{list_elements, Encoding, Policy};

/// At most this many elements of `Accept-Encoding` are read, across all its
/// lines; real clients send fewer than ten.
const MAX_ACCEPT_ENCODING_ELEMENTS: usize = 64;

/// q=1, in thousandths.
const Q_ONE: u16 = 1000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Coding {
    Known(Encoding),
    Identity,
    Any,
    Other,
}

#[derive(Clone, Copy)]
struct Offer {
    coding: Coding,
    /// Thousandths, 0 to 1000.
    q: u16,
}

/// Which encoding (if any) to use for this response: the policy's coding
/// with the highest q-value in `Accept-Encoding`, ties broken by the
/// policy's order. A coding not listed takes the q of `*` if `*` is listed
/// and is not acceptable otherwise; `q=0` means "not acceptable". If the
/// client lists `identity` with a higher q than every coding on offer, the
/// answer is `None`. An absent or empty header gives `None` (RFC 9110 allows
/// any coding then, but clients that want one always say so). When a coding
/// is listed more than once, the first listing counts.
///
/// `identity;q=0` with no acceptable coding also gives `None`: the response
/// is then sent as it is, which is what clients cope with best.
pub fn negotiate<'a>(accept_encoding: impl Iterator<Item = &'a HeaderValue>, policy: &Policy) -> Option<Encoding> {
    let offers = parse(accept_encoding);
    let q_of = |coding: Coding| offers.iter().find(|o| o.coding == coding).map(|o| o.q);
    let any = q_of(Coding::Any);

    let mut best: Option<(Encoding, u16)> = None;
    for &enc in &policy.encodings {
        let q = q_of(Coding::Known(enc)).or(any).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((enc, q));
        }
    }
    let (enc, q) = best?;
    match q_of(Coding::Identity) {
        Some(identity_q) if identity_q > q => None,
        _ => Some(enc),
    }
}

fn parse<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Vec<Offer> {
    let mut offers = Vec::new();
    let mut seen = 0usize;
    for value in values {
        // A line that is not visible ASCII is skipped; the others still count.
        let Some(elements) = list_elements(std::iter::once(value)) else {
            continue;
        };
        for element in elements {
            if seen == MAX_ACCEPT_ENCODING_ELEMENTS {
                return offers;
            }
            seen += 1;
            if let Some(offer) = parse_element(element) {
                offers.push(offer);
            }
        }
    }
    offers
}

/// `coding [ OWS ";" OWS "q=" qvalue ]`, or `None` if it is not that.
fn parse_element(element: &str) -> Option<Offer> {
    let mut parts = element.split(';');
    let token = parts.next()?.trim();
    if token.is_empty() || !token.bytes().all(is_tchar) {
        return None;
    }
    let mut q = None;
    for param in parts {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("q") || q.is_some() {
            return None;
        }
        q = Some(parse_qvalue(value.trim())?);
    }
    let coding = if token == "*" {
        Coding::Any
    } else if token.eq_ignore_ascii_case("identity") {
        Coding::Identity
    } else {
        Encoding::from_token(token).map_or(Coding::Other, Coding::Known)
    };
    Some(Offer { coding, q: q.unwrap_or(Q_ONE) })
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match whole {
        "0" => {
            let mut thousandths = 0u16;
            for place in 0..3 {
                let digit = fraction.as_bytes().get(place).map_or(0, |b| u16::from(b - b'0'));
                thousandths = thousandths * 10 + digit;
            }
            Some(thousandths)
        }
        "1" => fraction.bytes().all(|b| b == b'0').then_some(Q_ONE),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qvalue_grammar_is_followed_exactly() {
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0.123"), Some(123));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        for bad in ["", "1.5", "1.001", "2", "0.1234", "-0.5", ".5", "0.5x", "+1", "00.5", "0,5", "1e0"] {
            assert_eq!(parse_qvalue(bad), None, "{bad:?}");
        }
    }
}
