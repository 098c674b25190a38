//! Every route but `/health` needs the Bearer token.

use serde_json::json;

use crate::support::*;

async fn assert_unauthorized(resp: reqwest::Response, route: &str) {
    assert_eq!(resp.status().as_u16(), 401, "{route}");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{route}: no WWW-Authenticate"))
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{route}: {challenge}");
    let body: serde_json::Value = resp.json().await.expect("JSON body");
    assert!(
        body["error"].is_string() && body["message"].is_string(),
        "{route}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_refuse_missing_and_wrong_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let c = http();
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    let reg = json!({"name":"x","url":"http://127.0.0.1:9/mcp"});
    for token in [None, Some("wrong-token"), Some("mcp-token-1234")] {
        let with = |rb: reqwest::RequestBuilder| match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let r = with(c.post(gw.mcp_url()).json(&list))
            .send()
            .await
            .expect("send");
        assert_unauthorized(r, "POST /mcp").await;
        let r = with(c.get(gw.mcp_url())).send().await.expect("send");
        assert_unauthorized(r, "GET /mcp").await;
        let r = with(c.post(format!("{}/register", gw.base())).json(&reg))
            .send()
            .await
            .expect("send");
        assert_unauthorized(r, "POST /register").await;
        let r = with(c.post(format!("{}/services", gw.base())))
            .send()
            .await
            .expect("send");
        assert_unauthorized(r, "POST /services").await;
        let r = with(c.get(format!("{}/services", gw.base())))
            .send()
            .await
            .expect("send");
        assert_unauthorized(r, "GET /services").await;
    }
    // A wrong scheme is refused too, and says why.
    let r = c
        .post(gw.mcp_url())
        .header("Authorization", "Basic bWNwOnRva2Vu")
        .json(&list)
        .send()
        .await
        .expect("send");
    assert_unauthorized(r, "Basic auth").await;
    // Nothing was registered by the refused attempts.
    assert_eq!(services(&gw).await["count"], 0);
    // /health stays open.
    let r = c
        .get(format!("{}/health", gw.base()))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_replaces_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.token = "another-secret".into();
    let gw = start_gateway(config).await;
    let r = services_as(&gw, TOKEN).await;
    assert_eq!(r.status().as_u16(), 401);
    let r = services_as(&gw, "another-secret").await;
    assert_eq!(r.status().as_u16(), 200);
    gw.stop().await;
}

/// `GET /services` with `token`.
async fn services_as(gw: &Running, token: &str) -> reqwest::Response {
    http()
        .get(format!("{}/services", gw.base()))
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
}

/// The `resource_metadata` URL of a 401's challenge.
fn resource_metadata(resp: &reqwest::Response) -> String {
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_string();
    challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no resource_metadata in {challenge}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_names_the_protected_resource_metadata_which_is_public() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = start_gateway(gateway_config(&dir.path().join("gw.db"))).await;
    let c = http();
    // /mcp points at the path-suffixed document, other routes at the gateway's.
    let r = c.post(gw.mcp_url()).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let url = resource_metadata(&r);
    assert_eq!(
        url,
        format!("{}/.well-known/oauth-protected-resource/mcp", gw.base())
    );
    let doc: serde_json::Value = c
        .get(&url)
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["resource"], format!("{}/mcp", gw.base()), "{doc}");
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]), "{doc}");
    let r = services_as(&gw, "wrong").await;
    let url = resource_metadata(&r);
    assert_eq!(
        url,
        format!("{}/.well-known/oauth-protected-resource", gw.base())
    );
    let doc: serde_json::Value = c
        .get(&url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["resource"], gw.base(), "{doc}");
    gw.stop().await;

    // Behind a proxy: the configured public URL and authorization servers.
    let mut config = gateway_config(&dir.path().join("gw2.db"));
    config.public_url = Some("https://gateway.example.com".into());
    config.authorization_servers = vec!["https://auth.example.com".into()];
    let gw = start_gateway(config).await;
    let r = c.post(gw.mcp_url()).send().await.expect("send");
    assert_eq!(
        resource_metadata(&r),
        "https://gateway.example.com/.well-known/oauth-protected-resource/mcp"
    );
    let doc: serde_json::Value = c
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            gw.base()
        ))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["resource"], "https://gateway.example.com/mcp", "{doc}");
    assert_eq!(
        doc["authorization_servers"],
        json!(["https://auth.example.com"]),
        "{doc}"
    );
    gw.stop().await;
}

