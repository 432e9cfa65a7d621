//! `raftgate`: run a gateway node, or a local development cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raftgate_node::config::{BootstrapMember, ConfigOverrides, LogFormat, NodeConfig};
use raftgate_node::{demo, logging, run_node};

#[derive(Parser)]
#[command(name = "raftgate", version, about = "An API gateway that runs as a Raft cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node from a TOML config file; every field can also be a flag or env var.
    Serve {
        #[arg(long, short, env = "RAFTGATE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Box<ConfigOverrides>,
    },
    /// Run a local cluster in this process on 127.0.0.1, for trying Raftgate out.
    /// Node i listens on raft BASE+i, admin BASE+100+i, http BASE+200+i; a demo
    /// upstream listens on BASE+300 and a catch-all route sends traffic to it.
    Dev {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
        nodes: u64,
        #[arg(long, default_value = ".raftgate-dev")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 7100, value_parser = clap::value_parser!(u16).range(1024..=65000))]
        base_port: u16,
        #[arg(long, default_value = "human")]
        log_format: LogFormat,
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Seed this node's EMPTY data dir from a snapshot file (`raftgatectl snapshot save`):
    /// started with `serve`, it is then a one-voter cluster of itself holding exactly
    /// that state. The node must be stopped. See docs/backup.md.
    Restore {
        #[arg(long, short, env = "RAFTGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        snapshot: PathBuf,
        #[command(flatten)]
        overrides: Box<ConfigOverrides>,
    },
    /// Disaster recovery when a quorum of voters is lost for good: re-form a
    /// one-voter cluster of this (stopped) node from its own data dir. Without
    /// --i-accept-losing-writes-not-on-this-node it only explains and refuses.
    Recover {
        #[arg(long, short, env = "RAFTGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, required = true)]
        force_new_cluster: bool,
        #[arg(long = "i-accept-losing-writes-not-on-this-node")]
        confirmed: bool,
        #[command(flatten)]
        overrides: Box<ConfigOverrides>,
    },
    /// Write a synthetic snapshot file (for benches/restore_time.sh and cold_start.sh).
    #[command(hide = true)]
    GenSnapshot {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
        routes: u64,
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=5_000_000))]
        revocations: u64,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100_000))]
        consumers: u64,
        #[arg(long, default_value = "raftgate")]
        cluster_name: String,
    },
}

/// The data plane allocates per request (headers, bodies, futures); mimalloc
/// measured cheaper than glibc's malloc here (see benches/proxy_vs_nginx.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}"), 1),
    };
    match cli.command {
        Cmd::Serve { config, overrides } => {
            let config = match NodeConfig::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => return fail(e.to_string(), 2),
            };
            let access = config.access_log.output().map(|o| (o, config.access_log.buffered_lines));
            let _log_guard = match logging::init(config.log.format, &config.log.level, access) {
                Ok(g) => g,
                Err(e) => return fail(e, 2),
            };
            match runtime.block_on(async { run_node(config, shutdown_signal()).await }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.to_string(), 1),
            }
        }
        Cmd::Dev { nodes, data_dir, base_port, log_format, log_level } => {
            let access = Some((raftgate_node::config::AccessLogOutput::Stdout, 16_384));
            let _log_guard = match logging::init(log_format, &log_level, access) {
                Ok(g) => g,
                Err(e) => return fail(e, 2),
            };
            runtime.block_on(run_dev(nodes, data_dir, base_port))
        }
        Cmd::Restore { config, snapshot, overrides } => {
            let config = match NodeConfig::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => return fail(e.to_string(), 2),
            };
            finish(runtime.block_on(raftgate_node::backup::restore(&config, &snapshot)))
        }
        Cmd::Recover { config, force_new_cluster: _, confirmed, overrides } => {
            let config = match NodeConfig::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => return fail(e.to_string(), 2),
            };
            finish(runtime.block_on(raftgate_node::backup::recover(&config, confirmed)))
        }
        Cmd::GenSnapshot { out, routes, revocations, consumers, cluster_name } => {
            let spec = raftgate_node::backup::Synthetic {
                routes: routes as usize,
                revocations: revocations as usize,
                consumers: consumers as usize,
                cluster_name,
            };
            match raftgate_node::backup::generate(&spec, &out) {
                Ok(counts) => {
                    println!("wrote {}: {}", out.display(), counts.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e, 1),
            }
        }
    }
}

