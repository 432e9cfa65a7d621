//! Response compression for the data plane: gzip, brotli and zstd, chosen
//! by the client's `Accept-Encoding` and the route's [`Policy`].
//!
//! The gateway asks three questions per response, in this order:
//!
//! 1. [`negotiate`]: which coding (if any) the client accepts and the policy
//!    prefers, from the request's `Accept-Encoding` (read it before the
//!    request is forwarded).
//! 2. [`should_compress`]: whether this response may be compressed at all
//!    (status, method, existing coding, `no-transform`, ranges, type, size).
//! 3. [`compress_response`]: rewrite the head and wrap the body in a
//!    [`CompressedBody`], which compresses as the body flows, with bounded
//!    buffers, flushing whenever the upstream has nothing more to give yet.
//!
//! A response that could have been compressed but is sent as it is, because
//! the client did not ask, still needs `Vary: Accept-Encoding` so that shared
//! caches keep the two apart: [`add_vary_accept_encoding`].
//!
//! ```
//! use bytes::Bytes;
//! use http::header::ACCEPT_ENCODING;
//! use http::{HeaderMap, Method, Response};
//! use http_body_util::{combinators::BoxBody, BodyExt, Full};
//! use raftgate_compress::{add_vary_accept_encoding, compress_response, negotiate, should_compress, BodyError, Policy};
//!
//! /// `request_headers` and `method` are kept from the request before it is forwarded.
//! fn finish(
//!     request_headers: &HeaderMap,
//!     method: &Method,
//!     mut resp: Response<Full<Bytes>>,
//!     policy: &Policy,
//! ) -> Response<BoxBody<Bytes, BodyError>> {
//!     let chosen = negotiate(request_headers.get_all(ACCEPT_ENCODING).iter(), policy);
//!     if should_compress(resp.status(), method, resp.headers(), policy) {
//!         match chosen {
//!             Some(enc) => return compress_response(resp, enc, policy.level).map(BodyExt::boxed),
//!             None => add_vary_accept_encoding(resp.headers_mut()),
//!         }
//!     }
//!     resp.map(|body| body.map_err(|never| -> BodyError { match never {} }).boxed())
//! }
//! # let mut req = HeaderMap::new();
//! # req.insert(ACCEPT_ENCODING, "gzip, br".parse().unwrap());
//! # let resp = Response::builder().header("content-type", "text/html").body(Full::new(Bytes::from("<p>hi</p>"))).unwrap();
//! # let out = finish(&req, &Method::GET, resp, &Policy::default());
//! # assert_eq!(out.headers()["content-encoding"], "br");
//! ```

#![forbid(unsafe_code)]

mod body;
mod head;
mod negotiate;
mod policy;

pub use body::{BodyError, CompressedBody, INPUT_BYTES_PER_POLL, OUTPUT_CHUNK_BYTES};
pub use head::{add_vary_accept_encoding, compress_response};
pub use negotiate::negotiate;
pub use policy::{should_compress, Encoding, Level, Policy, DEFAULT_MIN_BYTES, NEVER_COMPRESSED};
