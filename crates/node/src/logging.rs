//! Structured logs through `tracing`, human-readable or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Targets quieted by default. openraft's replication logs an unreachable peer
/// at ERROR on every retry; `raftgatectl cluster status` shows reachability instead.
const DEFAULT_DIRECTIVES: &str = "openraft=warn,openraft::replication=off,h2=warn,tower=warn,hyper=warn";

/// Installs the global subscriber. `level` is a tracing filter (`info`,
/// `debug,openraft=info`); its directives win over the defaults.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(format!("{DEFAULT_DIRECTIVES},{level}"))
        .map_err(|e| format!("config field `log.level`: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))
}
