//! `raftgatectl catalog`: the APIs routes serve, their owners, lifecycle
//! dates and traffic summed over every member; `--unknown`: paths no route
//! knows (or only a catch-all), summed the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use raftgate_proto::admin as pb;
use serde_json::{json, Value};

use crate::output::Output;
use crate::{connect, describe, normalize, Client};

/// Each member's answer, or why it is missing.
async fn members(client: &mut Client) -> Result<Vec<(u64, Result<Client, String>)>, String> {
    let status = client.cluster_status(pb::ClusterStatusRequest {}).await.map_err(describe)?.into_inner();
    let mut out = Vec::new();
    for m in status.members.iter().filter_map(|m| m.member.clone()) {
        out.push((m.id, connect(&normalize(&m.admin_addr), Duration::from_secs(5)).await));
    }
    Ok(out)
}

pub async fn catalog(client: &mut Client, out: &Output, unknown: bool, limit: u32) -> Result<(), String> {
    let mut missing = Vec::new();
    if unknown {
        let mut merged: BTreeMap<(String, String), (u64, Vec<u64>)> = BTreeMap::new();
        let mut overflow = 0;
        for (id, c) in members(client).await? {
            let reply = match c {
                Ok(mut c) => c.unknown_paths(pb::UnknownPathsRequest { limit: 1_000 }).await.map_err(describe),
                Err(e) => Err(e),
            };
            match reply {
                Ok(r) => {
                    let r = r.into_inner();
                    overflow += r.overflow;
                    for p in r.paths {
                        let e = merged.entry((p.method, p.template)).or_default();
                        e.0 += p.count;
                        e.1.push(id);
                    }
                }
                Err(e) => missing.push(format!("node {id}: {e}")),
            }
        }
        let mut rows: Vec<_> = merged.into_iter().collect();
        rows.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(limit as usize);
        let items: Vec<Value> = rows
            .iter()
            .map(|((m, t), (n, nodes))| json!({"method": m, "template": t, "count": n, "nodes": nodes}))
            .collect();
        out.unknown_paths(&items, overflow, &missing);
        return Ok(());
    }

    let mut routes = Vec::new();
    let mut after = String::new();
    loop {
        let req = pb::ListObjectsRequest { consistency: 0, after: after.clone(), limit: 1_000 };
        let page = client.list_routes(req).await.map_err(describe)?.into_inner();
        routes.extend(page.objects);
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    let mut traffic: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, c) in members(client).await? {
        let reply = match c {
            Ok(mut c) => c.route_traffic(pb::RouteTrafficRequest {}).await.map_err(describe),
            Err(e) => Err(e),
        };
        match reply {
            Ok(r) => {
                for t in r.into_inner().routes {
                    let e = traffic.entry(t.route).or_default();
                    e.0 += t.total;
                    e.1 += t.last_minute;
                }
            }
            Err(e) => missing.push(format!("node {id}: {e}")),
        }
    }
    // APIs by (name, version); routes without `api` under "-".
    let mut apis: BTreeMap<(String, String), Value> = BTreeMap::new();
    for o in &routes {
        let spec: Value = serde_json::from_str(&o.spec_json).unwrap_or_default();
        let api = &spec["api"];
        let name = api["name"].as_str().unwrap_or("-").to_string();
        let version = api["version"].as_str().unwrap_or("").to_string();
        let entry = apis.entry((name.clone(), version.clone())).or_insert_with(|| {
            json!({
                "name": name, "version": version, "owner": api["owner"].as_str().unwrap_or(""),
                "deprecated": api["deprecated"], "sunset": api["sunset"],
                "routes": [], "requests_total": 0, "requests_last_minute": 0,
            })
        });
        // Routes of one API may carry its metadata on some of them only.
        for field in ["owner", "deprecated", "sunset"] {
            let empty = entry[field].is_null() || entry[field] == "";
            if empty && api[field].is_string() {
                entry[field] = api[field].clone();
            }
        }
        let (total, last) = traffic.get(&o.id).copied().unwrap_or_default();
        entry["routes"].as_array_mut().expect("made as an array").push(json!(o.id));
        entry["requests_total"] = json!(entry["requests_total"].as_u64().unwrap_or(0) + total);
        entry["requests_last_minute"] = json!(entry["requests_last_minute"].as_u64().unwrap_or(0) + last);
    }
    out.catalog(&apis.into_values().collect::<Vec<_>>(), &missing);
    Ok(())
}
