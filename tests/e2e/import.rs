//! `POST /registry/import`: servers from an MCP registry, served on loopback from the
//! fixture files in `tests/fixtures/registry/` (a `server.json` with a remote and an npm
//! package, one with an OCI image, and a `/v0.1/servers` listing of two pages). The
//! remotes point at in-process fixture MCP servers; nothing leaves the machine (the npm
//! package is planned with `dryRun`: running it would need npm's registry).

use std::collections::HashMap;

use axum::{
    Router,
    extract::{Path, Query},
    routing::get,
};
use serde_json::{Value, json};

use crate::support::*;

const WEATHER: &str = include_str!("../fixtures/registry/weather.server.json");
const BOXED: &str = include_str!("../fixtures/registry/oci.server.json");
const PAGE_1: &str = include_str!("../fixtures/registry/servers-page-1.json");
const PAGE_2: &str = include_str!("../fixtures/registry/servers-page-2.json");

/// The secrets the gateway's configuration holds (`[import_variables]`).
const WEATHER_KEY: &str = "weather-key-from-config-0123";
const FORECAST_KEY: &str = "forecast-key-from-config-4567";

/// A stand-in MCP registry: `/servers/{file}` and the paged `/v0.1/servers`.
fn registry_router() -> Router {
    let json = |text: &'static str| ([(http::header::CONTENT_TYPE, "application/json")], text);
    Router::new()
        .route(
            "/servers/{file}",
            get(move |Path(file): Path<String>| async move {
                match file.as_str() {
                    "weather.json" => Ok(json(WEATHER)),
                    "boxed.json" => Ok(json(BOXED)),
                    _ => Err(http::StatusCode::NOT_FOUND),
                }
            }),
        )
        .route(
            "/v0.1/servers",
            get(move |Query(q): Query<HashMap<String, String>>| async move {
                match q.get("cursor").map(String::as_str) {
                    None => Ok(json(PAGE_1)),
                    Some("page-2") => Ok(json(PAGE_2)),
                    Some(_) => Err(http::StatusCode::BAD_REQUEST),
                }
            }),
        )
}

struct World {
    gateway: Running,
    registry: Running,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = gateway_config(&dir.path().join("gw.db"));
        config.allowed_commands = vec!["npx".into()];
        config.credentials = vec![credential("registrar", &["register", "call"])];
        config.import_variables = [
            ("WEATHER_API_KEY".to_string(), WEATHER_KEY.to_string()),
            ("FORECAST_API_KEY".to_string(), FORECAST_KEY.to_string()),
        ]
        .into();
        let gateway = start_gateway(config).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let registry = serve_router(listener, registry_router());
        Self {
            gateway,
            registry,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.registry.base())
    }

    async fn import(&self, body: Value) -> (u16, Value) {
        self.import_as(TOKEN, body).await
    }

    async fn import_as(&self, token: &str, body: Value) -> (u16, Value) {
        let resp = http()
            .post(format!("{}/registry/import", self.gateway.base()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("POST /registry/import");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, value)
    }

    async fn service_names(&self) -> Vec<String> {
        services(&self.gateway).await["services"]
            .as_array()
            .expect("services")
            .iter()
            .map(|s| s["name"].as_str().expect("name").to_string())
            .collect()
    }

    async fn stop(self) {
        self.registry.stop().await;
        self.gateway.stop().await;
    }
}

