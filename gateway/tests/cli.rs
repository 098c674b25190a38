//! The `gateway` binary itself: `--help`, and a bad configuration value stopping
//! start-up with one line that names the key.

use std::process::Command;

fn gateway() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gateway"));
    c.env_remove("MCP_BEARER_TOKEN");
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEWAY_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn help_describes_the_gateway_and_its_environment() {
    let out = gateway()
        .arg("--help")
        .output()
        .expect("run gateway --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "/mcp",
        "/register",
        "MCP_BEARER_TOKEN",
        "GATEWAY_LISTEN",
        "--config",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
}

#[test]
fn a_bad_value_stops_start_up_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = gateway()
        .env("GATEWAY_CALL_TIMEOUT_MS", "soon")
        .arg("--store")
        .arg(dir.path().join("gw.db"))
        .output()
        .expect("run gateway");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("call_timeout_ms"), "{err}");

    let out = gateway()
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("run gateway");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn a_taken_port_is_reported_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = gateway()
        .args(["--listen", &addr, "--store"])
        .arg(dir.path().join("gw.db"))
        .output()
        .expect("run gateway");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
}
