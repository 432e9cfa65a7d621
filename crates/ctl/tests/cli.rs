//! `raftgatectl` against endpoints that cannot answer: the error names the
//! endpoint and what failed, and the exit code is non-zero.

use std::process::Command;

fn ctl(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftgatectl")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_unreachable_endpoint_is_named_and_exits_non_zero() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ep = format!("127.0.0.1:{port}");
    let (code, err) = ctl(&["--endpoint", &ep, "cluster", "status"]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("http://{ep}")) && err.contains("unreachable"), "{err}");
}

#[test]
fn an_invalid_endpoint_is_explained() {
    let (code, err) = ctl(&["--endpoint", "http://bad host:1", "node", "status"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid endpoint"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, err) = ctl(&["cluster", "promote", "not-a-number"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid value"), "{err}");
}
