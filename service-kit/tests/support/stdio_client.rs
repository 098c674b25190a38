//! A JSON-RPC client of a service binary started with `--stdio`: it writes request and
//! notification lines to the child's stdin and reads its stdout line by line, failing
//! the test on any stdout line that is not one JSON-RPC 2.0 message. Every wait is
//! bounded; the child is killed if the test fails before it exits.
//!
//! Shared by the demo services' stdio tests (each includes it with `#[path]`); not a test
//! target of its own (cargo compiles only the files directly under `tests/`).

#![allow(dead_code)]

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::mpsc,
    task::JoinHandle,
};

/// The longest any single wait (an answer, the exit) may take.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct StdioChild {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Each stdout line, parsed; `Err` names a line that was not a JSON-RPC message.
    lines: mpsc::UnboundedReceiver<Result<Value, String>>,
    stderr: JoinHandle<String>,
    next_id: u64,
    /// Notifications read while waiting for answers, in arrival order.
    pub notifications: Vec<Value>,
}

/// Whether `message` is one JSON-RPC 2.0 request, notification or response.
fn is_json_rpc(message: &Value) -> bool {
    let Some(object) = message.as_object() else {
        return false;
    };
    let version = object.get("jsonrpc") == Some(&json!("2.0"));
    let request = object.get("method").is_some_and(Value::is_string);
    let response =
        object.contains_key("id") && (object.contains_key("result") ^ object.contains_key("error"));
    version && (request || response)
}

impl StdioChild {
    /// Starts `program --stdio` with only the given environment (plus `PATH`), stdin and
    /// stdout piped to the test, stderr collected.
    pub fn start(program: &str, args: &[&str], env: &[(&str, &str)]) -> StdioChild {
        let mut command = Command::new(program);
        command
            .arg("--stdio")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start the service binary");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let parsed = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(is_json_rpc)
                    .ok_or_else(|| format!("not a JSON-RPC message on stdout: {line:?}"));
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        StdioChild {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            next_id: 1,
            notifications: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    async fn write(&mut self, message: Value) {
        let mut line = serde_json::to_vec(&message).expect("JSON");
        line.push(b'\n');
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(&line).await.expect("write to stdin");
        stdin.flush().await.expect("flush stdin");
    }

    /// The next stdout message, within [`WAIT`].
    pub async fn next_message(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.lines.recv()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(bad))) => panic!("{bad}"),
            Ok(None) => panic!("stdout closed while a message was expected"),
            Err(_) => panic!("no message on stdout within {WAIT:?}"),
        }
    }

    /// Sends a request and returns its whole response (`result` or `error`); the
    /// notifications that come before it are kept in [`Self::notifications`].
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.write(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        loop {
            let message = self.next_message().await;
            if message.get("id") == Some(&json!(id)) && message.get("method").is_none() {
                return message;
            }
            assert!(
                message.get("id").is_none(),
                "an answer to another request or a request from the server: {message}"
            );
            self.notifications.push(message);
        }
    }

    /// The `result` of a request that must succeed.
    pub async fn result(&mut self, method: &str, params: Value) -> Value {
        let response = self.request(method, params).await;
        assert!(response.get("error").is_none(), "{method}: {response}");
        response["result"].clone()
    }

    /// The `error` of a request that must fail.
    pub async fn error(&mut self, method: &str, params: Value) -> Value {
        let response = self.request(method, params).await;
        response
            .get("error")
            .cloned()
            .unwrap_or_else(|| panic!("{method} should have failed: {response}"))
    }

    pub async fn notify(&mut self, method: &str) {
        self.write(json!({"jsonrpc": "2.0", "method": method}))
            .await;
    }

    /// `initialize` (at 2025-11-25) and `notifications/initialized`; the initialize
    /// result.
    pub async fn initialize(&mut self) -> Value {
        let result = self
            .result(
                "initialize",
                json!({
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "stdio-test", "version": "1"},
                }),
            )
            .await;
        self.notify("notifications/initialized").await;
        result
    }

    /// `tools/call`'s result.
    pub async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.result("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }

    /// Closes stdin and waits (bounded) for the process to exit by itself: its exit
    /// status, anything left on stdout (which must be JSON-RPC too) and its stderr.
    pub async fn close_and_wait(mut self) -> (std::process::ExitStatus, Vec<Value>, String) {
        drop(self.stdin.take());
        self.wait().await
    }

    /// Waits (bounded) for the process to exit without closing stdin.
    pub async fn wait(mut self) -> (std::process::ExitStatus, Vec<Value>, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the process exits within the bound")
            .expect("wait for the process");
        let mut rest = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.lines.recv()).await {
            rest.push(line.unwrap_or_else(|bad| panic!("{bad}")));
        }
        let stderr = tokio::time::timeout(WAIT, self.stderr)
            .await
            .expect("stderr closes")
            .expect("stderr reader");
        (status, rest, stderr)
    }
}

/// Sends SIGTERM to `pid` (with the system's `kill`).
pub fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
}

/// The TCP sockets (IPv4 or IPv6, listening or connected) the process `pid` holds open
/// (Linux: its `/proc/PID/fd` socket links matched against `/proc/PID/net/tcp*`; the
/// Unix socket pair of tokio's signal handling is not counted).
pub fn open_tcp_sockets(pid: u32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_string())
        })
        .collect();
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().nth(9).map(str::to_string))
                .collect::<Vec<_>>()
        })
        .filter(|inode| inodes.contains(inode))
        .count()
}
