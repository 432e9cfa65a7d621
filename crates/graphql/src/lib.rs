//! The GraphQL guard: one GraphQL-over-HTTP request in, one measured
//! [`Operation`] or a [`Rejection`] out, with bounded work.
//!
//! A GraphQL route sends every request through [`Guard::inspect`] before
//! the rate limits, so that limits, metrics and logs can key on the
//! operation's name and type, and so that a document too large, too deep,
//! too wide or too costly never reaches the upstream.
//!
//! What is bounded, and how:
//! - the document's bytes (`max_document_bytes`), the request body
//!   ([`GraphqlPolicy::max_body_bytes`]) and the parser's tokens
//!   (`max_tokens`) and recursion (from `max_depth`), so parsing is linear
//!   in a bounded input and cannot overflow the stack;
//! - the walk over the selected operation expands fragment spreads in
//!   place with cycle detection; it stops at the first bound it crosses:
//!   depth, fields, aliases, cost, [`MAX_EXPANDED_SELECTIONS`] selections
//!   visited and [`MAX_NESTING`] levels of fields and fragments.
//!
//! The cost estimate: every field costs the product of the list sizes of
//! the fields it is nested in (1 at the top). A field's list size is the
//! largest of its `first`, `last` and `limit` integer arguments (literal,
//! or a variable's value or default), at least 1. Products and sums
//! saturate. So `{ users(first: 100) { id name } }` costs 1 + 100 × 2 = 201.
//!
//! Batched requests (a JSON array of operations) are refused
//! ([`Rejection::BatchNotSupported`]): one request, one operation, one
//! limit decision.

use std::collections::HashMap;

use apollo_parser::{cst, Parser};
use raftgate_model::graphql::GraphqlPolicy;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Longest operation name accepted (names are keys of limits and metrics).
pub const MAX_OPERATION_NAME_BYTES: usize = 128;
/// Most selections (fields, spreads, inline fragments) visited in one
/// operation once fragments are expanded; beyond: [`Rejection::FieldLimit`].
pub const MAX_EXPANDED_SELECTIONS: u32 = 100_000;
/// Most levels of fields, inline fragments and fragment spreads on the
/// walk at once; beyond: [`Rejection::DepthLimit`].
pub const MAX_NESTING: u32 = 256;
/// The parser's recursion limit is `3 × max_depth + PARSER_RECURSION_SLACK`
/// (values and fragments nest too), at most [`MAX_PARSER_RECURSION`].
const PARSER_RECURSION_SLACK: usize = 64;
/// apollo-parser's own default, chosen to stay well clear of a stack overflow.
const MAX_PARSER_RECURSION: usize = 500;
/// Arguments read as a list's size by the cost estimate.
pub const LIST_SIZE_ARGUMENTS: [&str; 3] = ["first", "last", "limit"];

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationType {
    Query,
    Mutation,
    Subscription,
}

impl OperationType {
    pub const ALL: [OperationType; 3] = [OperationType::Query, OperationType::Mutation, OperationType::Subscription];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
            OperationType::Subscription => "subscription",
        }
    }

    /// Position in [`OperationType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The operation a request will run, as measured by the guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Its name (none: an anonymous operation). At most
    /// [`MAX_OPERATION_NAME_BYTES`], GraphQL name characters only.
    pub name: Option<String>,
    pub kind: OperationType,
    /// Deepest field nesting (top-level fields are at depth 1).
    pub depth: u32,
    /// Fields selected, fragments expanded.
    pub fields: u32,
    /// Aliased fields, fragments expanded.
    pub aliases: u32,
    /// The cost estimate (see the crate documentation).
    pub cost: u64,
}

/// Why a request was refused. Each has a stable code and a fixed message:
/// nothing of the client's input is echoed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    #[error("{}", self.message())]
    RequestInvalid,
    #[error("{}", self.message())]
    BatchNotSupported,
    #[error("{}", self.message())]
    DocumentTooLarge,
    #[error("{}", self.message())]
    ParseFailed,
    #[error("{}", self.message())]
    OperationNotFound,
    #[error("{}", self.message())]
    OperationAmbiguous,
    #[error("{}", self.message())]
    GetNotAllowed,
    #[error("{}", self.message())]
    FragmentInvalid,
    #[error("{}", self.message())]
    DepthLimit,
    #[error("{}", self.message())]
    AliasLimit,
    #[error("{}", self.message())]
    FieldLimit,
    #[error("{}", self.message())]
    CostLimit,
    #[error("{}", self.message())]
    IntrospectionDisabled,
}

