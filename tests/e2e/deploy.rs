//! The replicated deployment (issue #15) checked against the code, as compose.rs checks
//! docker-compose.yml: docker-compose.ha.yml, deploy/haproxy/haproxy.cfg and the
//! Kubernetes manifests under deploy/kubernetes (ports, probes, environment names each
//! binary reads, images, secrets). With HAProxy installed (`.ci/run` installs it), the
//! HAProxy file itself is validated and then run in front of two stand-in replicas:
//! round-robin, headers untouched, SSE events not held back.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::{http, procs, serve_router, wait_until};

const HA_COMPOSE: &str = include_str!("../../docker-compose.ha.yml");
const COMPOSE: &str = include_str!("../../docker-compose.yml");
const HAPROXY_CFG: &str = include_str!("../../deploy/haproxy/haproxy.cfg");
pub const HAPROXY_CFG_PATH: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy/haproxy.cfg");
const KUBERNETES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
const DOCKERFILE: &str = include_str!("../../Dockerfile");
const README: &str = include_str!("../../README.md");
/// The one command that starts the replicated stack.
const HA_UP: &str = "docker compose -f docker-compose.ha.yml up --build";
const SHOPPING_MAIN: &str = include_str!("../../shopping-service/src/main.rs");
const USER_MAIN: &str = include_str!("../../user-service/src/main.rs");

/// The image the Dockerfile builds, as docker-compose.yml names it.
const IMAGE: &str = "mcp-federation:latest";
/// Where the official haproxy image reads its configuration.
const HAPROXY_IMAGE_CFG: &str = "/usr/local/etc/haproxy/haproxy.cfg";
/// The environment haproxy.cfg reads: the listen address and up to three replicas.
const HAPROXY_VARS: [&str; 4] = ["LB_LISTEN", "GATEWAY_1", "GATEWAY_2", "GATEWAY_3"];
/// The demo services: name, listen variable, public URL variable, own token variable,
/// default listen address, source of the binary's arguments.
const DEMO_SERVICES: [(&str, &str, &str, &str, &str, &str); 2] = [
    (
        "shopping-service",
        "SHOPPING_SERVICE_LISTEN",
        "SHOPPING_SERVICE_PUBLIC_URL",
        "SHOPPING_SERVICE_TOKEN",
        shopping_service::DEFAULT_LISTEN,
        SHOPPING_MAIN,
    ),
    (
        "user-service",
        "USER_SERVICE_LISTEN",
        "USER_SERVICE_PUBLIC_URL",
        "USER_SERVICE_TOKEN",
        user_service::DEFAULT_LISTEN,
        USER_MAIN,
    ),
];

fn port_of(listen: &str) -> &str {
    listen.rsplit_once(':').expect("host:port").1
}

fn gateway_port() -> &'static str {
    port_of(gateway::config::DEFAULT_LISTEN)
}

/// An environment variable the gateway reads: `MCP_BEARER_TOKEN` or `GATEWAY_<KEY>` for
/// a setting of its configuration (`store` and `cluster_key` being the replicas' two).
fn gateway_reads(key: &str) -> bool {
    ["GATEWAY_STORE", "GATEWAY_CLUSTER_KEY"].contains(&key)
        || gateway::Config::environment_variables()
            .iter()
            .any(|v| v == key)
}

/// An environment variable a demo service's binary reads (its clap `env = "..."`).
fn service_reads(source: &str, key: &str) -> bool {
    source.contains(&format!("env = \"{key}\""))
}

