//! What the gateway presents to backends (its own credentials, never the client's token,
//! never shown; the demo services' own tokens, given at their registration), and who may
//! change a registration (the identity that made it, or an operator).

use serde_json::{Value, json};

use crate::support::{fixture::Fixture, *};

const SECRET: &str = "upstream-secret-7f3a9c";
const WRONG: &str = "wrong-secret-b41d2e";

async fn delete_as(gw: &impl Target, token: &str, path: &str) -> (u16, Value) {
    let resp = http()
        .delete(format!("{}{path}", gw.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("DELETE");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

async fn services_text(gw: &impl Target) -> String {
    http()
        .get(format!("{}/services", gw.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /services")
        .text()
        .await
        .expect("text")
}

/// Every `Authorization` the backend saw since it started.
fn seen(fixture: &Fixture) -> Vec<String> {
    fixture.authorizations.lock().expect("lock").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_calls_a_backend_with_its_own_credential_and_never_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db");
    let gw = start_gateway(gateway_config(&store)).await;
    let vault = Fixture::new("vault", &["openVault"])
        .requiring("authorization", &format!("Bearer {SECRET}"));
    let backend = serve_fixture(vault.clone()).await;

    // Without the backend's credential, or with a wrong one, registration fails, and the
    // error does not repeat what was sent.
    let (status, body) = register(&gw, "vault", &backend.mcp_url()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("upstream_unreachable")),
        "{body}"
    );
    let (status, body) = register_with(
        &gw,
        json!({"name": "vault", "url": backend.mcp_url(), "auth": {"bearer": WRONG}}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(!body.to_string().contains(WRONG), "{body}");
    // A malformed credential is refused before anything is contacted, without echoing it.
    for auth in [
        json!(WRONG),
        json!({"token": WRONG}),
        json!({"header": "Host", "value": WRONG}),
    ] {
        let (status, body) = register_with(
            &gw,
            json!({"name": "vault", "url": backend.mcp_url(), "auth": auth}),
        )
        .await;
        assert!(matches!(status, 400 | 422), "{auth}: {status} {body}");
        assert!(!body.to_string().contains(WRONG), "{body}");
    }
    assert_eq!(services(&gw).await["count"], 0, "nothing registered");

    let (status, body) = register_with(
        &gw,
        json!({"name": "vault", "url": backend.mcp_url(), "auth": {"bearer": SECRET}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(!body.to_string().contains(SECRET), "{body}");
    let listing = services_text(&gw).await;
    assert!(!listing.contains(SECRET), "{listing}");
    let listing: Value = serde_json::from_str(&listing).expect("JSON");
    let instance = &listing["services"][0]["instances"][0];
    assert_eq!(instance["auth"], "bearer", "{listing}");
    assert_eq!(instance["owner"], "default", "{listing}");

    // Calls on both paths (pass-through, and typed with `_meta`) reach the backend with
    // the gateway's credential; the client's own token never goes upstream.
    let before = seen(&vault).len();
    let result = call(&gw, "openVault", json!({"id": "a"})).await;
    assert_eq!(
        result["result"]["structuredContent"]["server"], "vault",
        "{result}"
    );
    let (status, result) = rpc(
        &gw,
        "tools/call",
        json!({"name": "openVault", "arguments": {"id": "b"}, "_meta": {"progressToken": 7}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        result["result"]["structuredContent"]["arguments"]["id"], "b",
        "{result}"
    );
    let all = seen(&vault);
    assert!(all.len() > before, "the backend saw the calls");
    let bearer = format!("Bearer {SECRET}");
    let failed_attempts = ["".to_string(), format!("Bearer {WRONG}")];
    for a in &all {
        assert!(
            *a == bearer || failed_attempts.contains(a),
            "backend saw {a:?}"
        );
        assert!(!a.contains(TOKEN), "the client's token went upstream: {a}");
    }

    // The credential survives a restart (the store keeps it), and still works.
    gw.stop().await;
    let gw = start_gateway(gateway_config(&store)).await;
    wait_until(
        "the restored vault to be healthy",
        std::time::Duration::from_secs(10),
        || async { service_state(&gw, "vault").await.as_deref() == Some("healthy") },
    )
    .await;
    let result = call(&gw, "openVault", json!({"id": "c"})).await;
    assert_eq!(
        result["result"]["structuredContent"]["arguments"]["id"], "c",
        "{result}"
    );
    gw.stop().await;

    // A custom header works the same way, from the configuration.
    let keyed = Fixture::new("keyed", &["keyedTool"]).requiring("x-api-key", SECRET);
    let keyed_backend = serve_fixture(keyed).await;
    let mut config = gateway_config(&dir.path().join("gw2.db"));
    config.upstreams = vec![gateway::config::UpstreamSpec {
        name: "keyed".into(),
        url: keyed_backend.mcp_url(),
        auth: Some(
            serde_json::from_value(json!({"header": "X-Api-Key", "value": SECRET})).expect("auth"),
        ),
        ..Default::default()
    }];
    let gw = start_gateway(config).await;
    wait_for_services(&gw, &["keyed"]).await;
    let result = call(&gw, "keyedTool", json!({})).await;
    assert_eq!(
        result["result"]["structuredContent"]["server"], "keyed",
        "{result}"
    );
    let listing = services_text(&gw).await;
    assert!(
        listing.contains("\"auth\":\"header x-api-key\"") && !listing.contains(SECRET),
        "{listing}"
    );
    gw.stop().await;
    backend.stop().await;
    keyed_backend.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_secrets_stay_out_of_the_logs_and_the_store_is_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db");
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let vault = Fixture::new("vault", &["openVault"])
        .requiring("authorization", &format!("Bearer {SECRET}"));
    let backend = serve_fixture(vault).await;
    let port = procs::free_port();
    let mut gw = procs::gateway_logging(
        port,
        &store,
        &[("RUST_LOG", "debug".to_string())],
        Some(log),
    )
    .await;
    let (status, _) = register_with(
        &gw,
        json!({"name": "vault", "url": backend.mcp_url(), "auth": {"bearer": WRONG}}),
    )
    .await;
    assert_eq!(status, 502);
    let (status, _) = register_with(
        &gw,
        json!({"name": "vault", "url": backend.mcp_url(), "auth": {"bearer": SECRET}}),
    )
    .await;
    assert_eq!(status, 201);
    let result = call(&gw, "openVault", json!({"id": "x"})).await;
    assert_eq!(
        result["result"]["structuredContent"]["server"], "vault",
        "{result}"
    );
    let (status, _) = delete_as(&gw, TOKEN, "/services/vault").await;
    assert_eq!(status, 200);
    gw.terminate().await;
    backend.stop().await;

    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        text.contains("service registered"),
        "the log was captured: {text}"
    );
    for secret in [SECRET, WRONG] {
        assert!(!text.contains(secret), "{secret} in the log:\n{text}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&store)
            .expect("store")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_registering_identity_or_an_operator_changes_a_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db");
    let config = || {
        let mut c = gateway_config(&store);
        c.credentials = vec![
            credential("team-a", &["register", "list", "call"]),
            credential("team-b", &["register"]),
        ];
        c
    };
    let gw = start_gateway(config()).await;
    let first = start_fixture("alpha", &["alphaTool"]).await;
    let second = start_fixture("alpha", &["alphaTool"]).await;
    let (a, b) = (credential_token("team-a"), credential_token("team-b"));

    let (status, body) =
        register_as(&gw, &a, json!({"name": "alpha", "url": first.mcp_url()})).await;
    assert_eq!(status, 201, "{body}");
    let before = services(&gw).await;
    assert_eq!(before["services"][0]["instances"][0]["owner"], "team-a");

    // team-b can neither refresh, replace, extend nor remove team-a's service.
    for body in [
        json!({"name": "alpha", "url": first.mcp_url()}),
        json!({"name": "alpha", "url": second.mcp_url(), "replace": true}),
        json!({"name": "alpha", "url": second.mcp_url()}),
    ] {
        let (status, reply) = register_as(&gw, &b, body.clone()).await;
        assert_eq!(
            (status, reply["error"].as_str()),
            (403, Some("not_owner")),
            "{body}: {reply}"
        );
    }
    let id = before["services"][0]["instances"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    for path in [
        "/services/alpha".to_string(),
        format!("/services/alpha/instances/{id}"),
        format!("/services/alpha?url={}", first.mcp_url()),
    ] {
        let (status, reply) = delete_as(&gw, &b, &path).await;
        assert_eq!(
            (status, reply["error"].as_str()),
            (403, Some("not_owner")),
            "{path}: {reply}"
        );
    }
    let after = services(&gw).await;
    assert_eq!(after["services"][0]["instances"][0]["id"], id.as_str());
    assert_eq!(after["services"][0]["instances"][0]["owner"], "team-a");
    assert_eq!(
        after["services"][0]["instances"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(after["services"][0]["instances"][0]["url"], first.mcp_url());

    // team-b's own registrations are its own.
    let (status, _) = register_as(&gw, &b, json!({"name": "beta", "url": second.mcp_url()})).await;
    assert_eq!(status, 201);
    let (status, reply) = delete_as(&gw, &a, "/services/beta").await;
    assert_eq!(status, 403, "{reply}");

    // Ownership survives a restart.
    gw.stop().await;
    let gw = start_gateway(config()).await;
    let (status, reply) =
        register_as(&gw, &b, json!({"name": "alpha", "url": second.mcp_url()})).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (403, Some("not_owner")),
        "{reply}"
    );

    // The owner may extend and remove; an operator (the all-scopes token) may remove
    // anyone's.
    let (status, reply) =
        register_as(&gw, &a, json!({"name": "alpha", "url": second.mcp_url()})).await;
    assert_eq!(status, 201, "{reply}");
    let (status, reply) = delete_as(&gw, &a, "/services/alpha").await;
    assert_eq!(
        (status, reply["instances"].as_u64()),
        (200, Some(2)),
        "{reply}"
    );
    let (status, reply) = delete_as(&gw, TOKEN, "/services/beta").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(services(&gw).await["count"], 0);
    gw.stop().await;
    first.stop().await;
    second.stop().await;
}

/// An MCP `initialize` posted straight to `service`'s `/mcp`, with `bearer` if given.
async fn initialize_directly(service: &impl Target, bearer: Option<&str>) -> reqwest::Response {
    let mut request = http()
        .post(service.mcp())
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "e2e-direct", "version": "0"}
            }
        }));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST to the service's /mcp")
}

/// A 401 from demo service `name` with the error `code` in its challenge and body.
async fn assert_refused_by(response: reqwest::Response, name: &str, code: &str) {
    assert_eq!(response.status().as_u16(), 401, "{name}");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{name}: no WWW-Authenticate"))
        .to_str()
        .expect("ASCII")
        .to_string();
    let expected = match code {
        "missing_token" => format!("Bearer realm=\"{name}\""),
        other => format!("Bearer realm=\"{name}\", error=\"{other}\""),
    };
    assert_eq!(challenge, expected);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["error"], code, "{name}: {body}");
}

/// The tools of both demo services answer through the gateway, the service-to-service
/// call (shopping-service reading user-service's preferences through it) included.
async fn both_services_answer_through(gateway: &impl Target) {
    let product = call(gateway, "getProductById", json!({"id": "123"})).await;
    assert_eq!(
        product["result"]["structuredContent"]["id"], "123",
        "{product}"
    );
    let user = call(gateway, "getUserById", json!({"id": "456"})).await;
    assert_eq!(user["result"]["structuredContent"]["id"], "456", "{user}");
    let recommended = call(
        gateway,
        "getPersonalizedRecommendations",
        json!({"userId": "456", "limit": 3}),
    )
    .await;
    let result = &recommended["result"];
    assert_eq!(result["isError"], false, "{recommended}");
    assert_eq!(
        result["structuredContent"]["userId"], "456",
        "{recommended}"
    );
    assert!(
        result["structuredContent"]["basedOn"]["favoriteCategories"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "preferences read from user-service: {recommended}"
    );
    assert_eq!(
        result["structuredContent"]["products"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{recommended}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_services_refuse_direct_calls_without_their_token_and_the_gateway_presents_it() {
    // Each service accepts only its own token (not the gateway's), registered with the
    // gateway as the credential to present.
    let stack = Stack::start().await;
    for (name, service) in [
        ("shopping-service", &stack.shopping),
        ("user-service", &stack.user),
    ] {
        let response = initialize_directly(service, None).await;
        assert_refused_by(response, name, "missing_token").await;
        // The client's token for the gateway opens nothing behind it.
        let response = initialize_directly(service, Some(TOKEN)).await;
        assert_refused_by(response, name, "invalid_token").await;
        let response = initialize_directly(service, Some(&service_token(name))).await;
        assert_eq!(response.status().as_u16(), 200, "{name} with its token");
        let health = http()
            .get(format!("{}/health", service.base()))
            .send()
            .await
            .expect("GET /health");
        assert_eq!(health.status().as_u16(), 200, "{name}: /health is open");
    }

    both_services_answer_through(&stack.gateway).await;

    // The gateway shows the scheme of each instance's credential, never the token.
    let listing = services_text(&stack.gateway).await;
    for name in ["shopping-service", "user-service"] {
        assert!(!listing.contains(&service_token(name)), "{listing}");
    }
    let listing: Value = serde_json::from_str(&listing).expect("JSON");
    let services = listing["services"].as_array().expect("services");
    assert_eq!(services.len(), 2, "{listing}");
    for service in services {
        let instances = service["instances"].as_array().expect("instances");
        assert_eq!(instances.len(), 1, "{service}");
        assert_eq!(instances[0]["auth"], "bearer", "{service}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_binaries_accept_their_own_variable_or_else_mcp_bearer_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let gp = gw.addr.port();
    // shopping-service with SHOPPING_SERVICE_TOKEN; user-service without its variable,
    // so it accepts MCP_BEARER_TOKEN, the token it presents to the gateway.
    let shop = procs::service("shopping-service", procs::free_port(), gp, true).await;
    let user = procs::service_with("user-service", procs::free_port(), gp, true, &[]).await;
    wait_for_services(&gw, &["shopping-service", "user-service"]).await;

    let response = initialize_directly(&shop, Some(TOKEN)).await;
    assert_refused_by(response, "shopping-service", "invalid_token").await;
    let own = service_token("shopping-service");
    let response = initialize_directly(&shop, Some(&own)).await;
    assert_eq!(response.status().as_u16(), 200);
    let response = initialize_directly(&user, None).await;
    assert_refused_by(response, "user-service", "missing_token").await;
    let response = initialize_directly(&user, Some(&own)).await;
    assert_refused_by(response, "user-service", "invalid_token").await;
    let response = initialize_directly(&user, Some(TOKEN)).await;
    assert_eq!(response.status().as_u16(), 200);

    both_services_answer_through(&gw).await;
    drop((shop, user));
    gw.stop().await;
}
