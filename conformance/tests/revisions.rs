//! The fixture's two revisions over real HTTP: `--revision 2025` refuses 2026-07-28
//! requests (its sessions get the 2026 diagnostics the 2025 way: diagnostics_2025.rs);
//! `--revision 2026` serves them (discovery, multi round-trip requests with a
//! sealed `requestState`, tasks) while a 2025-era session sees what it always saw.

mod common;
use common::{modern, start};

use conformance::fixture::{self, Revision};
use serde_json::{Value, json};
use service_kit::client::ClientOptions;
use tokio_util::sync::CancellationToken;

fn all_capabilities() -> Value {
    json!({
        "sampling": {},
        "elicitation": {},
        "roots": {},
        "extensions": {"io.modelcontextprotocol/tasks": {}}
    })
}

#[tokio::test]
async fn revision_2025_refuses_2026_requests() {
    let shutdown = CancellationToken::new();
    let addr = start(Revision::V2025, &shutdown).await;

    let (status, discover) = modern(addr, "server/discover", json!({}), json!({})).await;
    assert_eq!(status, 400, "{discover}");
    assert_eq!(discover["error"]["code"], -32022, "{discover}");
    let supported = discover["error"]["data"]["supported"]
        .as_array()
        .expect("supported");
    assert!(supported.contains(&json!("2025-11-25")));
    assert!(!supported.contains(&json!("2026-07-28")));

    // A 2025-era client still gets its session, with the tools it always got followed
    // by the 2026-07-28 diagnostic ones (asked the 2025 way; see diagnostics_2025.rs).
    let session =
        service_kit::client::connect(&format!("http://{addr}/mcp"), &ClientOptions::default())
            .await
            .expect("connect");
    let info = session.peer().peer_info().expect("server info");
    assert_eq!(info.protocol_version.as_str(), "2025-11-25");
    let tools = session.peer().list_all_tools().await.expect("tools/list");
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    let (legacy, diagnostics) = names.split_at(fixture::content::TOOL_NAMES.len());
    assert_eq!(legacy, fixture::content::TOOL_NAMES);
    assert_eq!(diagnostics, fixture::modern::TOOL_NAMES);
    session.cancel().await.expect("close");
    shutdown.cancel();
}

#[tokio::test]
async fn revision_2026_discovers_and_serves_multi_round_trip_requests() {
    let shutdown = CancellationToken::new();
    let addr = start(Revision::V2026, &shutdown).await;

    let (status, discover) = modern(addr, "server/discover", json!({}), json!({})).await;
    assert_eq!(status, 200, "{discover}");
    let result = &discover["result"];
    assert!(
        result["supportedVersions"]
            .as_array()
            .expect("versions")
            .contains(&json!("2026-07-28"))
    );
    assert!(result["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"].is_object());
    assert_eq!(result["capabilities"]["tools"]["listChanged"], true);

    // Every complete result carries resultType.
    let (_, simple) = modern(
        addr,
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
        json!({}),
    )
    .await;
    assert_eq!(simple["result"]["resultType"], "complete", "{simple}");

    // Round 1: input required, with a sealed state.
    let call = json!({"name": "test_input_required_result_request_state", "arguments": {}});
    let (_, first) = modern(addr, "tools/call", call.clone(), all_capabilities()).await;
    let first = &first["result"];
    assert_eq!(first["resultType"], "input_required", "{first}");
    assert_eq!(
        first["inputRequests"]["confirm"]["method"],
        "elicitation/create"
    );
    let state = first["requestState"].as_str().expect("requestState");

    // Round 2: the answer and the echoed state complete it.
    let mut retry = call.clone();
    retry["inputResponses"] = json!({"confirm": {"action": "accept", "content": {"ok": true}}});
    retry["requestState"] = json!(state);
    let (_, done) = modern(addr, "tools/call", retry.clone(), all_capabilities()).await;
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert!(
        done["result"]["content"][0]["text"]
            .as_str()
            .expect("text")
            .contains("state-ok")
    );

    // A tampered state is refused.
    retry["requestState"] = json!(format!("{state}x"));
    let (_, tampered) = modern(addr, "tools/call", retry, all_capabilities()).await;
    assert_eq!(tampered["error"]["code"], -32602, "{tampered}");

    // Without the elicitation capability: -32021 naming it.
    let (status, missing) = modern(addr, "tools/call", call, json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(missing["error"]["code"], -32021, "{missing}");
    assert!(missing["error"]["data"]["requiredCapabilities"]["elicitation"].is_object());
    shutdown.cancel();
}

#[tokio::test]
async fn revision_2026_runs_tasks() {
    let shutdown = CancellationToken::new();
    let addr = start(Revision::V2026, &shutdown).await;

    let (_, created) = modern(
        addr,
        "tools/call",
        json!({"name": "confirm_delete", "arguments": {"filename": "a.txt"}}),
        all_capabilities(),
    )
    .await;
    let created = &created["result"];
    assert_eq!(created["resultType"], "task", "{created}");
    let task_id = created["taskId"].as_str().expect("taskId").to_owned();

    let get = json!({"taskId": task_id});
    let mut waiting = Value::Null;
    for _ in 0..50 {
        let (_, got) = modern(addr, "tasks/get", get.clone(), all_capabilities()).await;
        waiting = got["result"].clone();
        if waiting["status"] == "input_required" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(waiting["status"], "input_required", "{waiting}");
    assert!(waiting["inputRequests"]["confirm"].is_object());

    let update = json!({
        "taskId": task_id,
        "inputResponses": {"confirm": {"action": "accept", "content": {"confirm": true}}}
    });
    let (_, ack) = modern(addr, "tasks/update", update, all_capabilities()).await;
    assert_eq!(ack["result"], json!({"resultType": "complete"}), "{ack}");

    let mut finished = Value::Null;
    for _ in 0..50 {
        let (_, got) = modern(addr, "tasks/get", get.clone(), all_capabilities()).await;
        finished = got["result"].clone();
        if finished["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        finished["result"]["content"][0]["text"], "Deleted a.txt",
        "{finished}"
    );
    shutdown.cancel();
}