/// `value` with every compose interpolation `${NAME:-default}` replaced by its default
/// (itself interpolated) and `${NAME}` by nothing: what the stack runs with when none of
/// those variables is set.
fn compose_defaults(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let bytes = rest.as_bytes();
        let (mut depth, mut end) = (1, start + 2);
        while depth > 0 {
            match bytes.get(end) {
                Some(b'{') if bytes[end - 1] == b'$' => depth += 1,
                Some(b'}') => depth -= 1,
                Some(_) => {}
                None => panic!("unterminated ${{ in {value:?}"),
            }
            end += 1;
        }
        let inner = &rest[start + 2..end - 1];
        match inner.split_once(":-") {
            Some((_, default)) => out.push_str(&compose_defaults(default)),
            None => assert!(
                inner
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "an interpolation compose_defaults does not know: ${{{inner}}}"
            ),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The gateway's configuration from its environment (`MCP_BEARER_TOKEN`,
/// `GATEWAY_<KEY>`), through the code's own parsing and validation.
fn gateway_config(env: &BTreeMap<String, String>) -> Result<gateway::Config, String> {
    let mut toml = String::new();
    for (key, value) in env {
        let field = if key == "MCP_BEARER_TOKEN" {
            "token".to_string()
        } else {
            key.strip_prefix("GATEWAY_")
                .unwrap_or_else(|| panic!("{key} is no gateway setting"))
                .to_ascii_lowercase()
        };
        let literal = if value == "true"
            || value == "false"
            || (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        {
            value.clone()
        } else {
            serde_json::to_string(value).expect("string")
        };
        toml.push_str(&format!("{field} = {literal}\n"));
    }
    gateway::Config::from_toml(&toml).map_err(|e| e.to_string())
}

/// `postgres://user:password@host:port/db`, taken apart.
struct PostgresUrl {
    user: String,
    password: String,
    host: String,
    port: u16,
    db: String,
}

fn postgres_url(store: &str) -> PostgresUrl {
    let u = reqwest::Url::parse(store).unwrap_or_else(|e| panic!("{store}: {e}"));
    assert_eq!(u.scheme(), "postgres", "{store}");
    PostgresUrl {
        user: u.username().to_string(),
        password: u.password().expect("a password").to_string(),
        host: u.host_str().expect("a host").to_string(),
        port: u.port().expect("an explicit port"),
        db: u.path().trim_start_matches('/').to_string(),
    }
}

fn yaml(text: &str, what: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("{what} parses: {e}"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v}"))
}

/// A compose service's environment (a map of strings).
fn compose_env(service: &Value, name: &str) -> BTreeMap<String, String> {
    service["environment"]
        .as_object()
        .unwrap_or_else(|| panic!("{name}: environment"))
        .iter()
        .map(|(k, v)| (k.clone(), str_of(v, k).to_string()))
        .collect()
}

/// A compose health check's command as one line.
fn health_command(service: &Value, name: &str) -> String {
    service["healthcheck"]["test"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: healthcheck"))
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn ha_compose_runs_replicas_on_one_postgres_store_behind_haproxy() {
    // The command the README and the file's own comment give.
    let section = README
        .split_once("## Run several gateways")
        .expect("the README's section")
        .1;
    assert!(
        section.contains(&format!("```bash\n{HA_UP}\n```")),
        "README"
    );
    assert!(
        HA_COMPOSE.contains(&format!("#   {HA_UP}\n")),
        "the compose file's comment"
    );
    let c = yaml(HA_COMPOSE, "docker-compose.ha.yml");
    let single = yaml(COMPOSE, "docker-compose.yml");
    let s = c["services"].as_object().expect("services");
    let port = gateway_port();
    let names: BTreeSet<&str> = s.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "postgres",
            "gateway-1",
            "gateway-2",
            "gateway",
            "shopping-service",
            "user-service"
        ]),
    );
    assert_eq!(
        single["services"]["gateway"]["image"], IMAGE,
        "the image docker-compose.yml builds"
    );
    let built: Vec<&str> = s
        .iter()
        .filter(|(_, v)| !v["build"].is_null())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(built.len(), 1, "one service builds the image: {built:?}");
    assert_eq!(s[built[0]]["build"], ".");
    assert_eq!(s[built[0]]["image"], IMAGE);

    // PostgreSQL: the official image at a pinned major version, healthy when it answers.
    let pg = &s["postgres"];
    let pg_image = str_of(&pg["image"], "postgres image");
    let major = pg_image
        .strip_prefix("postgres:")
        .expect("the official postgres image");
    assert!(
        !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()),
        "pinned to a major version: {pg_image}"
    );
    let pg_env = compose_env(pg, "postgres");
    assert!(health_command(pg, "postgres").contains("pg_isready"));
    let data = str_of(&pg["volumes"][0], "postgres volume");
    let (volume, mount) = data.split_once(':').expect("volume:path");
    assert_eq!(mount, "/var/lib/postgresql/data");
    assert!(
        c["volumes"].get(volume).is_some(),
        "named volume {volume} declared"
    );
    assert!(pg["ports"].is_null(), "PostgreSQL is not published");

    // The replicas: the gateway binary on its default port, one store, one cluster key.
    let replicas: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("gateway-"))
        .collect();
    assert!(replicas.len() >= 2, "{replicas:?}");
    let first_env = compose_env(&s[replicas[0]], replicas[0]);
    for &r in &replicas {
        let g = &s[r];
        assert_eq!(g["image"], IMAGE, "{r}");
        assert_eq!(g["command"], json!(["gateway"]), "{r}");
        assert!(
            DOCKERFILE.contains("/out/gateway"),
            "Dockerfile ships gateway"
        );
        let env = compose_env(g, r);
        assert_eq!(env, first_env, "{r}: every replica is configured alike");
        for key in env.keys() {
            assert!(gateway_reads(key), "{r}: {key} is not read by the gateway");
        }
        assert_eq!(env["GATEWAY_LISTEN"], format!("0.0.0.0:{port}"), "{r}");
        assert!(
            !env.contains_key("GATEWAY_UPSTREAMS"),
            "{r}: the services register themselves"
        );
        assert_eq!(
            env["MCP_BEARER_TOKEN"],
            format!("${{MCP_BEARER_TOKEN:-{}}}", service_kit::DEFAULT_TOKEN),
            "{r}"
        );
        let key = &env["GATEWAY_CLUSTER_KEY"];
        assert!(
            key.starts_with("${GATEWAY_CLUSTER_KEY:-"),
            "{r}: the cluster key comes from the environment: {key}"
        );
        let default_key = compose_defaults(key);
        assert!(
            default_key.len() >= 16 && default_key.contains("dev-only"),
            "{r}: the default cluster key is long enough and says it is for development: {default_key}"
        );
        assert!(
            g["ports"].is_null(),
            "{r}: reached through the load balancer only"
        );
        // Its working directory (a call_log_store, when one is set) outlives it.
        assert_eq!(g["volumes"], json!([format!("{r}-data:/data")]), "{r}");
        assert!(c["volumes"].get(format!("{r}-data")).is_some(), "{r}");
        assert!(
            health_command(g, r).contains(&format!("127.0.0.1:{port}/health")),
            "{r}"
        );
        assert_eq!(
            g["depends_on"]["postgres"]["condition"], "service_healthy",
            "{r}"
        );
        // What the replica runs with, the defaults interpolated, is a configuration
        // the gateway accepts.
        let resolved: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.clone(), compose_defaults(v)))
            .collect();
        let config = gateway_config(&resolved).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(port_of(&config.listen), port);
        // The store is the postgres service's database, with its user and password
        // (the same variable sets both).
        let store = &env["GATEWAY_STORE"];
        assert!(
            store.contains(&pg_env["POSTGRES_PASSWORD"]),
            "{r}: {store} uses POSTGRES_PASSWORD as postgres does"
        );
        let url = postgres_url(&compose_defaults(store));
        assert_eq!(url.host, "postgres");
        assert_eq!(url.port, 5432);
        assert_eq!(url.user, pg_env["POSTGRES_USER"]);
        assert_eq!(url.password, compose_defaults(&pg_env["POSTGRES_PASSWORD"]));
        assert_eq!(url.db, pg_env["POSTGRES_DB"]);
    }

    // The load balancer: the official haproxy image (2.4 or newer: haproxy.cfg's .if
    // blocks), haproxy.cfg mounted read-only, the gateway's port on loopback.
    let lbs: Vec<&str> = s
        .iter()
        .filter(|(_, v)| {
            v["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("haproxy:"))
        })
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        lbs,
        ["gateway"],
        "one load balancer, named as clients call it"
    );
    let lb_name = lbs[0];
    let lb = &s[lb_name];
    let version = str_of(&lb["image"], "haproxy image")
        .strip_prefix("haproxy:")
        .expect("tag");
    let numbers: Vec<u32> = version
        .split('.')
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("pinned version: {version}"))
        })
        .collect();
    assert!(
        numbers.len() >= 2 && (numbers[0], numbers[1]) >= (2, 4),
        "haproxy {version}"
    );
    assert_eq!(
        lb["volumes"],
        json!([format!(
            "./deploy/haproxy/haproxy.cfg:{HAPROXY_IMAGE_CFG}:ro"
        )])
    );
    assert_eq!(lb["ports"], json!([format!("127.0.0.1:{port}:{port}")]));
    assert_eq!(
        lb["ports"], single["services"]["gateway"]["ports"],
        "the README's commands reach it where they reach the single gateway"
    );
    let lb_env = compose_env(lb, lb_name);
    assert_eq!(port_of(&lb_env["LB_LISTEN"]), port);
    let mut expected: Vec<String> = vec!["LB_LISTEN".into()];
    for (i, r) in replicas.iter().enumerate() {
        let var = format!("GATEWAY_{}", i + 1);
        assert_eq!(lb_env.get(&var), Some(&format!("{r}:{port}")), "{var}");
        assert_eq!(
            lb["depends_on"][r]["condition"], "service_healthy",
            "{lb_name} waits for {r}"
        );
        expected.push(var);
    }
    expected.sort();
    assert_eq!(lb_env.keys().cloned().collect::<Vec<_>>(), expected);
    for key in lb_env.keys() {
        assert!(
            HAPROXY_VARS.contains(&key.as_str())
                && HAPROXY_CFG.contains(&format!("\"${{{key}}}\"")),
            "haproxy.cfg reads {key}"
        );
    }
    let lb_health = health_command(lb, lb_name);
    assert!(
        lb_health.contains(&format!("127.0.0.1/{port}")) && lb_health.contains("GET /health"),
        "{lb_health}"
    );
    assert!(
        first_env["GATEWAY_ALLOWED_HOSTS"]
            .split(',')
            .any(|h| h == lb_name),
        "the replicas answer the Host the load balancer passes on"
    );

    // The demo services: as in docker-compose.yml (the gateway they register with is
    // the load balancer, under the same name), started once it answers.
    for (name, listen, public, own_token, default_listen, source) in DEMO_SERVICES {
        let svc = &s[name];
        assert_eq!(svc["image"], IMAGE, "{name}");
        assert_eq!(svc["command"], json!([name]), "{name}");
        let env = compose_env(svc, name);
        assert_eq!(
            env,
            compose_env(&single["services"][name], name),
            "{name}: configured as in docker-compose.yml"
        );
        for key in env.keys() {
            assert!(service_reads(source, key), "{name}: {key} is not read");
        }
        assert_eq!(env["GATEWAY_URL"], format!("http://{lb_name}:{port}"));
        assert_eq!(port_of(&env[listen]), port_of(default_listen), "{name}");
        assert!(
            env[public].starts_with(&format!("http://{name}:{}/", port_of(default_listen))),
            "{name}"
        );
        assert_eq!(env["ALLOWED_HOSTS"], name);
        assert!(env.contains_key(own_token), "{name}");
        assert!(
            health_command(svc, name)
                .contains(&format!("127.0.0.1:{}/health", port_of(default_listen))),
            "{name}"
        );
        assert_eq!(
            svc["depends_on"][lb_name]["condition"], "service_healthy",
            "{name}"
        );
    }
}

