//! A harness that runs real `raftgate` processes on loopback.
//!
//! Tests and the load harness in benches/ use it to start a cluster, kill a
//! node with SIGKILL, restart it from its data dir, and talk to each node over
//! the admin API. Ports are taken from the OS (bind to port 0) so that test
//! runs in parallel do not collide. The binaries are the ones cargo built
//! next to the test executable (`cargo test --workspace` builds them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftgate_proto::admin as pb;
use raftgate_proto::admin::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

/// Path of a binary built by cargo in the same target dir as the running
/// executable, or in `RAFTGATE_TEST_BIN_DIR` when set (a target dir shared
/// by several checkouts overwrites the binaries there).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    if let Some(d) = std::env::var_os("RAFTGATE_TEST_BIN_DIR") {
        dir = PathBuf::from(d);
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` (cargo test --workspace does it)",
        path.display()
    );
    path
}

/// A port nothing listens on, below the kernel's ephemeral range (32768 and
/// up): a port taken from that range could be grabbed by an outgoing
/// connection before the node binds it. Unique within this process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7_919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base.wrapping_add(n) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Addresses of one node.
#[derive(Clone, Debug)]
pub struct NodeAddrs {
    pub id: u64,
    pub region: String,
    pub raft: String,
    pub admin: String,
    pub http: String,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: String,
}

impl NodeAddrs {
    /// `raftgatectl` arguments that add this node as learner `id` (usually
    /// its own id; a test may pass another).
    pub fn add_learner_args<'a>(&'a self, id: &'a str) -> [&'a str; 12] {
        [
            "cluster",
            "add-learner",
            "--id",
            id,
            "--region",
            &self.region,
            "--raft-addr",
            &self.raft,
            "--admin-addr",
            &self.admin,
            "--http-addr",
            &self.http,
        ]
    }

    pub fn new(id: u64) -> Self {
        Self {
            id,
            region: format!("region-{id}"),
            raft: format!("127.0.0.1:{}", free_port()),
            admin: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            metrics: format!("127.0.0.1:{}", free_port()),
        }
    }

    fn member_toml(&self) -> String {
        format!(
            "{{ id = {}, region = \"{}\", raft_addr = \"{}\", admin_addr = \"{}\", http_addr = \"{}\" }}",
            self.id, self.region, self.raft, self.admin, self.http
        )
    }
}

/// One `raftgate serve` process and its files.
pub struct NodeProcess {
    pub addrs: NodeAddrs,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Writes the config for `addrs` under `dir`; `bootstrap` lists the voters
    /// of a new cluster (empty: wait to be added).
    pub fn configure(dir: &Path, addrs: NodeAddrs, bootstrap: &[NodeAddrs], extra_toml: &str) -> Self {
        let data_dir = dir.join(format!("node-{}", addrs.id));
        let members: Vec<String> = bootstrap.iter().map(NodeAddrs::member_toml).collect();
        let config = format!(
            "[node]\nid = {}\nregion = \"{}\"\ndata_dir = \"{}\"\n\n[listen]\nraft = \"{}\"\nadmin = \"{}\"\nhttp = \"{}\"\nmetrics = \"{}\"\n\n[bootstrap]\nmembers = [{}]\n\n[log]\nlevel = \"info,raftgate_cluster=debug\"\n{}",
            addrs.id,
            addrs.region,
            data_dir.display(),
            addrs.raft,
            addrs.admin,
            addrs.http,
            addrs.metrics,
            members.join(", "),
            if extra_toml.contains("[admin]") { extra_toml.to_string() } else { format!("\n[admin]\nauth = \"none\"\n{extra_toml}") }
        );
        let config_path = dir.join(format!("node-{}.toml", addrs.id));
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.join(format!("node-{}.log", addrs.id));
        Self { addrs, config_path, log_path, child: None }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.addrs.id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let child = Command::new(binary("raftgate"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn raftgate");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no flush.
    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `raftgate` processes in a temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProcess>,
}

impl Cluster {
    /// Starts `n` nodes that bootstrap together from a static peer list.
    pub fn start(n: u64) -> Self {
        Self::start_with(n, "")
    }

    pub fn start_with(n: u64, extra_toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let addrs: Vec<NodeAddrs> = (1..=n).map(NodeAddrs::new).collect();
        let mut nodes: Vec<NodeProcess> =
            addrs.iter().map(|a| NodeProcess::configure(dir.path(), a.clone(), &addrs, extra_toml)).collect();
        for node in &mut nodes {
            node.start();
        }
        Self { dir, nodes }
    }

    pub fn node(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes.iter_mut().find(|n| n.addrs.id == id).expect("node id")
    }

    /// Dumps every node's log to stderr (call when a test is about to fail).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!("===== node {} log =====\n{}", n.addrs.id, n.log());
        }
    }
}

impl Drop for Cluster {
    /// A failing test shows what its nodes logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// An admin client for `addr` with a per-call timeout.
pub async fn admin(addr: &str) -> AdminClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    AdminClient::new(channel)
}

/// Polls `f` every 20 ms until it returns `Some` or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader as judged by the cluster status of `addr` (quorum-acked leader).
pub async fn leader_of(addr: &str) -> Option<u64> {
    let mut c = admin(addr).await;
    c.cluster_status(pb::ClusterStatusRequest {}).await.ok()?.into_inner().leader_id
}

/// Waits until some node reports a quorum-acked leader; returns its id.
pub async fn wait_for_leader(addrs: &[String], limit: Duration) -> Option<u64> {
    eventually(limit, || async {
        for a in addrs {
            if let Some(l) = leader_of(a).await {
                return Some(l);
            }
        }
        None
    })
    .await
}

/// This node's applied log index.
pub async fn applied_index(addr: &str) -> Option<u64> {
    let mut c = admin(addr).await;
    c.node_status(pb::NodeStatusRequest {}).await.ok()?.into_inner().applied_index
}

pub async fn put(addr: &str, key: &str, value: &str) -> Result<pb::WriteReply, tonic::Status> {
    let mut c = admin(addr).await;
    let req = pb::PutSettingRequest { key: key.into(), value: value.into(), expected_revision: None };
    c.put_setting(req).await.map(|r| r.into_inner())
}

/// Reads a setting from this node's applied state only.
pub async fn get_local(addr: &str, key: &str) -> Option<String> {
    let mut c = admin(addr).await;
    let req = pb::GetSettingRequest { key: key.into(), consistency: pb::Consistency::Local as i32 };
    c.get_setting(req).await.ok().map(|r| r.into_inner().value)
}

/// Runs `raftgatectl` with `args`; returns (success, stdout, stderr).
pub fn ctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("raftgatectl")).args(args).output().expect("run raftgatectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`ctl`] that must succeed; returns its stdout.
pub fn ctl_ok(args: &[&str]) -> String {
    let (ok, out, err) = ctl(args);
    assert!(ok, "raftgatectl {args:?} failed: {err}");
    out
}

/// True when every data-plane address in `https` answers `path` (host
/// `api.test`) with `want` within 10 s each.
pub async fn status_everywhere(https: &[String], path: &str, headers: &[(&str, &str)], want: u16) -> bool {
    for http in https {
        let got = eventually(Duration::from_secs(10), || async {
            http_get_with(http, path, "api.test", headers).await.filter(|(s, _)| *s == want)
        })
        .await;
        if got.is_none() {
            return false;
        }
    }
    true
}

/// Sends one HTTP/1.1 request on a new connection and returns (status, body).
/// `None` when the connection fails.
pub async fn http_get(addr: &str, path: &str, host: &str) -> Option<(u16, String)> {
    http_get_with(addr, path, host, &[]).await
}

/// [`http_get`] with extra request headers.
pub async fn http_get_with(addr: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")).await
}

/// Sends one GET and returns the whole response as text (head and body).
pub async fn http_get_raw(addr: &str, path: &str, headers: &[(&str, &str)]) -> Option<String> {
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    exchange_text(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n")).await
}

async fn exchange_text(addr: &str, request: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    s.write_all(request.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Writes one HTTP/1.1 request on a new connection, reads to the end; (status, body).
async fn exchange(addr: &str, request: &str) -> Option<(u16, String)> {
    let text = exchange_text(addr, request).await?;
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Sends one `method` request with a JSON body; returns (status, body).
pub async fn http_send_json(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let len = body.len();
    exchange(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}"),
    )
    .await
}

/// A minimal upstream on loopback: answers every request with `name` and
/// the request line it received, then closes the connection.
pub async fn start_upstream(name: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let line = text.lines().next().unwrap_or("");
                let body = format!("{name} {line}");
                let resp =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, task)
}
