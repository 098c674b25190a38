//! stdio upstreams: MCP servers the gateway runs as child processes. The conformance
//! fixture in `--stdio` mode is the well-behaved server; `sh` scripts are the crashing,
//! garbage-writing and stderr-flooding ones. Faults are real: `kill -9` of a child,
//! SIGTERM and SIGKILL of the gateway (run as its own process), and process and
//! descriptor counts read from /proc.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};

use crate::support::{
    TOKEN, call, credential, credential_token, gateway_config, http, metric, procs, register_as,
    rpc, services, start_fixture, start_gateway, wait_for_services, wait_until,
};

/// The conformance fixture serving the 2025 revision on stdin and stdout.
fn fixture() -> (String, Vec<String>) {
    (
        procs::binary("conformance-fixture").display().to_string(),
        vec!["--stdio".into(), "--revision".into(), "2025".into()],
    )
}

fn stdio_upstream(name: &str, command: &str, args: &[String]) -> gateway::config::UpstreamSpec {
    gateway::config::UpstreamSpec {
        name: name.into(),
        command: Some(command.into()),
        args: args.to_vec(),
        ..Default::default()
    }
}

/// A `sh -c SCRIPT` stdio server.
fn sh(name: &str, script: &str) -> gateway::config::UpstreamSpec {
    stdio_upstream(name, "sh", &["-c".into(), script.into()])
}

/// `/services`' entry of `name`.
async fn service(gateway: &impl crate::support::Target, name: &str) -> Value {
    let all = services(gateway).await;
    all["services"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["name"] == name).cloned())
        .unwrap_or_else(|| panic!("{name} not in /services: {all}"))
}

/// The pids of `name`'s running children, by `/services`.
async fn pids(gateway: &impl crate::support::Target, name: &str) -> Vec<u32> {
    service(gateway, name).await["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["process"]["pid"].as_u64().map(|p| p as u32))
        .collect()
}

/// A live (not zombie) process with this pid exists.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid}");
}

