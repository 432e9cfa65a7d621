//! docs/config-reference.md cannot drift from the config types.
//!
//! The set of real keys comes from the types themselves: a file that sets
//! every optional section is parsed into `NodeConfig` (which refuses
//! unknown fields) and serialized back, and every leaf of the result is a
//! key path (`raft.heartbeat_interval_ms`, `bootstrap.members[].id`). The
//! documented keys are the first cells of the reference's tables. Both sets
//! must be equal, every default the reference gives as a literal must be
//! the default of the types, and every flag and environment variable of
//! `raftgate serve` must be in the reference's flag table, and only those.

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, Command};
use raftgate_node::config::{ConfigOverrides, NodeConfig};
use serde_json::Value;

/// Keys documented before the code that reads them is on this branch: the
/// `[cluster_tls]` section (node-to-node mTLS) lands from another branch.
/// Empty this list once it is merged (the test then says so).
const PENDING_KEYS: &[&str] = &[];

const REFERENCE: &str = include_str!("../../../docs/config-reference.md");

/// Every section and optional key set, so that serialization shows them all.
/// `the_full_example_leaves_nothing_out` checks that no key stays unset.
const FULL: &str = r#"
[node]
id = 1
region = "eu-west-1"
data_dir = "/var/lib/raftgate"
cluster_name = "prod"

[listen]
raft = "10.0.1.11:7101"
admin = "10.0.1.11:7201"
http = "10.0.1.11:8080"
metrics = "10.0.1.11:9090"

[advertise]
raft = "node-1.internal:7101"
admin = "node-1.internal:7201"
http = "node-1.internal:8080"

[raft]
heartbeat_interval_ms = 150
election_timeout_min_ms = 600
election_timeout_max_ms = 1200
rpc_timeout_ms = 1000
write_timeout_ms = 5000
read_timeout_ms = 3000
snapshot_every_entries = 5000

[bootstrap]
members = [
  { id = 1, region = "eu-west-1", raft_addr = "10.0.1.11:7101", admin_addr = "10.0.1.11:7201", http_addr = "10.0.1.11:8080" },
]

[log]
format = "json"
level = "info"

[http]
max_uri_bytes = 8192

[https]
listen = "10.0.1.11:8443"
client_ca_file = "/etc/raftgate/clients-ca.pem"
client_auth = "optional"
certificates = [
  { hosts = ["api.example.com"], cert_file = "/etc/raftgate/api.crt", key_file = "/etc/raftgate/api.key" },
]

[identity]
key_hash_secret = "file:/etc/raftgate/cluster-secret"
max_staleness_ms = 900
max_one_way_delay_ms = 100

[traffic]
trusted_proxies = ["10.0.0.0/8"]

[admin]
auth = "required"
bootstrap_token = "env:RAFTGATE_BOOTSTRAP_TOKEN"
[admin.tls]
cert_file = "/etc/raftgate/admin.crt"
key_file = "/etc/raftgate/admin.key"
ca_file = "/etc/raftgate/ca.pem"

[cluster_tls]
cert_file = "/etc/raftgate/node-1.crt"
key_file = "/etc/raftgate/node-1.key"
ca_file = "/etc/raftgate/ca.pem"
reload_interval_ms = 10000

[access_log]
drop_fields = ["user_agent"]
redact_query_params = ["session"]

[tracing]
otlp_endpoint = "http://collector:4318"

[edge]
geoip_database = "/var/lib/geoip/GeoLite2-Country.mmdb"
[edge.ip]
allow = ["10.0.0.0/8"]
deny = ["10.9.0.0/16"]
allow_countries = ["DE"]
deny_countries = ["KP"]
unknown_country_allowed = true

[abuse.anomaly]
action = "throttle"
"#;

fn full() -> Value {
    let config = NodeConfig::from_toml(FULL).unwrap_or_else(|e| panic!("the full example must parse: {e}"));
    serde_json::to_value(config).expect("serialize")
}

/// Leaf key paths of `v` with their values; arrays of tables as `name[]`.
fn leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaves(&path, child, out);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for item in items {
                leaves(&format!("{prefix}[]"), item, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

fn real_keys() -> BTreeSet<String> {
    let mut out = BTreeMap::new();
    leaves("", &full(), &mut out);
    out.into_keys().collect()
}

/// One row of a reference table: `| `key` | type | default | allowed | meaning |`.
struct Row {
    key: String,
    default: String,
}

fn rows(prefix_ok: impl Fn(&str) -> bool) -> Vec<Row> {
    REFERENCE
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `")?;
            let (key, rest) = rest.split_once('`')?;
            if !prefix_ok(key) {
                return None;
            }
            let cells: Vec<&str> = rest.split(" | ").collect();
            let default = cells.get(2).map(|c| c.trim().to_string()).unwrap_or_default();
            Some(Row { key: key.to_string(), default })
        })
        .collect()
}

/// Config keys: the rows whose key is not a flag (`--x`) or variable (`RAFTGATE_X`).
fn documented_rows() -> Vec<Row> {
    rows(|k| !k.starts_with('-') && !k.starts_with("RAFTGATE_"))
}

