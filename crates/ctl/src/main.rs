//! `raftgatectl`: administer a Raftgate cluster through any node's admin API.
//!
//! Every command talks to one endpoint (`--endpoint`, `RAFTGATE_ENDPOINT`,
//! default `127.0.0.1:7201`); the node forwards what only the leader can do.
//! Credentials and TLS come from flags, then `RAFTGATE_*` variables, then
//! the config file (`~/.config/raftgate/ctl.toml`). Output is a table for
//! people or JSON (`--output json`) for scripts. Errors name the endpoint
//! and what failed, and exit non-zero: 1 for a refused or failed request,
//! 2 for bad command-line usage.

mod catalog;
mod certs;
mod governance;
mod identity;
mod objects;
mod openapi;
mod output;
mod privacy;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use raftgate_proto::admin as pb;
use raftgate_proto::admin::admin_client::AdminClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// An admin client that sends the caller's token with every request.
pub type Client = AdminClient<InterceptedService<Channel, Credentials>>;

/// Adds `Authorization: Bearer <token>` when a token is configured.
#[derive(Clone)]
pub struct Credentials(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

/// How every connection of this run authenticates (set once in `main`).
struct Conn {
    credentials: Credentials,
    tls: Option<ClientTlsConfig>,
}

static CONN: OnceLock<Conn> = OnceLock::new();

/// `~/.config/raftgate/ctl.toml`: defaults for the flags below.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CtlConfig {
    endpoint: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

use identity::{KeyCmd, RevokeArgs, TargetCmd};
use objects::{FromFlags, IssuerFlags, ObjectCmd, PlanFlags, RouteFlags, UpstreamFlags};
use output::Output;

#[derive(Parser)]
#[command(
    name = "raftgatectl",
    version,
    about = "Administer a Raftgate cluster",
    after_help = "Credentials: --token / RAFTGATE_TOKEN, or --cert and --key; TLS with --ca-cert; defaults from ~/.config/raftgate/ctl.toml.\nExit codes: 0 done; 1 the request failed or was refused (the message says why and what to do); 2 bad usage or config."
)]
struct Cli {
    /// Admin address of any node, `host:port` or `http://host:port`.
    #[arg(long, global = true, env = "RAFTGATE_ENDPOINT")]
    endpoint: Option<String>,
    /// Admin token (`rgt_…`); prefer RAFTGATE_TOKEN or the config file over the flag.
    #[arg(long, global = true, env = "RAFTGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) that signed the nodes' admin certificates: connect with TLS.
    #[arg(long, global = true, env = "RAFTGATE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM) to authenticate with instead of a token.
    #[arg(long = "cert", id = "client_cert", global = true, env = "RAFTGATE_CERT", requires = "client_key")]
    cert: Option<PathBuf>,
    #[arg(long = "key", id = "client_key", global = true, env = "RAFTGATE_KEY", requires = "client_cert")]
    key: Option<PathBuf>,
    /// Config file with defaults (endpoint, token or token_file, ca_cert, cert, key).
    #[arg(long, global = true, env = "RAFTGATE_CTL_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Give up on a request after this many milliseconds.
    #[arg(long, global = true, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Cmd {
    /// Cluster membership and health.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl cluster status
  raftgatectl cluster add-learner --id 4 --region eu-2 --raft-addr n4:7101 --admin-addr n4:7201 --http-addr n4:8080
  raftgatectl cluster promote 4")]
    Cluster(ClusterCmd),
    /// The node at --endpoint, as it sees itself.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl --endpoint node-2:7201 node status")]
    Node(NodeCmd),
    /// Replicated cluster settings (key/value).
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl setting put feature.x on
  raftgatectl setting get feature.x --local")]
    Setting(SettingCmd),
    /// Routes: which requests go to which upstream.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl route apply --id users --upstream app --prefix /users
  raftgatectl route apply -f routes.yaml
  raftgatectl route list -o yaml")]
    Route(ObjectCmd<RouteFlags>),
    /// Upstreams: targets, balancing, health and timeouts.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  raftgatectl upstream apply --id app --target 10.0.0.5:8080 --target 10.0.0.6:8080"
    )]
    Upstream(ObjectCmd<UpstreamFlags>),
    /// Consumers: who credentials stand for (groups, plan, metadata, enabled).
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl consumer apply --id acme --plan gold
  raftgatectl consumer export acme --out acme.json
  raftgatectl consumer forget acme --yes")]
    Consumer(privacy::ConsumerCmd),
    /// JWT issuers the gateway trusts (keys inline, by JWKS URL, or an HMAC secret reference).
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl issuer apply -f issuer.yaml")]
    Issuer(ObjectCmd<IssuerFlags>),
    /// API keys of consumers.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl key create --consumer acme --expires 90d
  raftgatectl key rotate <KEY_ID> --overlap 24h")]
    Key(KeyCmd),
    /// Refuse a credential on every node (`--wait` reports each node's confirmation).
    #[command(after_help = "Examples:\n  raftgatectl revoke key <KEY_ID> --wait --reason leaked")]
    Revoke(RevokeArgs),
    /// Take a revocation back.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl unrevoke key <KEY_ID>")]
    Unrevoke(TargetCmd),
    /// Revocations in force.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl revocation list")]
    Revocation(RevocationCmd),
    /// Plans: tiers of rate limits and quotas that consumers are on.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl plan apply -f plans.yaml")]
    Plan(ObjectCmd<PlanFlags>),
    /// The cluster-wide quota ledger.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl quota show acme
  raftgatectl quota reset <KEY as quota show prints it>   (admin only, audited)")]
    Quota(QuotaCmd),
    /// Cached responses on every node (routes with `cache`).
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl cache purge --route catalog --prefix /products/")]
    Cache(CacheCmd),
    /// Certificates the HTTPS listeners serve, by file reference (admin only;
    /// the PEM files must exist at these paths on every node).
    #[command(
        after_help = "Examples:\n  raftgatectl certificate apply --id api --host api.example.com --cert-file /etc/raftgate/tls/api.crt --key-file /etc/raftgate/tls/api.key\n  raftgatectl certificate list"
    )]
    #[command(subcommand)]
    Certificate(ObjectCmd<objects::CertificateFlags>),
    /// Operators of the admin API (admin only): role, client certificates.
    ///
    /// Example: raftgatectl operator apply --id alice --role operator
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl operator apply --id alice --role operator
  raftgatectl operator list")]
    Operator(ObjectCmd<governance::OperatorFlags>),
    /// Bearer tokens of operators (admin only).
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl token create alice --expires-in-hours 720
  raftgatectl token delete <TOKEN_ID>")]
    Token(governance::TokenCmd),
    /// The tamper-evident audit trail of admin writes and refusals.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl audit tail -n 20
  raftgatectl audit verify --all-nodes
  raftgatectl audit export --file audit.jsonl")]
    Audit(governance::AuditCmd),
    /// Who the node takes you for, and your role.
    #[command(after_help = "Examples:\n  raftgatectl whoami\n  RAFTGATE_TOKEN=rgt_… raftgatectl whoami -o json")]
    Whoami,
    /// Make the cluster match a file of routes, upstreams, consumers, issuers,
    /// plans and certificate references, in one atomic write (all or nothing).
    ///
    /// Kinds the file leaves out are left alone; --prune deletes objects of
    /// the kinds it lists that it does not name. Example:
    ///   raftgatectl dump > gateway.yaml; edit; raftgatectl apply -f gateway.yaml --prune
    Apply {
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[arg(long)]
        prune: bool,
        /// Show the changes, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    #[command(after_help = "Example:\n  raftgatectl diff -f gateway.yaml --prune")]
    /// What `apply -f` would change (same as `apply --dry-run`).
    Diff {
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[arg(long)]
        prune: bool,
    },
    /// Create routes from an API description.
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  raftgatectl import openapi petstore.yaml --upstream pets --validate")]
    Import(ImportCmd),
    /// APIs the routes serve: owner, version, lifecycle dates, routes, and
    /// requests summed over every member (last whole minute, since start).
    ///
    /// With --unknown: requests that matched no route, or only a catch-all,
    /// by method and path template, summed over every member (shadow APIs).
    /// Example: raftgatectl catalog --unknown --limit 20
    Catalog {
        #[arg(long)]
        unknown: bool,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000))]
        limit: u32,
    },
    #[command(after_help = "Example:\n  raftgatectl dump > gateway.yaml\n  raftgatectl dump -o json --local")]
    /// The current routes, upstreams, consumers, issuers, plans and certificate references as a file
    /// `apply -f` takes (YAML; `-o json` for JSON). dump, apply, dump gives the same bytes.
    Dump {
        #[arg(long)]
        local: bool,
    },
    /// Backups: save a consistent snapshot of the cluster's state, inspect a file.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  raftgatectl snapshot save backup.rgsnap\n  raftgatectl snapshot inspect backup.rgsnap"
    )]
    Snapshot(snapshot::SnapshotCmd),
    /// Make a cluster CA and node and operator certificates (offline).
    #[command(subcommand)]
    Certs(certs::CertsCmd),
    /// Shell completion script on stdout.
    #[command(
        after_help = "Examples:\n  raftgatectl completions bash > /etc/bash_completion.d/raftgatectl\n  raftgatectl completions zsh > \"${fpath[1]}/_raftgatectl\""
    )]
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum ImportCmd {
    /// A route per path and method of an OpenAPI 3 document (YAML or JSON),
    /// all sent to UPSTREAM, written in one atomic apply (existing routes
    /// with the same ids are replaced, others left alone).
    ///
    /// Example: raftgatectl import openapi petstore.yaml --upstream pets --validate
    Openapi {
        spec: PathBuf,
        #[arg(long)]
        upstream: String,
        /// Check JSON request bodies against the operations' schemas (400 on mismatch).
        #[arg(long)]
        validate: bool,
        /// Show the routes it would write, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum CacheCmd {
    #[command(
        after_help = "Examples:\n  raftgatectl cache purge                       (everything)\n  raftgatectl cache purge --route catalog --prefix /products/"
    )]
    /// Drop cached responses on every node: all, a route's, or those whose
    /// path starts with PREFIX. One replicated, audited command.
    Purge {
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
    },
}

