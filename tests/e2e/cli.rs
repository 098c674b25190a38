//! The operator's command line (`gateway services|tools|calls|call|register|unregister`)
//! against a running gateway: the real binary, real HTTP.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// Runs the gateway binary with `args` against `gw`; (exit status, stdout, stderr).
pub async fn gateway_cli(gw: &impl Target, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(procs::binary("gateway"))
        .args(args)
        .args(["--url", &gw.base_url(), "--token", token])
        .env_remove("MCP_BEARER_TOKEN")
        .env_remove("GATEWAY_URL")
        .output()
        .await
        .expect("run the gateway CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_drives_the_gateway_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let backend = start_fixture("cli-svc", &["cliTool", "failCli"]).await;
    let url = backend.mcp_url();

    let (code, out, err) = gateway_cli(&gw, TOKEN, &["register", "cli-svc", &url]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("registered cli-svc") && out.contains("2 tools"),
        "{out}"
    );
    wait_until("cli-svc healthy", Duration::from_secs(10), || async {
        service_state(&gw, "cli-svc").await.as_deref() == Some("healthy")
    })
    .await;

    let (code, out, _) = gateway_cli(&gw, TOKEN, &["services"]).await;
    assert_eq!(code, 0);
    let row = out
        .lines()
        .find(|l| l.contains("cli-svc"))
        .unwrap_or_default();
    assert!(row.contains("healthy") && row.contains(" 2 "), "{out}");
    assert!(
        out.contains("SERVICE") && out.contains("STATE"),
        "a table: {out}"
    );

    let (code, out, _) = gateway_cli(&gw, TOKEN, &["tools", "--search", "CLITOOL"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("cliTool") && out.contains("cli-svc") && !out.contains("failCli"),
        "{out}"
    );

    let (code, out, err) =
        gateway_cli(&gw, TOKEN, &["call", "cliTool", "--args", r#"{"id": "7"}"#]).await;
    assert_eq!(code, 0, "{err}");
    let result: Value = serde_json::from_str(&out).expect("the structured result");
    assert_eq!(result["arguments"]["id"], "7", "{out}");
    let (code, _, err) = gateway_cli(&gw, TOKEN, &["call", "failCli"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("the tool reported an error") && err.contains("failed on purpose"),
        "{err}"
    );
    let (code, _, err) = gateway_cli(&gw, TOKEN, &["call", "noSuchTool"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown tool"), "{err}");
    let (code, _, err) = gateway_cli(&gw, TOKEN, &["call", "cliTool", "--args", "[1]"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("--args must be a JSON object"), "{err}");

    wait_until("the calls logged", Duration::from_secs(10), || async {
        let (_, out, _) = gateway_cli(&gw, TOKEN, &["calls", "--json"]).await;
        serde_json::from_str::<Value>(&out).is_ok_and(|v| v["count"] == 2)
    })
    .await;
    let (code, out, _) = gateway_cli(&gw, TOKEN, &["calls", "--outcome", "tool_error"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("failCli") && !out.contains("cliTool"), "{out}");

    let (code, out, _) = gateway_cli(&gw, TOKEN, &["services", "--json"]).await;
    assert_eq!(code, 0);
    let services: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(services["count"], 1);
    assert_eq!(services["services"][0]["stats"]["calls"], 2);

    // Refusals and unreachable gateways say so, with distinct statuses.
    let (code, _, err) = gateway_cli(&gw, "wrong-token", &["services"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = gateway_cli(
        &gw,
        TOKEN,
        &["register", "bad name", "http://127.0.0.1:9/mcp"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("422"), "{err}");
    let (code, out, err) = gateway_cli(&gw, TOKEN, &["unregister", "cli-svc"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unregistered cli-svc: 1 instance"), "{out}");
    assert_eq!(services_count(&gw).await, 0);
    let nowhere = format!("http://127.0.0.1:{}", procs::free_port());
    let out = tokio::process::Command::new(procs::binary("gateway"))
        .args(["services", "--url", &nowhere])
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the gateway"));
    gw.stop().await;
    backend.stop().await;
}

/// An upstream's description that tries to drive the operator's terminal: a title
/// change ended by BEL, a screen clear, a carriage return over the line, NUL, DEL, an
/// 8-bit CSI, and a right-to-left override.
const HOSTILE_DESCRIPTION: &str =
    "fine\u{1b}]0;owned\u{7}\u{1b}[2J\r\nrow\0\u{7f}\u{9b}1m\u{202e}txt.exe\u{2066}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_upstream_writes_reaches_the_operators_terminal_as_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let backend = serve_fixture(
        fixture::Fixture::new("evil-svc", &["evilTool"])
            .describing("evilTool", HOSTILE_DESCRIPTION),
    )
    .await;
    let (status, body) = register(&gw, "evil-svc", &backend.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    // The definition passes through the gateway unchanged.
    assert_eq!(
        services(&gw).await["services"][0]["tools"][0]["description"],
        HOSTILE_DESCRIPTION
    );

    let shown_as_text = |out: &str| {
        out.chars().filter(|c| *c != '\n').all(|c| {
            !c.is_control()
                && !('\u{202a}'..='\u{202e}').contains(&c)
                && !('\u{2066}'..='\u{2069}').contains(&c)
        })
    };
    let (code, out, err) = gateway_cli(&gw, TOKEN, &["tools"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(shown_as_text(&out), "{out:?}");
    assert!(
        out.contains(r"fine\u{1b}]0;owned\u{7}\u{1b}[2J\u{d}\u{a}row\u{0}\u{7f}\u{9b}1m\u{202e}txt.exe\u{2066}"),
        "{out}"
    );
    // One tool, one row: no line was injected.
    assert_eq!(
        out.lines().filter(|l| l.contains("evil-svc")).count(),
        1,
        "{out}"
    );
    assert_eq!(out.lines().count(), 5, "{out}");

    // As JSON: the same text, escaped as JSON.
    let (code, out, err) = gateway_cli(&gw, TOKEN, &["tools", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(shown_as_text(&out), "{out:?}");
    let tools: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(tools["tools"][0]["description"], HOSTILE_DESCRIPTION);
    let (code, out, err) = gateway_cli(&gw, TOKEN, &["services", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(shown_as_text(&out), "{out:?}");
    gw.stop().await;
    backend.stop().await;
}

async fn services_count(gw: &impl Target) -> u64 {
    services(gw).await["count"].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_servers_lists_the_virtual_servers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.virtual_servers = vec![
        serde_json::from_value(serde_json::json!({
            "name": "curated", "tools": ["cli-svc/cli*"],
            "rename": {"cliTool": {"name": "tool"}}, "tool_search": "off"
        }))
        .expect("definition"),
    ];
    let gw = start_gateway(config).await;
    let backend = start_fixture("cli-svc", &["cliTool", "failCli"]).await;
    assert_eq!(register(&gw, "cli-svc", &backend.mcp_url()).await.0, 201);
    let (code, out, err) = gateway_cli(&gw, TOKEN, &["servers"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let row = out
        .lines()
        .find(|l| l.contains("curated"))
        .unwrap_or_default();
    assert!(
        row.contains("/servers/curated/mcp")
            && row.contains("cli-svc/cli*")
            && row.contains(" 1 ")
            && row.contains("off")
            && row.contains("config"),
        "{out}"
    );
    let (code, out, _) = gateway_cli(&gw, TOKEN, &["servers", "--json"]).await;
    assert_eq!(code, 0);
    let body: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(body["servers"][0]["toolCount"], 1, "{body}");
    gw.stop().await;
    backend.stop().await;
}