impl Rejection {
    pub const ALL: [Rejection; 13] = [
        Rejection::RequestInvalid,
        Rejection::BatchNotSupported,
        Rejection::DocumentTooLarge,
        Rejection::ParseFailed,
        Rejection::OperationNotFound,
        Rejection::OperationAmbiguous,
        Rejection::GetNotAllowed,
        Rejection::FragmentInvalid,
        Rejection::DepthLimit,
        Rejection::AliasLimit,
        Rejection::FieldLimit,
        Rejection::CostLimit,
        Rejection::IntrospectionDisabled,
    ];

    /// Position in [`Rejection::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The code in the GraphQL error's `extensions.code`.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::RequestInvalid => "GRAPHQL_REQUEST_INVALID",
            Rejection::BatchNotSupported => "GRAPHQL_BATCH_NOT_SUPPORTED",
            Rejection::DocumentTooLarge => "GRAPHQL_DOCUMENT_TOO_LARGE",
            Rejection::ParseFailed => "GRAPHQL_PARSE_FAILED",
            Rejection::OperationNotFound => "GRAPHQL_OPERATION_NOT_FOUND",
            Rejection::OperationAmbiguous => "GRAPHQL_OPERATION_AMBIGUOUS",
            Rejection::GetNotAllowed => "GRAPHQL_GET_NOT_ALLOWED",
            Rejection::FragmentInvalid => "GRAPHQL_FRAGMENT_INVALID",
            Rejection::DepthLimit => "GRAPHQL_DEPTH_LIMIT",
            Rejection::AliasLimit => "GRAPHQL_ALIAS_LIMIT",
            Rejection::FieldLimit => "GRAPHQL_FIELD_LIMIT",
            Rejection::CostLimit => "GRAPHQL_COST_LIMIT",
            Rejection::IntrospectionDisabled => "GRAPHQL_INTROSPECTION_DISABLED",
        }
    }

    /// The same code in the gateway's style (access log, error metrics).
    pub fn gateway_code(self) -> &'static str {
        match self {
            Rejection::RequestInvalid => "graphql_request_invalid",
            Rejection::BatchNotSupported => "graphql_batch_not_supported",
            Rejection::DocumentTooLarge => "graphql_document_too_large",
            Rejection::ParseFailed => "graphql_parse_failed",
            Rejection::OperationNotFound => "graphql_operation_not_found",
            Rejection::OperationAmbiguous => "graphql_operation_ambiguous",
            Rejection::GetNotAllowed => "graphql_get_not_allowed",
            Rejection::FragmentInvalid => "graphql_fragment_invalid",
            Rejection::DepthLimit => "graphql_depth_limit",
            Rejection::AliasLimit => "graphql_alias_limit",
            Rejection::FieldLimit => "graphql_field_limit",
            Rejection::CostLimit => "graphql_cost_limit",
            Rejection::IntrospectionDisabled => "graphql_introspection_disabled",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Rejection::RequestInvalid => {
                "not a GraphQL request: send GET with a query parameter, or POST with a JSON or application/graphql body"
            }
            Rejection::BatchNotSupported => "batched operations are not supported: send one operation per request",
            Rejection::DocumentTooLarge => "the GraphQL document is larger than this endpoint allows",
            Rejection::ParseFailed => "the GraphQL document could not be parsed",
            Rejection::OperationNotFound => "no operation in the document matches operationName",
            Rejection::OperationAmbiguous => "the document has several operations: operationName must name one",
            Rejection::GetNotAllowed => "this operation may not be sent with GET: use POST",
            Rejection::FragmentInvalid => "a fragment is undefined, defined twice or spreads itself",
            Rejection::DepthLimit => "the operation is nested deeper than this endpoint allows",
            Rejection::AliasLimit => "the operation has more aliases than this endpoint allows",
            Rejection::FieldLimit => "the operation selects more fields than this endpoint allows",
            Rejection::CostLimit => "the operation's estimated cost is higher than this endpoint allows",
            Rejection::IntrospectionDisabled => "introspection is disabled on this endpoint",
        }
    }
}

/// A GraphQL-over-HTTP request, as the guard needs to see it.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// `GET` with `query`, `operationName` and `variables` (JSON) in the
    /// (still percent-encoded) query string.
    Get { query_string: Option<&'a str> },
    /// `POST` with this `Content-Type` and body: `application/json`
    /// (`{"query", "operationName", "variables", "extensions"}`) or
    /// `application/graphql` (the document itself).
    Post { content_type: Option<&'a str>, body: &'a [u8] },
    /// Any other method: always refused.
    Other,
}

