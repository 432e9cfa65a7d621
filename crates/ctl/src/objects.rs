//! `raftgatectl route|upstream …`: replicated objects from a file or flags.
//!
//! A file holds YAML or JSON (YAML is a superset): one object, a list of
//! objects, or several YAML documents. Each object is applied with its own
//! write, in file order, and the first failure stops the run (objects before
//! it stay applied; atomic multi-object apply is `raftgatectl apply`'s job).

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Largest file read.
const MAX_FILE_BYTES: u64 = 16 << 20;

#[derive(Subcommand)]
pub enum ObjectCmd<F: Args> {
    #[command(after_help = "Example:\n  raftgatectl route apply -f routes.yaml   (the same for every object kind)")]
    /// Create or replace objects from a file (`-f`, `-` for stdin) or from flags.
    Apply {
        #[arg(short = 'f', long, conflicts_with = "id")]
        file: Option<PathBuf>,
        #[command(flatten)]
        flags: F,
        /// Only write if the object is at this revision (0: must not exist yet).
        #[arg(long)]
        expected_revision: Option<u64>,
    },
    #[command(after_help = "Example:\n  raftgatectl route get users -o yaml")]
    /// Show one object.
    Get {
        id: String,
        /// Read this node's applied state instead of a linearizable read through the leader.
        #[arg(long)]
        local: bool,
    },
    #[command(after_help = "Example:\n  raftgatectl route list --after users --limit 50")]
    /// List objects in id order, a page at a time.
    List {
        #[arg(long)]
        local: bool,
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    #[command(after_help = "Example:\n  raftgatectl route delete users --expected-revision 42")]
    /// Delete an object.
    Delete {
        id: String,
        #[arg(long)]
        expected_revision: Option<u64>,
    },
}

/// Builds an object from command-line flags.
pub trait FromFlags {
    fn to_spec(&self) -> Result<Value, String>;
}

#[derive(Args)]
pub struct RouteFlags {
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub upstream: Option<String>,
    /// Host name or *.suffix (repeat for several).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Path prefix, matched at segment boundaries (repeatable).
    #[arg(long = "prefix")]
    pub prefixes: Vec<String>,
    /// Exact path (repeatable).
    #[arg(long = "exact")]
    pub exacts: Vec<String>,
    /// Path template such as /users/{id} (repeatable).
    #[arg(long = "template")]
    pub templates: Vec<String>,
    /// Path regex matching the whole path (repeatable).
    #[arg(long = "regex")]
    pub regexes: Vec<String>,
    /// Allowed method (repeatable); none: all but TRACE and CONNECT.
    #[arg(long = "method")]
    pub methods: Vec<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    #[arg(long)]
    pub strip_prefix: bool,
    #[arg(long)]
    pub rewrite: Option<String>,
}

impl FromFlags for RouteFlags {
    fn to_spec(&self) -> Result<Value, String> {
        let (Some(id), Some(upstream)) = (&self.id, &self.upstream) else {
            return Err("give -f FILE, or --id and --upstream".into());
        };
        let mut paths: Vec<Value> = Vec::new();
        for (kind, list) in [
            ("exact", &self.exacts),
            ("prefix", &self.prefixes),
            ("template", &self.templates),
            ("regex", &self.regexes),
        ] {
            paths.extend(list.iter().map(|p| json!({ kind: p })));
        }
        let mut spec = json!({ "id": id, "upstream": upstream, "hosts": self.hosts, "paths": paths,
            "methods": self.methods.iter().map(|m| m.to_ascii_uppercase()).collect::<Vec<_>>() });
        if let Some(p) = self.priority {
            spec["priority"] = json!(p);
        }
        if self.strip_prefix {
            spec["strip_prefix"] = json!(true);
        }
        if let Some(r) = &self.rewrite {
            spec["rewrite"] = json!(r);
        }
        Ok(spec)
    }
}

#[derive(Args)]
pub struct UpstreamFlags {
    #[arg(long)]
    pub id: Option<String>,
    /// `host:port[=weight][@region]` (repeat for several).
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// round_robin, least_connections or ewma.
    #[arg(long)]
    pub balance: Option<String>,
    /// http1 or h2c.
    #[arg(long)]
    pub protocol: Option<String>,
}

impl FromFlags for UpstreamFlags {
    fn to_spec(&self) -> Result<Value, String> {
        let Some(id) = &self.id else { return Err("give -f FILE, or --id and --target".into()) };
        let mut targets = Vec::new();
        for t in &self.targets {
            let (rest, region) = match t.split_once('@') {
                Some((r, region)) => (r, Some(region)),
                None => (t.as_str(), None),
            };
            let (addr, weight) = match rest.split_once('=') {
                Some((a, w)) => {
                    (a, Some(w.parse::<u32>().map_err(|_| format!("--target {t:?}: weight must be a number"))?))
                }
                None => (rest, None),
            };
            let mut target = json!({ "addr": addr });
            if let Some(w) = weight {
                target["weight"] = json!(w);
            }
            if let Some(r) = region {
                target["region"] = json!(r);
            }
            targets.push(target);
        }
        let mut spec = json!({ "id": id, "targets": targets });
        if let Some(b) = &self.balance {
            spec["balance"] = json!(b);
        }
        if let Some(p) = &self.protocol {
            spec["protocol"] = json!(p);
        }
        Ok(spec)
    }
}

#[derive(Args)]
pub struct ConsumerFlags {
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// Group (role) name (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    #[arg(long)]
    pub plan: Option<String>,
    /// `key=value` metadata (repeatable).
    #[arg(long = "meta")]
    pub metadata: Vec<String>,
    /// Refuse this consumer everywhere (its record and credentials are kept).
    #[arg(long)]
    pub disabled: bool,
}

impl FromFlags for ConsumerFlags {
    fn to_spec(&self) -> Result<Value, String> {
        let Some(id) = &self.id else { return Err("give -f FILE, or --id".into()) };
        let mut metadata = serde_json::Map::new();
        for m in &self.metadata {
            let (k, v) = m.split_once('=').ok_or_else(|| format!("--meta {m:?}: expected key=value"))?;
            metadata.insert(k.to_string(), json!(v));
        }
        let mut spec = json!({ "id": id, "groups": self.groups, "metadata": metadata });
        if let Some(n) = &self.name {
            spec["name"] = json!(n);
        }
        if let Some(p) = &self.plan {
            spec["plan"] = json!(p);
        }
        if self.disabled {
            spec["enabled"] = json!(false);
        }
        Ok(spec)
    }
}

#[derive(Args)]
pub struct IssuerFlags {
    #[arg(long)]
    pub id: Option<String>,
    /// The `iss` value tokens carry.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Accepted `aud` value (repeatable).
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
    /// Accepted algorithm, e.g. RS256, ES256, EdDSA, HS256 (repeatable).
    #[arg(long = "algorithm")]
    pub algorithms: Vec<String>,
    /// A JWKS file (JSON) with the public keys.
    #[arg(long)]
    pub jwks_file: Option<PathBuf>,
    #[arg(long)]
    pub jwks_url: Option<String>,
    /// HS* secret reference: env:NAME or file:/path (never the secret itself).
    #[arg(long)]
    pub secret: Option<String>,
    /// The claim naming the consumer (default sub).
    #[arg(long)]
    pub consumer_claim: Option<String>,
}

impl FromFlags for IssuerFlags {
    fn to_spec(&self) -> Result<Value, String> {
        let (Some(id), Some(issuer)) = (&self.id, &self.issuer) else {
            return Err("give -f FILE, or --id, --issuer and --algorithm".into());
        };
        let mut spec =
            json!({ "id": id, "issuer": issuer, "audiences": self.audiences, "algorithms": self.algorithms });
        if let Some(path) = &self.jwks_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let jwks: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            spec["jwks"] = jwks;
        }
        for (name, v) in
            [("jwks_url", &self.jwks_url), ("secret", &self.secret), ("consumer_claim", &self.consumer_claim)]
        {
            if let Some(v) = v {
                spec[name] = json!(v);
            }
        }
        Ok(spec)
    }
}

