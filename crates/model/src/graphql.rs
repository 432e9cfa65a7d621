//! A route's GraphQL policy: the bounds the gateway enforces on each
//! GraphQL operation before anything reaches the upstream.
//!
//! A route with `graphql` set accepts GraphQL-over-HTTP requests only
//! (`POST` with a JSON or `application/graphql` body, or `GET` with query
//! parameters). The data plane parses the operation (`raftgate-graphql`)
//! and refuses, with 400 and a GraphQL-shaped error body, a document that
//! is too large, too deep, has too many aliases or fields, costs too much,
//! or asks for the schema when introspection is off.
//!
//! Every bound has a default and a ceiling; a policy outside them is
//! refused at the boundary and never enters the state.

use serde::{Deserialize, Serialize};

use crate::route::FieldError;

/// Largest `max_document_bytes` (the query text).
pub const MAX_GRAPHQL_DOCUMENT_BYTES: u32 = 1 << 20;
/// Largest `max_variables_bytes`.
pub const MAX_GRAPHQL_VARIABLES_BYTES: u32 = 1 << 20;
/// Largest `max_tokens` (lexical tokens, whitespace included).
pub const MAX_GRAPHQL_TOKENS: u32 = 500_000;
/// Largest `max_depth`.
pub const MAX_GRAPHQL_DEPTH: u32 = 100;
/// Largest `max_aliases`.
pub const MAX_GRAPHQL_ALIASES: u32 = 10_000;
/// Largest `max_fields`.
pub const MAX_GRAPHQL_FIELDS: u32 = 100_000;
/// Largest `max_cost`.
pub const MAX_GRAPHQL_COST: u64 = 1_000_000_000;

/// The bounds of one GraphQL route. Defaults suit a public API; raise them
/// per route where the schema needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphqlPolicy {
    /// Longest query text, in bytes (default 64 KiB, at most 1 MiB).
    #[serde(default = "default_document_bytes")]
    pub max_document_bytes: u32,
    /// Room in the request body for `variables` and `extensions`, in bytes
    /// (default 64 KiB, at most 1 MiB). The whole body is read up to
    /// `max_document_bytes + max_variables_bytes + 1 KiB` (and the route's
    /// `max_body_bytes`).
    #[serde(default = "default_variables_bytes")]
    pub max_variables_bytes: u32,
    /// Most lexical tokens (whitespace and comments count) the parser reads
    /// before it gives up (default 50,000, at most 500,000).
    #[serde(default = "default_tokens")]
    pub max_tokens: u32,
    /// Deepest field nesting, fragments expanded (default 15, 1 to 100).
    #[serde(default = "default_depth")]
    pub max_depth: u32,
    /// Most aliased fields, fragments expanded (default 30, at most 10,000).
    #[serde(default = "default_aliases")]
    pub max_aliases: u32,
    /// Most fields, fragments expanded (default 500, 1 to 100,000).
    #[serde(default = "default_fields")]
    pub max_fields: u32,
    /// Highest cost estimate (default 10,000, 1 to 10⁹; see docs/graphql.md).
    #[serde(default = "default_cost")]
    pub max_cost: u64,
    /// Whether `__schema` and `__type` may be asked for (default false:
    /// public routes do not hand out their schema; `__typename` is always
    /// allowed).
    #[serde(default)]
    pub introspection: bool,
    /// Whether queries may come as `GET` with query parameters (default
    /// true). Mutations and subscriptions never may.
    #[serde(default = "yes")]
    pub allow_get: bool,
}

fn default_document_bytes() -> u32 {
    64 << 10
}
fn default_variables_bytes() -> u32 {
    64 << 10
}
fn default_tokens() -> u32 {
    50_000
}
fn default_depth() -> u32 {
    15
}
fn default_aliases() -> u32 {
    30
}
fn default_fields() -> u32 {
    500
}
fn default_cost() -> u64 {
    10_000
}
fn yes() -> bool {
    true
}

impl Default for GraphqlPolicy {
    fn default() -> Self {
        Self {
            max_document_bytes: default_document_bytes(),
            max_variables_bytes: default_variables_bytes(),
            max_tokens: default_tokens(),
            max_depth: default_depth(),
            max_aliases: default_aliases(),
            max_fields: default_fields(),
            max_cost: default_cost(),
            introspection: false,
            allow_get: true,
        }
    }
}

