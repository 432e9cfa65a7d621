//! Drift checks for deploy/: the files there must keep working with the
//! binaries of this workspace.
//!
//! - Every node config under deploy/ (compose, the systemd sample, the one in
//!   the Kubernetes ConfigMap, run through the StatefulSet's own entrypoint
//!   script) starts a real `raftgate serve`: the file's absolute paths are
//!   moved under a temp dir, where the test writes what they name (a CA and a
//!   node certificate made with rcgen under the file names `raftgatectl certs
//!   init` writes, the key-hash secret, the bootstrap token), and the
//!   listeners are moved to loopback ports by RAFTGATE_* overrides. Nothing
//!   else in the file changes. A node counts as started when its /healthz
//!   answers and it is still running a moment later (a bad secret or admin
//!   certificate makes it exit). The node certificate names the node as
//!   `raftgatectl certs node` does, so `[cluster_tls]` checks it in full.
//! - Every metric name in the Grafana dashboard's and alerts.yml's PromQL is
//!   in the /metrics of a real 3-node cluster serving the compose demo's
//!   routes (deploy/compose/config/gateway.yaml, applied with `raftgatectl
//!   apply -f`, its upstream targets moved to loopback).
//! - The YAML files parse; the Kubernetes probes point to /readyz and
//!   /healthz on the port the ConfigMap's config puts metrics on; the
//!   StatefulSet's replicas equal its bootstrap members, which are its pods'
//!   stable DNS names.
//! - The Dockerfile builds packages and copies binaries that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftgate_tests::{binary, ctl, eventually, free_port, http_get, start_upstream, wait_for_leader, Cluster};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_docs(path: &Path) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The node config embedded in the Kubernetes ConfigMap, and the StatefulSet.
fn kubernetes() -> (String, serde_yaml::Value) {
    let cm = yaml_docs(&deploy("kubernetes/configmap.yaml")).remove(0);
    let toml = cm["data"]["node.toml"].as_str().expect("configmap data node.toml").to_string();
    let sts = yaml_docs(&deploy("kubernetes/statefulset.yaml")).remove(0);
    assert_eq!(sts["kind"], "StatefulSet");
    (toml, sts)
}

// ---------------------------------------------------------------- (1) configs