#[derive(Args)]
pub struct PlanFlags {
    #[arg(long)]
    pub id: Option<String>,
    /// low, normal, high or critical (who is shed last under load).
    #[arg(long)]
    pub priority: Option<String>,
}

impl FromFlags for PlanFlags {
    fn to_spec(&self) -> Result<Value, String> {
        let Some(id) = &self.id else { return Err("give -f FILE (with limits), or --id".into()) };
        let mut spec = json!({ "id": id });
        if let Some(p) = &self.priority {
            spec["priority"] = json!(p);
        }
        Ok(spec)
    }
}

/// The objects in a YAML or JSON file (`-` reads stdin).
#[derive(Args)]
pub struct CertificateFlags {
    #[arg(long)]
    pub id: Option<String>,
    /// A host name (or `*.suffix`) it serves (repeatable).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    #[arg(long)]
    pub cert_file: Option<String>,
    #[arg(long)]
    pub key_file: Option<String>,
}

impl FromFlags for CertificateFlags {
    fn to_spec(&self) -> Result<Value, String> {
        let (Some(id), Some(cert), Some(key)) = (&self.id, &self.cert_file, &self.key_file) else {
            return Err("give -f FILE, or --id, --host, --cert-file and --key-file".into());
        };
        Ok(json!({ "id": id, "hosts": self.hosts, "cert_file": cert, "key_file": key }))
    }
}

/// A declarative document (YAML or JSON; `-` reads stdin), as JSON.
pub fn read_document(path: &PathBuf) -> Result<Value, String> {
    let text = read_text(path)?;
    let value: Value = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if !value.is_object() {
        return Err(format!(
            "{}: must be a mapping with upstreams, issuers, plans, consumers and/or routes",
            path.display()
        ));
    }
    Ok(value)
}

fn read_text(path: &PathBuf) -> Result<String, String> {
    let mut text = String::new();
    let name = path.display();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().take(MAX_FILE_BYTES + 1).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
    };
    read.map_err(|e| format!("cannot read {name}: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("{name} is larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(text)
}

pub fn read_objects(path: &PathBuf) -> Result<Vec<Value>, String> {
    let text = read_text(path)?;
    let name = path.display();
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc).map_err(|e| format!("{name}: {e}"))?;
        match value {
            Value::Null => {}
            Value::Array(items) => objects.extend(items),
            v => objects.push(v),
        }
    }
    if objects.is_empty() {
        return Err(format!("{name} holds no object"));
    }
    Ok(objects)
}