/// A route's compiled GraphQL bounds.
#[derive(Clone, Debug)]
pub struct Guard {
    policy: GraphqlPolicy,
}

/// What the request asks for, before the document is parsed.
struct Params {
    query: String,
    operation_name: Option<String>,
    variables: Map<String, Value>,
}

/// The JSON body of a POST. Serde refuses a repeated member, so the
/// gateway and the upstream cannot read two different queries from one body.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    query: Option<String>,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Variables>,
    #[serde(default)]
    #[allow(dead_code)]
    extensions: Option<Value>,
}

/// The `variables` object, refused when a name is repeated (the upstream
/// could read the other value than the cost estimate did).
struct Variables(Map<String, Value>);

impl<'de> Deserialize<'de> for Variables {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Strict;
        impl<'de> Visitor<'de> for Strict {
            type Value = Variables;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Variables, A::Error> {
                let mut map = Map::new();
                while let Some(name) = access.next_key::<String>()? {
                    if map.contains_key(&name) {
                        return Err(de::Error::custom("a variable is given twice"));
                    }
                    let value: Value = access.next_value()?;
                    map.insert(name, value);
                }
                Ok(Variables(map))
            }
        }
        d.deserialize_map(Strict)
    }
}

impl Guard {
    pub fn new(policy: &GraphqlPolicy) -> Self {
        Self { policy: policy.clone() }
    }

    pub fn policy(&self) -> &GraphqlPolicy {
        &self.policy
    }

    /// The operation this request runs, measured, or why it must not run.
    pub fn inspect(&self, request: Request<'_>) -> Result<Operation, Rejection> {
        let (params, get) = match request {
            Request::Get { query_string } => {
                if !self.policy.allow_get {
                    return Err(Rejection::GetNotAllowed);
                }
                (self.get_params(query_string.unwrap_or(""))?, true)
            }
            Request::Post { content_type, body } => (self.post_params(content_type, body)?, false),
            Request::Other => return Err(Rejection::RequestInvalid),
        };
        self.inspect_document(&params.query, params.operation_name.as_deref(), &params.variables, get)
    }

