//! Authentication and authorization in the data plane, against a real
//! upstream: API keys, JWTs, revocation (also on a verified-token cache
//! hit), consumer rules, scopes, and fail-closed staleness. The identity
//! state is built by applying real commands to the model's `State`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::Request;
use raftgate_identity::apikey::{generate, KeyHasher};
use raftgate_model::identity::RevocationTarget;
use raftgate_model::{Command, State};
use raftgate_proxy::{GatewayConfig, IdentityConfig, Limits, ViewAge};
use serde_json::json;
use support::*;

const HS_SECRET_ENV: &str = "RAFTGATE_TEST_AUTH_HS_SECRET";
const HS_SECRET: &str = "a test HMAC secret that is long enough for HS256";

struct World {
    state: State,
    hasher: KeyHasher,
    gw: TestGateway,
    hits: Arc<AtomicUsize>,
    up: std::net::SocketAddr,
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

impl World {
    async fn start(route_auth: serde_json::Value, view_age: Option<ViewAge>) -> Self {
        Self::start_with(route_auth, view_age, 30_000).await
    }

    async fn start_with(route_auth: serde_json::Value, view_age: Option<ViewAge>, jwks_min_refresh_ms: u64) -> Self {
        std::env::set_var(HS_SECRET_ENV, HS_SECRET);
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let up = TestUpstream::start(move |req: Request<hyper::body::Incoming>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let consumer = req.headers().get("x-consumer-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                hyper::Response::new(full(json!({ "consumer": consumer }).to_string()))
            }
        })
        .await;
        let hasher = KeyHasher::new(b"test key-hash secret");
        let identity =
            IdentityConfig { key_hasher: hasher.clone(), view_age, jwks_min_refresh_ms, ..IdentityConfig::default() };
        let config = GatewayConfig {
            region: "local".into(),
            limits: Limits::default(),
            https_port: None,
            identity,
            traffic: Default::default(),
            ..Default::default()
        };
        let routes = json!([
            {"id": "open", "upstream": "u", "paths": [{"prefix": "/open"}]},
            {"id": "secure", "upstream": "u", "paths": [{"prefix": "/secure"}], "auth": route_auth},
        ]);
        let gw = TestGateway::start_config(
            routes,
            json!([{"id": "u", "targets": [{"addr": up.addr.to_string()}]}]),
            config,
            None,
        )
        .await;
        let up_addr = up.addr;
        std::mem::forget(up);
        let mut w = World { state: State::default(), hasher, gw, hits, up: up_addr };
        w.apply(Command::PutIssuer {
            issuer: serde_json::from_value(json!({
                "id": "idp", "issuer": "https://idp.test/", "audiences": ["api"],
                "algorithms": ["HS256"], "secret": format!("env:{HS_SECRET_ENV}")
            }))
            .unwrap(),
            expected_revision: None,
        });
        for c in [
            json!({"id": "acme", "groups": ["partners"]}),
            json!({"id": "bob"}),
            json!({"id": "off", "enabled": false}),
        ] {
            w.apply(Command::PutConsumer { consumer: serde_json::from_value(c).unwrap(), expected_revision: None });
        }
        w
    }

    /// Applies a command and publishes identity and revocations, as a node does.
    fn apply(&mut self, cmd: Command) {
        let t = now_s() * 1_000;
        self.state.apply(t, &cmd).unwrap();
        let s = &self.state;
        self.gw.gateway.publish_identity(
            s.identity_revision(),
            s.consumers(),
            s.api_keys(),
            s.cert_owners(),
            s.issuers(),
            s.plans(),
        );
        self.gw.gateway.revocations_applied(s, Some(&[&cmd]));
    }

    fn new_key(&mut self, consumer: &str, expires_ms: Option<u64>) -> (String, String) {
        let k = generate().unwrap();
        self.apply(Command::CreateApiKey {
            id: k.id.clone(),
            consumer: raftgate_model::ObjectId::parse(consumer).unwrap(),
            hash: self.hasher.digest(&k.key),
            expires_ms,
            rotates: None,
        });
        (k.id.to_string(), k.key)
    }

