//! Client-safe definitions: a tool name too long for clients is shortened the same way
//! after a restart, and with `inline_schema_refs` a schema's `$ref`s to its own `$defs`
//! are inlined (both codecs list the same), a recursive one is served as written and
//! `/services` says why.

use serde_json::{Value, json};

use crate::support::*;

/// The tool whose name is `original` at `service`, as `/services` shows it.
async fn tool_view(gw: &impl Target, service: &str, original: &str) -> Value {
    let all = services(gw).await;
    all["services"]
        .as_array()
        .and_then(|s| s.iter().find(|e| e["name"] == service))
        .and_then(|e| e["tools"].as_array())
        .and_then(|t| t.iter().find(|t| t["originalName"] == original))
        .cloned()
        .unwrap_or_else(|| panic!("{service}/{original} not in /services: {all}"))
}

/// The listed definition of tool `name`, sessionless (the pass-through path's pages).
async fn listed(gw: &impl Target, name: &str) -> Value {
    let (_, body) = rpc(gw, "tools/list", Value::Null).await;
    body["result"]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} not listed: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_are_inlined_for_clients_that_reject_them_and_recursive_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.inline_schema_refs = true;
    let gw = start_gateway(config).await;
    let address = json!({"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]});
    let fixture = fixture::Fixture::new("shop", &["ship", "tree"])
        .with_schema(
            "ship",
            json!({
                "type": "object",
                "properties": {"from": {"$ref": "#/$defs/address"},
                               "to": {"$ref": "#/$defs/address"}},
                "$defs": {"address": address}
            }),
        )
        .with_schema(
            "tree",
            json!({
                "type": "object",
                "properties": {"root": {"$ref": "#/$defs/node"}},
                "$defs": {"node": {"type": "object", "properties": {
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}
            }),
        );
    let up = serve_fixture(fixture).await;
    assert_eq!(register(&gw, "shop", &up.mcp_url()).await.0, 201);

    let expected = json!({"type": "object",
                          "properties": {"from": address, "to": address}});
    // The pass-through path's pages and an MCP session (rmcp's handler) list the same.
    let ship = listed(&gw, "ship").await;
    assert_eq!(ship["inputSchema"], expected, "{ship}");
    let session = mcp_client(&gw).await;
    let tools = session.peer().list_all_tools().await.expect("tools/list");
    let typed = tools.iter().find(|t| t.name == "ship").expect("ship");
    assert_eq!(json!(typed.input_schema), expected);
    let _ = session.cancel().await;
    // The call still reaches the backend with the client's arguments.
    let reply = call(
        &gw,
        "ship",
        json!({"from": {"city": "Oslo"}, "to": {"city": "Rome"}}),
    )
    .await;
    assert!(reply["result"].is_object(), "{reply}");

    // A recursive schema has no inline form: served as written, and said so.
    let tree = listed(&gw, "tree").await;
    assert!(tree["inputSchema"]["$defs"]["node"].is_object(), "{tree}");
    let view = tool_view(&gw, "shop", "tree").await;
    assert!(
        view["schemaNote"]
            .as_str()
            .is_some_and(|n| n.contains("refers to itself")),
        "{view}"
    );
    assert!(tool_view(&gw, "shop", "ship").await["schemaNote"].is_null());
    gw.stop().await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_stay_as_written_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    // A virtual server that asks for self-contained schemas, and whose tool search
    // engages past one tool.
    config.virtual_servers = vec![
        serde_json::from_value(json!({"name": "strict", "tools": ["plain/*"],
                                      "inline_schema_refs": true}))
        .expect("definition"),
        serde_json::from_value(json!({"name": "small", "tools": ["plain/*"],
                                      "tool_search": "auto", "max_tools": 1}))
        .expect("definition"),
    ];
    let gw = start_gateway(config).await;
    let schema = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}},
                        "$defs": {"a": {"type": "string"}}});
    let up = serve_fixture(
        fixture::Fixture::new("plain", &["refs", "other"]).with_schema("refs", schema.clone()),
    )
    .await;
    assert_eq!(register(&gw, "plain", &up.mcp_url()).await.0, 201);
    assert_eq!(listed(&gw, "refs").await["inputSchema"], schema);
    // On the virtual server that asks for them: inlined.
    let strict = crate::servers::rpc_on(&gw, "strict", TOKEN, "tools/list", json!({})).await;
    let refs = strict["result"]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "refs"))
        .unwrap_or_else(|| panic!("{strict}"));
    assert_eq!(
        refs["inputSchema"],
        json!({"type": "object", "properties": {"a": {"type": "string"}}})
    );
    // Its own threshold: two tools are past one, so search mode there, not on /mcp.
    let small = crate::servers::rpc_on(&gw, "small", TOKEN, "tools/list", json!({})).await;
    assert_eq!(
        small["result"]["tools"][0]["name"], "search_tools",
        "{small}"
    );
    gw.stop().await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_too_long_for_clients_is_shortened_the_same_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db");
    let long = format!("fetch_{}", "very_long_segment_".repeat(5));
    assert!(long.len() > 64);
    let up = start_fixture("verbose", &[&long]).await;
    let gw = start_gateway(gateway_config(&store)).await;
    assert_eq!(register(&gw, "verbose", &up.mcp_url()).await.0, 201);
    let first = tool_view(&gw, "verbose", &long).await["name"]
        .as_str()
        .expect("name")
        .to_string();
    assert!(first.len() <= 64, "{first}");
    assert!(
        first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{first}"
    );
    assert!(call(&gw, &first, json!({})).await["result"].is_object());
    gw.stop().await;
    // The same store, a new process: the same public name.
    let gw = start_gateway(gateway_config(&store)).await;
    wait_for_services(&gw, &["verbose"]).await;
    let again = tool_view(&gw, "verbose", &long).await["name"]
        .as_str()
        .expect("name")
        .to_string();
    assert_eq!(again, first);
    gw.stop().await;
    up.stop().await;
}
