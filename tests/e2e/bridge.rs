//! `gateway stdio`: the real binary as a desktop client's stdio MCP server, relaying to an
//! in-process gateway; the test speaks raw JSON-RPC lines on its stdin and stdout.

use std::{process::Stdio, sync::atomic::Ordering, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::support::{fixture::Fixture, *};

const DESKTOP_CONFIG: &str = include_str!("../../docs/desktop-config.json");
const WAIT: Duration = Duration::from_secs(15);

/// A `gateway stdio` child, spoken to in JSON-RPC lines.
struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Bridge {
    /// `gateway` with exactly `args` and `envs` (nothing inherited of the gateway's own
    /// variables).
    fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(procs::binary("gateway"));
        cmd.args(args)
            .env_remove("MCP_BEARER_TOKEN")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        procs::without_gateway_settings(cmd.as_std_mut());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start gateway stdio");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// `gateway stdio --url URL` with `token` in MCP_BEARER_TOKEN.
    fn to(url: &str, token: &str) -> Self {
        Self::spawn(&["stdio", "--url", url], &[("MCP_BEARER_TOKEN", token)])
    }

    async fn send(&mut self, message: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut line = message.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).await.expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }

    /// The next line of stdout, which must be one JSON-RPC message.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("a line on stdout in time")
            .expect("read stdout")
            .expect("stdout open");
        json_rpc(&line)
    }

    /// Reads until the response to `id`, answering nothing; returns it and what came
    /// before it.
    async fn response(&mut self, id: Value) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let message = self.next().await;
            if message["id"] == id && message.get("method").is_none() {
                return (message, before);
            }
            before.push(message);
        }
    }

    async fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.response(json!(id)).await.0
    }

    async fn initialize(&mut self, capabilities: Value) -> Value {
        let answer = self
            .request(
                1,
                "initialize",
                json!({
                    "protocolVersion": "2025-11-25",
                    "capabilities": capabilities,
                    "clientInfo": {"name": "desktop-test", "version": "1.0.0"}
                }),
            )
            .await;
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        answer
    }

    /// Closes stdin; the exit code, and every line written after that (each checked).
    async fn close(mut self) -> (i32, Vec<Value>) {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        let drained = async {
            while let Some(line) = self.stdout.next_line().await.expect("read stdout") {
                rest.push(json_rpc(&line));
            }
        };
        tokio::time::timeout(WAIT, drained)
            .await
            .expect("stdout closed after stdin closed");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("gateway stdio exited after stdin closed")
            .expect("wait");
        (status.code().unwrap_or(-1), rest)
    }
}