async fn post(gateway: &impl crate::support::Target, path: &str) -> (u16, Value) {
    let resp = http()
        .post(format!("{}{path}", gateway.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

async fn get(gateway: &impl crate::support::Target, path: &str) -> (u16, Value) {
    let resp = http()
        .get(format!("{}{path}", gateway.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

/// The header read timeout of a gateway that takes 200 requests at once: each opens a
/// connection of its own from this test's process, which on two busy cores (a debug
/// build, other tests beside it) may send its request's head more than the default 10 s
/// after connecting; the gateway then closes the connection unanswered
/// (`IncompleteMessage`), as it should for a slow client. These tests are not about
/// slow clients (`attacks.rs` is).
const CONCURRENT_HEAD_WAIT_MS: u64 = 120_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_is_listed_called_read_and_back_after_kill_9_while_others_see_no_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = start_fixture("other", &["echo"]).await;
    let (command, args) = fixture();
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.upstreams = vec![
        stdio_upstream("fx", &command, &args),
        gateway::config::UpstreamSpec {
            name: "other".into(),
            url: other.mcp_url(),
            ..Default::default()
        },
    ];
    let gw = start_gateway(config).await;
    wait_for_services(&gw, &["fx", "other"]).await;

    // Listed, called, a resource read, a prompt got: all over the child's stdin/stdout.
    let answer = call(&gw, "test_simple_text", json!({})).await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "This is a simple text response for testing.",
        "{answer}"
    );
    let (_, read) = rpc(&gw, "resources/read", json!({"uri": "test://static-text"})).await;
    assert!(read["result"]["contents"][0]["text"].is_string(), "{read}");
    let entry = service(&gw, "fx").await;
    let process = &entry["instances"][0]["process"];
    assert_eq!(entry["state"], "healthy", "{entry}");
    assert!(
        process["command"]
            .as_str()
            .expect("command")
            .ends_with("--stdio --revision 2025")
    );
    assert!(process["rssBytes"].as_u64().expect("rss") > 0, "{process}");
    let before = pids(&gw, "fx").await;
    assert_eq!(before.len(), 1);

    // Another service under load while the child is killed: not one error.
    let load = {
        let base = gw.base();
        tokio::spawn(async move {
            let target = crate::support::procs::Url(base);
            let mut errors = Vec::new();
            for i in 0..150 {
                let a = call(&target, "echo", json!({"i": i})).await;
                if a.get("result").is_none() || a["result"]["isError"] == true {
                    errors.push(a);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            errors
        })
    };
    kill9(before[0]);
    // Until it is back, a call fails with an error that names the service; then it
    // succeeds with no step by anyone.
    let failures = std::sync::Mutex::new(Vec::new());
    wait_until(
        "fx to answer again after kill -9",
        Duration::from_secs(20),
        || async {
            let a = call(&gw, "test_simple_text", json!({})).await;
            if a.get("result").is_some() {
                return true;
            }
            failures.lock().unwrap().push(a);
            false
        },
    )
    .await;
    let failures = failures.into_inner().unwrap();
    for f in &failures {
        assert_eq!(f["error"]["code"], -32000, "{f}");
        assert_eq!(f["error"]["data"]["service"], "fx", "{f}");
    }
    let errors = load.await.expect("load task");
    assert!(
        errors.is_empty(),
        "the other service saw errors: {errors:?}"
    );
    let after = pids(&gw, "fx").await;
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new child");
    assert!(!alive(before[0]), "the killed child was reaped");
    let process = &service(&gw, "fx").await["instances"][0]["process"];
    assert_eq!(process["restarts"], 1, "{process}");
    assert_eq!(process["lastExit"], "killed by signal 9", "{process}");
    // /metrics has the same: restarts, running, CPU and memory of the child.
    let id = service(&gw, "fx").await["instances"][0]["id"]
        .as_str()
        .expect("instance id")
        .to_string();
    let series = |name: &str| format!("mcp_gateway_{name}{{service=\"fx\",instance=\"{id}\"}}");
    assert_eq!(metric(&gw, &series("stdio_restarts")).await, Some(1.0));
    assert_eq!(metric(&gw, &series("stdio_running")).await, Some(1.0));
    assert!(
        metric(&gw, &series("stdio_resident_bytes"))
            .await
            .is_some_and(|b| b > 0.0)
    );
    assert!(metric(&gw, &series("stdio_cpu_seconds")).await.is_some());
    gw.stop().await;
    // The gateway's shutdown ends its children.
    wait_until(
        "the child to end with the gateway",
        Duration::from_secs(10),
        || async { !alive(after[0]) },
    )
    .await;
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_exits_at_once_is_failed_after_its_restart_budget_with_its_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.upstreams = vec![sh(
        "crashy",
        "echo \"cannot open /var/db/thing: permission denied\" >&2; exit 3",
    )];
    let gw = start_gateway(config).await;
    wait_until("crashy to be failed", Duration::from_secs(40), || async {
        service(&gw, "crashy").await["state"] == "failed"
    })
    .await;
    let entry = service(&gw, "crashy").await;
    let instance = &entry["instances"][0];
    let why = instance["lastError"].as_str().expect("lastError");
    assert!(why.contains("restarted 5 times within 60 s"), "{why}");
    assert!(why.contains("exit code 3"), "{why}");
    assert_eq!(instance["process"]["restarts"], 5, "{instance}");
    assert!(instance["process"].get("pid").is_none(), "{instance}");
    let tail = instance["process"]["stderrTail"].to_string();
    assert!(tail.contains("permission denied"), "{tail}");
    let (status, logs) = get(&gw, "/services/crashy/logs").await;
    assert_eq!(status, 200, "{logs}");
    let lines = logs["instances"][0]["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 6, "one line per start: {logs}");
    // It stays failed: no restart storm.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        service(&gw, "crashy").await["instances"][0]["process"]["restarts"],
        5
    );
    // An operator's start tries again, with a fresh budget.
    let (status, _) = post(&gw, "/services/crashy/start").await;
    assert_eq!(status, 200);
    wait_until(
        "a new start after the operator's",
        Duration::from_secs(10),
        || async {
            service(&gw, "crashy").await["instances"][0]["process"]["restarts"]
                .as_u64()
                .is_some_and(|r| r > 5)
        },
    )
    .await;
    // An HTTP service has no process logs; an unknown action is named.
    let (status, body) = post(&gw, "/services/crashy/reboot").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_action"))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_stdout_is_a_clear_error_and_a_stop_start_cycle_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (command, args) = fixture();
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.upstreams = vec![
        // Never answers initialize: lines of garbage, and one line far over any bound.
        sh(
            "noisy",
            "head -c 40000000 /dev/zero | tr '\\0' x; echo; while true; do echo 'this is not JSON'; sleep 0.05; done",
        ),
        stdio_upstream("fx", &command, &args),
    ];
    config.max_response_bytes = 1 << 20;
    let gw = start_gateway(config).await;
    wait_for_services(&gw, &["fx"]).await;
    wait_until(
        "noisy to be down with a reason",
        Duration::from_secs(20),
        || async {
            let s = service(&gw, "noisy").await;
            s["state"] == "down"
                && s["instances"][0]["lastError"]
                    .as_str()
                    .is_some_and(|e| e.contains("no MCP answer on stdout"))
        },
    )
    .await;
    // The gateway is up and serves the other stdio server.
    let answer = call(&gw, "test_simple_text", json!({})).await;
    assert!(answer.get("result").is_some(), "{answer}");

    // stop: the child ends and calls fail with a named error; start: it is back.
    let child = pids(&gw, "fx").await[0];
    let (status, stopped) = post(&gw, "/services/fx/stop").await;
    assert_eq!(
        (status, stopped["state"].as_str()),
        (200, Some("stopped")),
        "{stopped}"
    );
    assert!(!alive(child), "the stopped child is gone");
    let refused = call(&gw, "test_simple_text", json!({})).await;
    assert_eq!(refused["error"]["code"], -32000, "{refused}");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(message.contains("stopped by an operator"), "{message}");
    let (status, started) = post(&gw, "/services/fx/start").await;
    assert_eq!(
        (status, started["state"].as_str()),
        (200, Some("healthy")),
        "{started}"
    );
    let answer = call(&gw, "test_simple_text", json!({})).await;
    assert!(answer.get("result").is_some(), "{answer}");
    // restart: a new child.
    let before = pids(&gw, "fx").await;
    let (status, _) = post(&gw, "/services/fx/restart").await;
    assert_eq!(status, 200);
    assert_ne!(pids(&gw, "fx").await, before);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_over_one_child_each_get_their_own_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (command, args) = fixture();
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.upstreams = vec![stdio_upstream("fx", &command, &args)];
    config.header_read_timeout_ms = CONCURRENT_HEAD_WAIT_MS;
    let gw = start_gateway(config).await;
    wait_for_services(&gw, &["fx"]).await;
    let target = crate::support::procs::Url(gw.base());
    let answers = futures::future::join_all((0..200).map(|i| {
        let target = target.clone();
        async move {
            let (_, a) = rpc(
                &target,
                "prompts/get",
                json!({"name": "test_prompt_with_arguments",
                       "arguments": {"arg1": format!("first-{i}"), "arg2": format!("second-{i}")}}),
            )
            .await;
            (i, a)
        }
    }))
    .await;
    for (i, a) in answers {
        let text = a["result"]["messages"][0]["content"]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("request {i}: {a}"));
        assert!(
            text.contains(&format!("first-{i}")) && text.contains(&format!("second-{i}")),
            "request {i} got another's answer: {text}"
        );
    }
    assert_eq!(pids(&gw, "fx").await.len(), 1, "one child served them all");
    gw.stop().await;
}

/// A 2025-era session client that declares elicitation and answers every question with
/// its own name.
#[derive(Clone)]
struct Named(String);

impl rmcp::ClientHandler for Named {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            serde_json::from_value(json!({"elicitation": {}})).expect("capabilities"),
            rmcp::model::Implementation::new("named", "1.0.0"),
        )
    }

    async fn create_elicitation(
        &self,
        _request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        // Slow enough that every call's question is out at once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        serde_json::from_value(json!({"action": "accept", "content": {"name": self.0}}))
            .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_is_spoken_to_in_its_newest_revision_and_each_question_reaches_its_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (command, old) = fixture();
    let new = vec!["--stdio".to_string()];
    // A server that never sees `server/discover` (a filter drops it): it must get
    // `initialize` on a fresh child, and keep getting it without the probe's wait.
    let deaf = format!(
        "grep --line-buffered -v server/discover | exec {command:?} --stdio --revision 2025"
    );
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.upstreams = vec![
        stdio_upstream("new", &command, &new),
        stdio_upstream("old", &command, &old),
        sh("deaf", &deaf),
    ];
    config.connect_timeout_ms = 1_500;
    let gw = start_gateway(config).await;
    wait_for_services(&gw, &["new", "old", "deaf"]).await;
    let revision = |s: &Value| {
        s["instances"][0]["protocolVersion"]
            .as_str()
            .map(str::to_owned)
    };
    let new_service = service(&gw, "new").await;
    assert_eq!(
        revision(&new_service).as_deref(),
        Some("2026-07-28"),
        "{new_service}"
    );
    let old_service = service(&gw, "old").await;
    assert_eq!(
        revision(&old_service).as_deref(),
        Some("2025-11-25"),
        "{old_service}"
    );
    // It answered the probe with no revision in common: probed, then started again at
    // once, which is neither a restart nor an exit to report.
    let process = &old_service["instances"][0]["process"];
    assert_eq!(process["restarts"], 0, "{old_service}");
    assert!(process["lastExit"].is_null(), "{old_service}");
    let deaf_service = service(&gw, "deaf").await;
    assert_eq!(
        revision(&deaf_service).as_deref(),
        Some("2025-11-25"),
        "{deaf_service}"
    );
    assert_eq!(
        deaf_service["instances"][0]["process"]["restarts"], 0,
        "the fallback child is not a restart: {deaf_service}"
    );
    // Restarted, it is spoken to in 2025-11-25 at once.
    let (status, restarted) = post(&gw, "/services/deaf/restart").await;
    assert_eq!(status, 200, "{restarted}");
    let deaf_service = service(&gw, "deaf").await;
    assert_eq!(
        revision(&deaf_service).as_deref(),
        Some("2025-11-25"),
        "{deaf_service}"
    );

    // Twenty clients ask the one child at once; each question comes back inside its own
    // call's answer, so every client is asked its own and gets its own greeting (a
    // 2025-era child's questions carry no call, and most of these would be refused).
    let call =
        rmcp::model::CallToolRequestParams::new("new__test_input_required_result_elicitation");
    let results = futures::future::join_all((0..20).map(|i| {
        let gw = &gw;
        let call = call.clone();
        async move {
            let client = service_kit::client::connect_with(
                &gw.mcp_url(),
                &service_kit::client::ClientOptions {
                    client_name: format!("named-{i}"),
                    bearer: Some(TOKEN.into()),
                    ..Default::default()
                },
                Named(format!("Caller{i}")),
            )
            .await
            .expect("session");
            let result = client.peer().call_tool(call).await;
            let _ = client.cancel().await;
            (i, result)
        }
    }))
    .await;
    for (i, result) in results {
        let text = serde_json::to_value(result.unwrap_or_else(|e| panic!("caller {i}: {e}")))
            .expect("json")
            .to_string();
        assert!(
            text.contains(&format!("Hello, Caller{i}!")),
            "caller {i}: {text}"
        );
    }
    // A caller that declared no elicitation is not asked: the revision's own error.
    let plain = crate::support::mcp_client(&gw).await;
    let refused = plain
        .peer()
        .call_tool(rmcp::model::CallToolRequestParams::new(
            "new__test_input_required_result_elicitation",
        ))
        .await
        .expect_err("cannot be asked");
    assert!(format!("{refused:?}").contains("32021"), "{refused:?}");
    let _ = plain.cancel().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_registration_is_off_unless_allowed_and_then_only_for_operators_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db");
    let (command, args) = fixture();
    let body = json!({"name": "fx", "command": command, "args": args,
                      "env": {"FIXTURE_SECRET": "s3cr3t-value"}});
    // Off by default: starting a program an HTTP request names is code execution.
    let gw = start_gateway(gateway_config(&store)).await;
    let (status, refused) = register_as(&gw, TOKEN, body.clone()).await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("allowed_commands"),
        "{refused}"
    );
    gw.stop().await;

    let configure = |config: &mut gateway::Config| {
        config.allowed_commands = vec![command.clone()];
        config.credentials = vec![credential("registrar", &["register", "list", "call"])];
    };
    let mut config = gateway_config(&store);
    configure(&mut config);
    let gw = start_gateway(config).await;
    let (status, refused) = register_as(&gw, &credential_token("registrar"), body.clone()).await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("operate"),
        "{refused}"
    );
    let mut other = body.clone();
    other["command"] = json!("/bin/sh");
    let (status, refused) = register_as(&gw, TOKEN, other).await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not in the gateway's allowed_commands")
    );
    let mut both = body.clone();
    both["url"] = json!("http://127.0.0.1:1/mcp");
    let (status, refused) = register_as(&gw, TOKEN, both).await;
    assert_eq!(status, 422, "{refused}");

    let (status, registered) = register_as(&gw, TOKEN, body.clone()).await;
    assert_eq!(status, 201, "{registered}");
    let shown = format!("{registered} {}", services(&gw).await);
    assert!(
        !shown.contains("s3cr3t-value"),
        "an env value was shown: {shown}"
    );
    assert!(
        shown.contains("FIXTURE_SECRET"),
        "the env name is shown: {shown}"
    );
    let answer = call(&gw, "test_simple_text", json!({})).await;
    assert!(answer.get("result").is_some(), "{answer}");
    let child = pids(&gw, "fx").await[0];
    gw.stop().await;
    assert!(!alive(child), "the child ended with the gateway");

    // Persisted: back after a restart, running again.
    let mut config = gateway_config(&store);
    configure(&mut config);
    let gw = start_gateway(config).await;
    wait_for_services(&gw, &["fx"]).await;
    let answer = call(&gw, "test_simple_text", json!({})).await;
    assert!(answer.get("result").is_some(), "{answer}");
    assert_ne!(pids(&gw, "fx").await[0], child);
    gw.stop().await;

    // The program taken off allowed_commands: the stored registration does not run.
    let gw = start_gateway(gateway_config(&store)).await;
    let listed = services(&gw).await;
    assert!(
        !listed.to_string().contains("\"fx\""),
        "a stored stdio server ran though its program is no longer allowed: {listed}"
    );
    gw.stop().await;
}

/// `/proc/PID/fd` entries.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Processes whose parent is `pid`: (live, zombies).
fn children_of(pid: u32) -> (Vec<u32>, Vec<u32>) {
    let (mut live, mut zombies) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            if fields[0] == "Z" {
                zombies.push(child);
            } else {
                live.push(child);
            }
        }
    }
    (live, zombies)
}

