//! The API catalog on 3 nodes: routes imported from an OpenAPI document in
//! one apply, request bodies checked against its schemas, traffic summed
//! over the nodes, lifecycle dates, and unknown paths found cluster-wide.

use std::time::Duration;

use raftgate_tests::{ctl, eventually, http_get, http_send_json, start_upstream, wait_for_leader, Cluster};
use serde_json::Value;

const SPEC: &str = r##"
openapi: 3.0.3
info: { title: Pet Store, version: "2.1" }
paths:
  /pets:
    get: {}
    post:
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Pet" }
  /pets/{id}:
    get: {}
components:
  schemas:
    Pet:
      type: object
      required: [name]
      properties:
        name: { type: string }
"##;

fn run(ep: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--endpoint", ep, "--config", "/dev/null"];
    all.extend_from_slice(args);
    ctl(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_validate_count_and_discover() {
    let cluster = Cluster::start(3);
    let eps: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    wait_for_leader(&eps, Duration::from_secs(30)).await.expect("a leader");
    let ep = eps[0].clone();
    let (up, _task) = start_upstream("pets").await;
    let (ok, _, err) = run(&ep, &["upstream", "apply", "--id", "pets", "--target", &up]);
    assert!(ok, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("petstore.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let spec = spec.display().to_string();

    let (ok, out, err) = run(&ep, &["import", "openapi", &spec, "--upstream", "pets", "--validate", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("3 changes (dry run"), "{out}");
    let (ok, out, err) = run(&ep, &["import", "openapi", &spec, "--upstream", "pets", "--validate"]);
    assert!(ok, "{err}");
    assert!(out.contains("+ route pet-store-post-pets (create)"), "{out}");
    // A lifecycle date on one of them (through the normal route apply).
    let (_, route, _) = run(&ep, &["-o", "json", "route", "get", "pet-store-get-pets-id"]);
    let mut spec_json: Value = serde_json::from_str::<Value>(&route).unwrap()["spec"].clone();
    spec_json["api"]["owner"] = "team-pets".into();
    spec_json["api"]["sunset"] = "2027-06-30".into();
    let file = dir.path().join("route.json");
    std::fs::write(&file, spec_json.to_string()).unwrap();
    let (ok, _, err) = run(&ep, &["route", "apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");

    let http: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    let ready = eventually(Duration::from_secs(10), || async {
        let all = futures_all(&http).await;
        all.then_some(())
    })
    .await;
    assert!(ready.is_some(), "every node serves the imported routes");
    // Valid and invalid bodies, on two nodes.
    for h in &http[..2] {
        let (status, body) = http_send_json(h, "POST", "/pets", r#"{"name":"rex"}"#).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let (status, body) = http_send_json(h, "POST", "/pets", r#"{"name":7}"#).await.unwrap();
        assert_eq!(status, 400);
        assert!(body.contains("invalid_body") && body.contains("/name"), "{body}");
    }
    for h in &http {
        assert_eq!(http_get(h, "/admin/backup/12345", "test").await.unwrap().0, 404);
    }

    let (ok, out, err) = run(&ep, &["-o", "json", "catalog"]);
    assert!(ok, "{err}");
    let catalog: Value = serde_json::from_str(&out).unwrap();
    let pets = catalog["apis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Pet Store")
        .expect("the API is listed")
        .clone();
    assert_eq!(pets["version"], "2.1");
    assert_eq!(pets["owner"], "team-pets");
    assert_eq!(pets["sunset"], "2027-06-30");
    assert_eq!(pets["routes"].as_array().unwrap().len(), 3);
    // GETs from the readiness probe plus 4 POSTs, summed over the nodes.
    assert!(pets["requests_total"].as_u64().unwrap() >= 4 + 3, "{pets}");
    let (ok, table, _) = run(&ep, &["catalog"]);
    assert!(ok && table.contains("Pet Store") && table.contains("2.1"), "{table}");

    let (ok, out, err) = run(&ep, &["-o", "json", "catalog", "--unknown"]);
    assert!(ok, "{err}");
    let unknown: Value = serde_json::from_str(&out).unwrap();
    let backup = unknown["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["template"] == "/admin/backup/{n}")
        .expect("found")
        .clone();
    assert_eq!(backup["count"], 3);
    assert_eq!(backup["nodes"].as_array().unwrap().len(), 3, "seen on every node, summed");
}

async fn futures_all(http: &[String]) -> bool {
    for h in http {
        if http_get(h, "/pets/1", "test").await.map(|r| r.0) != Some(200) {
            return false;
        }
    }
    true
}