/// `line` as a JSON-RPC 2.0 message (a request, notification or response); panics on
/// anything else.
fn json_rpc(line: &str) -> Value {
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stdout carried a line that is not JSON ({e}): {line:?}"));
    assert_eq!(v["jsonrpc"], "2.0", "not JSON-RPC: {line}");
    let request = v["method"].is_string();
    let response = v.get("id").is_some() && (v.get("result").is_some() ^ v.get("error").is_some());
    assert!(request || response, "neither request nor response: {line}");
    v
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {list}"))
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_client_reaches_the_federation_through_gateway_stdio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let fixture = Fixture::new("desk", &["echoDesk", "rootsDesk", "hangDesk"]);
    let backend = serve_fixture(fixture.clone()).await;
    let (status, body) = register(&gw, "desk", &backend.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    wait_for_services(&gw, &["desk"]).await;

    // The base URL: the bridge appends /mcp.
    let mut bridge = Bridge::to(&gw.base(), TOKEN);
    let init = bridge
        .initialize(json!({"roots": {"listChanged": false}}))
        .await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );

    let list = bridge.request(2, "tools/list", json!({})).await;
    let names = tool_names(&list);
    for t in ["echoDesk", "rootsDesk", "hangDesk"] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }

    let call = bridge
        .request(
            3,
            "tools/call",
            json!({"name": "echoDesk", "arguments": {"id": "p-42"}}),
        )
        .await;
    assert_eq!(
        call["result"]["structuredContent"]["arguments"]["id"], "p-42",
        "{call}"
    );
    assert_eq!(
        call["result"]["structuredContent"]["server"], "desk",
        "{call}"
    );

    // A server-to-client request: the backend asks for the roots during the call; the
    // question arrives on stdout, the answer goes back on stdin.
    let root = "file:///home/desk/project";
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                     "params": {"name": "rootsDesk", "arguments": {}}}))
        .await;
    let question = loop {
        let m = bridge.next().await;
        if m["method"] == "roots/list" {
            break m;
        }
        assert_ne!(m["id"], 4, "the call ended before asking: {m}");
    };
    assert!(question.get("id").is_some(), "a request: {question}");
    bridge
        .send(json!({"jsonrpc": "2.0", "id": question["id"],
                     "result": {"roots": [{"uri": root, "name": "project"}]}}))
        .await;
    let (answer, _) = bridge.response(json!(4)).await;
    assert_eq!(
        answer["result"]["structuredContent"]["roots"],
        json!([root]),
        "{answer}"
    );
    assert_eq!(
        fixture.roots.lock().expect("lock").clone(),
        vec![vec![root.to_string()]]
    );

    // A notification: the client's cancellation reaches the backend.
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                     "params": {"name": "hangDesk", "arguments": {}}}))
        .await;
    wait_until("the hanging call to arrive", WAIT, || async {
        fixture.calls.load(Ordering::SeqCst) >= 3
    })
    .await;
    bridge
        .send(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": 5, "reason": "the user gave up"}}),
        )
        .await;
    wait_until("the backend to see the cancellation", WAIT, || async {
        fixture.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;

    // The gateway's own messages outside any call (the GET stream): a new service's
    // tools are announced.
    let other = start_fixture("desk2", &["laterTool"]).await;
    let (status, body) = register(&gw, "desk2", &other.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    let changed = loop {
        let m = bridge.next().await;
        if m["method"] == "notifications/tools/list_changed" {
            break m;
        }
    };
    assert!(changed.get("id").is_none(), "a notification: {changed}");
    let list = bridge.request(6, "tools/list", json!({})).await;
    assert!(tool_names(&list).iter().any(|n| n == "laterTool"), "{list}");

    let (code, rest) = bridge.close().await;
    assert_eq!(code, 0, "exit status after stdin closed");
    // A cancelled request gets no error of the bridge's making.
    assert!(
        rest.iter().all(|m| m["id"] != 5
            || m.get("error").is_none()
            || !m["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("closed the stream")),
        "{rest:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_or_an_unreachable_gateway_is_a_clear_json_rpc_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;

    let mut bridge = Bridge::to(&gw.mcp_url(), "not-the-token-0123456789");
    let init = bridge
        .request(
            1,
            "initialize",
            json!({
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "desktop-test", "version": "1.0.0"}
            }),
        )
        .await;
    let message = init["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refused the token") && message.contains("MCP_BEARER_TOKEN"),
        "{init}"
    );
    assert_eq!(init["error"]["data"]["httpStatus"], 401, "{init}");
    let list = bridge.request(2, "tools/list", json!({})).await;
    assert!(
        list["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("refused the token"),
        "{list}"
    );
    let (code, _) = bridge.close().await;
    assert_eq!(code, 0);

    let port = procs::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut bridge = Bridge::to(&url, TOKEN);
    let list = bridge.request(7, "tools/list", json!({})).await;
    let message = list["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("cannot reach the gateway at {url}/mcp")),
        "{list}"
    );
    assert_eq!(list["error"]["code"], gateway::vocab::UPSTREAM_UNAVAILABLE);
    let (code, _) = bridge.close().await;
    assert_eq!(code, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_desktop_config_starts_a_working_bridge() {
    let config: Value =
        serde_json::from_str(DESKTOP_CONFIG).expect("docs/desktop-config.json is JSON");
    let servers = config["mcpServers"]
        .as_object()
        .expect("an mcpServers object");
    assert!(!servers.is_empty(), "at least one entry");

    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let backend = start_fixture("cfg", &["cfgTool"]).await;
    let (status, body) = register(&gw, "cfg", &backend.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    wait_for_services(&gw, &["cfg"]).await;

    for (name, entry) in servers {
        let command = entry["command"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: a string command"));
        assert!(
            command.starts_with('/') && command.ends_with("/gateway"),
            "{name}: an absolute path to the gateway binary: {command}"
        );
        let args: Vec<&str> = entry["args"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: an args array"))
            .iter()
            .map(|a| a.as_str().unwrap_or_else(|| panic!("{name}: string args")))
            .collect();
        let env = entry["env"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: an env object"));
        let mut envs: Vec<(&str, &str)> = env
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    v.as_str().unwrap_or_else(|| panic!("{name}: string env")),
                )
            })
            .collect();
        assert!(
            env.contains_key("MCP_BEARER_TOKEN") && env.contains_key("GATEWAY_URL"),
            "{name}"
        );
        // The entry as written, pointed at this gateway (its token is the test token).
        let base = gw.base();
        for (k, v) in envs.iter_mut() {
            if *k == "GATEWAY_URL" {
                *v = &base;
            }
        }
        let mut bridge = Bridge::spawn(&args, &envs);
        let init = bridge.initialize(json!({})).await;
        assert!(init["result"]["serverInfo"].is_object(), "{name}: {init}");
        let list = bridge.request(2, "tools/list", json!({})).await;
        assert!(
            tool_names(&list).iter().any(|n| n == "cfgTool"),
            "{name}: {list}"
        );
        let (code, _) = bridge.close().await;
        assert_eq!(code, 0, "{name}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_gateway_expired_is_opened_again_unnoticed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.session_idle_timeout_ms = 400;
    let gw = start_gateway(config).await;
    let backend = start_fixture("idle", &["idleTool"]).await;
    let (status, body) = register(&gw, "idle", &backend.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    wait_for_services(&gw, &["idle"]).await;

    let mut bridge = Bridge::to(&gw.base(), TOKEN);
    let init = bridge.initialize(json!({})).await;
    assert!(init["result"].is_object(), "{init}");
    let first = bridge.request(2, "tools/list", json!({})).await;
    assert!(
        tool_names(&first).iter().any(|n| n == "idleTool"),
        "{first}"
    );
    // Idle past the gateway's limit: the session is closed behind the bridge's back.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let call = bridge
        .request(
            3,
            "tools/call",
            json!({"name": "idleTool", "arguments": {"id": "again"}}),
        )
        .await;
    assert_eq!(
        call["result"]["structuredContent"]["arguments"]["id"], "again",
        "{call}"
    );
    let (code, _) = bridge.close().await;
    assert_eq!(code, 0);
    gw.stop().await;
}

/// The review's finding: with every request slot taken by calls that wait, the bridge
/// stopped reading stdin, so the client's cancellation (or its answer to a question)
/// never got through. Now requests wait for a slot off the stdin loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_request_slot_busy_a_cancellation_still_gets_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    // No call times out during the test: only the client's cancellation can end one.
    config.call_timeout_ms = 120_000;
    let gw = start_gateway(config).await;
    let fixture = Fixture::new("busy", &["hangBusy"]);
    let backend = serve_fixture(fixture.clone()).await;
    let (status, body) = register(&gw, "busy", &backend.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    wait_for_services(&gw, &["busy"]).await;

    let mut bridge = Bridge::to(&gw.base(), TOKEN);
    bridge.initialize(json!({})).await;
    // More hanging calls than the bridge sends at once: the last ones wait for a slot.
    let n = gateway::bridge::MAX_IN_FLIGHT as i64 + 6;
    for id in 100..100 + n {
        bridge
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                         "params": {"name": "hangBusy", "arguments": {}}}))
            .await;
    }
    wait_until("every slot busy at the backend", WAIT, || {
        let calls = fixture.calls.clone();
        async move { calls.load(Ordering::SeqCst) >= gateway::bridge::MAX_IN_FLIGHT }
    })
    .await;
    // A cancellation of one that is in flight reaches the backend.
    bridge
        .send(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": 100, "reason": "the user gave up"}}),
        )
        .await;
    wait_until("the cancellation to reach the backend", WAIT, || {
        let cancelled = fixture.cancelled.clone();
        async move { cancelled.load(Ordering::SeqCst) >= 1 }
    })
    .await;
    bridge.close().await;
    backend.stop().await;
    gw.stop().await;
}
