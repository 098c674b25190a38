//! The curl commands of the original design ("How to Test"), run with the real `curl`
//! exactly as written there; only the host ports are the test's ephemeral ones, and
//! `-sS -w '\n%{http_code}'` is appended so the test can read the status.

use serde_json::Value;

use crate::support::*;

const NO_TOKEN: &str = r#"curl -X POST http://localhost:3001/mcp \
  -H "Content-Type: application/json" \
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'"#;

const LIST: &str = r#"curl -X POST http://localhost:3001/mcp \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer mcp-token-123" \
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'"#;

const CALL_PRODUCT: &str = r#"curl -X POST http://localhost:3001/mcp \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer mcp-token-123" \
  -d '{
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
      "name": "getProductById",
      "arguments": {"id": "123"}
    }
  }'"#;

const CALL_USER: &str = r#"curl -X POST http://localhost:3001/mcp \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer mcp-token-123" \
  -d '{
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
      "name": "getUserById",
      "arguments": {"id": "456"}
    }
  }'"#;

const REGISTER: &str = r#"curl -X POST http://localhost:3001/register \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer mcp-token-123" \
  -d '{
    "name": "custom-service",
    "url": "http://custom-service:3000"
  }'"#;

const SERVICES: &str = r#"curl -X POST http://localhost:3001/services \
  -H "Authorization: Bearer mcp-token-123""#;

/// Runs one seed command against the stack: (status, body as JSON).
async fn curl(command: &str, stack: &Stack) -> (u16, Value) {
    let command = command
        .replace(
            "localhost:3001",
            &format!("localhost:{}", stack.gateway.addr.port()),
        )
        .replace(
            "localhost:3002",
            &format!("localhost:{}", stack.shopping.addr.port()),
        )
        .replace(
            "localhost:3003",
            &format!("localhost:{}", stack.user.addr.port()),
        );
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{command} -sS -w '\\n%{{http_code}}'"))
        .output()
        .await
        .expect("run curl (is curl installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{command}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, status) = stdout.rsplit_once('\n').expect("status line");
    let status = status.trim().parse().expect("status code");
    let body =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{command}: not JSON ({e}): {body}"));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_curl_commands_work_as_written() {
    let stack = Stack::start().await;
    let s = &stack;

    for health in [
        "curl http://localhost:3002/health",
        "curl http://localhost:3003/health",
        "curl http://localhost:3001/health",
    ] {
        let (status, body) = curl(health, s).await;
        assert_eq!(status, 200, "{health}: {body}");
        assert_eq!(body["status"], "ok", "{health}: {body}");
    }

    let (status, body) = curl(NO_TOKEN, s).await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = curl(LIST, s).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"getProductById") && names.contains(&"getUserById"),
        "{names:?}"
    );

    let (status, body) = curl(CALL_PRODUCT, s).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["structuredContent"]["id"], "123", "{body}");
    let (status, body) = curl(CALL_USER, s).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["structuredContent"]["id"], "456", "{body}");

    // There is no custom-service host here: the gateway says so clearly and changes nothing.
    let (status, body) = curl(REGISTER, s).await;
    assert_eq!(status, 502, "{body}");
    let msg = body["message"].as_str().expect("message");
    assert!(
        msg.contains("custom-service") && msg.contains("http://custom-service:3000/mcp"),
        "{msg}"
    );

    let (status, body) = curl(SERVICES, s).await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&str> = body["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert_eq!(listed, vec!["shopping-service", "user-service"], "{body}");
    stack.stop().await;
}