/// One line of haproxy.cfg: its section (`backend gateways`), the `.if` conditions
/// around it, and its words.
#[derive(Debug)]
struct Directive {
    section: String,
    conditions: Vec<String>,
    words: Vec<String>,
}

const HAPROXY_SECTIONS: [&str; 10] = [
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "mailers",
    "program",
];

fn haproxy_directives(cfg: &str) -> Vec<Directive> {
    let (mut section, mut conditions) = (String::new(), Vec::<String>::new());
    let mut out = Vec::new();
    for raw in cfg.lines() {
        let line = raw.split('#').next().unwrap_or_default();
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let Some(first) = words.first() else { continue };
        match first.as_str() {
            ".if" => conditions.push(words[1..].join(" ")),
            ".elif" | ".else" => {
                let last = conditions.last_mut().expect(".if before .elif/.else");
                *last = format!("!({last}) {}", words[1..].join(" "));
            }
            ".endif" => {
                conditions.pop().expect(".if before .endif");
            }
            w if !line.starts_with(char::is_whitespace) && HAPROXY_SECTIONS.contains(&w) => {
                section = words.join(" ");
            }
            _ => out.push(Directive {
                section: section.clone(),
                conditions: conditions.clone(),
                words,
            }),
        }
    }
    assert!(conditions.is_empty(), "every .if has its .endif");
    out
}

