//! Credential checks for the data plane.
//!
//! Everything here is synchronous and does no network IO: the data plane
//! builds these structures from the applied state when it changes, and the
//! request path only reads them.

pub mod apikey;
pub mod cache;
pub mod jwt;
pub mod revocation;
pub mod secret;
