//! Consumers: the identities that call routes.
//!
//! A consumer is who a credential (API key, JWT subject, client
//! certificate) stands for. Its groups feed per-route authorization and its
//! plan the limits of the traffic-control stage. A disabled consumer keeps
//! its record and credentials but is refused everywhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::{validate_cert_identities, CertIdentity};
use crate::route::{FieldError, ObjectId};

pub const MAX_CONSUMERS: usize = 1_000_000;
const MAX_NAME_CHARS: usize = 128;
const MAX_GROUPS: usize = 32;
const MAX_METADATA: usize = 32;
const MAX_METADATA_KEY_CHARS: usize = 64;
const MAX_METADATA_VALUE_BYTES: usize = 1_024;

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    pub id: ObjectId,
    /// A display name (at most 128 characters, no control characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Group (role) names, used by route authorization.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ObjectId>,
    /// The plan whose limits apply (plans arrive with traffic control).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ObjectId>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Client-certificate identities (mTLS) that stand for this consumer;
    /// each may belong to one consumer only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertIdentity>,
    /// Rate limits and quotas of this consumer, on top of its plan's.
    #[serde(default, skip_serializing_if = "crate::traffic::Limits::is_empty")]
    pub limits: crate::traffic::Limits,
}

impl Consumer {
    pub fn validate(&self) -> Result<(), FieldError> {
        let err = |field: String, message: String| FieldError { field, message };
        if self.name.chars().count() > MAX_NAME_CHARS || self.name.chars().any(char::is_control) {
            return Err(err(
                "name".into(),
                format!("must be at most {MAX_NAME_CHARS} characters without control characters"),
            ));
        }
        if self.groups.len() > MAX_GROUPS {
            return Err(err("groups".into(), format!("at most {MAX_GROUPS} groups")));
        }
        for (i, g) in self.groups.iter().enumerate() {
            if self.groups[..i].contains(g) {
                return Err(err(format!("groups[{i}]"), "listed twice".into()));
            }
        }
        if self.metadata.len() > MAX_METADATA {
            return Err(err("metadata".into(), format!("at most {MAX_METADATA} entries")));
        }
        for (k, v) in &self.metadata {
            let key_ok = !k.is_empty()
                && k.len() <= MAX_METADATA_KEY_CHARS
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !key_ok {
                return Err(err(
                    "metadata".into(),
                    format!("key {k:?} must be 1 to {MAX_METADATA_KEY_CHARS} characters of A-Z a-z 0-9 . _ -"),
                ));
            }
            if v.len() > MAX_METADATA_VALUE_BYTES || v.chars().any(char::is_control) {
                return Err(err(
                    format!("metadata.{k}"),
                    format!("must be at most {MAX_METADATA_VALUE_BYTES} bytes without control characters"),
                ));
            }
        }
        validate_cert_identities(&self.certificates)?;
        self.limits.validate("limits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_round_trips_with_defaults() {
        let c: Consumer = serde_json::from_str(
            r#"{"id":"acme","name":"ACME Corp","groups":["partners"],"plan":"gold","metadata":{"crm.id":"42"}}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.enabled, "consumers are enabled unless said otherwise");
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("enabled"), "{json}");
        assert_eq!(serde_json::from_str::<Consumer>(&json).unwrap(), c);
    }

    #[test]
    fn bad_consumers_name_the_field() {
        let cases = [
            (r#"{"id":"a","name":"bad\u0007"}"#, "name"),
            (r#"{"id":"a","groups":["x","x"]}"#, "groups[1]"),
            (r#"{"id":"a","metadata":{"bad key":"v"}}"#, "metadata"),
            (r#"{"id":"a","metadata":{"k":"line\nbreak"}}"#, "metadata.k"),
        ];
        for (json, field) in cases {
            let c: Consumer = serde_json::from_str(json).unwrap();
            assert_eq!(c.validate().unwrap_err().field, field, "{json}");
        }
        assert!(serde_json::from_str::<Consumer>(r#"{"id":"a","groups":["Not An Id"]}"#).is_err());
        assert!(serde_json::from_str::<Consumer>(r#"{"id":"a","secret":"x"}"#).is_err());
    }
}