/// An HAProxy time (`5s`, `1h`, `250ms`, a bare number of milliseconds), in ms.
fn haproxy_ms(value: &str) -> u64 {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = value[..digits].parse().expect("a number");
    match &value[digits..] {
        "us" => n / 1000,
        "" | "ms" => n,
        "s" => n * 1_000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        unit => panic!("unknown time unit {unit}"),
    }
}

#[test]
fn haproxy_cfg_round_robins_over_env_addresses_without_stickiness() {
    let all = haproxy_directives(HAPROXY_CFG);
    let in_section = |prefix: &str| {
        all.iter()
            .filter(|d| d.section.starts_with(prefix))
            .collect::<Vec<_>>()
    };
    let has = |ds: &[&Directive], words: &[&str]| ds.iter().any(|d| d.words == words);
    let defaults = in_section("defaults");
    assert!(has(&defaults, &["mode", "http"]), "HTTP mode");

    // One frontend on ${LB_LISTEN}, one backend, round-robin over ${GATEWAY_n}.
    let frontends: BTreeSet<&str> = all
        .iter()
        .filter(|d| d.section.starts_with("frontend "))
        .map(|d| d.section.as_str())
        .collect();
    assert_eq!(frontends.len(), 1, "{frontends:?}");
    let frontend = in_section("frontend ");
    assert!(
        has(&frontend, &["bind", "\"${LB_LISTEN}\""]),
        "{frontend:?}"
    );
    let backend_name = frontend
        .iter()
        .find(|d| d.words[0] == "default_backend")
        .map(|d| d.words[1].clone())
        .expect("default_backend");
    let backend = in_section(&format!("backend {backend_name}"));
    assert!(!backend.is_empty(), "backend {backend_name}");
    let balances: Vec<&Directive> = all.iter().filter(|d| d.words[0] == "balance").collect();
    assert_eq!(balances.len(), 1, "{balances:?}");
    assert_eq!(balances[0].words, ["balance", "roundrobin"]);
    assert_eq!(balances[0].section, format!("backend {backend_name}"));
    let servers: Vec<&&Directive> = backend.iter().filter(|d| d.words[0] == "server").collect();
    assert_eq!(servers.len(), 3, "{servers:?}");
    for (i, server) in servers.iter().enumerate() {
        let n = i + 1;
        assert_eq!(
            server.words,
            [
                "server".to_string(),
                format!("g{n}"),
                format!("\"${{GATEWAY_{n}}}\""),
                "check".to_string()
            ],
        );
        // The first replica is required; the others are there when their variable is.
        let expected: Vec<String> = if n == 1 {
            vec![]
        } else {
            vec![format!("defined(GATEWAY_{n})")]
        };
        assert_eq!(server.conditions, expected, "g{n}");
    }
    let referenced: BTreeSet<&str> = HAPROXY_CFG
        .split("${")
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(v, _)| v))
        .collect();
    assert_eq!(referenced, BTreeSet::from(HAPROXY_VARS));

    // Health: GET /health, with a Host the gateway always answers (it refuses others).
    assert!(has(&backend, &["option", "httpchk"]));
    let send = backend
        .iter()
        .find(|d| d.words.starts_with(&["http-check".into(), "send".into()]))
        .map(|d| d.words.join(" "))
        .expect("http-check send");
    assert!(send.contains("meth GET uri /health"), "{send}");
    let host = send
        .split_once("hdr Host ")
        .map(|(_, h)| h.split_whitespace().next().unwrap_or_default())
        .expect("a Host header");
    assert!(
        service_kit::mcp::LOOPBACK_HOSTS.contains(&host),
        "Host {host} is one the gateway accepts"
    );
    assert!(has(&backend, &["http-check", "expect", "status", "200"]));

    // No stickiness of any kind: every request is balanced on its own.
    for d in &all {
        let first = d.words[0].as_str();
        assert!(
            ![
                "cookie",
                "stick",
                "stick-table",
                "persist",
                "hash-type",
                "hash-balance-factor",
                "appsession"
            ]
            .contains(&first),
            "stickiness: {:?}",
            d.words
        );
        assert!(
            !(first == "option" && d.words[1] == "prefer-last-server"),
            "stickiness: {:?}",
            d.words
        );
        if matches!(first, "server" | "default-server") {
            assert!(
                !d.words.iter().any(|w| w == "cookie"),
                "stickiness: {:?}",
                d.words
            );
        }
        // Nothing rewritten, added or removed, nothing buffered or compressed:
        // Authorization, Mcp-Session-Id and Last-Event-ID pass as the client sent them,
        // SSE events as the gateway writes them.
        assert!(
            ![
                "http-request",
                "http-response",
                "http-after-response",
                "compression",
                "filter",
                "reqadd",
                "reqdel",
                "rspadd",
                "rspdel"
            ]
            .contains(&first),
            "rewrites: {:?}",
            d.words
        );
        assert!(
            !(first == "option"
                && ["http-buffer-request", "forwardfor", "originalto"]
                    .contains(&d.words[1].as_str())),
            "changes the request: {:?}",
            d.words
        );
        let line = d.words.join(" ").to_ascii_lowercase();
        for header in ["authorization", "mcp-session-id", "last-event-id"] {
            assert!(!line.contains(header), "{header} touched: {line}");
        }
    }

    // A quiet SSE stream is not cut before the gateway itself would close the idle
    // session: no inactivity timeout shorter than session_idle_timeout_ms.
    let idle = gateway::Config::default().session_idle_timeout_ms;
    for which in ["client", "server", "tunnel"] {
        let values: Vec<u64> = all
            .iter()
            .filter(|d| d.words.len() == 3 && d.words[0] == "timeout" && d.words[1] == which)
            .map(|d| haproxy_ms(&d.words[2]))
            .collect();
        assert!(!values.is_empty(), "timeout {which} is set");
        for v in values {
            assert!(
                v >= idle,
                "timeout {which} {v} ms < session_idle_timeout_ms {idle}"
            );
        }
    }
    assert!(
        defaults
            .iter()
            .any(|d| d.words.starts_with(&["timeout".into(), "connect".into()])),
        "timeout connect"
    );
}