async fn post_as(
    gw: &Running,
    token: &str,
    session: Option<&str>,
    body: serde_json::Value,
) -> reqwest::Response {
    let mut rb = http()
        .post(gw.mcp_url())
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(id) = session {
        rb = rb
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-06-18");
    }
    rb.send().await.expect("send")
}

async fn assert_insufficient(resp: reqwest::Response, scope: &str, what: &str) {
    assert_eq!(resp.status().as_u16(), 403, "{what}");
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains(&format!("scope=\"{scope}\""))
            && challenge.contains("resource_metadata="),
        "{what}: {challenge}"
    );
    let body: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"], "insufficient_scope", "{what}: {body}");
    assert_eq!(body["scope"], scope, "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_credential_may_do_what_its_scopes_say() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.credentials = vec![
        credential("reader", &["list"]),
        credential("caller", &["list", "call"]),
        credential("registrar", &["register"]),
        credential("operator", &["operate"]),
    ];
    let gw = start_gateway(config).await;
    let backend = start_fixture("scoped", &["scopedTool"]).await;
    let token = credential_token;
    let c = http();
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call",
                      "params":{"name":"scopedTool","arguments":{}}});
    let reg = json!({"name":"scoped","url": backend.mcp_url()});

    // Registering: only with "register" (or the all-scopes token).
    for who in ["reader", "caller", "operator"] {
        let r = c
            .post(format!("{}/register", gw.base()))
            .bearer_auth(token(who))
            .json(&reg)
            .send()
            .await
            .expect("send");
        assert_insufficient(r, "register", who).await;
    }
    assert_eq!(services(&gw).await["count"], 0, "nothing registered");
    let r = c
        .post(format!("{}/register", gw.base()))
        .bearer_auth(token("registrar"))
        .json(&reg)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 201);

    // Operating: only with "operate".
    let r = services_as(&gw, &token("registrar")).await;
    assert_insufficient(r, "operate", "registrar on /services").await;
    let r = services_as(&gw, &token("operator")).await;
    assert_eq!(r.status().as_u16(), 200);

    // Listing and calling, sessionless.
    let r = post_as(&gw, &token("reader"), None, list.clone()).await;
    assert_eq!(r.status().as_u16(), 200);
    let r = post_as(&gw, &token("reader"), None, call.clone()).await;
    assert_insufficient(r, "call", "reader calling").await;
    let r = post_as(&gw, &token("operator"), None, list.clone()).await;
    assert_insufficient(r, "list", "operator listing").await;
    let r = post_as(&gw, &token("caller"), None, call.clone()).await;
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert!(body["result"]["content"].is_array(), "{body}");
    // A batch cannot slip a call past the check.
    let r = post_as(&gw, &token("reader"), None, json!([call.clone()])).await;
    assert_eq!(r.status().as_u16(), 400);
    // The all-scopes token still does everything.
    let r = post_as(&gw, TOKEN, None, call).await;
    assert_eq!(r.status().as_u16(), 200);
    gw.stop().await;
    backend.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_refused_to_any_credential_but_the_one_that_opened_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.credentials = vec![
        credential("alice", &["list", "call"]),
        credential("mallory", &["list", "call"]),
    ];
    let gw = start_gateway(config).await;
    let token = |name: &str| format!("{name}-token-0123456789");
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "alice", "version": "1"}}});
    let r = post_as(&gw, &token("alice"), None, init).await;
    assert_eq!(r.status().as_u16(), 200);
    let session = r.headers()["mcp-session-id"]
        .to_str()
        .expect("id")
        .to_string();
    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"});
    for who in ["mallory", "default"] {
        let t = if who == "default" {
            TOKEN.to_string()
        } else {
            token(who)
        };
        let r = post_as(&gw, &t, Some(&session), list.clone()).await;
        assert_eq!(r.status().as_u16(), 403, "{who}");
        let body: serde_json::Value = r.json().await.expect("JSON");
        assert_eq!(body["error"], "session_owner_mismatch", "{who}: {body}");
    }
    let status = end_session(&gw.base_url(), &token("mallory"), &session, None).await;
    assert_eq!(status, 403, "mallory cannot end it either");
    let r = post_as(&gw, &token("alice"), Some(&session), list).await;
    assert_eq!(r.status().as_u16(), 200, "the owner carries on");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_sees_exactly_what_it_may_call_and_nothing_else_exists_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    let mut alpha_only = credential("alphaonly", &["list", "call"]);
    alpha_only.services = Some(vec!["alpha".into()]);
    let mut one_tool = credential("onetool", &["list", "call"]);
    one_tool.tools = Some(vec!["betaOne".into()]);
    config.credentials = vec![alpha_only, one_tool];
    let gw = start_gateway(config).await;
    let alpha = start_fixture("alpha", &["alphaOne", "alphaTwo"]).await;
    let beta = start_fixture("beta", &["betaOne", "betaTwo"]).await;
    register(&gw, "alpha", &alpha.mcp_url()).await;
    register(&gw, "beta", &beta.mcp_url()).await;
    let token = |name: &str| format!("{name}-token-0123456789");
    let names = |body: &serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = body["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    let call = |tool: &str| {
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call",
               "params":{"name": tool, "arguments":{}}})
    };
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    // Calls the pass-through path carried (the policy core applies the allow-list there
    // as on the typed path).
    let carried = || passthrough_served(&gw, "tools/call");
    for (who, visible, hidden) in [
        ("alphaonly", vec!["alphaOne", "alphaTwo"], "betaOne"),
        ("onetool", vec!["betaOne"], "alphaOne"),
    ] {
        let before = carried().await;
        let body: serde_json::Value = post_as(&gw, &token(who), None, list.clone())
            .await
            .json()
            .await
            .expect("JSON");
        assert_eq!(names(&body), visible, "{who}: {body}");
        // Every visible tool can be called.
        for tool in &visible {
            let body: serde_json::Value = post_as(&gw, &token(who), None, call(tool))
                .await
                .json()
                .await
                .expect("JSON");
            assert!(body["result"]["content"].is_array(), "{who} {tool}: {body}");
        }
        // A hidden tool is refused exactly like one that does not exist.
        let hidden_reply: serde_json::Value = post_as(&gw, &token(who), None, call(hidden))
            .await
            .json()
            .await
            .expect("JSON");
        let unknown_reply: serde_json::Value = post_as(&gw, &token(who), None, call("noSuchTool"))
            .await
            .json()
            .await
            .expect("JSON");
        let masked = hidden_reply.to_string().replace(hidden, "noSuchTool");
        assert_eq!(masked, unknown_reply.to_string(), "{who}");
        assert_eq!(hidden_reply["error"]["code"], -32602, "{hidden_reply}");
        assert_eq!(
            carried().await - before,
            visible.len() as u64 + 2,
            "{who}: every call and refusal on the pass-through path"
        );
    }
    // The full credential still sees all four.
    let body: serde_json::Value = post_as(&gw, TOKEN, None, list)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(names(&body).len(), 4, "{body}");
    gw.stop().await;
    alpha.stop().await;
    beta.stop().await;
}

