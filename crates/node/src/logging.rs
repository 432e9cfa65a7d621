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
                AccessLogOutput::Rolling { path, hourly, retain_files } => {
                    builder.finish(rolling(&path, hourly, retain_files)?)
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

/// A rolling file writer for `path` (`dir/stem.ext` becomes
/// `dir/stem.<date>.ext`), keeping at most `retain_files` files matching
/// `stem.*.ext` (0: all); tracing-appender prunes at start and at each
/// rollover, oldest first.
fn rolling(
    path: &std::path::Path,
    hourly: bool,
    retain_files: usize,
) -> Result<tracing_appender::rolling::RollingFileAppender, String> {
    use tracing_appender::rolling::{RollingFileAppender, Rotation};
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let stem =
        path.file_stem().and_then(|s| s.to_str()).ok_or("config field `access_log.output`: not a UTF-8 file name")?;
    let mut builder = RollingFileAppender::builder()
        .rotation(if hourly { Rotation::HOURLY } else { Rotation::DAILY })
        .filename_prefix(stem);
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        builder = builder.filename_suffix(ext);
    }
    if retain_files > 0 {
        builder = builder.max_log_files(retain_files);
    }
    builder
        .build(dir)
        .map_err(|e| format!("config field `access_log.output`: cannot open a rolling log in {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access_files(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("access.") && n.ends_with(".log"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_rolling_access_log_keeps_only_the_retained_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        for day in 1..=5 {
            std::fs::write(dir.path().join(format!("access.2020-01-0{day}.log")), "{}\n").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::write(dir.path().join("other.log"), "kept").unwrap();
        let _writer = rolling(&dir.path().join("access.log"), false, 3).unwrap();
        let left = access_files(dir.path());
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(!left.contains(&"access.2020-01-01.log".to_string()), "the oldest goes first: {left:?}");
        assert!(dir.path().join("other.log").exists(), "files of another name are never touched");
    }

    #[test]
    fn without_retention_every_rolled_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        for day in 1..=5 {
            std::fs::write(dir.path().join(format!("access.2020-01-0{day}.log")), "{}\n").unwrap();
        }
        let _writer = rolling(&dir.path().join("access.log"), true, 0).unwrap();
        assert_eq!(access_files(dir.path()).len(), 6);
    }
}
