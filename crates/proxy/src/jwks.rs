//! Public keys of JWT issuers fetched from their JWKS URL.
//!
//! Each node fetches for itself (keys are not replicated state): when an
//! issuer with a `jwks_url` appears, every [`JWKS_REFRESH_MS`] after, and
//! soon after a request presents a token with an unknown `kid` (key
//! rotation), but never more often than `jwks_min_refresh_ms` per issuer,
//! so tokens with made-up `kid`s cannot turn the gateway into a load on the
//! identity provider. A fetch that fails or returns an unusable document
//! keeps the keys in use. The request path never waits for a fetch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use raftgate_identity::jwt::MAX_JWKS_DOCUMENT_BYTES;
use raftgate_model::ObjectId;
use tokio::time::Instant;

use crate::gateway::Gateway;

/// Keys are fetched again this often.
pub const JWKS_REFRESH_MS: u64 = 300_000;
/// One fetch, connect to last byte.
pub const JWKS_FETCH_TIMEOUT_MS: u64 = 5_000;
/// How often the refresher looks at what is due without being woken.
const TICK_MS: u64 = 1_000;

/// A fetched key set, as the gateway keeps it.
#[derive(Clone)]
pub struct FetchedJwks {
    pub url: String,
    pub document: Arc<Vec<u8>>,
}

type FetchClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Empty<bytes::Bytes>>;

fn client() -> FetchClient {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_millis(JWKS_FETCH_TIMEOUT_MS)));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build(https)
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("invalid URL")]
    Url,
    #[error("no answer within {JWKS_FETCH_TIMEOUT_MS} ms")]
    Timeout,
    #[error("{0}")]
    Http(String),
    #[error("status {0}")]
    Status(u16),
    #[error("the document is larger than {MAX_JWKS_DOCUMENT_BYTES} bytes or broke off")]
    Body,
}

async fn fetch(client: &FetchClient, url: &str) -> Result<Vec<u8>, FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::Url)?;
    let exchange = async {
        let req = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|_| FetchError::Url)?;
        let resp = client.request(req).await.map_err(|e| FetchError::Http(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let body =
            Limited::new(resp.into_body(), MAX_JWKS_DOCUMENT_BYTES).collect().await.map_err(|_| FetchError::Body)?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(Duration::from_millis(JWKS_FETCH_TIMEOUT_MS), exchange)
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// Runs for the life of the gateway: fetches what is due, then republishes
/// the identity snapshot with the new keys.
pub async fn run_refresher(gateway: Arc<Gateway>) {
    let client = client();
    // Per issuer: the URL last tried and when (successfully or not).
    let mut last: HashMap<ObjectId, (String, Instant)> = HashMap::new();
    let min_gap = Duration::from_millis(gateway.config().identity.jwks_min_refresh_ms);
    let refresh = Duration::from_millis(JWKS_REFRESH_MS);
    loop {
        let wanted = gateway.take_jwks_refresh_request();
        let due: Vec<(ObjectId, String)> = gateway
            .identity()
            .issuer_specs
            .values()
            .filter_map(|s| s.spec.jwks_url.clone().map(|url| (s.spec.id.clone(), url)))
            .filter(|(id, url)| {
                let have_keys = gateway.fetched_jwks(id).is_some_and(|f| &f.url == url);
                match last.get(id) {
                    Some((tried, at)) if tried == url => {
                        // Never more often than min_gap, also while the URL keeps failing.
                        at.elapsed() >= refresh || ((wanted || !have_keys) && at.elapsed() >= min_gap)
                    }
                    _ => true,
                }
            })
            .collect();
        let mut changed = false;
        for (id, url) in due {
            last.insert(id.clone(), (url.clone(), Instant::now()));
            match fetch(&client, &url).await {
                Ok(doc) => {
                    let same = gateway.fetched_jwks(&id).is_some_and(|f| f.url == url && *f.document == doc);
                    if !same {
                        tracing::info!(issuer = %id, bytes = doc.len(), "JWKS fetched");
                        gateway.store_fetched_jwks(id, FetchedJwks { url, document: Arc::new(doc) });
                        changed = true;
                    }
                }
                Err(e) => tracing::warn!(issuer = %id, error = %e, "JWKS fetch failed; keeping the keys in use"),
            }
        }
        if changed {
            gateway.republish_identity();
        }
        last.retain(|id, _| gateway.identity().issuer_specs.contains_key(id));
        let _ = tokio::time::timeout(Duration::from_millis(TICK_MS), gateway.jwks_refresh_requested()).await;
    }
}