#[test]
fn every_real_key_is_documented() {
    let documented: BTreeSet<String> = documented_rows().into_iter().map(|r| r.key).collect();
    let missing: Vec<_> = real_keys().into_iter().filter(|k| !documented.contains(k)).collect();
    assert!(missing.is_empty(), "config keys missing from docs/config-reference.md: {missing:?}");
}

#[test]
fn every_documented_key_exists() {
    let real = real_keys();
    let mut seen = BTreeSet::new();
    let mut unknown = Vec::new();
    for row in documented_rows() {
        assert!(seen.insert(row.key.clone()), "{} is documented twice", row.key);
        if !real.contains(&row.key) && !PENDING_KEYS.contains(&row.key.as_str()) {
            unknown.push(row.key);
        }
    }
    assert!(unknown.is_empty(), "docs/config-reference.md documents keys the config does not have: {unknown:?}");
    for key in PENDING_KEYS {
        assert!(seen.contains(*key), "pending key {key} is not documented");
        assert!(
            !real.contains(*key),
            "{key} exists in NodeConfig now: remove it from PENDING_KEYS (and set its section in FULL)"
        );
    }
}

#[test]
fn the_full_example_leaves_nothing_out() {
    let mut out = BTreeMap::new();
    leaves("", &full(), &mut out);
    let unset: Vec<_> = out
        .iter()
        .filter(|(_, v)| v.is_null() || v.as_array().is_some_and(Vec::is_empty))
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(unset.is_empty(), "set these in FULL so that their sub-keys are seen: {unset:?}");
}

/// A default cell that is one literal in backticks (`150`, `"info"`, `[]`)
/// must be what `NodeConfig::default()` holds. Other cells (words, such as
/// "unset" or "required") are not checked.
#[test]
fn literal_defaults_match_the_types() {
    let mut defaults = BTreeMap::new();
    leaves("", &serde_json::to_value(NodeConfig::default()).unwrap(), &mut defaults);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for row in documented_rows() {
        let Some(literal) = row.default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) else { continue };
        if literal.contains('`') {
            continue;
        }
        let parsed: toml::Table =
            toml::from_str(&format!("v = {literal}")).unwrap_or_else(|e| panic!("{}: default {literal}: {e}", row.key));
        let documented = serde_json::to_value(&parsed["v"]).unwrap();
        // Keys of a section that is off by default get their defaults once
        // the section is present: take them from a section set with nothing else.
        let actual = defaults.get(&row.key).cloned().or_else(|| section_default(&row.key));
        if PENDING_KEYS.contains(&row.key.as_str()) {
            continue;
        }
        // A field serialized only when set (`skip_serializing_if`) defaults to its empty value.
        let empty = documented == Value::Bool(false)
            || documented.as_array().is_some_and(Vec::is_empty)
            || documented.as_str() == Some("");
        match actual {
            Some(a) if a == documented || (a.is_f64() && a.as_f64() == documented.as_f64()) => checked += 1,
            None if empty => checked += 1,
            other => wrong.push(format!("{}: documented {literal}, real {other:?}", row.key)),
        }
    }
    assert!(wrong.is_empty(), "defaults in docs/config-reference.md differ from the code: {wrong:#?}");
    assert!(checked >= 50, "only {checked} defaults checked: is the table format still parsed?");
}

/// The default of a key inside an optional section: parse a file that sets
/// only that section's required keys and read the key back.
fn section_default(key: &str) -> Option<Value> {
    let minimal = [
        ("abuse.anomaly.", "[abuse.anomaly]\n"),
        ("https.", "[https]\nlisten = \"127.0.0.1:8443\"\ncertificates = []\n"),
        ("edge.ip.", "[edge.ip]\n"),
        ("cluster_tls.", "[cluster_tls]\ncert_file = \"n.crt\"\nkey_file = \"n.key\"\nca_file = \"ca.pem\"\n"),
    ];
    let (_, text) = minimal.iter().find(|(p, _)| key.starts_with(p))?;
    let config = NodeConfig::from_toml(text).ok()?;
    let mut out = BTreeMap::new();
    leaves("", &serde_json::to_value(config).ok()?, &mut out);
    out.remove(key)
}

/// Every flag and variable of `raftgate serve`'s overrides, and no other,
/// is in the reference's flag table (rows `| `--flag` | `RAFTGATE_X` | …`).
#[test]
fn every_override_flag_and_variable_is_documented() {
    let command = ConfigOverrides::augment_args(Command::new("serve"));
    let real: BTreeSet<(String, String)> = command
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            let env = a.get_env()?.to_string_lossy().into_owned();
            Some((format!("--{long}"), env))
        })
        .collect();
    assert!(real.len() > 20, "{real:?}");
    let documented: BTreeSet<(String, String)> = REFERENCE
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `--")?;
            let (flag, rest) = rest.split_once('`')?;
            let env = rest.split('`').nth(1)?;
            Some((format!("--{flag}"), env.to_string()))
        })
        .collect();
    let missing: Vec<_> = real.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&real).collect();
    assert!(missing.is_empty(), "flags missing from docs/config-reference.md: {missing:?}");
    assert!(extra.is_empty(), "docs/config-reference.md lists flags `raftgate serve` does not have: {extra:?}");
}