/// The haproxy binary: `HAPROXY`, else on PATH (or in /usr/sbin, where Debian puts it).
pub fn haproxy() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HAPROXY") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
}

fn haproxy_or_skip(test: &str) -> Option<PathBuf> {
    let found = haproxy();
    if found.is_none() {
        println!(
            "{test}: skipped, haproxy is not installed (apt-get install haproxy; .ci/run installs it)"
        );
    }
    found
}

/// `haproxy -c` on haproxy.cfg with exactly `env` among its variables.
fn haproxy_check(binary: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(binary);
    command.args(["-c", "-f", HAPROXY_CFG_PATH]);
    for var in HAPROXY_VARS {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("run haproxy -c")
}

#[test]
fn haproxy_accepts_the_config_with_loopback_addresses() {
    let Some(binary) = haproxy_or_skip("haproxy_accepts_the_config_with_loopback_addresses") else {
        return;
    };
    let addrs = [
        ("LB_LISTEN", "127.0.0.1:13001"),
        ("GATEWAY_1", "127.0.0.1:13011"),
        ("GATEWAY_2", "127.0.0.1:13012"),
        ("GATEWAY_3", "localhost:13013"),
    ];
    for replicas in 1..=3 {
        let out = haproxy_check(&binary, &addrs[..=replicas]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("Configuration file is valid"),
            "{replicas} replica(s): {text}"
        );
    }
    // The listen address and the first replica are required: without them the file is
    // refused rather than run half-configured.
    for missing in ["LB_LISTEN", "GATEWAY_1"] {
        let env: Vec<(&str, &str)> = addrs
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let out = haproxy_check(&binary, &env);
        assert!(!out.status.success(), "accepted without {missing}");
    }
}

/// A stand-in gateway replica: `/health`; `POST /mcp` answers its name and the headers
/// it received; `GET /mcp` is an SSE stream whose second event waits for `release`.
fn stand_in(name: &'static str, release: Arc<tokio::sync::Notify>) -> axum::Router {
    use axum::{
        http::{HeaderMap, header},
        routing::get,
    };
    fn header_of(headers: &HeaderMap, name: &str) -> Value {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map_or(Value::Null, |v| json!(v))
    }
    axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/mcp",
            axum::routing::post(move |headers: HeaderMap| async move {
                axum::Json(json!({
                    "replica": name,
                    "authorization": header_of(&headers, "authorization"),
                    "mcp-session-id": header_of(&headers, "mcp-session-id"),
                    "last-event-id": header_of(&headers, "last-event-id"),
                }))
            })
            .get(move |headers: HeaderMap| {
                let release = Arc::clone(&release);
                async move {
                    let last = header_of(&headers, "last-event-id");
                    let (tx, rx) = tokio::sync::mpsc::channel::<String>(2);
                    tokio::spawn(async move {
                        let _ = tx
                            .send(format!("id: 8\ndata: first from {name} after {last}\n\n"))
                            .await;
                        release.notified().await;
                        let _ = tx.send("id: 9\ndata: second\n\n".to_string()).await;
                    });
                    let events = futures::stream::unfold(rx, |mut rx| async move {
                        rx.recv()
                            .await
                            .map(|event| (Ok::<_, std::convert::Infallible>(event), rx))
                    });
                    (
                        [(header::CONTENT_TYPE, "text/event-stream")],
                        axum::body::Body::from_stream(events),
                    )
                }
            }),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_round_robins_and_streams_sse_unbuffered_with_headers_untouched() {
    let Some(binary) =
        haproxy_or_skip("haproxy_round_robins_and_streams_sse_unbuffered_with_headers_untouched")
    else {
        return;
    };
    let release = Arc::new(tokio::sync::Notify::new());
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        replicas.push(serve_router(listener, stand_in(name, Arc::clone(&release))));
    }
    let listen = format!("127.0.0.1:{}", procs::free_port());
    let mut lb = tokio::process::Command::new(&binary)
        .args(["-db", "-f", HAPROXY_CFG_PATH])
        .env_remove("GATEWAY_3")
        .env("LB_LISTEN", &listen)
        .env("GATEWAY_1", replicas[0].addr.to_string())
        .env("GATEWAY_2", replicas[1].addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy");
    let base = format!("http://{listen}");
    wait_until("haproxy to answer", Duration::from_secs(20), || async {
        matches!(http().get(format!("{base}/health")).send().await, Ok(r) if r.status().is_success())
    })
    .await;

    // Round-robin: consecutive requests alternate between the replicas, whatever the
    // session id says; the headers arrive as sent.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let answer: Value = http()
            .post(format!("{base}/mcp"))
            .header("Authorization", "Bearer a-client-token")
            .header("Mcp-Session-Id", "session-on-another-replica")
            .header("Last-Event-ID", "41")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .send()
            .await
            .expect("POST through haproxy")
            .json()
            .await
            .expect("JSON");
        assert_eq!(answer["authorization"], "Bearer a-client-token");
        assert_eq!(answer["mcp-session-id"], "session-on-another-replica");
        assert_eq!(answer["last-event-id"], "41");
        seen.push(str_of(&answer["replica"], "replica").to_string());
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "not round-robin: {seen:?}");
    }
    assert_eq!(
        seen.iter().filter(|r| *r == "replica-a").count(),
        3,
        "{seen:?}"
    );

    // SSE: the first event arrives while the stream is still open (the second waits for
    // `release`), so nothing holds the response back; Last-Event-ID reaches the replica.
    let mut stream = http()
        .get(format!("{base}/mcp"))
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", "7")
        .send()
        .await
        .expect("GET through haproxy");
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers()["content-type"],
        "text/event-stream",
        "content type passed on"
    );
    let mut received = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !received.contains("\n\n") {
            let chunk = stream.chunk().await.expect("chunk").expect("stream open");
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the first event was held back: {received:?}"));
    assert!(
        received.starts_with("id: 8\ndata: first from replica-")
            && received.ends_with("after \"7\"\n\n"),
        "{received:?}"
    );
    release.notify_waiters();
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.chunk().await.expect("chunk") {
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the stream ends after its second event");
    assert!(
        received.ends_with("id: 9\ndata: second\n\n"),
        "{received:?}"
    );

    lb.kill().await.expect("stop haproxy");
    for replica in replicas {
        replica.stop().await;
    }
}

/// Every document of every YAML file under deploy/kubernetes, by file name.
fn kubernetes_files() -> BTreeMap<String, Vec<Value>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(KUBERNETES_DIR).expect("deploy/kubernetes") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        assert!(
            name.ends_with(".yaml"),
            "deploy/kubernetes holds YAML only (.yaml): {name}"
        );
        let text = std::fs::read_to_string(&path).expect("read");
        let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}")))
            .filter(|v| !v.is_null())
            .collect();
        files.insert(name, docs);
    }
    files
}