/// A CA and the certificate of one node, as `raftgatectl certs init` names them.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "deploy test CA");
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Self { ca_pem, issuer: Issuer::new(params, key) }
    }

    /// (certificate PEM, key PEM) for `host`, naming node `id` of `cluster`
    /// as `raftgatectl certs node` does (`spiffe://<cluster>/node/<id>`).
    fn node(&self, host: &str, cluster: &str, id: u64) -> (String, String) {
        let mut params = CertificateParams::new(vec![host.to_string(), "localhost".into()]).unwrap();
        let uri = format!("spiffe://{cluster}/node/{id}");
        params.subject_alt_names.push(SanType::URI(uri.as_str().try_into().unwrap()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Moves every absolute path of a node config under `root` (only quoted
/// strings that start with `/` or `file:/` change).
fn rebase_paths(text: &str, root: &Path) -> String {
    let root = root.display().to_string();
    text.replace("\"file:/", &format!("\"file:{root}/")).replace("\"/", &format!("\"{root}/"))
}

/// Writes the files the (rebased) config names: certificates, the key-hash
/// secret and the bootstrap token. `node_id` fills `@NODE_ID@`. With
/// `certs_init_names`, the certificate files must carry the names `raftgatectl
/// certs init` writes (the config reads its output directly).
fn write_referenced_files(config: &str, node_id: u64, pki: &Pki, certs_init_names: bool) {
    let config = config.replace("@NODE_ID@", &node_id.to_string());
    let value: toml::Value = toml::from_str(&config).expect("node config is TOML");
    let host = value
        .get("advertise")
        .and_then(|a| a.get("admin"))
        .and_then(|a| a.as_str())
        .and_then(|a| a.rsplit_once(':'))
        .map_or("localhost".to_string(), |(h, _)| h.to_string());
    let cluster = value
        .get("node")
        .and_then(|n| n.get("cluster_name"))
        .and_then(|c| c.as_str())
        .unwrap_or("raftgate")
        .to_string();
    let (cert, key) = pki.node(&host, &cluster, node_id);
    let write = |path: &str, content: &str| {
        let path = Path::new(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    for section in [value.get("admin").and_then(|a| a.get("tls")), value.get("cluster_tls")].into_iter().flatten() {
        let names = [format!("node-{node_id}.crt"), format!("node-{node_id}.key"), "ca.pem".to_string()];
        for ((field, content), name) in
            [("cert_file", &cert), ("key_file", &key), ("ca_file", &pki.ca_pem)].into_iter().zip(names)
        {
            if let Some(p) = section.get(field).and_then(|p| p.as_str()) {
                if certs_init_names {
                    assert!(p.ends_with(&format!("/{name}")), "{field} {p:?}: `raftgatectl certs init` writes {name}");
                }
                write(p, content);
            }
        }
    }
    let secret_refs = [
        value.get("identity").and_then(|i| i.get("key_hash_secret")),
        value.get("admin").and_then(|a| a.get("bootstrap_token")),
    ];
    for r in secret_refs.into_iter().flatten().filter_map(|r| r.as_str()) {
        if let Some(p) = r.strip_prefix("file:") {
            write(p, "0123456789abcdef0123456789abcdef0123456789abcdef");
        }
    }
}

/// How a config under test is started.
enum Launch {
    /// `raftgate serve --config FILE`.
    Direct,
    /// The StatefulSet container's own `sh -c` script, as pod `hostname`.
    Entrypoint { script: String, env: Vec<(String, String)>, hostname: String },
}

struct Started {
    child: Child,
    log: PathBuf,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch(dir: &Path, config_text: &str, how: &Launch) -> (Started, String) {
    let config = dir.join("node.toml");
    std::fs::write(&config, config_text).unwrap();
    let log = dir.join("node.log");
    let out = std::fs::File::create(&log).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cmd = match how {
        Launch::Direct => {
            let mut c = Command::new(binary("raftgate"));
            c.arg("serve").arg("--config").arg(&config);
            c
        }
        Launch::Entrypoint { script, env, hostname } => {
            let bin_dir = binary("raftgate").parent().unwrap().to_path_buf();
            let mut c = Command::new("/bin/sh");
            c.arg("-ec").arg(script);
            for (k, v) in env {
                c.env(k, v);
            }
            c.env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()));
            c.env("HOSTNAME", hostname);
            c.env("RAFTGATE_CONFIG_TEMPLATE", &config);
            c.env("RAFTGATE_CONFIG", dir.join("rendered.toml"));
            c
        }
    };
    for (var, addr) in [
        ("RAFTGATE_LISTEN_RAFT", format!("127.0.0.1:{}", free_port())),
        ("RAFTGATE_LISTEN_ADMIN", format!("127.0.0.1:{}", free_port())),
        ("RAFTGATE_LISTEN_HTTP", format!("127.0.0.1:{}", free_port())),
        ("RAFTGATE_LISTEN_METRICS", metrics.clone()),
    ] {
        cmd.env(var, addr);
    }
    let child = cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().expect("spawn raftgate");
    (Started { child, log }, metrics)
}

/// Ok when the node serves /healthz and is still running a moment later;
/// Err(log) when it exited.
async fn node_starts(dir: &Path, config_text: &str, how: &Launch) -> Result<(), String> {
    let (mut node, metrics) = launch(dir, config_text, how);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = node.child.try_wait() {
            return Err(format!("exited with {status}:\n{}", read(&node.log)));
        }
        if let Some((200, _)) = http_get(&metrics, "/healthz", "test").await {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("no /healthz within 10 s:\n{}", read(&node.log)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The admin API loads its TLS files and secrets after the metrics
    // listener serves: a failure there ends the process at once.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    match node.child.try_wait() {
        Ok(Some(status)) => Err(format!("exited with {status}:\n{}", read(&node.log))),
        _ => Ok(()),
    }
}

/// Starts the config as it is; panics with the node's log if it does not start.
async fn check_config(name: &str, text: &str, node_id: u64, how: Launch) {
    let certs_init_names = !name.starts_with("systemd");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let rebased = rebase_paths(text, dir.path());
    write_referenced_files(&rebased, node_id, &pki, certs_init_names);
    if let Err(log) = node_starts(dir.path(), &rebased, &how).await {
        panic!("{name} does not start a node: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_config_under_deploy_starts_a_real_node() {
    let mut checks = Vec::new();
    for i in 1..=3u64 {
        let path = deploy(&format!("compose/config/node{i}.toml"));
        checks.push(tokio::spawn(async move {
            check_config(&format!("compose/config/node{i}.toml"), &read(&path), i, Launch::Direct).await
        }));
    }
    let systemd = deploy("systemd/node.toml");
    checks
        .push(tokio::spawn(async move { check_config("systemd/node.toml", &read(&systemd), 1, Launch::Direct).await }));
    // Kubernetes: pod raftgate-1 (node 2), through the container's own script.
    let (toml, sts) = kubernetes();
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"], serde_yaml::to_value(["/bin/sh", "-ec"]).unwrap());
    let script = container["args"][0].as_str().expect("entrypoint script").to_string();
    let mut env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
        .filter(|(k, _)| !k.starts_with("RAFTGATE_CONFIG"))
        .collect();
    env.push(("POD_NAMESPACE".into(), "raftgate".into()));
    let name = format!("{}-1", sts["metadata"]["name"].as_str().unwrap());
    checks.push(tokio::spawn(async move {
        check_config("kubernetes ConfigMap node.toml", &toml, 2, Launch::Entrypoint { script, env, hostname: name })
            .await
    }));
    for c in checks {
        c.await.expect("config check panicked");
    }
}

// ---------------------------------------------------------------- (2) metrics

/// `raftgate_*` names in a PromQL expression, histogram suffixes stripped.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("raftgate_") {
        let start = i + at;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(base_name(&expr[start..end]).to_string());
        }
        i = end;
    }
}

fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

fn json_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains("raftgate_") => out.push(s.clone()),
                    _ => json_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_exprs(v, out)),
        _ => {}
    }
}

/// Metric names the dashboard and the alert rules use, with where.
fn names_in_use() -> BTreeMap<String, &'static str> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&deploy("grafana/raftgate-dashboard.json"))).expect("dashboard is JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 38, "schemaVersion >= 38");
    let vars: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert!(vars.contains(&"datasource") && vars.contains(&"instance"), "dashboard variables: {vars:?}");
    let mut exprs = Vec::new();
    json_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "the dashboard has its queries");
    let mut used = BTreeMap::new();
    let mut names = BTreeSet::new();
    exprs.iter().for_each(|e| metric_names(e, &mut names));
    for n in names {
        used.insert(n, "grafana/raftgate-dashboard.json");
    }
    let alerts = yaml_docs(&deploy("prometheus/alerts.yml")).remove(0);
    let mut names = BTreeSet::new();
    let mut rules = 0;
    for group in alerts["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            metric_names(rule["expr"].as_str().expect("expr"), &mut names);
            rules += 1;
        }
    }
    assert!(rules >= 6, "alerts.yml has its rules");
    for n in names {
        used.entry(n).or_insert("prometheus/alerts.yml");
    }
    used
}