    fn post_params(&self, content_type: Option<&str>, body: &[u8]) -> Result<Params, Rejection> {
        if body.len() as u64 > self.policy.max_body_bytes() {
            return Err(Rejection::DocumentTooLarge);
        }
        let media = content_type.and_then(|c| c.split(';').next()).map(|m| m.trim().to_ascii_lowercase());
        match media.as_deref() {
            Some("application/json") => {
                if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                    return Err(Rejection::BatchNotSupported);
                }
                let envelope: Envelope = serde_json::from_slice(body).map_err(|_| Rejection::RequestInvalid)?;
                let query = envelope.query.ok_or(Rejection::RequestInvalid)?;
                self.check_document_size(&query)?;
                Ok(Params {
                    query,
                    operation_name: envelope.operation_name.filter(|n| !n.is_empty()),
                    variables: envelope.variables.map(|v| v.0).unwrap_or_default(),
                })
            }
            Some("application/graphql") => {
                let query = std::str::from_utf8(body).map_err(|_| Rejection::RequestInvalid)?;
                self.check_document_size(query)?;
                Ok(Params { query: query.to_string(), operation_name: None, variables: Map::new() })
            }
            _ => Err(Rejection::RequestInvalid),
        }
    }

    fn get_params(&self, query_string: &str) -> Result<Params, Rejection> {
        if query_string.len() as u64 > self.policy.max_body_bytes() * 3 {
            return Err(Rejection::DocumentTooLarge);
        }
        let (mut query, mut name, mut variables) = (None, None, None);
        for pair in query_string.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match percent_decode(k)?.as_str() {
                "query" => &mut query,
                "operationName" => &mut name,
                "variables" => &mut variables,
                _ => continue,
            };
            if slot.replace(percent_decode(v)?).is_some() {
                return Err(Rejection::RequestInvalid);
            }
        }
        let query = query.ok_or(Rejection::RequestInvalid)?;
        self.check_document_size(&query)?;
        let variables = match variables.filter(|v| !v.trim().is_empty()) {
            Some(text) => {
                if text.len() as u64 > u64::from(self.policy.max_variables_bytes) {
                    return Err(Rejection::DocumentTooLarge);
                }
                serde_json::from_str::<Option<Variables>>(&text)
                    .map_err(|_| Rejection::RequestInvalid)?
                    .map(|v| v.0)
                    .unwrap_or_default()
            }
            None => Map::new(),
        };
        Ok(Params { query, operation_name: name.filter(|n| !n.is_empty()), variables })
    }

    fn check_document_size(&self, query: &str) -> Result<(), Rejection> {
        if query.len() as u64 > u64::from(self.policy.max_document_bytes) {
            return Err(Rejection::DocumentTooLarge);
        }
        Ok(())
    }

    /// Parses `document`, picks the operation and walks it.
    pub fn inspect_document(
        &self,
        document: &str,
        operation_name: Option<&str>,
        variables: &Map<String, Value>,
        get: bool,
    ) -> Result<Operation, Rejection> {
        self.check_document_size(document)?;
        if operation_name.is_some_and(|n| n.len() > MAX_OPERATION_NAME_BYTES) {
            return Err(Rejection::RequestInvalid);
        }
        let recursion = (3 * self.policy.max_depth as usize + PARSER_RECURSION_SLACK).min(MAX_PARSER_RECURSION);
        let tree =
            Parser::new(document).token_limit(self.policy.max_tokens as usize).recursion_limit(recursion).parse();
        if tree.errors().len() > 0 {
            let tokens = tree.token_limit();
            let depth = tree.recursion_limit();
            return Err(if tokens.high > tokens.limit {
                Rejection::DocumentTooLarge
            } else if depth.high > depth.limit {
                Rejection::DepthLimit
            } else {
                Rejection::ParseFailed
            });
        }
        let mut operations = Vec::new();
        let mut fragments: HashMap<String, cst::FragmentDefinition> = HashMap::new();
        for definition in tree.document().definitions() {
            match definition {
                cst::Definition::OperationDefinition(op) => operations.push(op),
                cst::Definition::FragmentDefinition(f) => {
                    let name = f.fragment_name().and_then(|n| name_text(n.name())).ok_or(Rejection::ParseFailed)?;
                    if fragments.insert(name, f).is_some() {
                        return Err(Rejection::FragmentInvalid);
                    }
                }
                // Type-system definitions are not executable.
                _ => return Err(Rejection::ParseFailed),
            }
        }
        let op = select(&operations, operation_name)?;
        let kind = match op.operation_type() {
            None => OperationType::Query,
            Some(t) if t.mutation_token().is_some() => OperationType::Mutation,
            Some(t) if t.subscription_token().is_some() => OperationType::Subscription,
            Some(_) => OperationType::Query,
        };
        if get && kind != OperationType::Query {
            return Err(Rejection::GetNotAllowed);
        }
        let name = name_text(op.name());
        if name.as_ref().is_some_and(|n| n.len() > MAX_OPERATION_NAME_BYTES) {
            return Err(Rejection::RequestInvalid);
        }
        let mut walk = Walk {
            policy: &self.policy,
            fragments: &fragments,
            variables,
            defaults: variable_defaults(op),
            active: Vec::new(),
            depth: 0,
            fields: 0,
            aliases: 0,
            visits: 0,
            cost: 0,
        };
        let set = op.selection_set().ok_or(Rejection::ParseFailed)?;
        walk.selections(&set, 1, 1, 0)?;
        Ok(Operation { name, kind, depth: walk.depth, fields: walk.fields, aliases: walk.aliases, cost: walk.cost })
    }
}

/// The operation `name` asks for, or the only one.
fn select<'a>(
    ops: &'a [cst::OperationDefinition],
    name: Option<&str>,
) -> Result<&'a cst::OperationDefinition, Rejection> {
    match name {
        Some(wanted) => ops
            .iter()
            .find(|op| op.name().and_then(|n| n.ident_token()).is_some_and(|t| t.text() == wanted))
            .ok_or(Rejection::OperationNotFound),
        None => match ops {
            [] => Err(Rejection::OperationNotFound),
            [one] => Ok(one),
            _ => Err(Rejection::OperationAmbiguous),
        },
    }
}

fn name_text(name: Option<cst::Name>) -> Option<String> {
    name.and_then(|n| n.ident_token()).map(|t| t.text().to_string())
}

/// Integer defaults of the operation's variables (`$n: Int = 50`).
fn variable_defaults(op: &cst::OperationDefinition) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Some(defs) = op.variable_definitions() else { return out };
    for d in defs.variable_definitions() {
        let name = d.variable().and_then(|v| name_text(v.name()));
        let value = d.default_value().and_then(|v| v.value()).and_then(|v| int_literal(&v));
        if let (Some(name), Some(value)) = (name, value) {
            out.insert(name, value);
        }
    }
    out
}

