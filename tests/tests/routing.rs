//! Routes and upstreams as replicated objects, end to end on real processes:
//! written with raftgatectl (file and flags) through any node, served by the
//! data plane of every node, refused whole when invalid, and still served
//! by the survivors when the leader dies.

use std::time::Duration;

use raftgate_tests::{ctl, eventually, http_get, start_upstream, wait_for_leader, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_written_through_one_node_are_served_by_every_node() {
    let mut cluster = Cluster::start(3);
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let https: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    let Some(leader) = wait_for_leader(&admins, Duration::from_secs(30)).await else {
        cluster.dump_logs();
        panic!("no leader");
    };
    let (up_addr, _up) = start_upstream("orders").await;

    // Nothing routed yet: every node answers 404 with the stable code.
    let (status, body) = http_get(&https[0], "/orders/1", "shop.example.com").await.expect("data plane answers");
    assert_eq!(status, 404);
    assert!(body.contains("route_not_found"), "{body}");

    // An upstream from a YAML file, through a follower.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let ep = admins[(follower - 1) as usize].clone();
    let file = cluster.dir.path().join("orders.yaml");
    std::fs::write(&file, format!("id: orders\ntargets:\n  - addr: \"{up_addr}\"\nbalance: least_connections\n"))
        .unwrap();
    let (ok, out, err) = ctl(&["--endpoint", &ep, "upstream", "apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("upstream orders: applied"), "{out}");

    // A route from flags.
    let (ok, _, err) = ctl(&[
        "--endpoint",
        &ep,
        "route",
        "apply",
        "--id",
        "orders",
        "--upstream",
        "orders",
        "--host",
        "*.example.com",
        "--template",
        "/orders/{id}",
        "--method",
        "GET",
    ]);
    assert!(ok, "{err}");

    for http in &https {
        let served = eventually(Duration::from_secs(10), || async {
            http_get(http, "/orders/42?x=1", "shop.example.com").await.filter(|(s, _)| *s == 200)
        })
        .await;
        let (_, body) = served.unwrap_or_else(|| panic!("{http} never served the route"));
        assert_eq!(body, "orders GET /orders/42?x=1 HTTP/1.1");
        assert_eq!(http_get(http, "/orders/42", "other.org").await.unwrap().0, 404, "host must match");
    }

    // Bad objects are refused whole, with the field named, and change nothing.
    let (ok, _, err) =
        ctl(&["--endpoint", &ep, "route", "apply", "--id", "ghost", "--upstream", "missing", "--prefix", "/g"]);
    assert!(!ok && err.contains("upstream") && err.contains("does not exist"), "{err}");
    let (ok, _, err) =
        ctl(&["--endpoint", &ep, "route", "apply", "--id", "bad", "--upstream", "orders", "--regex", "(["]);
    assert!(!ok && err.contains("paths[0].regex"), "{err}");
    let (ok, _, err) = ctl(&[
        "--endpoint",
        &ep,
        "route",
        "apply",
        "--id",
        "dup",
        "--upstream",
        "orders",
        "--host",
        "*.example.com",
        "--template",
        "/orders/{id}",
        "--method",
        "GET",
    ]);
    assert!(!ok && err.contains("same requests"), "{err}");
    let bogus = cluster.dir.path().join("bogus.json");
    std::fs::write(&bogus, r#"{"id": "x", "upstream": "orders", "pathz": []}"#).unwrap();
    let (ok, _, err) = ctl(&["--endpoint", &ep, "route", "apply", "-f", bogus.to_str().unwrap()]);
    assert!(!ok && err.contains("unknown field `pathz`"), "{err}");
    let (ok, _, err) = ctl(&["--endpoint", &ep, "upstream", "delete", "orders"]);
    assert!(!ok && err.contains("used by route(s) orders"), "{err}");
    let (ok, out, _) = ctl(&["--endpoint", &ep, "--output", "json", "route", "list"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["objects"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(list["objects"][0]["spec"]["paths"][0]["template"], "/orders/{id}");

    // The data plane keeps serving on the survivors when the leader dies.
    cluster.node(leader).kill();
    for (i, http) in https.iter().enumerate() {
        if i as u64 + 1 == leader {
            continue;
        }
        let (status, _) = http_get(http, "/orders/7", "a.example.com").await.expect("survivor answers");
        assert_eq!(status, 200, "the data plane does not wait for consensus");
    }

    // Deleting the route through a survivor stops it everywhere that is alive.
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    let ep = admins[(survivor - 1) as usize].clone();
    let deleted = eventually(Duration::from_secs(30), || async {
        let (ok, _, _) = ctl(&["--endpoint", &ep, "route", "delete", "orders"]);
        ok.then_some(())
    })
    .await;
    assert!(deleted.is_some(), "delete after failover");
    for (i, http) in https.iter().enumerate() {
        if i as u64 + 1 == leader {
            continue;
        }
        let gone = eventually(Duration::from_secs(10), || async {
            http_get(http, "/orders/7", "a.example.com").await.filter(|(s, _)| *s == 404)
        })
        .await;
        assert!(gone.is_some(), "{http} still routes a deleted route");
    }
}