/// Sample names (not comments) in a /metrics answer, histogram suffixes stripped.
fn scraped_names(text: &str, out: &mut BTreeSet<String>) {
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        out.insert(base_name(name).to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_exported_by_a_real_node() {
    let used = names_in_use();
    let cluster = Cluster::start(3);
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    assert!(wait_for_leader(&admins, Duration::from_secs(30)).await.is_some(), "no leader");

    // The compose demo's routes, its three echo targets moved to loopback.
    let mut gateway = read(&deploy("compose/config/gateway.yaml"));
    let mut upstreams = Vec::new();
    for target in ["echo-eu-west:8080", "echo-us-east:8080", "echo-ap-south:8080"] {
        assert!(gateway.contains(target), "gateway.yaml names {target}");
        let (addr, task) = start_upstream("echo").await;
        gateway = gateway.replace(target, &addr);
        upstreams.push(task);
    }
    let file = cluster.dir.path().join("gateway.yaml");
    std::fs::write(&file, gateway).unwrap();
    let (ok, out, err) = ctl(&["--endpoint", &admins[0], "apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "raftgatectl apply -f deploy/compose/config/gateway.yaml: {out}{err}");

    // Traffic that fills every family: served, refused by the WAF, refused
    // without an API key, no route (never: the demo route is a catch-all).
    for node in &cluster.nodes {
        let http = node.addrs.http.clone();
        let served = eventually(Duration::from_secs(10), || async {
            http_get(&http, "/hello", "demo").await.filter(|(s, _)| *s == 200)
        })
        .await;
        assert!(served.is_some(), "node {} never served the demo route", node.addrs.id);
        let blocked = http_get(&http, "/hello?id=1%27%20OR%20%271%27%3D%271", "demo").await;
        assert_eq!(blocked.map(|r| r.0), Some(403), "the WAF blocks on the demo route");
        let refused = http_get(&http, "/private/x", "demo").await;
        assert_eq!(refused.map(|r| r.0), Some(401), "the private route wants an API key");
    }

    let metrics: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.metrics.clone()).collect();
    // Health checks and the leader's replication fill in within seconds.
    let mut exported = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let absent = loop {
        for m in &metrics {
            if let Some((200, body)) = http_get(m, "/metrics", "test").await {
                scraped_names(&body, &mut exported);
            }
        }
        let absent: Vec<String> =
            used.iter().filter(|(n, _)| !exported.contains(*n)).map(|(n, f)| format!("{n} ({f})")).collect();
        if absent.is_empty() || Instant::now() > deadline {
            break absent;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        absent.is_empty(),
        "metric names used under deploy/ that no node exports: {absent:?}\nexported: {exported:?}"
    );
    drop(upstreams);
}

// ---------------------------------------------------------------- (3) YAML, Kubernetes

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("no port in {addr:?}"))
}

#[test]
fn yaml_parses_and_the_kubernetes_probes_and_replicas_match_the_node_config() {
    let mut files = Vec::new();
    yaml_files(&deploy(""), &mut files);
    assert!(files.len() >= 10, "YAML files under deploy/: {files:?}");
    for f in &files {
        assert!(!yaml_docs(f).is_empty(), "{} holds no document", f.display());
    }

    let (toml_text, sts) = kubernetes();
    let config: toml::Value = toml::from_str(&toml_text).expect("the ConfigMap's node.toml is TOML");
    let metrics_port = port_of(config["listen"]["metrics"].as_str().expect("listen.metrics is set"));
    let pod = &sts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let port_named = |name: &str| -> u64 {
        container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {name}"))
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        let port = get["port"].as_u64().unwrap_or_else(|| port_named(get["port"].as_str().expect("probe port")));
        assert_eq!(port, metrics_port, "{probe} port is listen.metrics");
    }
    for (name, key) in [("raft", "raft"), ("admin", "admin"), ("http", "http")] {
        assert_eq!(port_named(name), port_of(config["listen"][key].as_str().unwrap()), "port {name}");
    }

    let members = config["bootstrap"]["members"].as_array().expect("bootstrap members");
    assert_eq!(sts["spec"]["replicas"].as_u64(), Some(members.len() as u64), "replicas = bootstrap members");
    let name = sts["metadata"]["name"].as_str().unwrap();
    let service = sts["spec"]["serviceName"].as_str().unwrap();
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    let regions: Vec<String> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "RAFTGATE_REGIONS")
        .and_then(|e| e["value"].as_str())
        .expect("RAFTGATE_REGIONS")
        .split_whitespace()
        .map(String::from)
        .collect();
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m["id"].as_integer(), Some(i as i64 + 1), "member {i}: id = ordinal + 1");
        assert_eq!(m["region"].as_str(), Some(regions[i].as_str()), "member {i}: region = RAFTGATE_REGIONS[{i}]");
        let dns = format!("{name}-{i}.{service}.");
        for key in ["raft_addr", "admin_addr", "http_addr"] {
            assert!(m[key].as_str().unwrap().starts_with(&dns), "member {i} {key} is {dns}…");
        }
    }
    let services = yaml_docs(&deploy("kubernetes/services.yaml"));
    let headless = services.iter().find(|s| s["metadata"]["name"] == service).expect("the headless service");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    let pdb = yaml_docs(&deploy("kubernetes/pdb.yaml")).remove(0);
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let kustomization = yaml_docs(&deploy("kubernetes/kustomization.yaml")).remove(0);
    for r in kustomization["resources"].as_sequence().unwrap() {
        assert!(deploy("kubernetes").join(r.as_str().unwrap()).exists(), "kustomization resource {r:?}");
    }

    // Prometheus scrapes the compose nodes on the port their configs serve metrics on.
    let prometheus = yaml_docs(&deploy("prometheus/prometheus.yml")).remove(0);
    let targets: Vec<String> = prometheus["scrape_configs"][0]["static_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|s| s["targets"].as_sequence().unwrap().iter().map(|t| t.as_str().unwrap().to_string()))
        .collect();
    for i in 1..=3 {
        let node: toml::Value = toml::from_str(&read(&deploy(&format!("compose/config/node{i}.toml")))).unwrap();
        let port = port_of(node["listen"]["metrics"].as_str().unwrap());
        assert!(targets.contains(&format!("node{i}:{port}")), "prometheus scrapes node{i}:{port}: {targets:?}");
    }
}