impl GraphqlPolicy {
    /// Room for the JSON envelope around the query and variables.
    pub const ENVELOPE_BYTES: u64 = 1 << 10;

    /// The most body bytes a request to this route may carry.
    pub fn max_body_bytes(&self) -> u64 {
        u64::from(self.max_document_bytes) + u64::from(self.max_variables_bytes) + Self::ENVELOPE_BYTES
    }

    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        let err = |name: &str, message: String| FieldError { field: format!("{field}.{name}"), message };
        let within = |name: &str, v: u64, min: u64, max: u64| {
            if v < min || v > max {
                Err(err(name, format!("must be {min} to {max}")))
            } else {
                Ok(())
            }
        };
        within("max_document_bytes", self.max_document_bytes.into(), 1, MAX_GRAPHQL_DOCUMENT_BYTES.into())?;
        within("max_variables_bytes", self.max_variables_bytes.into(), 0, MAX_GRAPHQL_VARIABLES_BYTES.into())?;
        within("max_tokens", self.max_tokens.into(), 1, MAX_GRAPHQL_TOKENS.into())?;
        within("max_depth", self.max_depth.into(), 1, MAX_GRAPHQL_DEPTH.into())?;
        within("max_aliases", self.max_aliases.into(), 0, MAX_GRAPHQL_ALIASES.into())?;
        within("max_fields", self.max_fields.into(), 1, MAX_GRAPHQL_FIELDS.into())?;
        within("max_cost", self.max_cost, 1, MAX_GRAPHQL_COST)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_empty_policy_takes_the_documented_defaults() {
        let p: GraphqlPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, GraphqlPolicy::default());
        assert_eq!(p.max_document_bytes, 65_536);
        assert_eq!((p.max_depth, p.max_aliases, p.max_fields, p.max_cost), (15, 30, 500, 10_000));
        assert!(!p.introspection && p.allow_get);
        p.validate("graphql").unwrap();
        assert_eq!(p.max_body_bytes(), 65_536 * 2 + 1_024);
    }

    #[test]
    fn unknown_fields_and_out_of_range_bounds_are_refused_by_name() {
        assert!(serde_json::from_str::<GraphqlPolicy>(r#"{"max_dept": 3}"#).is_err());
        for (json, field) in [
            (r#"{"max_document_bytes": 0}"#, "graphql.max_document_bytes"),
            (r#"{"max_document_bytes": 1048577}"#, "graphql.max_document_bytes"),
            (r#"{"max_depth": 0}"#, "graphql.max_depth"),
            (r#"{"max_depth": 101}"#, "graphql.max_depth"),
            (r#"{"max_fields": 0}"#, "graphql.max_fields"),
            (r#"{"max_aliases": 10001}"#, "graphql.max_aliases"),
            (r#"{"max_cost": 0}"#, "graphql.max_cost"),
            (r#"{"max_tokens": 0}"#, "graphql.max_tokens"),
            (r#"{"max_variables_bytes": 2000000}"#, "graphql.max_variables_bytes"),
        ] {
            let p: GraphqlPolicy = serde_json::from_str(json).unwrap();
            assert_eq!(p.validate("graphql").unwrap_err().field, field, "{json}");
        }
    }

    #[test]
    fn limits_may_key_on_the_graphql_operation_and_type() {
        use crate::traffic::{KeyPart, Limits};
        let l: Limits = serde_json::from_value(serde_json::json!({"rate_limits": [
            {"key": ["consumer", "graphql_operation"], "rate_per_s": 5},
            {"key": ["graphql_type"], "rate_per_s": 50}
        ]}))
        .unwrap();
        l.validate("limits").unwrap();
        assert_eq!(l.rate_limits[0].key, vec![KeyPart::Consumer, KeyPart::GraphqlOperation]);
        assert_eq!(l.rate_limits[1].key, vec![KeyPart::GraphqlType]);
    }

    proptest! {
        #[test]
        fn a_valid_policy_round_trips_through_json(depth in 1u32..=100, fields in 1u32..=100_000, cost in 1u64..=1_000_000_000) {
            let p = GraphqlPolicy { max_depth: depth, max_fields: fields, max_cost: cost, ..GraphqlPolicy::default() };
            prop_assert!(p.validate("graphql").is_ok());
            let back: GraphqlPolicy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
            prop_assert_eq!(back, p);
        }
    }
}
