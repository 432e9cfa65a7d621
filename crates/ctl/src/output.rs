//! Rendering replies as tables for people or JSON for scripts.

use raftgate_proto::admin as pb;
use serde_json::{json, Value};

pub struct Output {
    /// Structured output (JSON or YAML) instead of tables.
    json: bool,
    yaml: bool,
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn node_json(s: &pb::NodeStatusReply) -> Value {
    json!({
        "id": s.id,
        "region": s.region,
        "role": s.role,
        "term": s.term,
        "leader_id": s.leader_id,
        "last_log_index": s.last_log_index,
        "committed_index": s.committed_index,
        "applied_index": s.applied_index,
        "snapshot_index": s.snapshot_index,
        "millis_since_quorum_ack": s.millis_since_quorum_ack,
        "leader_view_age_ms": s.leader_view_age_ms,
        "stale": s.stale,
        "stale_refused_total": s.stale_refused_total,
        "stale_served_total": s.stale_served_total,
        "revocation_bound_ms": s.revocation_bound_ms,
        "last_leader_contact_ms": s.last_leader_contact_ms,
        "state_revision": s.state_revision,
        "replication": s.replication.iter().map(|r| json!({"node_id": r.node_id, "matched_index": r.matched_index})).collect::<Vec<_>>(),
        "voters": s.voters.iter().map(|m| m.id).collect::<Vec<_>>(),
        "learners": s.learners.iter().map(|m| m.id).collect::<Vec<_>>(),
    })
}

impl Output {
    pub fn new(json: bool, yaml: bool) -> Self {
        Self { json: json || yaml, yaml }
    }

    fn print_json(&self, v: Value) {
        if self.yaml {
            print!("{}", serde_yaml::to_string(&v).expect("JSON values serialize as YAML"));
        } else {
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON values serialize"));
        }
    }

    /// A flat result: JSON/YAML when asked for, else one `key: value` line per field.
    pub fn value(&self, v: &Value) {
        if self.json {
            return self.print_json(v.clone());
        }
        for (k, v) in v.as_object().into_iter().flatten() {
            match v {
                Value::String(s) => println!("{k}: {s}"),
                other => println!("{k}: {other}"),
            }
        }
    }

    /// A declarative document: YAML (the file format) unless JSON was asked for.
    pub fn document(&self, doc: &Value) {
        if self.json && !self.yaml {
            return self.print_json(doc.clone());
        }
        print!("{}", serde_yaml::to_string(doc).expect("JSON values serialize as YAML"));
    }

    pub fn config_changes(&self, r: &pb::ApplyConfigReply, dry_run: bool) {
        if self.json {
            let changes: Vec<Value> =
                r.changes.iter().map(|c| json!({"action": c.action, "kind": c.kind, "id": c.id})).collect();
            return self.print_json(json!({
                "changes": changes, "applied": r.applied, "revision": r.revision, "log_index": r.log_index,
            }));
        }
        for c in &r.changes {
            let sign = match c.action.as_str() {
                "create" => "+",
                "delete" => "-",
                _ => "~",
            };
            println!("{sign} {} {} ({})", c.kind, c.id, c.action);
        }
        match (r.changes.is_empty(), dry_run) {
            (true, _) => println!("no changes: the cluster already matches"),
            (false, true) => println!("{} changes (dry run: nothing written)", r.changes.len()),
            (false, false) => println!(
                "{} changes applied in one write at revision {} (log index {})",
                r.changes.len(),
                r.revision,
                r.log_index
            ),
        }
    }

    pub fn cluster_status(&self, r: &pb::ClusterStatusReply) {
        if self.json {
            let members: Vec<Value> = r
                .members
                .iter()
                .map(|m| {
                    let member = m.member.clone().unwrap_or_default();
                    json!({
                        "id": member.id,
                        "region": member.region,
                        "raft_addr": member.raft_addr,
                        "admin_addr": member.admin_addr,
                        "http_addr": member.http_addr,
                        "voter": m.voter,
                        "leader": Some(member.id) == r.leader_id,
                        "reachable": m.reachable,
                        "error": if m.error.is_empty() { None } else { Some(&m.error) },
                        "lag": m.lag,
                        "status": m.status.as_ref().map(node_json),
                    })
                })
                .collect();
            return self.print_json(json!({
                "answered_by": r.answered_by,
                "leader_id": r.leader_id,
                "members": members,
                "warnings": r.warnings,
            }));
        }
        let rows: Vec<Vec<String>> = r
            .members
            .iter()
            .map(|m| {
                let member = m.member.clone().unwrap_or_default();
                let s = m.status.clone().unwrap_or_default();
                let known = m.status.is_some();
                let role = if m.voter { "voter" } else { "learner" };
                vec![
                    member.id.to_string(),
                    member.region,
                    role.to_string(),
                    if Some(member.id) == r.leader_id { "*".into() } else { String::new() },
                    if known { s.term.to_string() } else { "-".into() },
                    opt(s.last_log_index),
                    opt(s.committed_index),
                    opt(s.applied_index),
                    opt(m.lag),
                    match (known, s.stale) {
                        (false, _) => "-".into(),
                        (true, true) => format!("{} STALE", opt(s.leader_view_age_ms)),
                        (true, false) => opt(s.leader_view_age_ms),
                    },
                    if m.reachable { "yes".into() } else { format!("no: {}", m.error) },
                ]
            })
            .collect();
        print_table(
            &[
                "ID",
                "REGION",
                "ROLE",
                "LEADER",
                "TERM",
                "LAST_LOG",
                "COMMITTED",
                "APPLIED",
                "LAG",
                "VIEW_AGE_MS",
                "REACHABLE",
            ],
            &rows,
        );
        if r.leader_id.is_none() {
            println!("no leader with a quorum");
        }
        for w in &r.warnings {
            println!("warning: {w}");
        }
    }

