//! The `raftgate` binary at its edges: bad configuration, busy ports, a bad
//! data dir, and a graceful stop on SIGTERM. Each failure names the problem,
//! exits non-zero and writes nothing.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn raftgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raftgate"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(data_dir: &Path, raft: u16, admin: u16, http: u16) -> String {
    format!(
        "[node]\nid = 1\nregion = \"local\"\ndata_dir = \"{}\"\n[listen]\nraft = \"127.0.0.1:{raft}\"\nadmin = \"127.0.0.1:{admin}\"\nhttp = \"127.0.0.1:{http}\"\n[bootstrap]\nmembers = [{{ id = 1, region = \"local\", raft_addr = \"127.0.0.1:{raft}\", admin_addr = \"127.0.0.1:{admin}\", http_addr = \"127.0.0.1:{http}\" }}]\n[admin]\nauth = \"none\"\n",
        data_dir.display()
    )
}

fn serve(config_text: &str, dir: &Path) -> Output {
    let path = dir.join("node.toml");
    std::fs::write(&path, config_text).unwrap();
    let mut child = raftgate()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("raftgate did not exit on a bad start");
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn malformed_config_exits_2_naming_the_problem_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cases = [
        ("[node\nid = 1\n".to_string(), "line 1"),
        (config(&data, 1, 2, 3).replace("region = \"local\"\ndata_dir", "regoin = \"x\"\ndata_dir"), "unknown field `regoin`"),
        (config(&data, 1, 2, 3).replace("[listen]", "[raft]\nheartbeat_interval_ms = 5\n[listen]"), "`raft.heartbeat_interval_ms`"),
        (config(&data, 1, 2, 3).replace("members = [{ id = 1,", "members = [{ id = 1, region = \"local\", raft_addr = \"127.0.0.1:9\", admin_addr = \"127.0.0.1:8\", http_addr = \"127.0.0.1:7\" }, { id = 1,"), "already listed"),
        (config(&data, 1, 2, 3).replace("id = 1\nregion", "id = 0\nregion"), "`node.id`"),
    ];
    for (text, expected) in cases {
        let out = serve(&text, dir.path());
        assert_eq!(out.status.code(), Some(2), "{expected}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "expected {expected:?} in: {}", stderr(&out));
        assert!(!data.exists(), "a refused config must not create the data dir");
    }
}

#[test]
#[cfg(not(feature = "otlp"))]
fn an_otlp_endpoint_without_the_otlp_feature_exits_2_asking_for_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = format!("{}[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n", config(&data, 1, 2, 3));
    let out = serve(&text, dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`tracing.otlp_endpoint`: built without the otlp feature; rebuild with --features otlp"),
        "{err}"
    );
    assert!(!data.exists());
}

#[test]
fn a_busy_port_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let data = dir.path().join("data");
    let out = serve(&config(&data, free_port(), busy_port, free_port()), dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{busy_port} (`listen.admin`)")), "{err}");
    assert!(!data.exists());
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, b"not a directory").unwrap();
    let out = serve(&config(&data, free_port(), free_port(), free_port()), dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot create data dir"), "{}", stderr(&out));
}

/// Starts a node, waits for its admin port, returns the child.
fn start_node(text: &str, dir: &Path, admin: u16) -> std::process::Child {
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let child = raftgate()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
        assert!(Instant::now() < deadline, "node did not open its admin port");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn sigterm_and_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_stops_cleanly_and_a_second_node_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = free_port();
    let text = config(&data, free_port(), admin, free_port());
    let mut child = start_node(&text, dir.path(), admin);

    // Same data dir, other ports: the store lock refuses it.
    let other = tempfile::tempdir().unwrap();
    let out = serve(&config(&data, free_port(), free_port(), free_port()), other.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("another process holds the data dir lock"), "{}", stderr(&out));

    let status = sigterm_and_wait(&mut child);
    assert!(status.success(), "exit status {status:?}");
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    assert!(log.contains("stopped; storage flushed"), "{log}");
    assert!(data.join("seal.json").exists(), "a clean stop writes the seal");
}

#[test]
fn a_damaged_data_dir_is_refused_on_every_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = free_port();
    let text = config(&data, free_port(), admin, free_port());
    let mut child = start_node(&text, dir.path(), admin);
    std::thread::sleep(Duration::from_millis(500));
    assert!(sigterm_and_wait(&mut child).success());

    // Replace the store's file with garbage: sled alone would reopen it empty
    // and the bootstrap list would found a second cluster.
    let db = data.join("raft").join("db");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0x5a; len]).unwrap();
    let seal_before = std::fs::read(data.join("seal.json")).unwrap();
    for attempt in 0..2 {
        let out = serve(&text, dir.path());
        assert_eq!(out.status.code(), Some(1), "attempt {attempt}");
        let err = stderr(&out);
        assert!(err.contains("is damaged") && err.contains("restore the data dir"), "attempt {attempt}: {err}");
        // sled's own recovery may rewrite its file on open; the seal is what
        // keeps the node refusing, and a refused start leaves it untouched.
        assert!(std::fs::read(data.join("seal.json")).unwrap() == seal_before, "the seal changed");
    }
}