fn write_config(dir: &Path, port: u16, extra: &str) -> String {
    let (command, args) = fixture();
    let path = dir.join("gateway.toml");
    let toml = format!(
        "listen = \"127.0.0.1:{port}\"\nstore = \"{}\"\nhealth_interval_ms = 300\n\
         connect_timeout_ms = 60000\n\
         [[upstreams]]\nname = \"fx\"\ncommand = {command:?}\nargs = {args:?}\ninstances = 10\n{extra}",
        dir.join("gw.db").display()
    );
    std::fs::write(&path, toml).expect("write config");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_leave_no_zombie_no_descriptor_and_no_child_survives_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = procs::free_port();
    // Ten children of the fixture, and one that floods stderr.
    let flood = "[[upstreams]]\nname = \"loud\"\ncommand = \"sh\"\n\
                 args = [\"-c\", \"yes 'flooding stderr, line after line' >&2 & exec \\\"$0\\\" --stdio --revision 2025\", ";
    let (command, _) = fixture();
    // And one that never answers and ignores its stdin closing: only
    // PR_SET_PDEATHSIG ends it when the gateway is killed (the others exit when their
    // stdin closes). It waits for its `initialize` for the whole connect deadline.
    let mute = "[[upstreams]]\nname = \"mute\"\ncommand = \"sleep\"\nargs = [\"600\"]\n";
    let extra = format!("{flood}{command:?}]\n{mute}");
    let config = write_config(dir.path(), port, &extra);
    let mut gw = procs::gateway_args(port, &["--config".into(), config.clone()], &[]).await;
    let url = procs::Url(gw.base());
    wait_for_services(&url, &["fx", "loud"]).await;
    let pid = gw.pid();
    assert_eq!(pids(&url, "fx").await.len(), 10);

    // 50 restarts of 10 children each: 500 children started and reaped.
    let (_, _) = (descriptors(pid), children_of(pid));
    // One cycle first, so lazily opened descriptors are counted in the baseline.
    assert_eq!(post(&url, "/services/fx/restart").await.0, 200);
    let fds_before = descriptors(pid);
    for round in 0..50 {
        let (status, body) = post(&url, "/services/fx/restart").await;
        assert_eq!(
            (status, body["state"].as_str()),
            (200, Some("healthy")),
            "round {round}: {body}"
        );
    }
    let restarts: u64 = service(&url, "fx").await["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["process"]["restarts"].as_u64().expect("restarts"))
        .sum();
    assert_eq!(restarts, 510, "51 restarts of 10 children");
    wait_until("no zombie children", Duration::from_secs(5), || async {
        children_of(pid).1.is_empty()
    })
    .await;
    let (live, _) = children_of(pid);
    assert_eq!(
        live.len(),
        12,
        "ten fixture children, the loud and the mute one: {live:?}"
    );
    let fds_after = descriptors(pid);
    assert!(
        fds_after <= fds_before + 4,
        "descriptors leaked: {fds_before} before, {fds_after} after 500 restarts"
    );

    // The stderr flood: the ring holds at most 200 lines of at most 1 KiB.
    let (_, logs) = get(&url, "/services/loud/logs").await;
    let lines = logs["instances"][0]["lines"].as_array().expect("lines");
    assert!(
        !lines.is_empty() && lines.len() <= 200,
        "{} lines",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .all(|l| l.as_str().is_some_and(|l| l.len() <= 1024))
    );
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .expect("VmRSS")
    };
    let rss_before = rss(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss(pid);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory grew under a stderr flood: {rss_before} kB, then {rss_after} kB"
    );

    // SIGTERM: every child ends with the gateway.
    assert_eq!(gw.terminate().await, Some(0));
    wait_until(
        "no child after SIGTERM",
        Duration::from_secs(10),
        || async { live.iter().all(|p| !alive(*p)) },
    )
    .await;

    // SIGKILL: no shutdown code runs; the children die with their parent all the same.
    let mut gw = procs::gateway_args(port, &["--config".into(), config], &[]).await;
    let url = procs::Url(gw.base());
    wait_for_services(&url, &["fx", "loud"]).await;
    let pid = gw.pid();
    let mute = pids(&url, "mute").await;
    assert_eq!(mute.len(), 1, "the mute child runs");
    let (live, _) = children_of(pid);
    assert_eq!(live.len(), 12, "{live:?}");
    gw.kill9().await;
    wait_until(
        "no child after kill -9 of the gateway",
        Duration::from_secs(10),
        || async { live.iter().all(|p| !alive(*p)) },
    )
    .await;
}