fn port(server: &Running) -> String {
    server.addr.port().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_json_with_a_remote_and_an_npm_package_plans_both_and_registers_the_remote() {
    let world = World::start().await;
    let weather = serve_fixture(
        fixture::Fixture::new("weather", &["getWeather"]).requiring("x-api-key", WEATHER_KEY),
    )
    .await;
    let variables = json!({"port": port(&weather)});
    let (status, plan) = world
        .import(json!({
            "source": world.url("/servers/weather.json"),
            "variables": variables,
            "dryRun": true,
        }))
        .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["dryRun"], true);
    let servers = plan["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2, "{plan}");
    let remote = &servers[0];
    assert_eq!(remote["name"], "weather-remote", "{plan}");
    assert_eq!(remote["kind"], "remote");
    assert_eq!(remote["server"], "io.github.acme/weather");
    assert_eq!(remote["url"], weather.mcp_url());
    assert_eq!(remote["auth"], "header x-api-key");
    let npm = &servers[1];
    assert_eq!(npm["name"], "weather-npm", "{plan}");
    assert_eq!(npm["kind"], "npm");
    assert_eq!(npm["command"], "npx");
    assert_eq!(
        npm["args"],
        json!([
            "-y",
            "@acme/weather-mcp@1.2.3",
            "--units",
            "metric",
            "/tmp/weather-cache"
        ]),
        "{plan}"
    );
    // The environment by name only; the secret from the configuration is never shown.
    assert_eq!(npm["env"], json!(["LOG_LEVEL", "WEATHER_API_KEY"]));
    assert!(!plan.to_string().contains(WEATHER_KEY), "{plan}");
    // A dry run registers nothing.
    assert!(
        !world
            .service_names()
            .await
            .iter()
            .any(|n| n.starts_with("weather")),
        "a dry run registered something"
    );

    // The configuration's values serve operators only: a registrant could otherwise
    // place them where it reads them (a URL, a header towards its own server).
    let (status, body) = world
        .import_as(
            &credential_token("registrar"),
            json!({"source": world.url("/servers/weather.json"), "variables": variables}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("WEATHER_API_KEY"),
        "{body}"
    );
    // The packages need the operate scope, as for /register: refused before anything.
    let mut own = variables.clone();
    own["WEATHER_API_KEY"] = json!("the-registrars-own-key");
    let (status, body) = world
        .import_as(
            &credential_token("registrar"),
            json!({"source": world.url("/servers/weather.json"), "variables": own}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "upstream_not_allowed");
    assert!(
        body["message"].as_str().unwrap().contains("operate"),
        "{body}"
    );
    assert!(world.service_names().await.is_empty());

    // The remote alone registers for real: it reaches the fixture with the configured
    // key (the fixture refuses any request without it), and its tool is served.
    let mut remote_only: Value = serde_json::from_str(WEATHER).expect("fixture JSON");
    remote_only["packages"] = json!([]);
    let (status, done) = world
        .import(json!({"source": remote_only, "variables": variables, "name": "weather"}))
        .await;
    assert_eq!(status, 201, "{done}");
    assert_eq!(done["servers"][0]["name"], "weather");
    assert!(done["servers"][0]["instance"].is_string(), "{done}");
    wait_for_services(&world.gateway, &["weather"]).await;
    let answer = call(&world.gateway, "getWeather", json!({"id": "1"})).await;
    assert_eq!(
        answer["result"]["structuredContent"]["server"], "weather",
        "{answer}"
    );
    assert!(
        !services(&world.gateway)
            .await
            .to_string()
            .contains(WEATHER_KEY)
    );
    weather.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_listing_is_paged_and_its_secret_comes_from_the_configuration() {
    let world = World::start().await;
    let forecast = serve_fixture(
        fixture::Fixture::new("forecast", &["getForecast"]).requiring("x-api-key", FORECAST_KEY),
    )
    .await;
    let notes = start_fixture("notes", &["listNotes"]).await;
    let (status, done) = world
        .import(json!({
            "source": world.url("/v0.1/servers"),
            "variables": {"forecast_port": port(&forecast), "notes_port": port(&notes)},
        }))
        .await;
    assert_eq!(status, 201, "{done}");
    let names: Vec<&str> = done["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    // Both pages, the older version of forecast left out.
    assert_eq!(names, ["forecast", "notes"], "{done}");
    assert_eq!(
        done["skipped"][0]["server"], "io.github.acme/forecast",
        "{done}"
    );
    wait_for_services(&world.gateway, &["forecast", "notes"]).await;
    let answer = call(&world.gateway, "getForecast", json!({"id": "1"})).await;
    assert_eq!(
        answer["result"]["structuredContent"]["server"], "forecast",
        "{answer}"
    );
    assert!(!done.to_string().contains(FORECAST_KEY));
    forecast.stop().await;
    notes.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_variable_and_an_oci_package_are_refused_and_nothing_is_registered() {
    let world = World::start().await;
    let boxed = start_fixture("boxed", &["unbox"]).await;

    // No port: the remote's URL cannot be made. Named, 422, nothing registered (not
    // even the npm package, which had everything it needs).
    let (status, body) = world
        .import(json!({"source": world.url("/servers/weather.json")}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "missing_variable");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("port") && message.contains("[import_variables]"),
        "{body}"
    );
    assert!(
        !message.contains("WEATHER_API_KEY"),
        "configured, so not missing: {body}"
    );
    assert!(world.service_names().await.is_empty());

    // An OCI image: 422 with the reason; the remote beside it is not registered either.
    let variables = json!({"boxed_port": port(&boxed)});
    let (status, body) = world
        .import(json!({"source": world.url("/servers/boxed.json"), "variables": variables}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "unsupported");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("oci") && message.contains("docker.io/acme/boxed-mcp"),
        "{body}"
    );
    assert!(world.service_names().await.is_empty());

    // Asked to, the import skips the image and registers the remote.
    let (status, body) = world
        .import(json!({
            "source": world.url("/servers/boxed.json"),
            "variables": variables,
            "skipUnsupported": true,
        }))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["servers"][0]["name"], "boxed-remote", "{body}");
    assert!(
        body["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("oci"),
        "{body}"
    );
    assert_eq!(world.service_names().await, ["boxed-remote"]);
    boxed.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_midway_unregisters_what_the_import_registered() {
    let world = World::start().await;
    let first = start_fixture("first", &["one"]).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let source = json!({
        "name": "io.github.acme/pair",
        "description": "Two remotes, the second one down",
        "version": "1.0.0",
        "remotes": [
            {"type": "streamable-http", "url": format!("{}", first.mcp_url())},
            {"type": "streamable-http", "url": format!("http://127.0.0.1:{closed}/mcp")}
        ]
    });
    let (status, body) = world.import(json!({"source": source})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "upstream_unreachable");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("pair-remote-2") && message.contains("removed (pair-remote)"),
        "{body}"
    );
    assert!(world.service_names().await.is_empty());

    // A registry outside upstream_networks is never contacted.
    let (status, body) = world
        .import(json!({"source": "http://10.255.255.1/v0.1/servers"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "upstream_not_allowed");
    first.stop().await;
    world.stop().await;
}

/// The review's finding: two imports of one name at once both passed the name check,
/// and the second merged into (refreshed) the first's service. Now a name an import
/// plans is registered only as a new service: exactly one import wins, the other is
/// refused (409), and the winner's service is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_imports_of_one_name_at_once_never_merge() {
    let world = World::start().await;
    let backend = start_fixture("twin", &["twinTool"]).await;
    let source = json!({
        "name": "io.github.acme/twin",
        "description": "One remote",
        "version": "1.0.0",
        "remotes": [{"type": "streamable-http", "url": backend.mcp_url()}]
    });
    let body = json!({"source": source});
    let (a, b) = tokio::join!(world.import(body.clone()), world.import(body));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{a:?} {b:?}");
    // Refused by the name check when the winner was already in, or at registration
    // when both passed the check: either way, never merged.
    let loser = if a.0 == 409 { &a.1 } else { &b.1 };
    assert!(
        loser["error"] == "name_taken" || loser["error"] == "owner_conflict",
        "{loser}"
    );
    assert_eq!(world.service_names().await, ["twin"]);
    backend.stop().await;
    world.stop().await;
}