    async fn call(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::get(self.gw.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send(&http1_client(), req.body(full("")).unwrap()).await
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn token(claims: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).unwrap()
}

fn claims(sub: &str, jti: &str) -> serde_json::Value {
    json!({"iss": "https://idp.test/", "aud": "api", "sub": sub, "jti": jti, "exp": now_s() + 600, "iat": now_s() - 5, "scope": "orders:read"})
}

#[tokio::test]
async fn a_valid_api_key_reaches_the_upstream_as_its_consumer_and_bad_ones_never_do() {
    let mut w = World::start(json!({"api_key": {"header": "x-api-key", "query": "apikey"}}), None).await;
    let (_, key) = w.new_key("acme", None);
    let ok = w.call("/secure/x", &[("x-api-key", &key)]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["consumer"], "acme");
    let by_query = w.call(&format!("/secure/x?apikey={key}"), &[]).await;
    assert_eq!(by_query.status, 200);
    let hits = w.hits();

    let missing = w.call("/secure/x", &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["code"], "unauthorized");
    assert!(missing.headers["www-authenticate"].to_str().unwrap().contains("ApiKey"));
    let wrong_secret = format!("{}X", &key[..key.len() - 1]);
    let forged_id = key.replacen("rgk_", "rgk_0", 1);
    for bad in [wrong_secret.as_str(), forged_id.as_str(), "rgk_nope.short", "garbage"] {
        let a = w.call("/secure/x", &[("x-api-key", bad)]).await;
        assert_eq!(a.status, 401, "{bad}");
        assert!(!String::from_utf8_lossy(&a.body).contains(bad), "the error never echoes the credential");
    }
    let two = w.call("/secure/x", &[("x-api-key", &key), ("x-api-key", &key)]).await;
    assert_eq!(two.status, 401, "two keys are ambiguous");
    // A client cannot claim to be a consumer.
    let spoof = w.call("/open/x", &[("x-consumer-id", "acme")]).await;
    assert_eq!(spoof.json()["consumer"], "");
    assert_eq!(w.hits(), hits + 1, "only the open route reached the upstream");
}

#[tokio::test]
async fn expired_revoked_and_disabled_keys_are_refused() {
    let mut w = World::start(json!({"api_key": {}}), None).await;
    let (_, expired) = w.new_key("acme", Some(now_s() * 1_000 + 1_500));
    assert_eq!(w.call("/secure", &[("x-api-key", &expired)]).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1_600)).await;
    assert_eq!(w.call("/secure", &[("x-api-key", &expired)]).await.status, 401);

    let (id, key) = w.new_key("acme", None);
    assert_eq!(w.call("/secure", &[("x-api-key", &key)]).await.status, 200);
    w.apply(Command::Revoke {
        target: RevocationTarget::ApiKey { id: raftgate_model::ObjectId::parse(id).unwrap() },
        until_ms: None,
        reason: String::new(),
    });
    assert_eq!(w.call("/secure", &[("x-api-key", &key)]).await.status, 401, "refused as soon as applied");

    let (_, bobs) = w.new_key("bob", None);
    assert_eq!(w.call("/secure", &[("x-api-key", &bobs)]).await.status, 200);
    w.apply(Command::Revoke {
        target: RevocationTarget::Consumer { id: raftgate_model::ObjectId::parse("bob").unwrap() },
        until_ms: None,
        reason: String::new(),
    });
    assert_eq!(w.call("/secure", &[("x-api-key", &bobs)]).await.status, 401, "a consumer revocation covers its keys");

    let (_, off) = w.new_key("off", None);
    assert_eq!(w.call("/secure", &[("x-api-key", &off)]).await.status, 401, "a disabled consumer is refused");
}

#[tokio::test]
async fn a_revoked_token_is_refused_even_when_its_verification_is_cached() {
    let mut w = World::start(json!({"jwt": {"issuers": ["idp"]}}), None).await;
    let t = token(claims("acme", "jti-1"));
    let bearer = format!("Bearer {t}");
    for _ in 0..3 {
        let a = w.call("/secure", &[("authorization", &bearer)]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["consumer"], "acme");
    }
    assert!(!w.gw.gateway.identity().token_cache.is_empty(), "the verified token is cached");
    w.apply(Command::Revoke {
        target: RevocationTarget::Token {
            issuer: raftgate_model::ObjectId::parse("idp").unwrap(),
            jti: "jti-1".into(),
        },
        until_ms: Some((now_s() + 600) * 1_000),
        reason: "leaked".into(),
    });
    let a = w.call("/secure", &[("authorization", &bearer)]).await;
    assert_eq!(a.status, 401);
    assert!(a.headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    let other = token(claims("acme", "jti-2"));
    assert_eq!(w.call("/secure", &[("authorization", &format!("Bearer {other}"))]).await.status, 200);
}

#[tokio::test]
async fn tokens_for_unknown_consumers_or_with_bad_claims_get_401() {
    let w = World::start(json!({"jwt": {}}), None).await;
    let hits = w.hits();
    let mut expired = claims("acme", "e");
    expired["exp"] = json!(now_s() - 3_600);
    let mut wrong_aud = claims("acme", "a");
    wrong_aud["aud"] = json!("other");
    let mut wrong_iss = claims("acme", "i");
    wrong_iss["iss"] = json!("https://evil.test/");
    for (name, t) in [
        ("unknown consumer", token(claims("nobody", "u"))),
        ("disabled consumer", token(claims("off", "d"))),
        ("expired", token(expired)),
        ("wrong audience", token(wrong_aud)),
        ("wrong issuer", token(wrong_iss)),
        ("not a token", "abc.def".to_string()),
    ] {
        let a = w.call("/secure", &[("authorization", &format!("Bearer {t}"))]).await;
        assert_eq!(a.status, 401, "{name}");
        assert_eq!(a.json()["error"]["message"], "valid credentials are required", "{name}: generic message");
    }
    assert_eq!(w.hits(), hits, "no refused request reached the upstream");
}

#[tokio::test]
async fn consumers_groups_and_scopes_decide_who_passes() {
    let mut w = World::start(json!({"jwt": {}, "api_key": {}, "groups": ["partners"], "scopes": []}), None).await;
    let (_, acme_key) = w.new_key("acme", None);
    let (_, bob_key) = w.new_key("bob", None);
    assert_eq!(w.call("/secure", &[("x-api-key", &acme_key)]).await.status, 200);
    let bob = w.call("/secure", &[("x-api-key", &bob_key)]).await;
    assert_eq!(bob.status, 403);
    assert_eq!(bob.json()["error"]["code"], "forbidden");

    let mut w = World::start(json!({"jwt": {}, "scopes": ["orders:write"]}), None).await;
    let read_only = token(claims("acme", "s1"));
    let a = w.call("/secure", &[("authorization", &format!("Bearer {read_only}"))]).await;
    assert_eq!(a.status, 403);
    assert!(a.headers["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
    let mut c = claims("acme", "s2");
    c["scp"] = json!(["orders:write"]);
    let writer = token(c);
    assert_eq!(w.call("/secure", &[("authorization", &format!("Bearer {writer}"))]).await.status, 200);
    let _ = w.new_key("acme", None);
}

#[tokio::test]
async fn anonymous_routes_let_requests_without_credentials_through_but_check_presented_ones() {
    let mut w = World::start(json!({"api_key": {}, "anonymous": true}), None).await;
    let a = w.call("/secure", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["consumer"], "");
    assert_eq!(w.call("/secure", &[("x-api-key", "rgk_bad.key")]).await.status, 401);
    let (_, key) = w.new_key("acme", None);
    assert_eq!(w.call("/secure", &[("x-api-key", &key)]).await.json()["consumer"], "acme");
}

#[tokio::test]
async fn a_node_with_a_stale_view_fails_closed_unless_the_route_opts_out() {
    let age = Arc::new(std::sync::atomic::AtomicU64::new(100));
    let probe = age.clone();
    let view = ViewAge(Arc::new(move || Some(probe.load(Ordering::SeqCst))));
    let mut w = World::start(json!({"api_key": {}}), Some(view.clone())).await;
    let (_, key) = w.new_key("acme", None);
    assert_eq!(w.call("/secure", &[("x-api-key", &key)]).await.status, 200);
    age.store(5_000, Ordering::SeqCst);
    let a = w.call("/secure", &[("x-api-key", &key)]).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["error"]["code"], "stale_state");
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(w.call("/open", &[]).await.status, 200, "open routes keep serving");
    assert_eq!(w.gw.gateway.stale_totals(), raftgate_proxy::StaleTotals { refused: 1, served: 0 });

    let mut w = World::start(json!({"api_key": {}, "serve_when_stale": true}), Some(view)).await;
    let (_, key) = w.new_key("acme", None);
    assert_eq!(w.call("/secure", &[("x-api-key", &key)]).await.status, 200);
    assert_eq!(
        w.gw.gateway.stale_totals(),
        raftgate_proxy::StaleTotals { refused: 0, served: 1 },
        "counted either way"
    );
}

/// An ES256 key pair: the signing key and its public JWK.
fn es256(kid: &str) -> (jsonwebtoken::EncodingKey, serde_json::Value) {
    use base64::Engine;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let point = pair.public_key_raw();
    let (x, y) = point[1..].split_at(32);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    (key, json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "x": b64(x), "y": b64(y)}))
}

fn es256_token(key: &jsonwebtoken::EncodingKey, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    let claims = json!({"iss": "https://ext.test/", "sub": "acme", "exp": now_s() + 600});
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[tokio::test]
async fn keys_fetched_from_a_jwks_url_follow_a_rotation_signalled_by_an_unknown_kid() {
    let (k1, jwk1) = es256("k1");
    let (k2, jwk2) = es256("k2");
    let served = Arc::new(std::sync::Mutex::new(json!({"keys": [jwk1]}).to_string()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (doc, count) = (served.clone(), fetches.clone());
    let idp = TestUpstream::start(move |_req: Request<hyper::body::Incoming>| {
        let body = doc.lock().unwrap().clone();
        count.fetch_add(1, Ordering::SeqCst);
        async move { hyper::Response::new(full(body)) }
    })
    .await;
    let mut w = World::start_with(json!({"jwt": {}}), None, 200).await;
    tokio::spawn(raftgate_proxy::jwks::run_refresher(w.gw.gateway.clone()));
    w.apply(Command::PutIssuer {
        issuer: serde_json::from_value(json!({
            "id": "ext", "issuer": "https://ext.test/", "algorithms": ["ES256"],
            "jwks_url": format!("http://{}/jwks.json", idp.addr)
        }))
        .unwrap(),
        expected_revision: None,
    });
    let bearer1 = format!("Bearer {}", es256_token(&k1, "k1"));
    let mut status = 0;
    for _ in 0..100 {
        status = w.call("/secure", &[("authorization", &bearer1)]).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the fetched key verifies the token");

    // The identity provider rotates to k2.
    *served.lock().unwrap() = json!({"keys": [jwk2]}).to_string();
    let bearer2 = format!("Bearer {}", es256_token(&k2, "k2"));
    for _ in 0..100 {
        status = w.call("/secure", &[("authorization", &bearer2)]).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "an unknown kid made the node fetch the new key set");
    assert_eq!(
        w.call("/secure", &[("authorization", &bearer1)]).await.status,
        401,
        "the retired key no longer verifies"
    );

    // Made-up kids cannot make the node hammer the identity provider.
    let before = fetches.load(Ordering::SeqCst);
    let bogus = format!("Bearer {}", es256_token(&k1, "made-up"));
    for _ in 0..50 {
        assert_eq!(w.call("/secure", &[("authorization", &bogus)]).await.status, 401);
    }
    let after = fetches.load(Ordering::SeqCst);
    assert!(after - before <= 3, "fetches are rate-limited per issuer: {} for 50 requests", after - before);
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn hostile_tokens_get_401_and_never_reach_the_upstream() {
    let w = World::start(json!({"jwt": {}}), None).await;
    let hits = w.hits();
    let body = b64(&claims("acme", "h").to_string());
    let good = token(claims("acme", "g"));
    let sig = good.rsplit('.').next().unwrap();
    let hostile = [
        format!("{}.{body}.", b64(r#"{"alg":"none","typ":"JWT"}"#)),
        format!("{}.{body}.", b64(r#"{"alg":"NoNe"}"#)),
        format!("{}.{body}.{sig}", b64(r#"{"alg":"HS256","jku":"https://evil.test/jwks"}"#)),
        format!("{}.{body}.{sig}", b64(r#"{"alg":"HS256","crit":["exp"]}"#)),
        format!("{}.", good.rsplit_once('.').unwrap().0),
        format!("{good}.extra"),
        "%%%.###.$$$".to_string(),
        "a".repeat(70 * 1024),
    ];
    for t in &hostile {
        let a = w.call("/secure", &[("authorization", &format!("Bearer {t}"))]).await;
        assert!(a.status == 401 || a.status == 431, "{}: {}", &t[..t.len().min(40)], a.status);
    }
    assert_eq!(w.hits(), hits, "no hostile token reached the upstream");
}

#[tokio::test]
async fn revoking_an_issuer_key_refuses_every_token_it_signed() {
    let (k1, jwk1) = es256("k1");
    let (k2, jwk2) = es256("k2");
    let mut w = World::start(json!({"jwt": {"issuers": ["ext"]}}), None).await;
    w.apply(Command::PutIssuer {
        issuer: serde_json::from_value(json!({
            "id": "ext", "issuer": "https://ext.test/", "algorithms": ["ES256"], "jwks": {"keys": [jwk1, jwk2]}
        }))
        .unwrap(),
        expected_revision: None,
    });
    let by_k1 = format!("Bearer {}", es256_token(&k1, "k1"));
    let by_k2 = format!("Bearer {}", es256_token(&k2, "k2"));
    assert_eq!(w.call("/secure", &[("authorization", &by_k1)]).await.status, 200);
    assert_eq!(w.call("/secure", &[("authorization", &by_k2)]).await.status, 200);
    w.apply(Command::Revoke {
        target: RevocationTarget::IssuerKey {
            issuer: raftgate_model::ObjectId::parse("ext").unwrap(),
            kid: "k1".into(),
        },
        until_ms: None,
        reason: "key compromised".into(),
    });
    assert_eq!(w.call("/secure", &[("authorization", &by_k1)]).await.status, 401, "cached, but its key is revoked");
    assert_eq!(w.call("/secure", &[("authorization", &by_k2)]).await.status, 200);
    let hs = token(claims("acme", "x"));
    assert_eq!(
        w.call("/secure", &[("authorization", &format!("Bearer {hs}"))]).await.status,
        401,
        "issuer not allowed on this route"
    );
}

#[tokio::test]
async fn a_cached_authenticated_route_keeps_each_consumers_answers_apart() {
    let mut w = World::start(json!({"api_key": {}}), None).await;
    w.gw.publish(
        json!([{"id": "secure", "upstream": "u", "paths": [{"prefix": "/secure"}], "auth": {"api_key": {}},
                "cache": {"ttl_s": 60}}]),
        json!([{"id": "u", "targets": [{"addr": w.up.to_string()}]}]),
    );
    let (_, acme) = w.new_key("acme", None);
    let (_, bob) = w.new_key("bob", None);
    let a1 = w.call("/secure/me", &[("x-api-key", &acme)]).await;
    assert_eq!(a1.headers["x-cache-status"], "MISS");
    let b1 = w.call("/secure/me", &[("x-api-key", &bob)]).await;
    assert_eq!(b1.headers["x-cache-status"], "MISS", "another consumer never gets acme's entry");
    assert_eq!(b1.json()["consumer"], "bob");
    let a2 = w.call("/secure/me", &[("x-api-key", &acme)]).await;
    assert_eq!(a2.headers["x-cache-status"], "HIT");
    assert_eq!(a2.json()["consumer"], "acme");
    // A cached route still checks credentials first.
    assert_eq!(w.call("/secure/me", &[]).await.status, 401);
    assert_eq!(w.hits(), 2);
}

#[tokio::test]
async fn a_step_up_route_names_what_a_token_lacks_and_lets_a_strong_enough_one_through() {
    let mut w = World::start(
        json!({"jwt": {}, "api_key": {}, "step_up": {"acr_values": ["urn:acr:high"], "amr": ["mfa"], "max_age_s": 300}}),
        None,
    )
    .await;
    let with = |extra: serde_json::Value| {
        let mut c = claims("acme", "t-step");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        format!("Bearer {}", token(c))
    };
    let strong = json!({"acr": "urn:acr:high", "amr": ["pwd", "mfa"], "auth_time": now_s() - 30});
    let ok = w.call("/secure/x", &[("authorization", &with(strong))]).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.json()["consumer"], "acme");
    let hits = w.hits();

    let challenge = |a: &Answer| a.headers["www-authenticate"].to_str().unwrap().to_string();
    let plain = w.call("/secure/x", &[("authorization", &with(json!({})))]).await;
    assert_eq!(plain.status, 401);
    assert_eq!(plain.json()["error"]["code"], "insufficient_user_authentication");
    let c = challenge(&plain);
    assert!(c.starts_with(r#"Bearer realm="raftgate", error="insufficient_user_authentication""#), "{c}");
    assert!(
        c.contains(r#"acr_values="urn:acr:high""#) && c.contains(r#"max_age="300""#) && c.contains("amr mfa"),
        "{c}"
    );

    // Only what is missing is named.
    let no_mfa = json!({"acr": "urn:acr:high", "amr": ["pwd"], "auth_time": now_s() - 30});
    let c = challenge(&w.call("/secure/x", &[("authorization", &with(no_mfa))]).await);
    assert!(c.contains("amr mfa") && !c.contains("acr_values") && !c.contains("max_age"), "{c}");
    let old = json!({"acr": "urn:acr:high", "amr": ["mfa"], "auth_time": now_s() - 3_600});
    let c = challenge(&w.call("/secure/x", &[("authorization", &with(old))]).await);
    assert!(c.contains(r#"max_age="300""#) && !c.contains("acr_values") && !c.contains("amr"), "{c}");
    let low_acr = json!({"acr": "urn:acr:low", "amr": ["mfa"], "auth_time": now_s()});
    let c = challenge(&w.call("/secure/x", &[("authorization", &with(low_acr))]).await);
    assert!(c.contains(r#"acr_values="urn:acr:high""#) && !c.contains("max_age"), "{c}");
    // A claim of the wrong type proves nothing; an auth_time in the future neither.
    let odd = json!({"acr": 3, "amr": "mfa", "auth_time": now_s() + 3_600});
    assert_eq!(w.call("/secure/x", &[("authorization", &with(odd))]).await.status, 401);
    // An API key says nothing about how its user authenticated.
    let (_, key) = w.new_key("acme", None);
    let by_key = w.call("/secure/x", &[("x-api-key", &key)]).await;
    assert_eq!(by_key.status, 401);
    assert_eq!(by_key.json()["error"]["code"], "insufficient_user_authentication");
    assert_eq!(w.hits(), hits, "no refused request reached the upstream");
}