// ---------------------------------------------------------------- (4) Dockerfile

#[test]
fn the_dockerfile_builds_packages_and_binaries_that_exist() {
    let mut bins_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(repo().join("crates")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let value: toml::Value = toml::from_str(&text).unwrap();
        let name = value["package"]["name"].as_str().unwrap().to_string();
        let bins = value
            .get("bin")
            .and_then(|b| b.as_array())
            .map(|b| b.iter().filter_map(|b| b["name"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        bins_of.insert(name, bins);
    }
    let dockerfile = read(&deploy("docker/Dockerfile"));
    let build = dockerfile.lines().find(|l| l.contains("cargo build")).expect("a cargo build line");
    let words: Vec<&str> = build.split_whitespace().collect();
    assert!(words.contains(&"--release") && words.contains(&"--locked"), "{build}");
    let packages: Vec<&str> = words.windows(2).filter(|w| w[0] == "-p").map(|w| w[1]).collect();
    assert!(!packages.is_empty(), "{build}");
    let mut built = BTreeSet::new();
    for p in &packages {
        let bins = bins_of.get(*p).unwrap_or_else(|| panic!("the Dockerfile builds {p}, not a workspace package"));
        built.extend(bins.iter().cloned());
    }
    let copied: BTreeSet<String> = dockerfile
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("target/release/").or_else(|| w.strip_prefix("/out/")))
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    assert_eq!(copied, built, "binaries copied out of the build vs the binaries of {packages:?}");
    assert!(built.contains("raftgate") && built.contains("raftgatectl"), "{built:?}");
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/raftgate\"]"), "ENTRYPOINT raftgate");
    assert!(!dockerfile.contains("HEALTHCHECK "), "no HEALTHCHECK: orchestrators probe /readyz");
}
