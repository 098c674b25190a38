//! The documentation's configuration examples, run: the README's `gateway.toml` and the
//! compose file's environment start the real binaries and do what the text says.

use serde_json::{Value, json};

use crate::support::{fixture::Fixture, procs, *};

const README: &str = include_str!("../../README.md");
const COMPOSE: &str = include_str!("../../docker-compose.yml");

/// The README's `gateway.toml` example, as written.
fn readme_gateway_toml() -> String {
    let start = README
        .find("```toml\n# gateway.toml")
        .expect("the README has a gateway.toml example");
    let body = &README[start + "```toml\n".len()..];
    body[..body.find("```").expect("closed")].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_gateway_toml_runs_as_described() {
    let example = readme_gateway_toml();
    // The example names the credential the gateway presents to shopping-service: the
    // two instances here require exactly it.
    let upstream_token = example
        .split("auth = { bearer = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an upstream credential in the example")
        .to_string();
    let bearer = format!("Bearer {upstream_token}");
    let one = serve_fixture(
        Fixture::new("shop-a", &["getProductById"]).requiring("authorization", &bearer),
    )
    .await;
    let two = serve_fixture(
        Fixture::new("shop-b", &["getProductById"]).requiring("authorization", &bearer),
    )
    .await;
    let port = procs::free_port();
    // Only the addresses change: this machine's free ports stand for the example's.
    let config = example
        .replace("127.0.0.1:3002", &one.addr.to_string())
        .replace("127.0.0.1:3012", &two.addr.to_string())
        .replace("0.0.0.0:3001", &format!("0.0.0.0:{port}"));
    assert_ne!(config, example, "the example's addresses were found");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, &config).expect("write config");
    let secret = "a-secret-of-the-operators-own";
    let gw = procs::gateway_args(
        port,
        &[
            "--config".into(),
            file.display().to_string(),
            "--store".into(),
            dir.path().join("gw.db").display().to_string(),
        ],
        &[("MCP_BEARER_TOKEN", secret.to_string())],
    )
    .await;
    // Both instances connect (the networks allow them, the credential is presented).
    wait_until(
        "both instances healthy",
        std::time::Duration::from_secs(20),
        || async {
            let s: Value = http()
                .get(format!("{}/services/shopping-service", gw.base()))
                .bearer_auth(secret)
                .send()
                .await
                .expect("services")
                .json()
                .await
                .unwrap_or_default();
            s["state"] == "healthy" && s["instances"].as_array().map(Vec::len) == Some(2)
        },
    )
    .await;
    // The agents' credential lists and calls, and may not register.
    let agents = "a-long-random-token-for-agents";
    let reply: Value = http()
        .post(gw.mcp())
        .bearer_auth(agents)
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"getProductById","arguments":{"id":"123"}}}))
        .send()
        .await
        .expect("call")
        .json()
        .await
        .expect("JSON");
    assert!(
        reply["result"]["structuredContent"]["server"].is_string(),
        "{reply}"
    );
    let r = http()
        .post(format!("{}/register", gw.base()))
        .bearer_auth(agents)
        .json(&json!({"name": "x", "url": "http://127.0.0.1:9/mcp"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status().as_u16(), 403);
    // The default token does not open it; the name in allowed_hosts does reach it.
    let r = http()
        .get(format!("{}/services", gw.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("services");
    assert_eq!(r.status().as_u16(), 401);
    let r = http()
        .get(format!("{}/health", gw.base()))
        .header("host", "gateway.internal")
        .send()
        .await
        .expect("health");
    assert_eq!(r.status().as_u16(), 200);
    drop(gw);
    one.stop().await;
    two.stop().await;
}

/// `${VAR:-default}` as compose reads it, with nothing set.
fn compose_value(raw: &str) -> String {
    let mut out = raw.to_string();
    while let Some(start) = out.find("${") {
        let Some(end) = out[start..].find('}').map(|e| start + e) else {
            break;
        };
        let inner = &out[start + 2..end];
        let default = inner.split_once(":-").map(|(_, d)| d).unwrap_or("");
        out = format!("{}{}{}", &out[..start], default, &out[end + 1..]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_gateway_environment_starts_a_gateway() {
    let compose: Value = serde_norway::from_str(COMPOSE).expect("compose parses");
    let environment = compose["services"]["gateway"]["environment"]
        .as_object()
        .expect("gateway environment")
        .clone();
    let port = procs::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut envs: Vec<(&str, String)> = Vec::new();
    for (key, value) in &environment {
        let value = compose_value(value.as_str().expect("string"));
        let value = match key.as_str() {
            // The container's listen address, on a free port of this machine.
            "GATEWAY_LISTEN" => value.replace(":3001", &format!(":{port}")),
            "GATEWAY_STORE" => dir.path().join("gw.db").display().to_string(),
            _ => value,
        };
        envs.push((key.as_str(), value));
    }
    // Every variable is one the gateway knows (an unknown one would stop it), and the
    // default token on 0.0.0.0 is accepted only because the file says it knows.
    let gw = procs::gateway_args(port, &[], &envs).await;
    let r = http()
        .get(format!("{}/services", gw.base()))
        .bearer_auth("mcp-token-123")
        .send()
        .await
        .expect("services");
    assert_eq!(r.status().as_u16(), 200);
    drop(gw);
}

/// The gateway binary run with `args` and `envs` until it exits (it must, within 20 s):
/// its exit code and what it wrote to stderr.
fn run_gateway_until_exit(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(procs::binary("gateway"));
    cmd.args(args)
        .env_remove("MCP_BEARER_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    procs::without_gateway_settings(&mut cmd);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start gateway");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the gateway should have stopped at once")
        .expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn misspelled_settings_and_a_second_token_variable_stop_start_up_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db").display().to_string();
    let (code, err) = run_gateway_until_exit(
        &["--store", &store, "--listen", "127.0.0.1:0"],
        &[("GATEWAY_CALL_TIMOUT_MS", "5")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("GATEWAY_CALL_TIMOUT_MS"), "{err}");
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nallowed_host = [\"x\"]\n").expect("write");
    let (code, err) = run_gateway_until_exit(
        &["--config", &file.display().to_string(), "--store", &store],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("allowed_host"), "{err}");
    let (code, err) = run_gateway_until_exit(
        &["--store", &store, "--listen", "127.0.0.1:0"],
        &[("GATEWAY_TOKEN", "another-token")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("MCP_BEARER_TOKEN"), "{err}");
    // The well-known token beyond loopback.
    let (code, err) = run_gateway_until_exit(&["--store", &store, "--listen", "0.0.0.0:0"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("well-known default"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_flag_sets_the_servers_token() {
    let port = procs::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = procs::gateway_args(
        port,
        &[
            "--token".into(),
            "flag-token-0123456789".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--store".into(),
            dir.path().join("gw.db").display().to_string(),
        ],
        &[],
    )
    .await;
    let status = |token: &'static str| {
        let url = format!("{}/services", gw.base());
        async move {
            http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("services")
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("flag-token-0123456789").await, 200);
    // MCP_BEARER_TOKEN (the test's) and the default lose to the flag.
    assert_eq!(status("mcp-token-123").await, 401);
    drop(gw);
}

/// The configuration wins over the store: a stored registration of a name the
/// configuration defines is left aside, and the name cannot be registered or removed at
/// run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_upstreams_win_over_stored_registrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db");
    let stored = start_fixture("stored", &["a"]).await;
    let configured = start_fixture("configured", &["a"]).await;
    let gw = start_gateway(gateway_config(&store)).await;
    assert_eq!(register(&gw, "svc", &stored.mcp_url()).await.0, 201);
    gw.stop().await;
    let mut config = gateway_config(&store);
    config.upstreams = vec![gateway::config::UpstreamSpec {
        name: "svc".into(),
        url: configured.mcp_url(),
        ..Default::default()
    }];
    let gw = start_gateway(config).await;
    wait_for_services(&gw, &["svc"]).await;
    let s = services(&gw).await;
    let svc = &s["services"][0];
    assert_eq!(svc["instances"].as_array().map(Vec::len), Some(1), "{svc}");
    assert_eq!(svc["instances"][0]["url"], configured.mcp_url(), "{svc}");
    assert_eq!(svc["instances"][0]["source"], "config", "{svc}");
    let reply = call(&gw, "a", json!({})).await;
    assert_eq!(
        reply["result"]["structuredContent"]["server"], "configured",
        "{reply}"
    );
    let (status, body) = register(&gw, "svc", &stored.mcp_url()).await;
    assert_eq!(status, 409, "{body}");
    let r = http()
        .delete(format!("{}/services/svc", gw.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 409);
    gw.stop().await;
    stored.stop().await;
    configured.stop().await;
}

/// Every refusal on `/mcp` is JSON-RPC; every framework refusal on the admin routes is
/// `{"error","message"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_json_on_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.max_body_bytes = 2048;
    let gw = start_gateway(config).await;
    let up = start_fixture("fx", &["echo"]).await;
    assert_eq!(register(&gw, "fx", &up.mcp_url()).await.0, 201);
    let client = mcp_client(&gw).await;
    drop(client);
    // A session, opened by hand.
    let r = http()
        .post(gw.mcp_url())
        .bearer_auth(TOKEN)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}))
        .send()
        .await
        .expect("initialize");
    let session = r.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let _ = r.text().await;
    let post = |body: &'static str, content_type: &'static str, accept: Option<&'static str>| {
        let mut rb = http()
            .post(gw.mcp_url())
            .bearer_auth(TOKEN)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .header("content-type", content_type)
            .body(body);
        if let Some(a) = accept {
            rb = rb.header("accept", a);
        }
        async move {
            let r = rb.send().await.expect("post");
            let status = r.status().as_u16();
            let kind = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (status, kind, r.text().await.expect("text"))
        }
    };
    let both = Some("application/json, text/event-stream");
    // Malformed JSON in a session: 400 with -32700.
    let (status, _, text) = post("{not json", "application/json", both).await;
    assert_eq!(status, 400, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["error"]["code"], -32700, "{text}");
    // curl -d's content type: the JSON body is taken for what it is.
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let (status, _, text) = post(initialized, "application/x-www-form-urlencoded", both).await;
    assert_eq!(status, 202, "{text}");
    let call =
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    let (status, _, text) = post(call, "application/x-www-form-urlencoded", both).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"result\""), "{text}");
    // What rmcp refuses (no Accept it can serve) comes back as JSON-RPC too.
    let (status, kind, text) = post(call, "application/json", Some("text/html")).await;
    assert!(status >= 400, "{status} {text}");
    assert!(kind.starts_with("application/json"), "{kind}: {text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert!(body["error"]["message"].is_string(), "{text}");
    // Admin routes: a wrong method, a body over the limit.
    let r = http()
        .put(format!("{}/register", gw.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 405);
    let body: Value = r.json().await.expect("JSON 405");
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    let r = http()
        .post(format!("{}/register", gw.base()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("x".repeat(4096))
        .send()
        .await
        .expect("big");
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.expect("JSON 413");
    assert_eq!(body["error"], "body_too_large", "{body}");
    up.stop().await;
    gw.stop().await;
}