fn finish(result: Result<(), raftgate_node::backup::Failed>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(f.message, f.code),
    }
}

fn fail(message: String, code: u8) -> ExitCode {
    eprintln!("raftgate: {message}");
    ExitCode::from(code)
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives
/// while the node is still starting is not lost to the default action.
/// Must be called inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "cannot listen for signals; only Ctrl-C stops the node");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn dev_configs(nodes: u64, data_dir: &std::path::Path, base_port: u16) -> Vec<NodeConfig> {
    let port = |offset: u64, i: u64| format!("127.0.0.1:{}", u64::from(base_port) + offset + i);
    let members: Vec<BootstrapMember> = (1..=nodes)
        .map(|i| BootstrapMember {
            id: i,
            region: format!("local-{i}"),
            raft_addr: port(0, i),
            admin_addr: port(100, i),
            http_addr: port(200, i),
        })
        .collect();
    members
        .iter()
        .map(|m| {
            let mut c = NodeConfig::default();
            c.node.id = m.id;
            c.node.region = m.region.clone();
            c.node.data_dir = data_dir.join(format!("node-{}", m.id));
            c.listen.raft = m.raft_addr.clone();
            c.listen.admin = m.admin_addr.clone();
            c.listen.http = m.http_addr.clone();
            c.listen.metrics = Some(port(300, m.id));
            c.bootstrap.members = members.clone();
            c.admin.auth = raftgate_node::config::AdminAuth::None;
            c
        })
        .collect()
}

async fn run_dev(nodes: u64, data_dir: PathBuf, base_port: u16) -> ExitCode {
    let configs = dev_configs(nodes, &data_dir, base_port);
    for c in &configs {
        if let Err(e) = c.validate() {
            return fail(e.to_string(), 2);
        }
    }
    let signal = shutdown_signal();
    let demo_addr = format!("127.0.0.1:{}", u32::from(base_port) + 300);
    let demo_listener = match tokio::net::TcpListener::bind(&demo_addr).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {demo_addr} (demo upstream): {e}"), 1),
    };
    let demo_task = tokio::spawn(demo::serve_upstream(demo_listener));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let endpoints: Vec<String> = configs.iter().map(|c| c.listen.admin.clone()).collect();
    let http_endpoints: Vec<String> = configs.iter().map(|c| c.listen.http.clone()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for config in configs {
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let id = config.node.id;
            let result = run_node(config, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
            (id, result)
        });
    }
    tracing::info!(
        data_dir = %data_dir.display(),
        "local cluster of {nodes} nodes; admin endpoints {}; try: raftgatectl --endpoint {} cluster status",
        endpoints.join(", "),
        endpoints[0]
    );
    let admin = endpoints[0].clone();
    let first_http = http_endpoints[0].clone();
    let seed_task = tokio::spawn(async move {
        match demo::seed(&admin, &demo_addr).await {
            Ok(()) => tracing::info!("demo route ready: curl http://{first_http}/hello (any node's HTTP port works)"),
            Err(e) => tracing::error!(error = %e, "demo route not written"),
        }
    });
    let mut code = ExitCode::SUCCESS;
    tokio::select! {
        _ = signal => {}
        Some(Ok((id, Err(e)))) = tasks.join_next() => {
            eprintln!("raftgate: node {id}: {e}");
            code = ExitCode::from(1);
        }
    }
    seed_task.abort();
    let _ = stop_tx.send(true);
    while let Some(joined) = tasks.join_next().await {
        if let Ok((id, Err(e))) = joined {
            eprintln!("raftgate: node {id}: {e}");
            code = ExitCode::from(1);
        }
    }
    demo_task.abort();
    code
}
