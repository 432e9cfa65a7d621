//! Identity end to end on three real processes: a consumer, an API key made
//! by raftgatectl, a JWT issuer with an HMAC secret by reference, routes
//! that require them; then revocations through one node with `--wait`,
//! refused by every node the moment they report it applied. The key and the
//! token never appear in a node's log.

use std::time::Duration;

use raftgate_tests::{ctl, ctl_ok, http_get_with, start_upstream, status_everywhere, wait_for_leader, Cluster};

const KEY_HASH_ENV: &str = "RAFTGATE_TEST_KEY_HASH_SECRET";
const HS_ENV: &str = "RAFTGATE_TEST_IDP_SECRET";
const HS_SECRET: &str = "an HMAC secret shared with the test identity provider";

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_credentials_are_refused_by_every_node_once_applied() {
    std::env::set_var(KEY_HASH_ENV, "a key-hash secret the three test nodes share, long enough");
    std::env::set_var(HS_ENV, HS_SECRET);
    // The access log (on by default) is checked below to carry no credential.
    let cluster = Cluster::start_with(3, &format!("\n[identity]\nkey_hash_secret = \"env:{KEY_HASH_ENV}\"\n"));
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let https: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    if wait_for_leader(&admins, Duration::from_secs(30)).await.is_none() {
        cluster.dump_logs();
        panic!("no leader");
    }
    let (up_addr, _up) = start_upstream("orders").await;
    let ep = admins[2].clone();
    let e =
        |args: &[&str]| [&["--endpoint", ep.as_str()], args].concat().iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let run = |args: &[&str]| {
        let full = e(args);
        ctl_ok(&full.iter().map(String::as_str).collect::<Vec<_>>())
    };

    run(&["upstream", "apply", "--id", "orders", "--target", &up_addr]);
    run(&["consumer", "apply", "--id", "acme", "--group", "partners"]);
    run(&[
        "issuer",
        "apply",
        "--id",
        "idp",
        "--issuer",
        "https://idp.test/",
        "--algorithm",
        "HS256",
        "--secret",
        &format!("env:{HS_ENV}"),
    ]);
    let routes = cluster.dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        "id: keyed\nupstream: orders\npaths: [{prefix: /keyed}]\nauth: {api_key: {query: apikey}, groups: [partners]}\n---\nid: tokens\nupstream: orders\npaths: [{prefix: /tokens}]\nauth: {jwt: {issuers: [idp]}}\n",
    )
    .unwrap();
    run(&["route", "apply", "-f", routes.to_str().unwrap()]);

    // A key, printed once.
    let created: serde_json::Value =
        serde_json::from_str(&run(&["--output", "json", "key", "create", "--consumer", "acme", "--expires", "30d"]))
            .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("rgk_{key_id}.")), "{key}");
    let listed = run(&["--output", "json", "key", "list", "--consumer", "acme"]);
    assert!(listed.contains(&key_id) && !listed.contains(&key), "listing shows the id, never the key: {listed}");

    assert!(status_everywhere(&https, "/keyed/1", &[("x-api-key", &key)], 200).await, "every node accepts the key");
    assert!(status_everywhere(&https, &format!("/keyed/1?apikey={key}"), &[], 200).await, "the key in the query");
    assert!(status_everywhere(&https, "/keyed/1", &[], 401).await);
    assert!(
        status_everywhere(
            &https,
            "/keyed/1",
            &[("x-api-key", "rgk_0000000000000000.forgedforgedforgedforgedforgedforged")],
            401
        )
        .await
    );

    // Rotation: the new key works at once, the old one for the overlap only.
    let rotated: serde_json::Value =
        serde_json::from_str(&run(&["--output", "json", "key", "rotate", &key_id, "--overlap", "3s"])).unwrap();
    let new_key = rotated["key"].as_str().unwrap().to_string();
    let (old_status, _) = http_get_with(&https[0], "/keyed/1", "api.test", &[("x-api-key", &key)]).await.unwrap();
    assert_eq!(old_status, 200, "the old key still works during the overlap");
    assert_eq!(rotated["consumer"], "acme");
    assert!(status_everywhere(&https, "/keyed/1", &[("x-api-key", &new_key)], 200).await, "the new key works");
    assert!(
        status_everywhere(&https, "/keyed/1", &[("x-api-key", &key)], 401).await,
        "the old key expires after the overlap"
    );
    let (key, key_id) = (new_key, rotated["id"].as_str().unwrap().to_string());

    let claims = serde_json::json!({"iss": "https://idp.test/", "sub": "acme", "jti": "t-1", "exp": now_s() + 600});
    let secret = jsonwebtoken::EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &secret).unwrap();
    let bearer = format!("Bearer {token}");
    assert!(
        status_everywhere(&https, "/tokens/1", &[("authorization", &bearer)], 200).await,
        "every node accepts the token"
    );

    // Revoke the key through one node and wait for all of them.
    let out = run(&["revoke", "key", &key_id, "--wait", "--reason", "test"]);
    assert_eq!(out.lines().filter(|l| l.contains("  applied  ")).count(), 3, "three nodes confirmed: {out}");
    assert!(out.contains("in force on every node at the latest"), "{out}");
    for http in &https {
        let (status, _) = http_get_with(http, "/keyed/1", "api.test", &[("x-api-key", &key)]).await.unwrap();
        assert_eq!(status, 401, "{http} refuses a key it reported applied as revoked");
    }

    // The token, by jti, with the JSON report.
    let until = (now_s() + 600).to_string();
    let report: serde_json::Value = serde_json::from_str(&run(&[
        "--output", "json", "revoke", "token", "--issuer", "idp", "--jti", "t-1", "--until", &until, "--wait",
    ]))
    .unwrap();
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["confirmed"] == true), "{report}");
    for http in &https {
        let (status, _) = http_get_with(http, "/tokens/1", "api.test", &[("authorization", &bearer)]).await.unwrap();
        assert_eq!(status, 401, "{http}");
    }
    let revocations = run(&["revocation", "list"]);
    assert!(
        revocations.contains(&format!("api_key:{key_id}")) && revocations.contains("token:idp:t-1"),
        "{revocations}"
    );

    // Bad admin input changes nothing.
    let (ok, _, err) = ctl(&["--endpoint", &ep, "revoke", "key", "nope"]);
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) =
        ctl(&["--endpoint", &ep, "issuer", "apply", "--id", "weak", "--issuer", "x", "--algorithm", "HS256"]);
    assert!(!ok && err.contains("secret"), "{err}");

    for node in &cluster.nodes {
        let log = node.log();
        assert!(log.contains("\"message\":\"request\""), "node {} wrote no access log", node.addrs.id);
        assert!(!log.contains(&key), "node {} logged the API key", node.addrs.id);
        assert!(!log.contains(&token), "node {} logged the token", node.addrs.id);
        assert!(!log.contains(HS_SECRET), "node {} logged the issuer secret", node.addrs.id);
    }
}