/// What a pod's IP (`fieldRef: status.podIP`) stands for in these checks.
const POD_IP: &str = "10.1.2.3";

/// A container's environment, each value resolved (a literal, the Secret's value, the
/// pod's IP), `$(NAME)` expanded from the entries before it as Kubernetes does.
fn container_env(
    container: &Value,
    secrets: &BTreeMap<String, &Value>,
    what: &str,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in container_env_raw(container, secrets, what) {
        let expanded = env
            .iter()
            .fold(value, |v, (k, x)| v.replace(&format!("$({k})"), x));
        env.insert(name, expanded);
    }
    env
}

fn container_env_raw(
    container: &Value,
    secrets: &BTreeMap<String, &Value>,
    what: &str,
) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: env"))
        .iter()
        .map(|e| {
            let name = str_of(&e["name"], "env name").to_string();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP" {
                POD_IP.to_string()
            } else {
                let r = &e["valueFrom"]["secretKeyRef"];
                let secret = secrets
                    .get(str_of(&r["name"], "secret name"))
                    .unwrap_or_else(|| panic!("{what}: {name}: no Secret {}", r["name"]));
                str_of(
                    &secret["stringData"][str_of(&r["key"], "secret key")],
                    &format!("{what}: {name} from {}", r),
                )
                .to_string()
            };
            (name, value)
        })
        .collect()
}