/// An MCP client that reports the resources it hears were updated.
#[derive(Clone)]
struct Watcher {
    updates: tokio::sync::mpsc::UnboundedSender<String>,
}

impl rmcp::ClientHandler for Watcher {
    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        let _ = self.updates.send(params.uri);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)] // resources/subscribe: the 2025 era's, which a stdio child speaks
async fn the_demo_services_run_over_stdio_behind_the_gateway_with_resources_prompts_and_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gateway_url = format!("http://{}", listener.local_addr().expect("addr"));
    let demo = |name: &str| gateway::config::UpstreamSpec {
        name: name.into(),
        command: Some(procs::binary(name).display().to_string()),
        args: vec!["--stdio".into()],
        // Recommendations still go through the gateway over HTTP.
        env: [
            ("GATEWAY_URL".to_string(), gateway_url.clone()),
            ("MCP_BEARER_TOKEN".to_string(), TOKEN.to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.upstreams = vec![demo("shopping-service"), demo("user-service")];
    config.header_read_timeout_ms = CONCURRENT_HEAD_WAIT_MS;
    let gw = crate::support::start_gateway_on(listener, config);
    wait_for_services(&gw, &["shopping-service", "user-service"]).await;

    let product = call(&gw, "getProductById", json!({"id": "123"})).await;
    assert_eq!(
        product["result"]["structuredContent"]["id"], "123",
        "{product}"
    );
    // 200 concurrent tool calls over the one child: each gets its own product.
    let target = crate::support::procs::Url(gw.base());
    let answers = futures::future::join_all((1..=200).map(|i| {
        let target = target.clone();
        async move {
            let a = call(&target, "getProductById", json!({"id": i.to_string()})).await;
            (i, a)
        }
    }))
    .await;
    for (i, a) in answers {
        assert_eq!(
            a["result"]["structuredContent"]["id"],
            i.to_string(),
            "call {i} got another's answer: {a}"
        );
    }
    assert_eq!(pids(&gw, "shopping-service").await.len(), 1);
    // shopping-service (a stdio child) → the gateway over HTTP → user-service (a stdio
    // child).
    let recs = call(
        &gw,
        "getPersonalizedRecommendations",
        json!({"userId": "456", "limit": 3}),
    )
    .await;
    assert_eq!(
        recs["result"]["structuredContent"]["userId"], "456",
        "{recs}"
    );
    let (_, catalog) = rpc(
        &gw,
        "resources/read",
        json!({"uri": "ecommerce://products/catalog"}),
    )
    .await;
    let text = catalog["result"]["contents"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{catalog}"));
    let products: Value = serde_json::from_str(text).expect("the catalog is JSON");
    assert!(
        products.as_array().is_some_and(|p| p.len() > 100),
        "{text:.200}"
    );
    let (_, profile) = rpc(&gw, "resources/read", json!({"uri": "users://456/profile"})).await;
    assert!(
        profile["result"]["contents"][0]["text"].is_string(),
        "{profile}"
    );
    let (_, prompt) = rpc(
        &gw,
        "prompts/get",
        json!({"name": "recommend_for_user", "arguments": {"userId": "456"}}),
    )
    .await;
    assert!(
        prompt["result"]["messages"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "{prompt}"
    );

    // A subscription through the gateway to a stdio child's resource: the update for a
    // change made through the gateway comes back.
    let (updates, mut received) = tokio::sync::mpsc::unbounded_channel();
    let watcher = service_kit::client::connect_with(
        &gw.mcp_url(),
        &service_kit::client::ClientOptions {
            client_name: "e2e-watcher".into(),
            bearer: Some(TOKEN.into()),
            ..Default::default()
        },
        Watcher { updates },
    )
    .await
    .expect("MCP session");
    let basket = "ecommerce://users/u77/basket";
    watcher
        .subscribe(rmcp::model::SubscribeRequestParams::new(basket))
        .await
        .expect("resources/subscribe");
    let added = call(
        &gw,
        "addToBasket",
        json!({"userId": "u77", "productId": "7"}),
    )
    .await;
    assert!(added.get("result").is_some(), "{added}");
    let uri = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("an update within 10 s")
        .expect("the session is open");
    assert_eq!(uri, basket);
    drop(watcher);
    gw.stop().await;
}