/// A literal integer as a list size: negative counts as 0, too large saturates.
fn int_literal(v: &cst::Value) -> Option<u64> {
    let cst::Value::IntValue(i) = v else { return None };
    let token = i.int_token()?;
    let text = token.text();
    Some(match text.parse::<u64>() {
        Ok(n) => n,
        Err(_) if text.starts_with('-') => 0,
        Err(_) => u64::MAX,
    })
}

/// A JSON number as a list size, like [`int_literal`].
fn json_size(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    Some(if f.is_finite() && f > 0.0 { f.min(u64::MAX as f64) as u64 } else { 0 })
}

/// The walk over one operation: what it has counted so far.
struct Walk<'a> {
    policy: &'a GraphqlPolicy,
    fragments: &'a HashMap<String, cst::FragmentDefinition>,
    variables: &'a Map<String, Value>,
    defaults: HashMap<String, u64>,
    /// Fragments being expanded, outermost first (cycle detection).
    active: Vec<String>,
    depth: u32,
    fields: u32,
    aliases: u32,
    visits: u32,
    cost: u64,
}

impl Walk<'_> {
    /// Counts `set`, whose fields sit at `depth` and cost `multiplier` each.
    fn selections(
        &mut self,
        set: &cst::SelectionSet,
        depth: u32,
        multiplier: u64,
        nesting: u32,
    ) -> Result<(), Rejection> {
        if nesting > MAX_NESTING {
            return Err(Rejection::DepthLimit);
        }
        for selection in set.selections() {
            self.visits += 1;
            if self.visits > MAX_EXPANDED_SELECTIONS {
                return Err(Rejection::FieldLimit);
            }
            match selection {
                cst::Selection::Field(field) => self.field(&field, depth, multiplier, nesting)?,
                cst::Selection::InlineFragment(inline) => {
                    if let Some(inner) = inline.selection_set() {
                        self.selections(&inner, depth, multiplier, nesting + 1)?;
                    }
                }
                cst::Selection::FragmentSpread(spread) => {
                    let name =
                        spread.fragment_name().and_then(|n| name_text(n.name())).ok_or(Rejection::ParseFailed)?;
                    if self.active.contains(&name) {
                        return Err(Rejection::FragmentInvalid);
                    }
                    let fragment = self.fragments.get(&name).ok_or(Rejection::FragmentInvalid)?;
                    let inner = fragment.selection_set().ok_or(Rejection::ParseFailed)?;
                    self.active.push(name);
                    self.selections(&inner, depth, multiplier, nesting + 1)?;
                    self.active.pop();
                }
            }
        }
        Ok(())
    }

    fn field(&mut self, field: &cst::Field, depth: u32, multiplier: u64, nesting: u32) -> Result<(), Rejection> {
        let policy = self.policy;
        self.fields += 1;
        if self.fields > policy.max_fields {
            return Err(Rejection::FieldLimit);
        }
        if field.alias().is_some() {
            self.aliases += 1;
            if self.aliases > policy.max_aliases {
                return Err(Rejection::AliasLimit);
            }
        }
        if !policy.introspection {
            let token = field.name().and_then(|n| n.ident_token());
            if token.is_some_and(|t| matches!(t.text(), "__schema" | "__type")) {
                return Err(Rejection::IntrospectionDisabled);
            }
        }
        if depth > policy.max_depth {
            return Err(Rejection::DepthLimit);
        }
        self.depth = self.depth.max(depth);
        self.cost = self.cost.saturating_add(multiplier);
        if self.cost > policy.max_cost {
            return Err(Rejection::CostLimit);
        }
        if let Some(inner) = field.selection_set() {
            let multiplier = multiplier.saturating_mul(self.list_size(field));
            self.selections(&inner, depth + 1, multiplier, nesting + 1)?;
        }
        Ok(())
    }

    /// The largest `first` / `last` / `limit` argument, at least 1.
    fn list_size(&self, field: &cst::Field) -> u64 {
        let Some(args) = field.arguments() else { return 1 };
        let mut size = 1;
        for arg in args.arguments() {
            let named = arg.name().and_then(|n| n.ident_token());
            if !named.is_some_and(|t| LIST_SIZE_ARGUMENTS.contains(&t.text())) {
                continue;
            }
            let value = match arg.value() {
                Some(cst::Value::Variable(v)) => name_text(v.name()).and_then(|name| {
                    self.variables.get(&name).and_then(json_size).or_else(|| self.defaults.get(&name).copied())
                }),
                Some(v) => int_literal(&v),
                None => None,
            };
            size = size.max(value.unwrap_or(1));
        }
        size
    }
}