#[derive(Subcommand)]
enum QuotaCmd {
    #[command(after_help = "Example:\n  raftgatectl quota show acme -o json")]
    /// Ledger entries whose key contains FILTER (a consumer id, a quota name…):
    /// limit, held, unallocated, per-node grants, window end.
    Show {
        #[arg(default_value = "")]
        filter: String,
        #[arg(long)]
        local: bool,
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    #[command(after_help = "Example:\n  raftgatectl quota reset <KEY as quota show prints it>")]
    /// Start one entry's window over (KEY as `quota show` prints it).
    Reset { key: String },
}

#[derive(Subcommand)]
enum RevocationCmd {
    #[command(after_help = "Example:\n  raftgatectl revocation list --limit 50")]
    /// List revocations by key (`api_key:…`, `token:ISSUER:JTI`, …).
    List {
        #[arg(long)]
        local: bool,
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    #[command(after_help = "Example:\n  raftgatectl cluster status -o json")]
    /// Every member: role, term, log indexes, replication lag, reachability.
    Status,
    #[command(
        after_help = "Example:\n  raftgatectl cluster add-learner --id 4 --region eu-2 --raft-addr n4:7101 --admin-addr n4:7201 --http-addr n4:8080"
    )]
    /// Add a running node as a learner (it receives the log but does not vote).
    AddLearner {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        region: String,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        admin_addr: String,
        #[arg(long)]
        http_addr: String,
    },
    #[command(after_help = "Example:\n  raftgatectl cluster promote 4")]
    /// Make a learner a voter.
    Promote { id: u64 },
    #[command(after_help = "Example:\n  raftgatectl cluster remove 4")]
    /// Remove a voter or learner from the cluster.
    Remove { id: u64 },
}