/// The one container of a pod template.
fn only_container<'a>(workload: &'a Value, what: &str) -> &'a Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: containers"));
    assert_eq!(containers.len(), 1, "{what}: one container");
    &containers[0]
}

/// A probe that asks `GET /health` on `port` with a Host the binary answers.
fn assert_health_probe(container: &Value, probe: &str, port: &str, what: &str) {
    let get = &container[probe]["httpGet"];
    assert_eq!(get["path"], "/health", "{what}: {probe}");
    assert_eq!(get["port"].to_string(), port, "{what}: {probe} port");
    let host = get["httpHeaders"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == "Host"))
        .and_then(|h| h["value"].as_str())
        .unwrap_or_else(|| {
            panic!("{what}: {probe} names a Host (the kubelet would send the pod's IP)")
        });
    assert!(
        service_kit::mcp::LOOPBACK_HOSTS.contains(&host),
        "{what}: {probe} Host {host}"
    );
}

#[test]
fn kubernetes_manifests_agree_with_the_code() {
    let files = kubernetes_files();
    let port = gateway_port();

    // kustomization.yaml lists every other file.
    let kustomization = &files.get("kustomization.yaml").expect("kustomization.yaml")[0];
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| str_of(r, "resource"))
        .collect();
    let others: BTreeSet<&str> = files
        .keys()
        .map(String::as_str)
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, others);

    let mut objects: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for (file, docs) in &files {
        if file == "kustomization.yaml" {
            continue;
        }
        for doc in docs {
            let kind = str_of(&doc["kind"], file).to_string();
            let name = str_of(&doc["metadata"]["name"], file).to_string();
            assert!(doc["apiVersion"].is_string(), "{file}: {kind} {name}");
            assert!(
                doc["metadata"]["namespace"].is_null(),
                "{file}: {kind} {name}: no namespace (kubectl apply -n chooses)"
            );
            assert!(
                objects.insert((kind.clone(), name.clone()), doc).is_none(),
                "{kind} {name} twice"
            );
        }
    }
    let get = |kind: &str, name: &str| -> &Value {
        objects
            .get(&(kind.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let secrets: BTreeMap<String, &Value> = objects
        .iter()
        .filter(|((kind, _), _)| kind == "Secret")
        .map(|((_, name), v)| (name.clone(), *v))
        .collect();
    // Placeholders only, and marked as such.
    for (name, secret) in &secrets {
        assert!(secret["data"].is_null(), "{name}: stringData, readable");
        for (key, value) in secret["stringData"].as_object().expect("stringData") {
            assert!(
                str_of(value, key).contains("CHANGE-ME"),
                "Secret {name}: {key} is not a marked placeholder"
            );
        }
    }

    // The gateway: replicas of the image's gateway binary on its default port.
    let deployment = get("Deployment", "gateway");
    assert_eq!(deployment["apiVersion"], "apps/v1");
    assert!(
        deployment["spec"]["replicas"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "2+ replicas"
    );
    let labels = &deployment["spec"]["selector"]["matchLabels"];
    for (k, v) in labels.as_object().expect("matchLabels") {
        assert_eq!(&deployment["spec"]["template"]["metadata"]["labels"][k], v);
    }
    let pod = &deployment["spec"]["template"]["spec"];
    let gw = only_container(deployment, "gateway");
    assert_eq!(gw["image"], IMAGE);
    assert_eq!(gw["command"], json!(["gateway"]));
    assert_eq!(gw["ports"][0]["containerPort"].to_string(), port);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_health_probe(gw, probe, port, "gateway");
    }
    assert!(
        gw["resources"]["requests"]["cpu"].is_string(),
        "a CPU request (the autoscaler's utilization is relative to it)"
    );
    for (name, key) in [
        ("GATEWAY_STORE", "store"),
        ("GATEWAY_CLUSTER_KEY", "cluster-key"),
        ("MCP_BEARER_TOKEN", "bearer-token"),
    ] {
        let entry = gw["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("gateway: {name}"));
        assert_eq!(
            entry["valueFrom"]["secretKeyRef"]["key"], key,
            "gateway: {name} from the Secret"
        );
    }
    let mut env = container_env(gw, &secrets, "gateway");
    // POD_IP only feeds GATEWAY_CLUSTER_ADDRESS.
    assert_eq!(env.remove("POD_IP").as_deref(), Some(POD_IP));
    for key in env.keys() {
        assert!(
            gateway_reads(key),
            "gateway: {key} is not read by the gateway"
        );
    }
    assert_eq!(env["GATEWAY_LISTEN"], format!("0.0.0.0:{port}"));
    assert_eq!(
        env["GATEWAY_CLUSTER_ADDRESS"],
        format!("{POD_IP}:{port}"),
        "the other replicas reach a pod at its own IP, on the port it listens on"
    );
    assert!(
        !env.contains_key("GATEWAY_INSECURE_DEFAULT_TOKEN"),
        "the token comes from the Secret"
    );
    let config = gateway_config(&env).unwrap_or_else(|e| panic!("gateway: {e}"));
    assert_eq!(port_of(&config.listen), port);
    // A pod that is told to stop finishes preStop, then drains its calls.
    let pre_stop = gw["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .and_then(|c| c.get(1))
        .and_then(Value::as_str)
        .map_or(0, |s| s.parse::<u64>().expect("sleep seconds"));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(
        grace * 1000 > pre_stop * 1000 + config.drain_timeout_ms,
        "grace {grace} s < preStop {pre_stop} s + drain {} ms",
        config.drain_timeout_ms
    );

    // Its Service, with no affinity: the name clients call it by is an allowed Host.
    let service = get("Service", "gateway");
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(service["spec"]["ports"][0]["port"].to_string(), port);
    assert_eq!(service["spec"]["ports"][0]["targetPort"].to_string(), port);
    assert!(
        service["spec"]["sessionAffinity"].is_null()
            || service["spec"]["sessionAffinity"] == "None"
    );
    assert!(
        env["GATEWAY_ALLOWED_HOSTS"]
            .split(',')
            .any(|h| h == "gateway"),
        "the Service's name is an allowed Host"
    );

    let pdb = get("PodDisruptionBudget", "gateway");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);

    let hpa = get("HorizontalPodAutoscaler", "gateway");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "gateway");
    let min = hpa["spec"]["minReplicas"].as_u64().expect("minReplicas");
    assert!(min >= 2 && hpa["spec"]["maxReplicas"].as_u64().expect("max") > min);
    assert!(
        hpa["spec"]["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .any(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu"),
        "scales on CPU"
    );

    // PostgreSQL: the compose file's image, behind a headless Service, and the store
    // URL names it with its user, password and database.
    let compose = yaml(HA_COMPOSE, "docker-compose.ha.yml");
    let statefulset = get("StatefulSet", "postgres");
    let pg = only_container(statefulset, "postgres");
    assert_eq!(pg["image"], compose["services"]["postgres"]["image"]);
    let pg_env = container_env(pg, &secrets, "postgres");
    let pg_service = get(
        "Service",
        str_of(&statefulset["spec"]["serviceName"], "serviceName"),
    );
    assert_eq!(pg_service["spec"]["clusterIP"], "None", "headless");
    assert_eq!(
        pg_service["spec"]["selector"],
        statefulset["spec"]["selector"]["matchLabels"]
    );
    assert!(statefulset["spec"]["volumeClaimTemplates"].is_array());
    let url = postgres_url(&env["GATEWAY_STORE"]);
    assert_eq!(url.host, str_of(&pg_service["metadata"]["name"], "name"));
    assert_eq!(
        url.port.to_string(),
        pg_service["spec"]["ports"][0]["port"].to_string()
    );
    assert_eq!(url.user, pg_env["POSTGRES_USER"]);
    assert_eq!(url.password, pg_env["POSTGRES_PASSWORD"]);
    assert_eq!(url.db, pg_env["POSTGRES_DB"]);

    // The demo services: their binaries on their default ports, registering with the
    // gateway's Service under their own Service's name.
    for (name, listen, public, _, default_listen, source) in DEMO_SERVICES {
        let own_port = port_of(default_listen);
        let c = only_container(get("Deployment", name), name);
        assert_eq!(c["image"], IMAGE, "{name}");
        assert_eq!(c["command"], json!([name]), "{name}");
        assert_eq!(c["ports"][0]["containerPort"].to_string(), own_port);
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_health_probe(c, probe, own_port, name);
        }
        let env = container_env(c, &secrets, name);
        for key in env.keys() {
            assert!(service_reads(source, key), "{name}: {key} is not read");
        }
        assert_eq!(port_of(&env[listen]), own_port, "{name}");
        assert_eq!(env["GATEWAY_URL"], format!("http://gateway:{port}"));
        assert_eq!(env[public], format!("http://{name}:{own_port}/mcp"));
        assert_eq!(env["ALLOWED_HOSTS"], name);
        let svc = get("Service", name);
        assert_eq!(svc["spec"]["ports"][0]["port"].to_string(), own_port);
        assert_eq!(
            svc["spec"]["selector"],
            get("Deployment", name)["spec"]["selector"]["matchLabels"]
        );
    }
}