/// Percent-decoding of a query-string part (`+` is a space); refuses bad
/// escapes and text that is not UTF-8.
fn percent_decode(s: &str) -> Result<String, Rejection> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(Rejection::RequestInvalid)?;
                let hex = std::str::from_utf8(hex).map_err(|_| Rejection::RequestInvalid)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| Rejection::RequestInvalid)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Rejection::RequestInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn guard() -> Guard {
        Guard::new(&GraphqlPolicy::default())
    }

    fn doc(query: &str) -> Result<Operation, Rejection> {
        guard().inspect_document(query, None, &Map::new(), false)
    }

    fn post(body: &str) -> Result<Operation, Rejection> {
        guard().inspect(Request::Post { content_type: Some("application/json"), body: body.as_bytes() })
    }

    #[test]
    fn an_operation_is_measured_with_its_name_and_type() {
        let op = doc("query Viewer { me { id name friends(first: 10) { name } } }").unwrap();
        assert_eq!(op.name.as_deref(), Some("Viewer"));
        assert_eq!(op.kind, OperationType::Query);
        assert_eq!((op.depth, op.fields, op.aliases), (3, 5, 0));
        // me 1 + id 1 + name 1 + friends 1 + 10 × name 1
        assert_eq!(op.cost, 14);
        let m = doc("mutation { like(id: 1) { count } }").unwrap();
        assert_eq!((m.name, m.kind), (None, OperationType::Mutation));
        assert_eq!(doc("subscription S { ticks }").unwrap().kind, OperationType::Subscription);
        assert_eq!(doc("{ a }").unwrap().kind, OperationType::Query);
    }

    #[test]
    fn the_cost_multiplies_nested_list_sizes_and_reads_variables() {
        assert_eq!(doc("{ users(first: 100) { id name } }").unwrap().cost, 201);
        assert_eq!(doc("{ a(first: 10) { b(last: 10) { c } } }").unwrap().cost, 1 + 10 + 100);
        let vars: Map<String, Value> = serde_json::from_str(r#"{"n": 50}"#).unwrap();
        let op = guard().inspect_document("query Q($n: Int) { a(limit: $n) { b } }", None, &vars, false).unwrap();
        assert_eq!(op.cost, 51);
        let op = guard().inspect_document("query Q($n: Int = 20) { a(first: $n) { b } }", None, &Map::new(), false);
        assert_eq!(op.unwrap().cost, 21, "a variable's default counts when it is not given");
        assert_eq!(doc("{ a(first: -5) { b } }").unwrap().cost, 2, "a negative size counts as 1");
    }

    #[test]
    fn huge_list_sizes_saturate_into_the_cost_limit() {
        assert_eq!(doc("{ a(first: 99999999999999999999999) { b } }"), Err(Rejection::CostLimit));
        assert_eq!(doc("{ a(first: 1000) { b(first: 1000) { c(first: 1000) { d } } } }"), Err(Rejection::CostLimit));
    }

    #[test]
    fn fragments_are_expanded_and_cycles_refused() {
        let op = doc("query { ...F } fragment F on Query { a { ...G } } fragment G on A { b c }").unwrap();
        assert_eq!((op.depth, op.fields), (2, 3));
        assert_eq!(doc("{ ...F } fragment F on Q { a { ...F } }"), Err(Rejection::FragmentInvalid));
        assert_eq!(doc("{ ...F } fragment F on Q { ...G } fragment G on Q { ...F }"), Err(Rejection::FragmentInvalid));
        assert_eq!(doc("{ ...Missing }"), Err(Rejection::FragmentInvalid));
        assert_eq!(doc("{ a } fragment F on Q { a } fragment F on Q { b }"), Err(Rejection::FragmentInvalid));
        // The same fragment twice side by side is no cycle.
        assert_eq!(doc("{ x: a { ...F } y: a { ...F } } fragment F on A { b }").unwrap().fields, 4);
    }

    #[test]
    fn depth_aliases_and_fields_are_bounded() {
        let deep = format!("{{ {} x {} }}", "a {".repeat(15), "}".repeat(15));
        assert_eq!(doc(&deep), Err(Rejection::DepthLimit));
        let ok = format!("{{ {} x {} }}", "a {".repeat(14), "}".repeat(14));
        assert_eq!(doc(&ok).unwrap().depth, 15);
        let aliases: String = (0..31).map(|i| format!("a{i}: f ")).collect();
        assert_eq!(doc(&format!("{{ {aliases} }}")), Err(Rejection::AliasLimit));
        let fields: String = (0..501).map(|i| format!("f{i} ")).collect();
        assert_eq!(doc(&format!("{{ {fields} }}")), Err(Rejection::FieldLimit));
    }

    #[test]
    fn introspection_is_refused_unless_allowed_and_typename_always_passes() {
        assert_eq!(doc("{ __schema { types { name } } }"), Err(Rejection::IntrospectionDisabled));
        assert_eq!(doc("{ __type(name: \"User\") { name } }"), Err(Rejection::IntrospectionDisabled));
        assert_eq!(
            doc("{ ...F } fragment F on Query { __schema { queryType { name } } }"),
            Err(Rejection::IntrospectionDisabled)
        );
        assert!(doc("{ me { __typename id } }").is_ok());
        let open = Guard::new(&GraphqlPolicy { introspection: true, ..GraphqlPolicy::default() });
        assert!(open.inspect_document("{ __schema { types { name } } }", None, &Map::new(), false).is_ok());
    }

    #[test]
    fn several_operations_need_an_operation_name_that_names_one() {
        let two = "query A { a } query B { b }";
        assert_eq!(doc(two), Err(Rejection::OperationAmbiguous));
        let b = guard().inspect_document(two, Some("B"), &Map::new(), false).unwrap();
        assert_eq!(b.name.as_deref(), Some("B"));
        assert_eq!(guard().inspect_document(two, Some("C"), &Map::new(), false), Err(Rejection::OperationNotFound));
        assert_eq!(guard().inspect_document("{ a }", Some("A"), &Map::new(), false), Err(Rejection::OperationNotFound));
        assert_eq!(doc("fragment F on Q { a }"), Err(Rejection::OperationNotFound));
    }

    #[test]
    fn syntax_errors_and_schema_documents_are_refused() {
        assert_eq!(doc("{ a "), Err(Rejection::ParseFailed));
        assert_eq!(doc("query { a(: 1) }"), Err(Rejection::ParseFailed));
        assert_eq!(doc("type Query { a: Int }"), Err(Rejection::ParseFailed));
        assert_eq!(doc(""), Err(Rejection::ParseFailed));
    }

    #[test]
    fn oversized_documents_and_token_floods_are_refused_before_the_walk() {
        let small = Guard::new(&GraphqlPolicy { max_document_bytes: 16, ..GraphqlPolicy::default() });
        assert_eq!(
            small.inspect_document("{ aaaaaaaaaaaaaaaaaaaa }", None, &Map::new(), false),
            Err(Rejection::DocumentTooLarge)
        );
        let few = Guard::new(&GraphqlPolicy { max_tokens: 10, ..GraphqlPolicy::default() });
        assert_eq!(
            few.inspect_document("{ a b c d e f g h i j k }", None, &Map::new(), false),
            Err(Rejection::DocumentTooLarge)
        );
        let nested = format!("{}{}", "{ a ".repeat(400), "}".repeat(400));
        assert_eq!(doc(&nested), Err(Rejection::DepthLimit), "the parser's recursion limit");
    }

    #[test]
    fn post_bodies_are_json_envelopes_or_graphql_documents() {
        let op = post(r#"{"query": "query A { a } query B { b }", "operationName": "B", "variables": null}"#).unwrap();
        assert_eq!(op.name.as_deref(), Some("B"));
        assert_eq!(post(r#"[{"query": "{ a }"}]"#), Err(Rejection::BatchNotSupported));
        assert_eq!(
            post(r#"{"query": "{ a }", "query": "{ __schema { types { name } } }"}"#),
            Err(Rejection::RequestInvalid)
        );
        assert_eq!(post(r#"{"query": "{ a }", "variables": {"n": 1, "n": 2}}"#), Err(Rejection::RequestInvalid));
        assert_eq!(post(r#"{"operationName": "A"}"#), Err(Rejection::RequestInvalid));
        assert_eq!(post(r#"{"query": 5}"#), Err(Rejection::RequestInvalid));
        assert_eq!(post("not json"), Err(Rejection::RequestInvalid));
        assert!(post(r#"{"query": "{ a }", "operationName": "", "extensions": {"persistedQuery": {}}}"#).is_ok());
        let g = guard();
        let raw = Request::Post { content_type: Some("application/graphql; charset=utf-8"), body: b"{ a }" };
        assert!(g.inspect(raw).is_ok());
        let text = Request::Post { content_type: Some("text/plain"), body: b"{ a }" };
        assert_eq!(g.inspect(text), Err(Rejection::RequestInvalid));
        assert_eq!(g.inspect(Request::Post { content_type: None, body: b"{ a }" }), Err(Rejection::RequestInvalid));
        assert_eq!(g.inspect(Request::Other), Err(Rejection::RequestInvalid));
    }

    #[test]
    fn get_requests_carry_queries_only_and_can_be_turned_off() {
        let g = guard();
        let get = |q: &'static str| g.inspect(Request::Get { query_string: Some(q) });
        let op = get("query=query%20Me%20%7B%20me%20%7B%20id%20%7D%20%7D&operationName=Me").unwrap();
        assert_eq!((op.name.as_deref(), op.fields), (Some("Me"), 2));
        let op =
            get("query=query+Q%28%24n%3AInt%29%7Ba%28first%3A%24n%29%7Bb%7D%7D&variables=%7B%22n%22%3A7%7D").unwrap();
        assert_eq!(op.cost, 8);
        assert_eq!(get("query=mutation%7Ba%7D"), Err(Rejection::GetNotAllowed));
        assert_eq!(get("query=%7Ba%7D&query=%7Bb%7D"), Err(Rejection::RequestInvalid));
        assert_eq!(get("operationName=A"), Err(Rejection::RequestInvalid));
        assert_eq!(get("query=%ZZ"), Err(Rejection::RequestInvalid));
        assert_eq!(g.inspect(Request::Get { query_string: None }), Err(Rejection::RequestInvalid));
        let no_get = Guard::new(&GraphqlPolicy { allow_get: false, ..GraphqlPolicy::default() });
        assert_eq!(no_get.inspect(Request::Get { query_string: Some("query=%7Ba%7D") }), Err(Rejection::GetNotAllowed));
    }

    #[test]
    fn every_rejection_has_its_own_code_and_a_short_message() {
        let mut codes: Vec<_> = Rejection::ALL.iter().map(|r| r.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Rejection::ALL.len());
        for (i, r) in Rejection::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(r.gateway_code(), r.code().to_ascii_lowercase());
            assert!(r.message().len() < 120, "{r:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the input, the guard answers without panicking, and
        /// what it admits is within every bound.
        #[test]
        fn any_input_is_answered_within_the_bounds(body in "[{}()a-c_:$!.@\" ,0-9\\[\\]-]{0,200}") {
            let g = guard();
            if let Ok(op) = g.inspect_document(&body, None, &Map::new(), false) {
                let p = g.policy();
                prop_assert!(op.depth <= p.max_depth && op.fields <= p.max_fields);
                prop_assert!(op.aliases <= p.max_aliases && op.cost <= p.max_cost);
            }
            let _ = g.inspect(Request::Post { content_type: Some("application/json"), body: body.as_bytes() });
            let _ = g.inspect(Request::Get { query_string: Some(&body) });
        }

        /// Nesting n fields deep measures depth n and cost n; deeper than
        /// the bound is refused.
        #[test]
        fn depth_is_the_nesting_of_fields(n in 1usize..40) {
            let q = format!("{{ {} x {} }}", "a {".repeat(n - 1), "}".repeat(n - 1));
            match doc(&q) {
                Ok(op) => prop_assert!(n <= 15 && op.depth as usize == n && op.cost as usize == n),
                Err(r) => prop_assert!(n > 15 && r == Rejection::DepthLimit),
            }
        }

        /// A fragment used k times at each of l levels counts k^l leaves:
        /// the expansion is bounded by the field limit, however small the document.
        #[test]
        fn fragment_fan_out_is_bounded(k in 2usize..6, levels in 1usize..8) {
            let mut q = String::from("{ ...F0 }");
            for l in 0..levels {
                let spreads: String = (0..k).map(|i| format!("a{i}: f {{ ...F{} }} ", l + 1)).collect();
                q.push_str(&format!(" fragment F{l} on T {{ {spreads} }}"));
            }
            q.push_str(&format!(" fragment F{levels} on T {{ leaf }}"));
            let g = Guard::new(&GraphqlPolicy { max_aliases: 10_000, max_cost: 1_000_000_000, max_depth: 100, ..GraphqlPolicy::default() });
            let total: usize = (1..=levels).map(|l| k.pow(l as u32)).sum::<usize>() + k.pow(levels as u32);
            match g.inspect_document(&q, None, &Map::new(), false) {
                Ok(op) => prop_assert_eq!(op.fields as usize, total),
                Err(r) => prop_assert!(total > 500 && r == Rejection::FieldLimit, "{:?}", r),
            }
        }
    }
}
