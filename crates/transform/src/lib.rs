//! Body transformation for the data plane: JSON → XML for requests to an
//! XML upstream, XML → JSON for its responses, and JSON field edits (add,
//! remove, rename) on either side.
//!
//! The mapping is written down in `docs/transform.md`; in short: an element
//! is a JSON object, its attributes are keys prefixed `@`, its text is
//! `#text` (or the bare string when it has neither attributes nor
//! children), repeated child elements are an array, and an empty element is
//! `null`. JSON → XML needs the name of the document element (configured).
//!
//! Work is bounded everywhere ([`Limits`]): bytes in, bytes out (the output
//! is written into a buffer that refuses to grow past its bound), nesting
//! depth and the number of nodes (elements, attributes, JSON values). The
//! XML reader refuses a DOCTYPE and resolves only the five predefined
//! entities and character references, so no entity is ever expanded from
//! input (no XXE, no "billion laughs").
//!
//! JSON is read into [`Json`], a tree that keeps object members in document
//! order: XML cares about element order and `serde_json`'s map sorts keys.
//! JSON → XML writes while it walks that tree; XML → JSON must hold the
//! whole document, because whether a child becomes an array is only known
//! when its parent ends.
//!
//! Nothing here does IO or panics on input: every failure is a
//! [`TransformError`], and the caller turns it into a response.

mod bounded;
mod edit;
mod from_xml;
mod json;
mod to_xml;

pub use edit::apply_edits;
pub use from_xml::xml_to_json;
pub use json::{parse_json, write_json, Json, Object};
pub use to_xml::json_to_xml;

use raftgate_model::transform::{JsonEdit, JsonToXml, TransformPolicy, XmlToJson};

/// Deepest nesting of JSON values or XML elements.
pub const MAX_DEPTH: usize = 64;
/// Most nodes (JSON values; XML elements and attributes) in one body.
pub const MAX_NODES: usize = 100_000;

/// The bounds of one transformation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest body read.
    pub max_input_bytes: usize,
    /// Largest body produced.
    pub max_output_bytes: usize,
    /// Deepest nesting accepted (at most [`MAX_DEPTH`]).
    pub max_depth: usize,
    /// Most nodes accepted (at most [`MAX_NODES`]).
    pub max_nodes: usize,
}

impl Limits {
    /// The bounds a route's policy sets, with the fixed depth and node bounds.
    pub fn for_policy(policy: &TransformPolicy) -> Limits {
        Limits {
            max_input_bytes: usize::try_from(policy.body_limit()).unwrap_or(usize::MAX),
            max_output_bytes: usize::try_from(policy.output_limit()).unwrap_or(usize::MAX),
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_input_bytes: 1 << 20, max_output_bytes: 2 << 20, max_depth: MAX_DEPTH, max_nodes: MAX_NODES }
    }
}

/// Why a body could not be transformed. The text is for the node's log
/// only: it may name parts of the input and never goes to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("the body is larger than the transformation reads")]
    InputTooLarge,
    #[error("the transformed body would be larger than allowed")]
    OutputTooLarge,
    #[error("the body nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the body has more nodes than allowed")]
    TooManyNodes,
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body is not well-formed XML: {0}")]
    InvalidXml(String),
    /// A `<!DOCTYPE …>`: refused, so no entity can be declared or expanded.
    #[error("the XML has a DOCTYPE declaration")]
    Doctype,
    #[error("the XML uses an entity other than the five predefined ones")]
    UndefinedEntity,
    /// Valid JSON that the mapping cannot express as XML.
    #[error("the JSON cannot be expressed as XML: {0}")]
    NotMappable(&'static str),
}

impl TransformError {
    /// A bound was exceeded (as opposed to malformed input).
    pub fn is_bound(&self) -> bool {
        matches!(self, TransformError::InputTooLarge | TransformError::OutputTooLarge | TransformError::TooManyNodes)
    }
}

/// The request side: `body` (JSON) edited, then written as XML.
pub fn json_body_to_xml(
    body: &[u8],
    edits: &[JsonEdit],
    config: &JsonToXml,
    limits: &Limits,
) -> Result<Vec<u8>, TransformError> {
    let mut doc = parse_json(body, limits)?;
    apply_edits(&mut doc, edits);
    json_to_xml(&doc, config, limits)
}

/// The response side: `body` (XML) read as JSON, then edited.
pub fn xml_body_to_json(
    body: &[u8],
    config: &XmlToJson,
    edits: &[JsonEdit],
    limits: &Limits,
) -> Result<Vec<u8>, TransformError> {
    let mut doc = xml_to_json(body, config, limits)?;
    apply_edits(&mut doc, edits);
    write_json(&doc, limits)
}

/// Either side without conversion: `body` (JSON) edited.
pub fn edit_json_body(body: &[u8], edits: &[JsonEdit], limits: &Limits) -> Result<Vec<u8>, TransformError> {
    let mut doc = parse_json(body, limits)?;
    apply_edits(&mut doc, edits);
    write_json(&doc, limits)
}