    pub fn node_status(&self, s: &pb::NodeStatusReply) {
        if self.json {
            return self.print_json(node_json(s));
        }
        let rows = vec![
            vec!["id".into(), s.id.to_string()],
            vec!["region".into(), s.region.clone()],
            vec!["role".into(), s.role.clone()],
            vec!["term".into(), s.term.to_string()],
            vec!["leader".into(), opt(s.leader_id)],
            vec!["last log index".into(), opt(s.last_log_index)],
            vec!["committed index".into(), opt(s.committed_index)],
            vec!["applied index".into(), opt(s.applied_index)],
            vec!["snapshot index".into(), opt(s.snapshot_index)],
            vec!["ms since quorum ack".into(), opt(s.millis_since_quorum_ack)],
            vec!["leader view age ms".into(), opt(s.leader_view_age_ms)],
            vec!["stale (fails closed)".into(), s.stale.to_string()],
            vec!["revocation bound ms".into(), opt(s.revocation_bound_ms)],
            vec!["stale requests refused".into(), s.stale_refused_total.to_string()],
            vec!["stale requests served".into(), s.stale_served_total.to_string()],
            vec!["ms since leader contact".into(), opt(s.last_leader_contact_ms)],
            vec!["state revision".into(), s.state_revision.to_string()],
        ];
        print_table(&["FIELD", "VALUE"], &rows);
    }

    pub fn membership(&self, m: &pb::MembershipReply) {
        if self.json {
            return self.print_json(json!({"log_index": m.log_index, "voters": m.voters, "learners": m.learners}));
        }
        let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        println!(
            "membership at log index {}: voters [{}], learners [{}]",
            m.log_index,
            ids(&m.voters),
            ids(&m.learners)
        );
    }

    pub fn write(&self, w: &pb::WriteReply) {
        if self.json {
            return self.print_json(json!({"revision": w.revision, "log_index": w.log_index}));
        }
        println!("ok: revision {} (log index {})", w.revision, w.log_index);
    }

    pub fn settings(&self, settings: &[pb::Setting], next_after: &str) {
        if self.json {
            let items: Vec<Value> = settings
                .iter()
                .map(|s| json!({"key": s.key, "value": s.value, "revision": s.revision, "updated_ms": s.updated_ms}))
                .collect();
            return self.print_json(json!({"settings": items, "next_after": next_after}));
        }
        let rows: Vec<Vec<String>> =
            settings.iter().map(|s| vec![s.key.clone(), s.revision.to_string(), s.value.clone()]).collect();
        print_table(&["KEY", "REVISION", "VALUE"], &rows);
        if !next_after.is_empty() {
            println!("more: --after {next_after}");
        }
    }

    pub fn applied(&self, kind: &str, id: &str, w: &pb::WriteReply) {
        if self.json {
            return self.print_json(json!({"kind": kind, "id": id, "revision": w.revision, "log_index": w.log_index}));
        }
        println!("{kind} {id}: applied at revision {} (log index {})", w.revision, w.log_index);
    }

    fn object_json(o: &pb::Object) -> Value {
        let spec: Value = serde_json::from_str(&o.spec_json).unwrap_or(Value::String(o.spec_json.clone()));
        json!({"id": o.id, "revision": o.revision, "updated_ms": o.updated_ms, "spec": spec})
    }

    pub fn object(&self, o: &pb::Object) {
        if self.json {
            return self.print_json(Self::object_json(o));
        }
        println!("# revision {}, updated_ms {}", o.revision, o.updated_ms);
        let spec: Value = serde_json::from_str(&o.spec_json).unwrap_or(Value::String(o.spec_json.clone()));
        println!("{}", serde_json::to_string_pretty(&spec).unwrap_or_default());
    }

