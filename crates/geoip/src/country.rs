//! The country a lookup answers with, as geofencing rules name it.
//!
//! A [`Country`] is an ISO 3166-1 alpha-2 code held as two upper-case ASCII
//! letters, so comparing a lookup against a route's allow or deny list is a
//! two-byte compare. Parsing checks the form only (two ASCII letters, either
//! case, stored upper case); it does not check that the code is assigned, so
//! MaxMind's own codes such as `EU` parse like any other.

use std::fmt;
use std::str::FromStr;

/// Characters in an ISO 3166-1 alpha-2 code.
pub const COUNTRY_CODE_LEN: usize = 2;

/// Characters of a rejected input quoted back in a [`CountryParseError`], so
/// a long bad value does not flood a log line.
const MAX_QUOTED_INPUT_CHARS: usize = 16;

/// An ISO 3166-1 alpha-2 country code: two upper-case ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Country([u8; COUNTRY_CODE_LEN]);

impl Country {
    /// The code from two ASCII letters of either case; `None` for anything else.
    pub const fn from_letters(letters: [u8; COUNTRY_CODE_LEN]) -> Option<Country> {
        let [a, b] = letters;
        if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() {
            Some(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
        } else {
            None
        }
    }

    /// The two upper-case letters.
    pub const fn letters(self) -> [u8; COUNTRY_CODE_LEN] {
        self.0
    }

    /// The code as a string slice, e.g. `"DE"`.
    pub fn as_str(&self) -> &str {
        // The bytes are ASCII letters by construction, so this cannot fail;
        // the fallback only keeps the function total.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

/// A string that is not two ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{quoted:?} is not an ISO 3166-1 alpha-2 country code (two ASCII letters, e.g. \"DE\")")]
pub struct CountryParseError {
    quoted: String,
}

impl FromStr for Country {
    type Err = CountryParseError;

    fn from_str(s: &str) -> Result<Country, CountryParseError> {
        let parsed = match s.as_bytes() {
            &[a, b] => Country::from_letters([a, b]),
            _ => None,
        };
        parsed.ok_or_else(|| CountryParseError { quoted: s.chars().take(MAX_QUOTED_INPUT_CHARS).collect() })
    }
}

impl serde::Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Country {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Country, D::Error> {
        struct CodeVisitor;
        impl serde::de::Visitor<'_> for CodeVisitor {
            type Value = Country;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 3166-1 alpha-2 country code such as \"DE\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Country, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(CodeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_two_letters_of_either_case_and_stores_upper_case() {
        for input in ["DE", "de", "dE", "De"] {
            let country: Country = input.parse().expect("two letters");
            assert_eq!(country.as_str(), "DE");
            assert_eq!(country.to_string(), "DE");
            assert_eq!(country.letters(), *b"DE");
        }
    }

    #[test]
    fn parse_rejects_anything_but_two_ascii_letters() {
        for input in ["", "D", "DEU", "D1", "12", "D ", " D", "É", "DÉ", "--", "\0\0"] {
            let err = input.parse::<Country>().expect_err(input);
            assert!(err.to_string().contains("ISO 3166-1"), "{err}");
        }
    }

    #[test]
    fn parse_error_quotes_at_most_a_bounded_prefix_of_the_input() {
        let long = "X".repeat(10_000);
        let err = long.parse::<Country>().expect_err("too long");
        assert!(err.to_string().len() < 120, "{err}");
    }

    #[test]
    fn from_letters_rejects_non_letters() {
        assert_eq!(Country::from_letters(*b"us"), "US".parse().ok());
        assert_eq!(Country::from_letters(*b"U1"), None);
        assert_eq!(Country::from_letters([0xC3, 0x89]), None);
    }

    #[test]
    fn serde_round_trips_as_a_string_and_validates() {
        let country: Country = serde_json::from_str("\"fr\"").expect("valid");
        assert_eq!(country.as_str(), "FR");
        assert_eq!(serde_json::to_string(&country).expect("serialise"), "\"FR\"");
        assert!(serde_json::from_str::<Country>("\"FRA\"").is_err());
        assert!(serde_json::from_str::<Country>("12").is_err());
    }
}
