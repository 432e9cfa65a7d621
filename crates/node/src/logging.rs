//! Structured logs through `tracing`: the node's own log (human-readable or
//! JSON lines, on stderr, filtered by `log.level`) and the access log (JSON
//! lines of target `raftgate::access`, on stdout or a file, see
//! `raftgate_proxy::access_log`), each its own layer.
//!
//! Access lines go through a bounded non-blocking writer: a slow disk or
//! pipe drops lines (beyond `access_log.buffered_lines`) instead of
//! holding up requests.

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{AccessLogOutput, LogFormat};

/// Targets quieted by default. openraft's replication logs an unreachable peer
/// at ERROR on every retry; `raftgatectl cluster status` shows reachability instead.
const DEFAULT_DIRECTIVES: &str = "openraft=warn,openraft::replication=off,h2=warn,tower=warn,hyper=warn";
pub const ACCESS_TARGET: &str = "raftgate::access";

/// Keeps the access-log writer running; dropping it flushes what is buffered.
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Installs the global subscriber. `level` is a tracing filter (`info`,
/// `debug,openraft=info`); its directives win over the defaults. Access
/// lines go to `access` (None: nowhere), never to the node's own log.
pub fn init(format: LogFormat, level: &str, access: Option<(AccessLogOutput, usize)>) -> Result<LogGuard, String> {
    let filter = EnvFilter::try_new(format!("{DEFAULT_DIRECTIVES},{level},{ACCESS_TARGET}=off"))
        .map_err(|e| format!("config field `log.level`: {e}"))?;
    let node_log = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);
    let (access_layer, guard) = match access {
        None => (None, None),
        Some((output, buffered_lines)) => {
            let builder = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .buffered_lines_limit(buffered_lines)
                .lossy(true);
            let (writer, guard) = match output {
                AccessLogOutput::Stdout => builder.finish(std::io::stdout()),
                AccessLogOutput::Stderr => builder.finish(std::io::stderr()),
                AccessLogOutput::File(path) => {
                    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| {
                        format!("config field `access_log.output`: cannot open {}: {e}", path.display())
                    })?;
                    builder.finish(file)
                }
            };
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_target(false)
                .with_writer(writer)
                .with_filter(Targets::new().with_target(ACCESS_TARGET, Level::INFO));
            (Some(layer), Some(guard))
        }
    };
    tracing_subscriber::registry()
        .with(node_log)
        .with(access_layer)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(LogGuard(guard))
}