    pub fn objects(&self, objects: &[pb::Object], next_after: &str) {
        if self.json {
            let items: Vec<Value> = objects.iter().map(Self::object_json).collect();
            return self.print_json(json!({"objects": items, "next_after": next_after}));
        }
        const MAX_SPEC_CHARS: usize = 100;
        let rows: Vec<Vec<String>> = objects
            .iter()
            .map(|o| {
                let mut spec = o.spec_json.clone();
                if spec.len() > MAX_SPEC_CHARS {
                    let cut = (0..=MAX_SPEC_CHARS).rev().find(|&i| spec.is_char_boundary(i)).unwrap_or(0);
                    spec.truncate(cut);
                    spec.push('…');
                }
                vec![o.id.clone(), o.revision.to_string(), spec]
            })
            .collect();
        print_table(&["ID", "REVISION", "SPEC"], &rows);
        if !next_after.is_empty() {
            println!("more: --after {next_after}");
        }
    }

    pub fn quotas(&self, objects: &[pb::Object], next_after: &str) {
        if self.json {
            let items: Vec<Value> = objects.iter().map(Self::object_json).collect();
            return self.print_json(json!({"quotas": items, "next_after": next_after}));
        }
        let rows: Vec<Vec<String>> = objects
            .iter()
            .map(|o| {
                let v: Value = serde_json::from_str(&o.spec_json).unwrap_or(Value::Null);
                let nodes = v["held_by_node"]
                    .as_object()
                    .map(|m| m.iter().map(|(n, h)| format!("{n}:{h}")).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default();
                vec![
                    o.id.clone(),
                    v["limit"].to_string(),
                    v["held"].to_string(),
                    v["unallocated"].to_string(),
                    nodes,
                    v["window_end_ms"].to_string(),
                ]
            })
            .collect();
        print_table(&["KEY", "LIMIT", "HELD", "UNALLOCATED", "HELD_BY_NODE", "WINDOW_END_MS"], &rows);
        if !next_after.is_empty() {
            println!("more: --after {next_after}");
        }
    }

    pub fn created_key(&self, k: &pb::CreatedApiKey) {
        if self.json {
            return self.print_json(json!({
                "id": k.id, "consumer": k.consumer, "key": k.key, "expires_ms": k.expires_ms,
                "revision": k.revision, "log_index": k.log_index,
            }));
        }
        println!("api key {} for consumer {} (revision {})", k.id, k.consumer, k.revision);
        if let Some(e) = k.expires_ms {
            println!("expires at {e} ms since the epoch");
        }
        println!("key (shown only now, store it safely): {}", k.key);
    }

    pub fn revocation_wait(
        &self,
        w: &pb::WriteReply,
        committed: std::time::Duration,
        confirmations: &[(pb::Member, Result<crate::identity::Confirmed, String>)],
        bound_ms: Option<u64>,
    ) {
        let committed_ms = committed.as_secs_f64() * 1_000.0;
        if self.json {
            let members: Vec<Value> = confirmations
                .iter()
                .map(|(m, r)| match r {
                    Ok(c) => json!({"id": m.id, "region": m.region, "confirmed": true, "applied_after_ms": c.after.as_secs_f64() * 1_000.0}),
                    Err(e) => json!({"id": m.id, "region": m.region, "confirmed": false, "error": e}),
                })
                .collect();
            return self.print_json(json!({
                "revision": w.revision, "log_index": w.log_index, "committed_after_ms": committed_ms,
                "members": members, "effective_everywhere_within_ms_of_commit": bound_ms,
            }));
        }
        println!("revoked: revision {} (log index {}), committed after {committed_ms:.1} ms", w.revision, w.log_index);
        let rows: Vec<Vec<String>> = confirmations
            .iter()
            .map(|(m, r)| match r {
                Ok(c) => vec![
                    m.id.to_string(),
                    m.region.clone(),
                    "applied".into(),
                    format!("{:.1} ms", c.after.as_secs_f64() * 1_000.0),
                ],
                Err(e) => vec![m.id.to_string(), m.region.clone(), "NOT CONFIRMED".into(), e.clone()],
            })
            .collect();
        print_table(&["NODE", "REGION", "REVOCATION", "AFTER"], &rows);
        if let Some(b) = bound_ms {
            println!("in force on every node at the latest {b} ms after commit (a node that has not applied it by then refuses authenticated requests)");
        }
    }

    pub fn created_token(&self, t: &pb::CreatedAdminToken) {
        if self.json {
            return self.print_json(json!({
                "id": t.id, "operator": t.operator, "token": t.token, "expires_ms": t.expires_ms,
                "revision": t.revision, "log_index": t.log_index,
            }));
        }
        println!("admin token {} for operator {} (revision {})", t.id, t.operator, t.revision);
        if let Some(e) = t.expires_ms {
            println!("expires at {e} ms since the epoch");
        }
        println!("token (shown only now; put it in ~/.config/raftgate/ctl.toml or RAFTGATE_TOKEN): {}", t.token);
    }

    pub fn audit(&self, records: &[String], next_after_seq: u64) {
        let parsed: Vec<Value> =
            records.iter().map(|r| serde_json::from_str(r).unwrap_or(Value::String(r.clone()))).collect();
        if self.json {
            return self.print_json(json!({"records": parsed, "next_after_seq": next_after_seq}));
        }
        let s = |v: &Value, k: &str| match &v[k] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        let rows: Vec<Vec<String>> = parsed
            .iter()
            .map(|r| {
                vec![
                    s(r, "seq"),
                    s(r, "time_ms"),
                    s(r, "principal"),
                    s(r, "role"),
                    s(r, "rpc"),
                    s(r, "object"),
                    s(r, "outcome"),
                ]
            })
            .collect();
        print_table(&["SEQ", "TIME_MS", "PRINCIPAL", "ROLE", "RPC", "OBJECT", "OUTCOME"], &rows);
        if next_after_seq != 0 {
            println!("more: --after {next_after_seq}");
        }
    }

    pub fn audit_verify(&self, reports: &[pb::VerifyAuditReply]) {
        if self.json {
            let items: Vec<Value> = reports
                .iter()
                .map(|r| {
                    json!({
                        "node_id": r.node_id, "intact": r.intact, "checked": r.checked,
                        "broken_seq": if r.intact { None } else { Some(r.broken_seq) },
                        "problem": r.problem, "head_seq": r.head_seq, "head_hash": r.head_hash,
                        "anchor_seq": r.anchor_seq, "anchor_hash": r.anchor_hash,
                        "applied_index": r.applied_index, "took_us": r.took_us,
                    })
                })
                .collect();
            return self.print_json(json!({"nodes": items}));
        }
        for r in reports {
            if r.intact {
                println!(
                    "node {}: intact, {} records checked in {:.1} ms; head #{} {} (applied index {})",
                    r.node_id,
                    r.checked,
                    r.took_us as f64 / 1_000.0,
                    r.head_seq,
                    r.head_hash,
                    r.applied_index
                );
            } else {
                println!("node {}: BROKEN at record #{}: {}", r.node_id, r.broken_seq, r.problem);
            }
            if r.anchor_seq > 0 {
                println!("  (older records left the trail; it continues from #{} {})", r.anchor_seq, r.anchor_hash);
            }
        }
    }

    pub fn catalog(&self, apis: &[Value], missing: &[String]) {
        if self.json {
            return self.print_json(json!({"apis": apis, "missing_nodes": missing}));
        }
        let s = |v: &Value| match v {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Null | Value::String(_) => "-".into(),
            other => other.to_string(),
        };
        let rows: Vec<Vec<String>> = apis
            .iter()
            .map(|a| {
                let routes: Vec<String> = a["routes"].as_array().into_iter().flatten().map(s).collect();
                vec![
                    s(&a["name"]),
                    s(&a["version"]),
                    s(&a["owner"]),
                    s(&a["deprecated"]),
                    s(&a["sunset"]),
                    s(&a["requests_last_minute"]),
                    s(&a["requests_total"]),
                    routes.join(","),
                ]
            })
            .collect();
        print_table(&["API", "VERSION", "OWNER", "DEPRECATED", "SUNSET", "REQ/MIN", "REQUESTS", "ROUTES"], &rows);
        for m in missing {
            println!("incomplete: {m}");
        }
    }

    pub fn unknown_paths(&self, paths: &[Value], overflow: u64, missing: &[String]) {
        if self.json {
            return self.print_json(json!({"paths": paths, "overflow": overflow, "missing_nodes": missing}));
        }
        let rows: Vec<Vec<String>> = paths
            .iter()
            .map(|p| {
                let nodes: Vec<String> = p["nodes"].as_array().into_iter().flatten().map(|n| n.to_string()).collect();
                vec![
                    p["method"].as_str().unwrap_or("").to_string(),
                    p["template"].as_str().unwrap_or("").to_string(),
                    p["count"].to_string(),
                    nodes.join(","),
                ]
            })
            .collect();
        print_table(&["METHOD", "PATH TEMPLATE", "REQUESTS", "NODES"], &rows);
        if overflow > 0 {
            println!("{overflow} more requests were not counted by template (a node's table was full)");
        }
        for m in missing {
            println!("incomplete: {m}");
        }
    }

    pub fn who_am_i(&self, r: &pb::WhoAmIReply) {
        if self.json {
            return self.print_json(json!({"principal": r.principal, "role": r.role, "method": r.method}));
        }
        println!("{} (role {}, authenticated by {})", r.principal, r.role, r.method);
    }
}
