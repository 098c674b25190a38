//! No Docker engine runs here, so the compose file and Dockerfile are checked against
//! the code's defaults instead: ports, commands, environment names each binary reads,
//! health checks, start order and the token.

use serde_json::Value;

const COMPOSE: &str = include_str!("../../docker-compose.yml");
const DOCKERFILE: &str = include_str!("../../Dockerfile");
const SHOPPING_MAIN: &str = include_str!("../../shopping-service/src/main.rs");
const USER_MAIN: &str = include_str!("../../user-service/src/main.rs");
const GATEWAY_CONFIG: &str = include_str!("../../gateway/src/config.rs");

fn compose() -> Value {
    serde_norway::from_str(COMPOSE).expect("docker-compose.yml parses")
}

fn port_of(listen: &str) -> &str {
    listen.rsplit_once(':').expect("host:port").1
}

fn env<'a>(service: &'a Value, key: &str) -> &'a str {
    service["environment"][key]
        .as_str()
        .unwrap_or_else(|| panic!("environment {key} missing"))
}

#[test]
fn compose_ports_commands_and_health_checks_match_the_defaults() {
    let c = compose();
    let services = &c["services"];
    let expected = [
        (
            "gateway",
            port_of(gateway::config::DEFAULT_LISTEN),
            "GATEWAY_LISTEN",
            GATEWAY_CONFIG,
        ),
        (
            "shopping-service",
            port_of(shopping_service::DEFAULT_LISTEN),
            "SHOPPING_SERVICE_LISTEN",
            SHOPPING_MAIN,
        ),
        (
            "user-service",
            port_of(user_service::DEFAULT_LISTEN),
            "USER_SERVICE_LISTEN",
            USER_MAIN,
        ),
    ];
    assert_eq!(
        services.as_object().expect("services").len(),
        3,
        "three services"
    );
    for (name, port, listen_var, source) in expected {
        let s = &services[name];
        assert_eq!(s["command"][0], name, "{name}: command is its binary");
        assert!(
            DOCKERFILE.contains(&format!("/out/{name}")),
            "Dockerfile ships {name}"
        );
        assert_eq!(
            port_of(env(s, listen_var)),
            port,
            "{name}: listens on its default port"
        );
        assert_eq!(
            s["ports"][0],
            format!("127.0.0.1:{port}:{port}"),
            "{name}: publishes its port, on the host's loopback only"
        );
        let health = s["healthcheck"]["test"]
            .as_array()
            .expect("healthcheck")
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            health.contains(&format!("127.0.0.1:{port}/health")),
            "{name}: health check {health}"
        );
        // Every variable the compose file sets is one the binary reads.
        for key in s["environment"].as_object().expect("environment").keys() {
            let read = if name == "gateway" {
                // figment: GATEWAY_<KEY> for each field of Config, MCP_BEARER_TOKEN for token.
                key == "MCP_BEARER_TOKEN"
                    || key.strip_prefix("GATEWAY_").is_some_and(|field| {
                        source.contains(&format!("pub {}:", field.to_lowercase()))
                    })
            } else {
                source.contains(&format!("\"{key}\""))
            };
            assert!(read, "{name}: {key} is not read by the binary");
        }
        // The token comes from the environment, defaulting to the code's default.
        assert_eq!(
            env(s, "MCP_BEARER_TOKEN"),
            format!("${{MCP_BEARER_TOKEN:-{}}}", service_kit::DEFAULT_TOKEN),
            "{name}"
        );
        // A service's own token (the one it requires on /mcp) defaults to that, as in
        // the binary.
        let own = match name {
            "shopping-service" => Some("SHOPPING_SERVICE_TOKEN"),
            "user-service" => Some("USER_SERVICE_TOKEN"),
            _ => None,
        };
        if let Some(own) = own {
            assert_eq!(
                env(s, own),
                format!(
                    "${{{own}:-${{MCP_BEARER_TOKEN:-{}}}}}",
                    service_kit::DEFAULT_TOKEN
                ),
                "{name}"
            );
        }
    }
}

#[test]
fn compose_starts_the_gateway_after_healthy_services_that_find_it() {
    let c = compose();
    let s = &c["services"];
    for dep in ["shopping-service", "user-service"] {
        assert_eq!(
            s["gateway"]["depends_on"][dep]["condition"], "service_healthy",
            "gateway waits for {dep}"
        );
        let gw_port = port_of(gateway::config::DEFAULT_LISTEN);
        assert_eq!(
            env(&s[dep], "GATEWAY_URL"),
            format!("http://gateway:{gw_port}")
        );
        // The gateway reaches the service by its compose name, which it must accept.
        let public = env(
            &s[dep],
            if dep == "shopping-service" {
                "SHOPPING_SERVICE_PUBLIC_URL"
            } else {
                "USER_SERVICE_PUBLIC_URL"
            },
        );
        assert!(public.starts_with(&format!("http://{dep}:")), "{public}");
        assert_eq!(env(&s[dep], "ALLOWED_HOSTS"), dep);
    }
    // The services register themselves, with the token the gateway must present to
    // them; a static upstream from the environment could not carry it.
    assert!(
        s["gateway"]["environment"]["GATEWAY_UPSTREAMS"].is_null(),
        "GATEWAY_UPSTREAMS would connect without the services' tokens"
    );
    assert_eq!(env(&s["gateway"], "GATEWAY_ALLOWED_HOSTS"), "gateway");
    assert!(env(&s["gateway"], "GATEWAY_STORE").starts_with("/data/"));
    assert_eq!(
        s["gateway"]["volumes"][0], "gateway-data:/data",
        "the store outlives the container"
    );
}