mod jwt {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::json;

    use super::{post_as, services_as};
    use crate::support::*;

    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";
    const ISSUER: &str = "https://auth.example.test";
    const AUDIENCE: &str = "https://gateway.example.test/mcp";

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/jwt/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture key")
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
    }

    /// A token signed with `alg`'s test key, with these claims over valid defaults (a
    /// `null` one removes the default).
    fn token(alg: Algorithm, claims: serde_json::Value) -> String {
        token_with(alg, claims, |_| {})
    }

    /// [`token`], its header changed by `edit` before signing.
    fn token_with(
        alg: Algorithm,
        claims: serde_json::Value,
        edit: impl FnOnce(&mut Header),
    ) -> String {
        let mut all = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice",
                             "exp": now() + 300, "scope": "list call"});
        for (k, v) in claims.as_object().expect("object") {
            if v.is_null() {
                all.as_object_mut().expect("object").remove(k);
            } else {
                all[k] = v.clone();
            }
        }
        let (key, kid) = match alg {
            Algorithm::HS256 => (EncodingKey::from_secret(SECRET.as_bytes()), None),
            Algorithm::RS256 => (
                EncodingKey::from_rsa_pem(&fixture("rs256-private.pem")).expect("rsa"),
                Some("rsa-1"),
            ),
            Algorithm::ES256 => (
                EncodingKey::from_ec_pem(&fixture("es256-private.pem")).expect("ec"),
                Some("ec-1"),
            ),
            other => panic!("{other:?}"),
        };
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        edit(&mut header);
        encode(&header, &all, &key).expect("sign")
    }

    async fn gateway(dir: &std::path::Path) -> Running {
        let mut config = gateway_config(&dir.join("gw.db"));
        config.public_url = Some("https://gateway.example.test".into());
        config.jwt = Some(gateway::config::JwtConfig {
            issuer: ISSUER.into(),
            audience: None,
            hs256_secret: Some(SECRET.into()),
            jwks_file: Some(
                format!(
                    "{}/tests/fixtures/jwt/jwks.json",
                    env!("CARGO_MANIFEST_DIR")
                )
                .into(),
            ),
            jwks_url: None,
        });
        start_gateway(config).await
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

    fn list() -> serde_json::Value {
        serde_json::from_str(LIST).expect("json")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn valid_jwts_of_each_algorithm_are_accepted_with_their_scopes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gw = gateway(dir.path()).await;
        for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
            let r = post_as(&gw, &token(alg, json!({})), None, list()).await;
            assert_eq!(r.status().as_u16(), 200, "{alg:?}");
        }
        // Scopes come from the `scope` claim.
        let lister = token(Algorithm::RS256, json!({"scope": "list"}));
        let r = services_as(&gw, &lister).await;
        assert_eq!(r.status().as_u16(), 403);
        let operator = token(Algorithm::ES256, json!({"scope": "operate"}));
        let r = services_as(&gw, &operator).await;
        assert_eq!(r.status().as_u16(), 200);
        // The static token keeps working next to JWTs.
        let r = post_as(&gw, TOKEN, None, list()).await;
        assert_eq!(r.status().as_u16(), 200);
        gw.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_foreign_and_forged_jwts_are_refused_saying_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gw = gateway(dir.path()).await;
        let forged = {
            // An RS256 token whose payload was changed after signing.
            let t = token(Algorithm::RS256, json!({"scope": "list"}));
            let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
            let other = token(
                Algorithm::RS256,
                json!({"scope": "list call register operate"}),
            );
            parts[1] = other.split('.').nth(1).expect("payload").to_string();
            parts.join(".")
        };
        let wrong_secret = {
            let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now() + 300});
            encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"not-the-gateway-secret-but-long-enough"),
            )
            .expect("sign")
        };
        let cases = [
            (
                token(Algorithm::HS256, json!({"exp": now() - 3600})),
                "expired",
            ),
            (
                token(
                    Algorithm::ES256,
                    json!({"aud": "https://elsewhere.test/mcp"}),
                ),
                "audience",
            ),
            (
                token(Algorithm::RS256, json!({"iss": "https://evil.test"})),
                "issuer",
            ),
            (
                token(Algorithm::HS256, json!({"nbf": now() + 3600})),
                "not valid yet",
            ),
            (forged, "signature"),
            (wrong_secret, "signature"),
            // Without a subject, all such tokens would be one identity.
            (
                token(Algorithm::HS256, json!({"sub": null})),
                "no sub claim",
            ),
            (token(Algorithm::RS256, json!({"sub": ""})), "no sub claim"),
            // A JWS extension the gateway would have to understand (RFC 7515, 4.1.11).
            (
                token_with(Algorithm::ES256, json!({}), |h| {
                    h.crit = Some(vec!["b64".into()]);
                }),
                "critical extensions",
            ),
        ];
        for (jwt, says) in cases {
            let r = post_as(&gw, &jwt, None, list()).await;
            assert_eq!(r.status().as_u16(), 401, "{says}");
            let challenge = r.headers()["www-authenticate"]
                .to_str()
                .expect("ascii")
                .to_string();
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
            let body: serde_json::Value = r.json().await.expect("JSON");
            assert!(
                body["message"].as_str().is_some_and(|m| m.contains(says)),
                "{says}: {body}"
            );
        }
        gw.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_can_come_from_a_jwks_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jwks = String::from_utf8(fixture("jwks.json")).expect("utf-8");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { jwks }
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let mut config = gateway_config(&dir.path().join("gw.db"));
        config.jwt = Some(gateway::config::JwtConfig {
            issuer: ISSUER.into(),
            audience: Some(AUDIENCE.into()),
            hs256_secret: None,
            jwks_file: None,
            jwks_url: Some(url),
        });
        let gw = start_gateway(config).await;
        let es = token(Algorithm::ES256, json!({}));
        wait_until(
            "the JWKS to be fetched",
            std::time::Duration::from_secs(10),
            || async { post_as(&gw, &es, None, list()).await.status().as_u16() == 200 },
        )
        .await;
        // No HS256 secret configured: such tokens have no key.
        let r = post_as(&gw, &token(Algorithm::HS256, json!({})), None, list()).await;
        assert_eq!(r.status().as_u16(), 401);
        gw.stop().await;
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_opened_with_one_subjects_jwt_refuses_anothers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gw = gateway(dir.path()).await;
        let alice = token(Algorithm::HS256, json!({"sub": "alice"}));
        let mallory = token(Algorithm::HS256, json!({"sub": "mallory"}));
        let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "alice", "version": "1"}}});
        let r = post_as(&gw, &alice, None, init).await;
        assert_eq!(r.status().as_u16(), 200);
        let session = r.headers()["mcp-session-id"]
            .to_str()
            .expect("id")
            .to_string();
        let r = post_as(&gw, &mallory, Some(&session), list()).await;
        assert_eq!(r.status().as_u16(), 403);
        // Alice's next token (a fresh one, same subject) carries on.
        let alice_again = token(Algorithm::RS256, json!({"sub": "alice"}));
        let r = post_as(&gw, &alice_again, Some(&session), list()).await;
        assert_eq!(r.status().as_u16(), 200);
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_holds_at_most_its_share_of_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.max_sessions_per_credential = 2;
    config.credentials = vec![credential("other", &["list"])];
    let gw = start_gateway(config).await;
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "c", "version": "1"}}});
    let open = |token: String| {
        let init = init.clone();
        let gw = &gw;
        async move { post_as(gw, &token, None, init).await }
    };
    let first = open(TOKEN.into()).await;
    let first_id = first.headers()["mcp-session-id"]
        .to_str()
        .expect("id")
        .to_string();
    assert_eq!(open(TOKEN.into()).await.status().as_u16(), 200);
    let third = open(TOKEN.into()).await;
    assert_eq!(third.status().as_u16(), 429);
    let body: serde_json::Value = third.json().await.expect("JSON");
    assert_eq!(body["error"], "too_many_sessions", "{body}");
    // Another credential has its own share.
    let other = format!("{}-token-0123456789", "other");
    assert_eq!(open(other).await.status().as_u16(), 200);
    // Ending one makes room.
    let status = end_session(&gw.base_url(), TOKEN, &first_id, Some("2025-06-18")).await;
    assert!((200..300).contains(&status), "{status}");
    assert_eq!(open(TOKEN.into()).await.status().as_u16(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_over_its_rate_limit_is_told_when_to_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.rate_limit_per_credential = 5;
    config.credentials = vec![credential("calm", &["list", "operate"])];
    let gw = start_gateway(config).await;
    // Admin routes: 429 with Retry-After once the bucket is empty.
    let mut limited = None;
    for _ in 0..20 {
        let r = services_as(&gw, TOKEN).await;
        if r.status().as_u16() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = limited.expect("the limit is reached within 20 requests");
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["error"], "rate_limited", "{body}");
    let wait = body["retryAfterMs"].as_u64().expect("retryAfterMs");
    // Another credential has its own bucket.
    let r = services_as(&gw, "calm-token-0123456789").await;
    assert_eq!(r.status().as_u16(), 200);
    // MCP: a JSON-RPC error naming the wait, for the request's own id.
    let mut error = None;
    for i in 0..20 {
        let r = post_as(
            &gw,
            TOKEN,
            None,
            json!({"jsonrpc":"2.0","id":i,"method":"tools/list"}),
        )
        .await;
        assert_eq!(r.status().as_u16(), 200);
        let body: serde_json::Value = r.json().await.expect("JSON");
        if body.get("error").is_some() {
            assert_eq!(body["id"], i, "{body}");
            error = Some(body);
            break;
        }
    }
    let body = error.expect("limited within 20 requests");
    assert_eq!(body["error"]["code"], -32004, "{body}");
    assert!(
        body["error"]["data"]["retryAfterMs"].as_u64().is_some(),
        "{body}"
    );
    // And it recovers once the bucket refills. Kept: waiting the advertised time (plus a
    // margin) is what is tested: a client that honours retryAfterMs gets through.
    tokio::time::sleep(std::time::Duration::from_millis(wait.max(250) + 250)).await;
    let r = services_as(&gw, TOKEN).await;
    assert_eq!(r.status().as_u16(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_over_its_rate_limit_refuses_calls_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.rate_limit_per_tool = 3;
    let gw = start_gateway(config).await;
    let backend = start_fixture("busy", &["hotTool", "coolTool"]).await;
    register(&gw, "busy", &backend.mcp_url()).await;
    let mut refused = None;
    for _ in 0..20 {
        let reply = call(&gw, "hotTool", json!({})).await;
        if reply.get("error").is_some() {
            refused = Some(reply);
            break;
        }
        assert!(reply["result"]["content"].is_array(), "{reply}");
    }
    let reply = refused.expect("limited within 20 calls");
    assert_eq!(reply["error"]["code"], -32004, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("hotTool")),
        "{reply}"
    );
    let wait = reply["error"]["data"]["retryAfterMs"]
        .as_u64()
        .expect("retryAfterMs");
    // Another tool is not affected.
    let other = call(&gw, "coolTool", json!({})).await;
    assert!(other["result"]["content"].is_array(), "{other}");
    // Kept: waiting the advertised time (plus a margin) is what is tested.
    tokio::time::sleep(std::time::Duration::from_millis(wait.max(250) + 250)).await;
    let again = call(&gw, "hotTool", json!({})).await;
    assert!(again["result"]["content"].is_array(), "{again}");
    gw.stop().await;
    backend.stop().await;
}