#[derive(Subcommand)]
enum NodeCmd {
    #[command(after_help = "Example:\n  raftgatectl --endpoint node-2:7201 node status")]
    /// This node's own report.
    Status,
    /// Snapshot this node, purge its log through the snapshot, and rewrite its
    /// store into fresh files at its next start (admin only; after a forget).
    #[command(after_help = "Example:\n  raftgatectl --endpoint node-2:7201 node compact   (then restart the node)")]
    Compact,
}

#[derive(Subcommand)]
enum SettingCmd {
    #[command(after_help = "Example:\n  raftgatectl setting put feature.x on --expected-revision 0")]
    /// Create or replace a setting.
    Put {
        key: String,
        value: String,
        /// Only write if the setting is at this revision (0: must not exist yet).
        #[arg(long)]
        expected_revision: Option<u64>,
    },
    #[command(after_help = "Example:\n  raftgatectl setting get feature.x --local")]
    /// Read one setting.
    Get {
        key: String,
        /// Read this node's applied state instead of a linearizable read through the leader.
        #[arg(long)]
        local: bool,
    },
    #[command(after_help = "Example:\n  raftgatectl setting list --after feature.a --limit 50")]
    /// List settings in key order, a page at a time.
    List {
        #[arg(long)]
        local: bool,
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    #[command(after_help = "Example:\n  raftgatectl setting delete feature.x")]
    /// Delete a setting.
    Delete {
        key: String,
        #[arg(long)]
        expected_revision: Option<u64>,
    },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Cmd::Completions { shell } = cli.command {
        use clap::CommandFactory;
        use std::io::Write as _;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "raftgatectl", &mut script);
        // A closed pipe (`| head`) is not an error worth a message.
        let _ = std::io::stdout().write_all(&script);
        return ExitCode::SUCCESS;
    }
    if let Cmd::Certs(cmd) = &cli.command {
        return certs::run(cmd).map_or_else(
            |e| {
                eprintln!("raftgatectl certs: {e}");
                ExitCode::FAILURE
            },
            |()| ExitCode::SUCCESS,
        );
    }
    if let Err(e) = configure(&mut cli) {
        eprintln!("raftgatectl: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("raftgatectl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Cmd::Snapshot(cmd) = &cli.command {
        // Offline, or refused before connecting.
        let offline = match cmd {
            snapshot::SnapshotCmd::Inspect { file } => {
                Some(snapshot::inspect(file, !matches!(cli.output, Format::Table)))
            }
            save => snapshot::check_save(save).err().map(Err),
        };
        if let Some(result) = offline {
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("raftgatectl: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    let endpoint = normalize(cli.endpoint.as_deref().unwrap_or("127.0.0.1:7201"));
    match runtime.block_on(execute(&cli, &endpoint)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("raftgatectl: {endpoint}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Fills what flags and env left unset from the config file, and sets up
/// the credentials and TLS every connection uses.
fn configure(cli: &mut Cli) -> Result<(), String> {
    let path = cli.config.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/raftgate/ctl.toml")).filter(|p| p.exists())
    });
    let file: CtlConfig = match &path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => CtlConfig::default(),
    };
    cli.endpoint = cli.endpoint.take().or(file.endpoint);
    cli.ca_cert = cli.ca_cert.take().or(file.ca_cert);
    if cli.cert.is_none() {
        cli.cert = file.cert;
        cli.key = file.key;
    }
    let token = match (cli.token.take(), file.token, file.token_file) {
        (Some(t), _, _) | (None, Some(t), _) => Some(t),
        (None, None, Some(f)) => Some(
            std::fs::read_to_string(&f).map_err(|e| format!("token_file {}: {e}", f.display()))?.trim().to_string(),
        ),
        _ => None,
    };
    let credentials = match token {
        Some(t) => Credentials(Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| "the token holds characters a header cannot carry".to_string())?,
        )),
        None => Credentials(None),
    };
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let tls = match &cli.ca_cert {
        Some(ca) => {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(c), Some(k)) = (&cli.cert, &cli.key) {
                tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            Some(tls)
        }
        None if cli.cert.is_some() => {
            return Err("--cert needs --ca-cert (client certificates only work over TLS)".into())
        }
        None => None,
    };
    let _ = CONN.set(Conn { credentials, tls });
    Ok(())
}

fn conn() -> &'static Conn {
    CONN.get_or_init(|| Conn { credentials: Credentials(None), tls: None })
}

fn normalize(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if conn().tls.is_some() {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// Describes a failed call for a person: unreachable, or the node's own answer.
fn describe(status: tonic::Status) -> String {
    let msg = status.message();
    match status.code() {
        tonic::Code::Unavailable if msg.contains("transport") || msg.contains("connect") || msg.contains("tcp") => {
            format!("unreachable ({msg})")
        }
        tonic::Code::Unavailable => format!("unavailable: {msg}"),
        tonic::Code::DeadlineExceeded => format!("no answer in time: {msg}"),
        tonic::Code::InvalidArgument => format!("invalid request: {msg}"),
        tonic::Code::NotFound => format!("not found: {msg}"),
        tonic::Code::FailedPrecondition => format!("refused: {msg}"),
        tonic::Code::ResourceExhausted => format!("limit reached: {msg}"),
        tonic::Code::Unimplemented => "not a Raftgate admin endpoint (or a different version)".to_string(),
        tonic::Code::Unauthenticated => {
            format!("not authenticated: {msg} (set RAFTGATE_TOKEN, --token, or token in ~/.config/raftgate/ctl.toml)")
        }
        tonic::Code::PermissionDenied => format!("forbidden: {msg}"),
        code => format!("{code:?}: {msg}"),
    }
}

async fn connect(endpoint: &str, timeout: Duration) -> Result<Client, String> {
    let mut ep = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| format!("invalid endpoint: {e}"))?
        .connect_timeout(Duration::from_millis(3_000).min(timeout))
        .timeout(timeout);
    if let Some(tls) = &conn().tls {
        ep = ep.tls_config(tls.clone()).map_err(|e| format!("TLS settings: {e}"))?;
    }
    let channel = ep.connect().await.map_err(|e| {
        let source = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
        format!("unreachable ({source})")
    })?;
    Ok(AdminClient::with_interceptor(channel, conn().credentials.clone()))
}

async fn execute(cli: &Cli, endpoint: &str) -> Result<(), String> {
    let mut client = connect(endpoint, Duration::from_millis(cli.timeout_ms)).await?;
    let out = Output::new(matches!(cli.output, Format::Json), matches!(cli.output, Format::Yaml));
    let consistency = |local: bool| if local { pb::Consistency::Local } else { pb::Consistency::Linearizable } as i32;
    match &cli.command {
        Cmd::Cluster(ClusterCmd::Status) => {
            let reply = client.cluster_status(pb::ClusterStatusRequest {}).await.map_err(describe)?;
            out.cluster_status(&reply.into_inner());
        }
        Cmd::Cluster(ClusterCmd::AddLearner { id, region, raft_addr, admin_addr, http_addr }) => {
            let member = pb::Member {
                id: *id,
                region: region.clone(),
                raft_addr: raft_addr.clone(),
                admin_addr: admin_addr.clone(),
                http_addr: http_addr.clone(),
            };
            let reply = client.add_learner(pb::AddLearnerRequest { member: Some(member) }).await.map_err(describe)?;
            out.membership(&reply.into_inner());
        }
        Cmd::Cluster(ClusterCmd::Promote { id }) => {
            let reply = client.promote(pb::PromoteRequest { id: *id }).await.map_err(describe)?;
            out.membership(&reply.into_inner());
        }
        Cmd::Cluster(ClusterCmd::Remove { id }) => {
            let reply = client.remove_node(pb::RemoveNodeRequest { id: *id }).await.map_err(describe)?;
            out.membership(&reply.into_inner());
        }
        Cmd::Node(NodeCmd::Compact) => privacy::compact(&mut client, &out).await?,
        Cmd::Node(NodeCmd::Status) => {
            let reply = client.node_status(pb::NodeStatusRequest {}).await.map_err(describe)?;
            out.node_status(&reply.into_inner());
        }
        Cmd::Setting(SettingCmd::Put { key, value, expected_revision }) => {
            let req =
                pb::PutSettingRequest { key: key.clone(), value: value.clone(), expected_revision: *expected_revision };
            let reply = client.put_setting(req).await.map_err(describe)?;
            out.write(&reply.into_inner());
        }
        Cmd::Setting(SettingCmd::Delete { key, expected_revision }) => {
            let req = pb::DeleteSettingRequest { key: key.clone(), expected_revision: *expected_revision };
            let reply = client.delete_setting(req).await.map_err(describe)?;
            out.write(&reply.into_inner());
        }
        Cmd::Setting(SettingCmd::Get { key, local }) => {
            let req = pb::GetSettingRequest { key: key.clone(), consistency: consistency(*local) };
            let reply = client.get_setting(req).await.map_err(describe)?;
            out.settings(&[reply.into_inner()], "");
        }
        Cmd::Setting(SettingCmd::List { local, after, limit }) => {
            let req = pb::ListSettingsRequest { consistency: consistency(*local), after: after.clone(), limit: *limit };
            let reply = client.list_settings(req).await.map_err(describe)?.into_inner();
            out.settings(&reply.settings, &reply.next_after);
        }
        Cmd::Route(cmd) => object_command(&mut client, &out, Kind::Route, cmd).await?,
        Cmd::Upstream(cmd) => object_command(&mut client, &out, Kind::Upstream, cmd).await?,
        Cmd::Consumer(privacy::ConsumerCmd::Object(cmd)) => {
            object_command(&mut client, &out, Kind::Consumer, cmd).await?
        }
        Cmd::Consumer(cmd) => privacy::consumer_command(&mut client, &out, cmd).await?,
        Cmd::Issuer(cmd) => object_command(&mut client, &out, Kind::Issuer, cmd).await?,
        Cmd::Key(cmd) => identity::key_command(&mut client, &out, cmd).await?,
        Cmd::Revoke(args) => identity::revoke(&mut client, &out, args, Duration::from_millis(cli.timeout_ms)).await?,
        Cmd::Unrevoke(target) => identity::unrevoke(&mut client, &out, target).await?,
        Cmd::Plan(cmd) => object_command(&mut client, &out, Kind::Plan, cmd).await?,
        Cmd::Quota(QuotaCmd::Show { filter, local, after, limit }) => {
            let req = pb::ListQuotasRequest {
                consistency: consistency(*local),
                filter: filter.clone(),
                after: after.clone(),
                limit: *limit,
            };
            let reply = client.list_quotas(req).await.map_err(describe)?.into_inner();
            out.quotas(&reply.objects, &reply.next_after);
        }
        Cmd::Cache(CacheCmd::Purge { route, prefix }) => {
            let req = pb::PurgeCacheRequest {
                route: route.clone().unwrap_or_default(),
                path_prefix: prefix.clone().unwrap_or_default(),
            };
            let reply = client.purge_cache(req).await.map_err(describe)?;
            out.write(&reply.into_inner());
        }
        Cmd::Quota(QuotaCmd::Reset { key }) => {
            let reply = client.reset_quota(pb::ResetQuotaRequest { key: key.clone() }).await.map_err(describe)?;
            out.write(&reply.into_inner());
        }
        Cmd::Operator(cmd) => object_command(&mut client, &out, Kind::Operator, cmd).await?,
        Cmd::Certificate(cmd) => object_command(&mut client, &out, Kind::Certificate, cmd).await?,
        Cmd::Token(cmd) => governance::token_command(&mut client, &out, cmd).await?,
        Cmd::Audit(cmd) => governance::audit_command(&mut client, &out, cmd).await?,
        Cmd::Whoami => governance::who_am_i(&mut client, &out).await?,
        Cmd::Apply { file, prune, dry_run } => apply_config(&mut client, &out, file, *prune, *dry_run).await?,
        Cmd::Import(ImportCmd::Openapi { spec, upstream, validate, dry_run }) => {
            let doc = openapi::routes(&openapi::read(spec)?, upstream, *validate)
                .map_err(|e| format!("{}: {e}", spec.display()))?;
            let req = pb::ApplyConfigRequest { document_json: doc.to_string(), prune: false, dry_run: *dry_run };
            let reply = client.apply_config(req).await.map_err(|s| format!("{}: {}", spec.display(), describe(s)))?;
            out.config_changes(&reply.into_inner(), *dry_run);
        }
        Cmd::Catalog { unknown, limit } => catalog::catalog(&mut client, &out, *unknown, *limit).await?,
        Cmd::Diff { file, prune } => apply_config(&mut client, &out, file, *prune, true).await?,
        Cmd::Completions { .. } | Cmd::Certs(_) => unreachable!("handled before connecting"),
        Cmd::Snapshot(snapshot::SnapshotCmd::Save { file, .. }) => {
            snapshot::save(&mut client, file, !matches!(cli.output, Format::Table)).await?
        }
        Cmd::Snapshot(snapshot::SnapshotCmd::Inspect { .. }) => unreachable!("handled before connecting"),
        Cmd::Dump { local } => {
            let req = pb::DumpConfigRequest { consistency: consistency(*local) };
            let reply = client.dump_config(req).await.map_err(describe)?.into_inner();
            let doc: serde_json::Value =
                serde_json::from_str(&reply.document_json).map_err(|e| format!("the node sent a bad document: {e}"))?;
            out.document(&doc);
        }
        Cmd::Revocation(RevocationCmd::List { local, after, limit }) => {
            let req = pb::ListObjectsRequest { consistency: consistency(*local), after: after.clone(), limit: *limit };
            let reply = client.list_revocations(req).await.map_err(describe)?.into_inner();
            out.objects(&reply.objects, &reply.next_after);
        }
    }
    Ok(())
}

async fn apply_config(
    client: &mut Client,
    out: &Output,
    file: &PathBuf,
    prune: bool,
    dry_run: bool,
) -> Result<(), String> {
    let doc = objects::read_document(file)?;
    let req = pb::ApplyConfigRequest { document_json: doc.to_string(), prune, dry_run };
    let reply = client.apply_config(req).await.map_err(|s| format!("{}: {}", file.display(), describe(s)))?;
    out.config_changes(&reply.into_inner(), dry_run);
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Route,
    Upstream,
    Consumer,
    Issuer,
    Plan,
    Operator,
    Certificate,
}

async fn object_command<F: clap::Args + FromFlags>(
    client: &mut Client,
    out: &Output,
    kind: Kind,
    cmd: &ObjectCmd<F>,
) -> Result<(), String> {
    let name = match kind {
        Kind::Route => "route",
        Kind::Upstream => "upstream",
        Kind::Consumer => "consumer",
        Kind::Issuer => "issuer",
        Kind::Plan => "plan",
        Kind::Operator => "operator",
        Kind::Certificate => "certificate",
    };
    let consistency = |local: bool| if local { pb::Consistency::Local } else { pb::Consistency::Linearizable } as i32;
    match cmd {
        ObjectCmd::Apply { file, flags, expected_revision } => {
            let specs = match file {
                Some(path) => objects::read_objects(path)?,
                None => vec![flags.to_spec()?],
            };
            for spec in specs {
                let id = spec.get("id").and_then(|v| v.as_str()).unwrap_or("?").to_string();
                let req = pb::ApplyObjectRequest { spec_json: spec.to_string(), expected_revision: *expected_revision };
                let reply = match kind {
                    Kind::Route => client.apply_route(req).await,
                    Kind::Upstream => client.apply_upstream(req).await,
                    Kind::Consumer => client.apply_consumer(req).await,
                    Kind::Issuer => client.apply_issuer(req).await,
                    Kind::Plan => client.apply_plan(req).await,
                    Kind::Operator => client.apply_operator(req).await,
                    Kind::Certificate => client.apply_certificate(req).await,
                };
                let reply = reply.map_err(|s| format!("{name} {id:?}: {}", describe(s)))?;
                out.applied(name, &id, &reply.into_inner());
            }
        }
        ObjectCmd::Delete { id, expected_revision } => {
            let req = pb::DeleteObjectRequest { id: id.clone(), expected_revision: *expected_revision };
            let reply = match kind {
                Kind::Route => client.delete_route(req).await,
                Kind::Upstream => client.delete_upstream(req).await,
                Kind::Consumer => client.delete_consumer(req).await,
                Kind::Issuer => client.delete_issuer(req).await,
                Kind::Plan => client.delete_plan(req).await,
                Kind::Operator => client.delete_operator(req).await,
                Kind::Certificate => client.delete_certificate(req).await,
            };
            out.write(&reply.map_err(describe)?.into_inner());
        }
        ObjectCmd::Get { id, local } => {
            let req = pb::GetObjectRequest { id: id.clone(), consistency: consistency(*local) };
            let reply = match kind {
                Kind::Route => client.get_route(req).await,
                Kind::Upstream => client.get_upstream(req).await,
                Kind::Consumer => client.get_consumer(req).await,
                Kind::Issuer => client.get_issuer(req).await,
                Kind::Plan => client.get_plan(req).await,
                Kind::Operator => client.get_operator(req).await,
                Kind::Certificate => client.get_certificate(req).await,
            };
            out.object(&reply.map_err(describe)?.into_inner());
        }
        ObjectCmd::List { local, after, limit } => {
            let req = pb::ListObjectsRequest { consistency: consistency(*local), after: after.clone(), limit: *limit };
            let reply = match kind {
                Kind::Route => client.list_routes(req).await,
                Kind::Upstream => client.list_upstreams(req).await,
                Kind::Consumer => client.list_consumers(req).await,
                Kind::Issuer => client.list_issuers(req).await,
                Kind::Plan => client.list_plans(req).await,
                Kind::Operator => client.list_operators(req).await,
                Kind::Certificate => client.list_certificates(req).await,
            };
            let reply = reply.map_err(describe)?.into_inner();
            out.objects(&reply.objects, &reply.next_after);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command a user can run shows an example in its `--help`.
    #[test]
    fn every_leaf_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: String, missing: &mut Vec<String>) {
            let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|c| c.get_name() != "help").collect();
            if subs.is_empty() {
                let text = [cmd.get_after_help(), cmd.get_long_about(), cmd.get_about()]
                    .iter()
                    .flatten()
                    .map(|s| s.to_string())
                    .collect::<String>();
                if !text.contains("Example") {
                    missing.push(path);
                }
                return;
            }
            for s in subs {
                walk(s, format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "raftgatectl".into(), &mut missing);
        assert!(missing.is_empty(), "no example in --help of: {missing:?}");
        Cli::command().debug_assert();
    }
}
