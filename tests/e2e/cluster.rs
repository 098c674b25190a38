//! Replicas on one PostgreSQL store (#15): a change made on one replica is live on the
//! others (and their clients hear `list_changed`); secrets are sealed at rest; a store
//! outage keeps calls serving, refuses registrations with 503 and loses nothing; a
//! replica started while the store is down joins when it is back; a replica with
//! another cluster's key stays out. A real PostgreSQL, started by the test.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::support::{postgres::Postgres, *};

const KEY: &str = "a test cluster key, 32 chars ok";

fn replica_config(url: &str, dir: &std::path::Path, n: usize) -> gateway::Config {
    gateway::Config {
        cluster_key: Some(gateway::config::Secret::new(KEY)),
        call_log_store: Some(dir.join(format!("calls-{n}.db"))),
        ..gateway_config(std::path::Path::new(url))
    }
}

/// A real PostgreSQL with database `db`, for replicas to share.
pub(crate) struct Cluster {
    pg: Postgres,
    url: String,
    /// The replicas' call-log files.
    dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) fn new(db: &str) -> Self {
        let pg = Postgres::start();
        let url = pg.database(db);
        Self {
            pg,
            url,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Replica `n`'s configuration.
    fn config(&self, n: usize) -> gateway::Config {
        replica_config(&self.url, self.dir.path(), n)
    }

    /// `n` in-process replicas (each configuration changed by `tune`), once every one
    /// counts them all live.
    async fn replicas(&self, n: usize, tune: impl Fn(&mut gateway::Config)) -> Vec<Running> {
        let mut gws = Vec::new();
        for i in 0..n {
            let mut config = self.config(i);
            tune(&mut config);
            gws.push(start_gateway(config).await);
        }
        for gw in &gws {
            wait_until(
                "every replica to count them all",
                Duration::from_secs(15),
                || async { live_replicas(gw).await == n },
            )
            .await;
        }
        gws
    }

    /// Two replicas, as [`Self::replicas`].
    pub(crate) async fn pair(&self, tune: impl Fn(&mut gateway::Config)) -> (Running, Running) {
        let mut gws = self.replicas(2, tune).await.into_iter();
        (gws.next().expect("a"), gws.next().expect("b"))
    }

    /// Two replicas with the 2025 conformance fixture registered through the first as
    /// `conf`, once the second lists its `tool`; the fixture's stop and task.
    async fn pair_with_fixture(
        &self,
        tool: &str,
    ) -> (
        Running,
        Running,
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let (a, b) = self.pair(|_| {}).await;
        let (stop, task) = crate::transparency::conformance_backend(&a, "conf").await;
        wait_until("the fixture on b", Duration::from_secs(5), || async {
            tool_names(&b).await.contains(&tool.to_string())
        })
        .await;
        (a, b, stop, task)
    }
}

/// Replica `gw`'s id, as its `/health` says.
pub(crate) async fn replica_id(gw: &impl Target) -> String {
    health(gw).await["cluster"]["replica"]
        .as_str()
        .expect("a replica id")
        .to_string()
}

/// A 2025-11-25 `initialize` from client `name`.
fn initialize(name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": name, "version": "1"}}})
}

async fn health(gw: &impl Target) -> Value {
    http()
        .get(format!("{}/health", gw.base_url()))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health JSON")
}

async fn live_replicas(gw: &impl Target) -> usize {
    health(gw).await["cluster"]["replicas"]
        .as_array()
        .map_or(0, Vec::len)
}

/// `/services` as the set of (service, instance URL, weight) it lists.
async fn instances(gw: &impl Target) -> Vec<(String, String, u64)> {
    let mut out: Vec<(String, String, u64)> = services(gw).await["services"]
        .as_array()
        .expect("services")
        .iter()
        .flat_map(|s| {
            s["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    (
                        s["name"].as_str().unwrap_or_default().to_string(),
                        i["url"].as_str().unwrap_or_default().to_string(),
                        i["weight"].as_u64().unwrap_or(0),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_is_live_on_every_replica() {
    let cl = Cluster::new("changes");
    let mut gws = cl.replicas(3, |_| {}).await;
    let h = health(&gws[1]).await;
    assert_eq!(h["cluster"]["storeAvailable"], true, "{h}");
    let current: Vec<&Value> = h["cluster"]["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .filter(|r| r["current"] == true)
        .collect();
    assert_eq!(current.len(), 1, "{h}");
    assert_eq!(current[0]["id"], h["cluster"]["replica"], "{h}");
    // `gateway cluster` shows the same three, the one that answered marked.
    let (code, out, err) = crate::cli::gateway_cli(&gws[1], TOKEN, &["cluster"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let me = h["cluster"]["replica"].as_str().expect("id");
    assert!(out.contains(&format!("{me} *")), "{out}");
    assert!(out.contains("the store answers"), "{out}");
    for r in h["cluster"]["replicas"].as_array().expect("replicas") {
        assert!(out.contains(r["id"].as_str().expect("id")), "{out}");
    }

    // A client of replica 2 hears that the tools changed when replica 0 registers.
    let counting = Counting::default();
    let heard = Arc::clone(&counting.0);
    let client = session_with(&gws[2].mcp_url(), "watcher", counting).await;

    let fixture = start_fixture("weather", &["forecast"]).await;
    let (status, body) = register_with(
        &gws[0],
        json!({"name": "weather", "url": fixture.mcp_url(),
               "auth": {"bearer": "upstream-secret-123"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let registered = Instant::now();
    for gw in &gws[1..] {
        wait_until(
            "the registration on every replica",
            Duration::from_secs(5),
            || async { tool_names(gw).await.contains(&"forecast".to_string()) },
        )
        .await;
    }
    println!(
        "registration visible on both other replicas after {:?}",
        registered.elapsed()
    );
    let r = call(&gws[2], "forecast", json!({"id": "1"})).await;
    assert_eq!(r["result"]["structuredContent"]["server"], "weather", "{r}");
    wait_until(
        "replica 2's client to hear list_changed",
        Duration::from_secs(5),
        || async { heard.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    // /services is the same on every replica.
    let seen = instances(&gws[0]).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    for gw in &gws[1..] {
        assert_eq!(instances(gw).await, seen);
    }

    // Secrets are sealed at rest: the credential is not in the store's row.
    let auth = cl.pg.sql(
        "changes",
        "SELECT auth FROM instances WHERE name = 'weather'",
    );
    assert!(auth.starts_with("v1."), "{auth}");
    assert!(!auth.contains("upstream-secret"), "{auth}");

    // A refresh on replica 1 (another weight) reaches replica 0 and 2.
    let (status, body) = register_with(
        &gws[1],
        json!({"name": "weather", "url": fixture.mcp_url(), "weight": 3,
               "auth": {"bearer": "upstream-secret-123"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for gw in [&gws[0], &gws[2]] {
        wait_until(
            "the refresh on every replica",
            Duration::from_secs(5),
            || async { instances(gw).await.first().map(|i| i.2) == Some(3) },
        )
        .await;
    }
    // The refreshed instance still carries its credential on the other replicas (the
    // fixture answers whatever it is given; the call must still work).
    let r = call(&gws[0], "forecast", json!({"id": "2"})).await;
    assert_eq!(r["result"]["structuredContent"]["server"], "weather", "{r}");

    // A virtual server defined on replica 2 is served by replica 0.
    let resp = http()
        .post(format!("{}/virtual-servers", gws[2].base()))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "sky", "tools": ["weather/*"]}))
        .send()
        .await
        .expect("define");
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    wait_until(
        "the virtual server on replica 0",
        Duration::from_secs(5),
        || async {
            http()
                .get(format!("{}/virtual-servers/sky", gws[0].base()))
                .bearer_auth(TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200)
        },
    )
    .await;

    // An unregistration on replica 2 removes it everywhere.
    let resp = http()
        .delete(format!("{}/services/weather", gws[2].base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("unregister");
    assert_eq!(resp.status().as_u16(), 200);
    for gw in &gws[..2] {
        wait_until(
            "the unregistration on every replica",
            Duration::from_secs(5),
            || async { !tool_names(gw).await.contains(&"forecast".to_string()) },
        )
        .await;
    }

    // A replica that stops leaves the list of live replicas.
    let last = gws.pop().expect("three");
    drop(client);
    last.stop().await;
    wait_until("two live replicas", Duration::from_secs(15), || async {
        live_replicas(&gws[0]).await == 2
    })
    .await;
    for gw in gws {
        gw.stop().await;
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_keeps_calls_serving_refuses_registrations_and_loses_nothing() {
    let cl = Cluster::new("outage");
    let (a, b) = cl.pair(|_| {}).await;
    let kept = start_fixture("kept", &["keepMe"]).await;
    let (status, body) = register(&a, "kept", &kept.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    wait_until("kept on b", Duration::from_secs(5), || async {
        tool_names(&b).await.contains(&"keepMe".to_string())
    })
    .await;

    // A steady load through both replicas for the whole outage: every call succeeds.
    // (calls made so far: the test waits for the load to make progress in each phase
    // rather than assuming a speed.)
    let loading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let made = Arc::new(AtomicUsize::new(0));
    let load = {
        let (targets, loading, made) = (
            [procs::Url(a.base()), procs::Url(b.base())],
            Arc::clone(&loading),
            Arc::clone(&made),
        );
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            let mut n = 0usize;
            while loading.load(Ordering::Relaxed) && n < 2_000 {
                let r = call(&targets[n % 2], "keepMe", json!({"id": n.to_string()})).await;
                if r["result"]["structuredContent"]["server"] == "kept" {
                    ok += 1;
                } else {
                    failed.push(r);
                }
                n += 1;
                made.store(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        })
    };
    let progress = |what: &'static str, made: Arc<AtomicUsize>| async move {
        let from = made.load(Ordering::Relaxed);
        wait_until(what, Duration::from_secs(30), || async {
            made.load(Ordering::Relaxed) >= from + 10
        })
        .await;
    };
    progress("the load to run before the outage", Arc::clone(&made)).await;
    cl.pg.stop();
    progress("the load to run through the outage", Arc::clone(&made)).await;
    // Calls keep being served from memory, on both replicas.
    for gw in [&a, &b] {
        for i in 0..5 {
            let r = call(gw, "keepMe", json!({"id": i.to_string()})).await;
            assert_eq!(r["result"]["structuredContent"]["server"], "kept", "{r}");
        }
    }
    // A registration gets a clear 503 and changes nothing.
    let late = start_fixture("late", &["lateTool"]).await;
    let (status, body) = register(&b, "late", &late.mcp_url()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "store_unavailable", "{body}");
    assert!(!tool_names(&b).await.contains(&"lateTool".to_string()));
    let resp = http()
        .delete(format!("{}/services/kept", a.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("unregister");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(tool_names(&a).await.contains(&"keepMe".to_string()));
    wait_until(
        "b's health to say the store is down",
        Duration::from_secs(10),
        || async { health(&b).await["cluster"]["storeAvailable"] == false },
    )
    .await;

    // A replica that starts now serves, says the store is down, and keeps retrying.
    let c = start_gateway(cl.config(2)).await;
    let h = health(&c).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["cluster"]["storeAvailable"], false, "{h}");
    let (status, body) = register(&c, "late", &late.mcp_url()).await;
    assert_eq!(status, 503, "{body}");

    cl.pg.start_server();
    progress("the load to run through the recovery", Arc::clone(&made)).await;
    // Back: the new replica joins and reads what was registered; a registration is
    // accepted again and reaches every replica (their listeners reconnected).
    wait_until("c to read the store", Duration::from_secs(20), || async {
        tool_names(&c).await.contains(&"keepMe".to_string())
    })
    .await;
    let mut accepted = None;
    for _ in 0..50 {
        let (status, body) = register(&b, "late", &late.mcp_url()).await;
        if status == 201 {
            accepted = Some(body);
            break;
        }
        assert_eq!(status, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted.is_some(), "the store never came back for b");
    for gw in [&a, &c] {
        wait_until("late on every replica", Duration::from_secs(10), || async {
            tool_names(gw).await.contains(&"lateTool".to_string())
        })
        .await;
    }
    loading.store(false, Ordering::Relaxed);
    let (ok, failed) = load.await.expect("load");
    println!(
        "calls through the outage and the recovery: {ok} succeeded, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok >= 30, "{ok}");
    for gw in [a, b, c] {
        gw.stop().await;
    }
    // Every acknowledged registration is in the store: a fresh replica has both.
    let fresh = start_gateway(cl.config(3)).await;
    wait_until(
        "a fresh replica to read both",
        Duration::from_secs(20),
        || async {
            let names = tool_names(&fresh).await;
            names.contains(&"keepMe".to_string()) && names.contains(&"lateTool".to_string())
        },
    )
    .await;
    fresh.stop().await;
    kept.stop().await;
    late.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_clusters_key_stays_out_of_the_store() {
    let cl = Cluster::new("keys");
    let a = cl.replicas(1, |_| {}).await.pop().expect("a");
    let fixture = start_fixture("sealed", &["sealedTool"]).await;
    let (status, body) = register_with(
        &a,
        json!({"name": "sealed", "url": fixture.mcp_url(), "auth": {"bearer": "s3cret-value"}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let stranger = start_gateway(gateway::Config {
        cluster_key: Some(gateway::config::Secret::new(
            "another cluster's key, long enough",
        )),
        ..cl.config(1)
    })
    .await;
    // It never joins: it reads nothing and writes nothing there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !tool_names(&stranger)
            .await
            .contains(&"sealedTool".to_string())
    );
    let other = start_fixture("other", &["otherTool"]).await;
    let (status, body) = register(&stranger, "other", &other.mcp_url()).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(live_replicas(&a).await, 1);
    assert_eq!(cl.pg.sql("keys", "SELECT count(*) FROM instances"), "1");
    for gw in [a, stranger] {
        gw.stop().await;
    }
    fixture.stop().await;
    other.stop().await;
}

/// One POST of a 2025-era session client to `base` (with `session`): the status, the
/// session id the answer names, and the JSON-RPC answer (JSON, or the SSE event that
/// carries it).
async fn post(
    base: &str,
    token: &str,
    session: Option<&str>,
    body: Value,
) -> (u16, Option<String>, Value) {
    let mut req = http()
        .post(format!("{base}/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&body);
    if let Some(id) = session {
        req = req.header("mcp-session-id", id);
    }
    let resp = req.send().await.expect("POST /mcp");
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = resp.text().await.unwrap_or_default();
    let answer = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|m| m.get("id").is_some())
            .unwrap_or(Value::Null)
    });
    (status, id, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_on_one_replica_goes_on_through_every_other() {
    let cl = Cluster::new("sessions");
    let gws = cl
        .replicas(3, |c| {
            c.credentials = vec![
                credential("alice", &["list", "call"]),
                credential("mallory", &["list", "call"]),
            ];
            c.max_sessions_per_credential = 3;
        })
        .await;
    let fixture = start_fixture("echoes", &["echoTool"]).await;
    assert_eq!(register(&gws[0], "echoes", &fixture.mcp_url()).await.0, 201);
    for gw in &gws {
        wait_until("echoes everywhere", Duration::from_secs(5), || async {
            tool_names(gw).await.contains(&"echoTool".to_string())
        })
        .await;
    }
    let alice = credential_token("alice");
    let base = |i: usize| gws[i % 3].base();

    // initialize on replica 0; everything after it goes round the three.
    let (status, id, answer) = post(&base(0), &alice, None, initialize("round-robin")).await;
    assert_eq!(status, 200, "{answer}");
    let id = id.expect("a session id");
    let (status, _, _) = post(
        &base(1),
        &alice,
        Some(&id),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(status, 202);
    for n in 0..9 {
        let (status, _, answer) = post(
            &base(n + 2),
            &alice,
            Some(&id),
            json!({"jsonrpc": "2.0", "id": 10 + n, "method": "tools/call",
                   "params": {"name": "echoTool", "arguments": {"id": n.to_string()}}}),
        )
        .await;
        assert_eq!(status, 200, "replica {}: {answer}", (n + 2) % 3);
        assert_eq!(
            answer["result"]["structuredContent"]["server"],
            "echoes",
            "replica {}: {answer}",
            (n + 2) % 3
        );
        let (status, _, answer) = post(
            &base(n + 1),
            &alice,
            Some(&id),
            json!({"jsonrpc": "2.0", "id": 100 + n, "method": "tools/list"}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer["result"]["tools"]
                .as_array()
                .is_some_and(|t| !t.is_empty()),
            "{answer}"
        );
    }
    // A session id is no proof of identity, on any replica.
    for i in 0..3 {
        let (status, _, answer) = post(
            &base(i),
            &credential_token("mallory"),
            Some(&id),
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}),
        )
        .await;
        assert_eq!(status, 403, "replica {i}: {answer}");
    }
    // An id no replica opened is unknown everywhere.
    let (status, _, _) = post(
        &base(2),
        &alice,
        Some("not-a-session"),
        json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 404);
    // The per-credential cap counts the cluster's sessions, wherever they were opened.
    let mut opened = vec![id.clone()];
    for i in 1..3 {
        let (status, more, answer) = post(&base(i), &alice, None, initialize("more")).await;
        assert_eq!(status, 200, "{answer}");
        opened.push(more.expect("id"));
    }
    let (status, _, _) = post(&base(0), &alice, None, initialize("one-too-many")).await;
    assert_eq!(status, 429);
    assert_eq!(
        cl.pg.sql("sessions", "SELECT count(*) FROM mcp_sessions"),
        "3"
    );

    // A DELETE rmcp refuses (a bogus protocol version) ends nothing, anywhere.
    let refused = end_session(&base(1), &alice, &id, Some("bogus")).await;
    assert!(!(200..300).contains(&refused), "{refused}");
    assert_eq!(
        cl.pg.sql(
            "sessions",
            &format!("SELECT count(*) FROM mcp_sessions WHERE id = '{id}'")
        ),
        "1"
    );
    for i in 0..3 {
        let (status, _, answer) = post(
            &base(i),
            &alice,
            Some(&id),
            json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}),
        )
        .await;
        assert_eq!(status, 200, "replica {i} after a refused DELETE: {answer}");
    }
    // A DELETE ends the session on every replica before it is answered: a request
    // that follows it anywhere, at once, gets the protocol's 404 (the conformance
    // suite does this through a load balancer; the other replicas' copies used to
    // serve it for the millisecond their notification took).
    // Twelve rounds (the three open sessions, then one new each time), each ended by a
    // replica in turn once every replica holds a copy.
    for round in 0..12 {
        let id = match opened.get(round) {
            Some(id) => id.clone(),
            None => {
                let (status, id, answer) =
                    post(&base(round), &alice, None, initialize("short-lived")).await;
                assert_eq!(status, 200, "{answer}");
                id.expect("a session id")
            }
        };
        if round > 0 {
            let (status, _, _) = post(
                &base(round),
                &alice,
                Some(&id),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
            assert_eq!(status, 202);
        }
        for i in 0..3 {
            let (status, _, answer) = post(
                &base(i),
                &alice,
                Some(&id),
                json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}),
            )
            .await;
            assert_eq!(status, 200, "round {round}, replica {i}: {answer}");
        }
        let ender = (round + 2) % 3;
        let status = end_session(&base(ender), &alice, &id, Some("2025-11-25")).await;
        assert!((200..300).contains(&status), "{status}");
        let after = futures::future::join_all((0..3).map(|i| {
            let (base, alice, id) = (base(i), alice.clone(), id.clone());
            async move {
                post(
                    &base,
                    &alice,
                    Some(&id),
                    json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}),
                )
                .await
                .0
            }
        }))
        .await;
        assert_eq!(
            after,
            [404, 404, 404],
            "round {round}: the session ended on replica {ender}, as each replica answers it right after"
        );
    }
    assert_eq!(
        cl.pg.sql("sessions", "SELECT count(*) FROM mcp_sessions"),
        "0"
    );
    for gw in gws {
        gw.stop().await;
    }
    fixture.stop().await;
}

/// HAProxy with the repo's own configuration in front of `replicas` (2 or 3), on a free
/// loopback port; killed when dropped.
async fn load_balancer(replicas: &[String]) -> (tokio::process::Child, String) {
    let binary = crate::deploy::haproxy()
        .expect("haproxy is needed by the cluster tests: apt-get install haproxy (.ci/run does)");
    let listen = format!("127.0.0.1:{}", procs::free_port());
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["-db", "-f", crate::deploy::HAPROXY_CFG_PATH])
        .env("LB_LISTEN", &listen)
        .env_remove("GATEWAY_3")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (n, addr) in replicas.iter().enumerate() {
        command.env(format!("GATEWAY_{}", n + 1), addr);
    }
    let child = command.spawn().expect("start haproxy");
    let base = format!("http://{listen}");
    wait_until("haproxy to answer", Duration::from_secs(20), || async {
        matches!(http().get(format!("{base}/health")).send().await, Ok(r) if r.status().is_success())
    })
    .await;
    (child, base)
}

/// How many tool calls replica `gw` logged.
async fn calls_served(gw: &impl Target) -> usize {
    let body: Value = http()
        .get(format!("{}/calls?limit=1000", gw.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("/calls")
        .json()
        .await
        .expect("calls JSON");
    body["calls"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_load_balancer_a_whole_rmcp_session_uses_every_replica() {
    let cl = Cluster::new("balanced");
    let gws = cl.replicas(3, |_| {}).await;
    let addrs: Vec<String> = gws.iter().map(|g| g.addr.to_string()).collect();
    let (_lb, lb) = load_balancer(&addrs).await;
    let lb_target = procs::Url(lb.clone());

    // Registered through the balancer (one replica), listed through it (any other).
    let fixture = start_fixture("balanced", &["balancedTool"]).await;
    assert_eq!(
        register(&lb_target, "balanced", &fixture.mcp_url()).await.0,
        201
    );
    for gw in &gws {
        wait_until(
            "the registration on every replica",
            Duration::from_secs(5),
            || async { tool_names(gw).await.contains(&"balancedTool".to_string()) },
        )
        .await;
    }

    // rmcp's client, a 2025-11-25 session with its GET stream, never re-initializing by
    // itself: each request goes to the next replica.
    let client = service_kit::client::connect(
        &format!("{lb}/mcp"),
        &service_kit::client::ClientOptions {
            client_name: "balanced-client".into(),
            bearer: Some(TOKEN.into()),
            reinit_on_expired_session: false,
            ..Default::default()
        },
    )
    .await
    .expect("a session through the load balancer");
    for round in 0..4 {
        let tools = client.list_all_tools().await.expect("tools/list");
        assert!(
            tools.iter().any(|t| t.name == "balancedTool"),
            "round {round}"
        );
        for n in 0..3 {
            let result = client
                .call_tool(
                    rmcp::model::CallToolRequestParams::new("balancedTool").with_arguments(
                        json!({"id": format!("{round}-{n}")})
                            .as_object()
                            .cloned()
                            .expect("object"),
                    ),
                )
                .await
                .unwrap_or_else(|e| panic!("call {round}-{n}: {e}"));
            assert_eq!(
                result
                    .structured_content
                    .as_ref()
                    .map(|s| s["server"].clone()),
                Some(json!("balanced")),
                "call {round}-{n}"
            );
        }
    }
    // The call logs are written off the call path, a moment later.
    wait_until(
        "the replicas to log the twelve calls",
        Duration::from_secs(10),
        || async {
            futures::future::join_all(gws.iter().map(calls_served))
                .await
                .iter()
                .sum::<usize>()
                == 12
        },
    )
    .await;
    let served: Vec<usize> = futures::future::join_all(gws.iter().map(calls_served)).await;
    assert!(
        served.iter().all(|n| *n >= 2),
        "every replica served calls of the session: {served:?}"
    );
    let _ = client.cancel().await;
    for gw in gws {
        gw.stop().await;
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_only_the_calls_it_was_running() {
    let pg = Postgres::start();
    let url = pg.database("killed");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut replicas = Vec::new();
    for n in 0..3 {
        let port = procs::free_port();
        replicas.push(
            procs::gateway(
                port,
                std::path::Path::new(&url),
                &[
                    ("GATEWAY_CLUSTER_KEY", KEY.to_string()),
                    (
                        "GATEWAY_CALL_LOG_STORE",
                        dir.path()
                            .join(format!("calls-{n}.db"))
                            .display()
                            .to_string(),
                    ),
                ],
            )
            .await,
        );
    }
    for r in &replicas {
        let target = procs::Url(r.base());
        wait_until("three replicas", Duration::from_secs(20), || async {
            live_replicas(&target).await == 3
        })
        .await;
    }
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.to_string()).collect();
    let (_lb, lb) = load_balancer(&addrs).await;
    let fixture = start_fixture("steady", &["steadyTool"]).await;
    assert_eq!(
        register(&procs::Url(lb.clone()), "steady", &fixture.mcp_url())
            .await
            .0,
        201
    );
    for r in &replicas {
        let target = procs::Url(r.base());
        wait_until("steady everywhere", Duration::from_secs(5), || async {
            tool_names(&target)
                .await
                .contains(&"steadyTool".to_string())
        })
        .await;
    }

    // Four clients, each in its own session, call in a loop (bounded: 80 calls each).
    const CLIENTS: usize = 4;
    const CALLS: usize = 80;
    let killed_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut workers = Vec::new();
    for c in 0..CLIENTS {
        let (lb, killed_at) = (lb.clone(), Arc::clone(&killed_at));
        workers.push(tokio::spawn(async move {
            let (status, id, answer) =
                post(&lb, TOKEN, None, initialize(&format!("worker-{c}"))).await;
            assert_eq!(status, 200, "{answer}");
            let id = id.expect("session");
            post(
                &lb,
                TOKEN,
                Some(&id),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
            // (whether the kill had happened when the call started, the error if any)
            let mut outcomes = Vec::new();
            for n in 0..CALLS {
                let after = killed_at
                    .get()
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(1));
                let (status, _, answer) = post(
                    &lb,
                    TOKEN,
                    Some(&id),
                    json!({"jsonrpc": "2.0", "id": 10 + n, "method": "tools/call",
                           "params": {"name": "steadyTool", "arguments": {"id": n.to_string()}}}),
                )
                .await;
                let ok =
                    status == 200 && answer["result"]["structuredContent"]["server"] == "steady";
                outcomes.push((after, (!ok).then(|| format!("{status} {answer}"))));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut victim = replicas.pop().expect("three");
    victim.kill9().await;
    let _ = killed_at.set(Instant::now());
    let mut errors_at_kill = Vec::new();
    let mut errors_after = Vec::new();
    let mut total = 0;
    for w in workers {
        for (after, error) in w.await.expect("worker") {
            total += 1;
            if let Some(e) = error {
                if after {
                    errors_after.push(e);
                } else {
                    errors_at_kill.push(e);
                }
            }
        }
    }
    println!(
        "kill -9 of one of three replicas under {CLIENTS} session clients: {total} calls, {} failed around the kill, {} failed later",
        errors_at_kill.len(),
        errors_after.len()
    );
    // Only calls in flight on the killed replica may fail: one per client at most.
    assert!(errors_at_kill.len() <= CLIENTS, "{errors_at_kill:?}");
    // Afterwards the sessions go on through the other replicas, none lost.
    assert!(errors_after.is_empty(), "{errors_after:?}");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_rate_limit_holds_for_the_cluster_not_per_replica() {
    const RATE: u32 = 20;
    let cl = Cluster::new("limits");
    let gws = cl.replicas(3, |c| c.rate_limit_per_credential = RATE).await;
    // Every replica shares the limit once its heartbeat has counted three (and the
    // buckets it started with are spent or refilled by then).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let addrs: Vec<String> = gws.iter().map(|g| g.addr.to_string()).collect();
    let (_lb, lb) = load_balancer(&addrs).await;

    // Eight clients hammer tools/list through the balancer for three seconds.
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (lb, accepted, refused) = (lb.clone(), Arc::clone(&accepted), Arc::clone(&refused));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let (status, _, answer) = post(
                    &lb,
                    TOKEN,
                    None,
                    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
                )
                .await;
                if status == 200 && answer.get("result").is_some() {
                    accepted.fetch_add(1, Ordering::Relaxed);
                } else if answer["error"]["code"] == -32004 || status == 429 {
                    refused.fetch_add(1, Ordering::Relaxed);
                } else {
                    panic!("{status} {answer}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("hammer");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (accepted, refused) = (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    let rate = f64::from(RATE);
    // Each replica's bucket holds its share (7) at the start: 21 in all, then refills at
    // the configured rate across the cluster. Per-replica buckets would accept three
    // times as much.
    let burst = 3.0 * f64::from(RATE.div_ceil(3));
    let most = rate * elapsed * 1.25 + burst + 3.0;
    println!(
        "rate limit {RATE}/s through three replicas: {accepted} accepted, {refused} refused in {elapsed:.2} s (at most {most:.0} allowed)"
    );
    assert!(refused > 0, "the hammer never reached the limit");
    assert!(
        (accepted as f64) <= most,
        "{accepted} accepted in {elapsed:.2} s"
    );
    assert!(
        (accepted as f64) >= rate * elapsed * 0.5,
        "{accepted} accepted in {elapsed:.2} s"
    );
    for gw in gws {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_sessions_expire_for_the_cluster_and_are_never_adopted_unchecked() {
    let cl = Cluster::new("expiry");
    let (a, b) = cl.pair(|c| c.session_idle_timeout_ms = 3_000).await;
    let init = initialize;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});

    // A session used only through b stays alive for a, which never served it since.
    let (_, busy, _) = post(&a.base(), TOKEN, None, init("busy")).await;
    let busy = busy.expect("id");
    post(&a.base(), TOKEN, Some(&busy), initialized.clone()).await;
    // A session nobody uses expires for both.
    let (_, idle, _) = post(&b.base(), TOKEN, None, init("idle")).await;
    let idle = idle.expect("id");
    post(&b.base(), TOKEN, Some(&idle), initialized.clone()).await;
    assert_eq!(
        post(&a.base(), TOKEN, Some(&idle), list.clone()).await.0,
        200
    );
    for _ in 0..14 {
        assert_eq!(
            post(&b.base(), TOKEN, Some(&busy), list.clone()).await.0,
            200
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        post(&a.base(), TOKEN, Some(&busy), list.clone()).await.0,
        200
    );
    for gw in [&a, &b] {
        assert_eq!(
            post(&gw.base(), TOKEN, Some(&idle), list.clone()).await.0,
            404
        );
    }
    assert_eq!(
        cl.pg.sql(
            "expiry",
            &format!("SELECT count(*) FROM mcp_sessions WHERE id = '{idle}'")
        ),
        "0"
    );

    // initialize parameters too large to share: refused, nothing stored or kept.
    let before = cl.pg.sql("expiry", "SELECT count(*) FROM mcp_sessions");
    let (status, id, answer) = post(&a.base(), TOKEN, None, init(&"x".repeat(20_000))).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        cl.pg.sql("expiry", "SELECT count(*) FROM mcp_sessions"),
        before
    );
    if let Some(id) = id {
        assert_eq!(post(&a.base(), TOKEN, Some(&id), list.clone()).await.0, 404);
    }

    // The store down: a session a replica has not met is refused with 503 (it cannot
    // check the owner), not adopted and not called unknown; one it holds goes on.
    let (_, fresh, _) = post(&a.base(), TOKEN, None, init("fresh")).await;
    let fresh = fresh.expect("id");
    post(&a.base(), TOKEN, Some(&fresh), initialized).await;
    cl.pg.stop();
    let (status, _, answer) = post(&b.base(), TOKEN, Some(&fresh), list.clone()).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        post(&a.base(), TOKEN, Some(&fresh), list.clone()).await.0,
        200
    );
    assert_eq!(
        post(&b.base(), TOKEN, Some(&busy), list.clone()).await.0,
        200
    );
    // ...and a new session cannot be opened without its row.
    assert_eq!(post(&a.base(), TOKEN, None, init("late")).await.0, 503);
    cl.pg.start_server();
    wait_until(
        "b to adopt the session once the store is back",
        Duration::from_secs(20),
        || async { post(&b.base(), TOKEN, Some(&fresh), list.clone()).await.0 == 200 },
    )
    .await;
    // A session whose end a replica missed (its row deleted with no notification): the
    // next sweep after it is used there ends it there too.
    cl.pg.sql(
        "expiry",
        &format!("DELETE FROM mcp_sessions WHERE id = '{fresh}'"),
    );
    wait_until(
        "the missed end to be noticed",
        Duration::from_secs(10),
        || async { post(&b.base(), TOKEN, Some(&fresh), list.clone()).await.0 == 404 },
    )
    .await;
    for gw in [a, b] {
        gw.stop().await;
    }
}

/// Service `logged`'s calls in `gw`'s `/calls`, counted by the replica each names;
/// `None` while the call log cannot be read.
async fn logged_by_replica(gw: &impl Target) -> Option<std::collections::BTreeMap<String, usize>> {
    let (status, body) = get_json(gw, "/calls?service=logged&limit=1000").await;
    if status != 200 {
        return None;
    }
    let mut by = std::collections::BTreeMap::new();
    for c in body["calls"].as_array()? {
        let replica = c["replica"].as_str().unwrap_or("(none)").to_string();
        *by.entry(replica).or_insert(0) += 1;
    }
    Some(by)
}

/// Calls `logMe` `n` times through `gw`; each must succeed (the call log, whatever its
/// database is doing, is never on a call's path).
async fn call_logged(gw: &impl Target, n: usize) {
    for i in 0..n {
        let r = call(gw, "logMe", json!({"id": i.to_string()})).await;
        assert_eq!(r["result"]["structuredContent"]["server"], "logged", "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_log_is_the_clusters_and_outlives_a_store_outage() {
    let pg = Postgres::start();
    let url = pg.database("calllog");
    // No call_log_store: the call log is the store's, shared by both replicas.
    let config = || gateway::Config {
        cluster_key: Some(gateway::config::Secret::new(KEY)),
        ..gateway_config(std::path::Path::new(&url))
    };
    let a = start_gateway(config()).await;
    let b = start_gateway(config()).await;
    wait_until("two replicas", Duration::from_secs(15), || async {
        live_replicas(&a).await == 2 && live_replicas(&b).await == 2
    })
    .await;
    let id = |h: Value| h["cluster"]["replica"].as_str().expect("id").to_string();
    let (ida, idb) = (id(health(&a).await), id(health(&b).await));
    assert_ne!(ida, idb);
    let fixture = start_fixture("logged", &["logMe"]).await;
    let (status, body) = register(&a, "logged", &fixture.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    wait_until("logMe on b", Duration::from_secs(5), || async {
        tool_names(&b).await.contains(&"logMe".to_string())
    })
    .await;

    // Three calls through a, two through b: either replica's /calls lists all five,
    // each with the replica that served it.
    call_logged(&a, 3).await;
    call_logged(&b, 2).await;
    let expect = |na: usize, nb: usize| {
        std::collections::BTreeMap::from([(ida.clone(), na), (idb.clone(), nb)])
    };
    for gw in [&a, &b] {
        wait_until(
            "both replicas' calls in each one's /calls",
            Duration::from_secs(10),
            || async { logged_by_replica(gw).await == Some(expect(3, 2)) },
        )
        .await;
    }
    assert_eq!(pg.sql("calllog", "SELECT count(*) FROM calls_log"), "5");

    // /stats on either counts all five, with the SQLite log's percentiles (nearest
    // rank over the durations /calls shows).
    let (_, calls) = get_json(&a, "/calls?service=logged").await;
    let mut durations: Vec<f64> = calls["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["durationMs"].as_f64().expect("durationMs"))
        .collect();
    durations.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let n = durations.len();
        let v = durations[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        (v * 1000.0).round() / 1000.0
    };
    for gw in [&a, &b] {
        let (status, stats) = get_json(gw, "/stats").await;
        assert_eq!(status, 200, "{stats}");
        let s = &stats["services"]["logged"];
        assert_eq!(
            (s["calls"].as_u64(), s["errors"].as_u64()),
            (Some(5), Some(0)),
            "{stats}"
        );
        for (key, p) in [("p50Ms", 0.5), ("p95Ms", 0.95)] {
            let got = s[key].as_f64().unwrap_or_else(|| panic!("{key}: {stats}"));
            assert!(
                (got - rank(p)).abs() < 1e-9,
                "{key} {got} vs {}: {stats}",
                rank(p)
            );
        }
        let tool = stats["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .find(|t| t["tool"] == "logMe")
            .unwrap_or_else(|| panic!("logMe: {stats}"));
        assert_eq!(tool["calls"], 5, "{stats}");
        // The time series add up both replicas' calls (calls_minute, summed by each
        // replica's writer).
        let (status, charted) = get_json(gw, "/stats?window=15m&tool=logMe").await;
        assert_eq!(status, 200, "{charted}");
        let total = |points: &Value| -> u64 {
            points
                .as_array()
                .unwrap_or_else(|| panic!("points: {charted}"))
                .iter()
                .filter_map(|p| p["calls"].as_u64())
                .sum()
        };
        let series = &charted["series"];
        assert_eq!(total(&series["gateway"]), 5, "{charted}");
        assert_eq!(total(&series["services"]["logged"]), 5, "{charted}");
        assert_eq!(total(&series["tools"][0]["points"]), 5, "{charted}");
    }
    // Filters and order work on the shared log too.
    let (_, two) = get_json(&b, "/calls?service=logged&tool=logMe&limit=2").await;
    assert_eq!(two["count"], 2, "{two}");
    let at: Vec<i64> = calls["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["at"].as_i64().expect("at"))
        .collect();
    assert!(at.windows(2).all(|w| w[0] >= w[1]), "newest first: {calls}");
    let oldest = at.last().expect("a call");
    let (_, since) = get_json(&b, &format!("/calls?since={oldest}")).await;
    assert_eq!(since["count"], 5, "{since}");
    let (_, until) = get_json(&b, &format!("/calls?until={oldest}")).await;
    assert_eq!(until["count"], 0, "{until}");
    let (_, ok) = get_json(&b, "/calls?outcome=ok").await;
    assert_eq!(ok["count"], 5, "{ok}");
    let (status, bad) = get_json(&b, "/calls?outcome=bogus").await;
    assert_eq!(status, 400, "{bad}");

    // The database stops: calls go on at once; /calls says it cannot read (no wait).
    pg.stop();
    call_logged(&a, 2).await;
    call_logged(&b, 3).await;
    // Long enough for both writers to try, fail and hold their records.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let started = Instant::now();
    let (status, body) = get_json(&a, "/calls").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("call_log_failed")),
        "{body}"
    );
    // Not held for the pool's waits (3 s each) nor the HTTP client's 20 s.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // Back: what was held during the outage is written, and new calls are logged again.
    pg.start_server();
    call_logged(&a, 1).await;
    call_logged(&b, 1).await;
    for gw in [&a, &b] {
        wait_until(
            "the outage's and the later calls in the shared log",
            Duration::from_secs(30),
            || async { logged_by_replica(gw).await == Some(expect(6, 6)) },
        )
        .await;
        let (_, stats) = get_json(gw, "/stats").await;
        assert_eq!(stats["services"]["logged"]["calls"], 12, "{stats}");
    }
    for gw in [a, b] {
        gw.stop().await;
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_checks_the_upstreams_health_and_every_replica_follows_it() {
    let cl = Cluster::new("health");
    let gws = cl.replicas(3, |_| {}).await;
    let fixture = fixture::Fixture::new("pinged", &["pingedTool"]);
    let requests = Arc::clone(&fixture.authorizations);
    let backend = serve_fixture(fixture).await;
    assert_eq!(register(&gws[0], "pinged", &backend.mcp_url()).await.0, 201);
    for gw in &gws {
        wait_until(
            "pinged healthy everywhere",
            Duration::from_secs(10),
            || async { service_state(gw, "pinged").await.as_deref() == Some("healthy") },
        )
        .await;
    }
    // Settled: one replica holds the checker's lock and the others stopped pinging.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = requests.lock().expect("requests").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = requests.lock().expect("requests").len() - before;
    // health_interval is 500 ms: one replica pinging makes about 6 requests in 3 s,
    // three would make about 18.
    println!("requests the backend got in 3 s from three idle replicas: {seen}");
    assert!((2..=9).contains(&seen), "{seen} requests in 3 s");

    // The backend goes away: the checker finds it down, and every replica says so,
    // though no call went to it.
    backend.stop().await;
    for gw in &gws {
        wait_until(
            "every replica to agree it is down",
            Duration::from_secs(10),
            || async { service_state(gw, "pinged").await.as_deref() == Some("down") },
        )
        .await;
    }
    for gw in gws {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_keeps_a_clients_stream_open_where_a_lone_gateway_would_let_it_resume() {
    let cl = Cluster::new("streams");
    // The conformance fixture's test_reconnection closes the call's stream mid-call
    // (SEP-1699); a lone gateway passes the close on to a client that can resume.
    let (a, b, stop, task) = cl.pair_with_fixture("test_reconnection").await;
    let (_, session, _) = post(&a.base(), TOKEN, None, initialize("streams")).await;
    let session = session.expect("id");
    post(
        &a.base(),
        TOKEN,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    // Both paths (a plain call takes the pass-through one; `_meta` the typed one), on
    // either replica: the answer comes on the POST's own stream, never left for a
    // Last-Event-ID that the balancer could send to the other replica.
    for (n, gw) in [&b, &a, &b, &a].into_iter().enumerate() {
        let mut params = json!({"name": "test_reconnection", "arguments": {}});
        if n >= 2 {
            params["_meta"] = json!({"progressToken": n});
        }
        let (status, _, answer) = tokio::time::timeout(
            Duration::from_secs(20),
            post(
                &gw.base(),
                TOKEN,
                Some(&session),
                json!({"jsonrpc": "2.0", "id": 10 + n, "method": "tools/call", "params": params}),
            ),
        )
        .await
        .expect("the answer in time");
        assert_eq!(status, 200);
        assert!(
            answer
                .to_string()
                .contains(crate::transparency::RECONNECTED),
            "call {n}: {answer}"
        );
    }
    stop.cancel();
    let _ = task.await;
    for gw in [a, b] {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_confirmed_through_another_replica_keeps_its_stream_on_the_first() {
    let cl = Cluster::new("confirm");
    let (a, b) = cl.pair(|c| c.session_init_timeout_ms = 2_000).await;
    let init = initialize;
    // initialize on a, notifications/initialized on b (as a round robin sends them),
    // then the client's GET stream on a.
    let (_, id, _) = post(&a.base(), TOKEN, None, init("confirmed-elsewhere")).await;
    let id = id.expect("id");
    post(
        &b.base(),
        TOKEN,
        Some(&id),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    let mut stream = http_no_timeout()
        .get(a.mcp_url())
        .bearer_auth(TOKEN)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &id)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .expect("GET stream");
    assert_eq!(stream.status(), 200);
    // Past session_init_timeout_ms and a few sweeps: a's copy was confirmed through b, so
    // the stream is still open.
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(
        ended.is_err(),
        "a closed the session's stream though b confirmed it"
    );
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    assert_eq!(post(&a.base(), TOKEN, Some(&id), list.clone()).await.0, 200);

    // A session never confirmed anywhere is ended for both by the cluster's sweep.
    let (_, never, _) = post(&b.base(), TOKEN, None, init("never-confirmed")).await;
    let never = never.expect("id");
    for gw in [&a, &b] {
        wait_until(
            "the unconfirmed session to end",
            Duration::from_secs(10),
            || async { post(&gw.base(), TOKEN, Some(&never), list.clone()).await.0 == 404 },
        )
        .await;
    }
    drop(stream);
    for gw in [a, b] {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_clients_retry_may_reach_any_replica() {
    use crate::rounds::{call_tool, fixture_with, only_question, state_of};
    let cl = Cluster::new("rounds");
    let (a, b) = cl.pair(|_| {}).await;
    // A 2026-07-28 backend answers input_required itself; its state travels sealed in
    // the gateway's, which any replica of the cluster opens.
    let (backend, stop) = fixture_with(Default::default()).await;
    assert_eq!(register(&a, "conformance", &backend).await.0, 201);
    let tool = "test_input_required_result_request_state";
    wait_until("the tool on b", Duration::from_secs(5), || async {
        tool_names(&b).await.contains(&tool.to_string())
    })
    .await;
    let elicitation = json!({"elicitation": {}});
    let first = call_tool(&a, TOKEN, tool, json!({}), json!({}), elicitation.clone()).await;
    let (key, _) = only_question(&first);
    let retry = json!({"inputResponses": {key: {"action": "accept", "content": {"ok": true}}},
                       "requestState": state_of(&first)});
    let done = call_tool(&b, TOKEN, tool, json!({}), retry, elicitation).await;
    assert!(
        done["result"]["content"].is_array(),
        "the retry through b: {done}"
    );
    assert_ne!(done["result"]["resultType"], "input_required", "{done}");

    // A 2025-era backend asks mid-call: the call is parked on a, its requestState names
    // a, and the retry through b is passed to a, which continues the call.
    let (legacy, legacy_stop) = fixture_with(legacy_fixture()).await;
    assert_eq!(register(&a, "legacy", &legacy).await.0, 201);
    wait_until("legacy on b", Duration::from_secs(5), || async {
        tool_names(&b)
            .await
            .contains(&"legacy__test_sampling".to_string())
    })
    .await;
    let a_id = replica_id(&a).await;
    let sampling = json!({"sampling": {}});
    let tool = "legacy__test_sampling";
    let args = json!({"prompt": "parked?"});
    let first = call_tool(&a, TOKEN, tool, args.clone(), json!({}), sampling.clone()).await;
    let (key, _) = only_question(&first);
    let state = state_of(&first);
    assert!(state.starts_with(&format!("{a_id}~")), "{state} names a");
    let answer = json!({"role": "assistant", "model": "m", "stopReason": "endTurn",
        "content": {"type": "text", "text": "through b"}});
    let retry = json!({"inputResponses": {key: answer}, "requestState": state});
    let done = call_tool(&b, TOKEN, tool, args, retry, sampling).await;
    assert_eq!(
        done["result"]["content"][0]["text"], "LLM response: through b",
        "the parked call continued on a: {done}"
    );
    legacy_stop.cancel();
    stop.cancel();
    for gw in [a, b] {
        gw.stop().await;
    }
}

/// A streaming POST of session `session` on `gw` (its answer read as it comes).
async fn post_streaming(gw: &impl Target, session: &str, body: Value) -> reqwest::Response {
    http_no_timeout()
        .post(format!("{}/mcp", gw.base_url()))
        .bearer_auth(TOKEN)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", session)
        .json(&body)
        .send()
        .await
        .expect("POST /mcp")
}

/// Session `session`'s GET stream on `gw`, resuming after `last` if given.
async fn session_stream(gw: &impl Target, session: &str, last: Option<&str>) -> reqwest::Response {
    let mut req = http_no_timeout()
        .get(format!("{}/mcp", gw.base_url()))
        .bearer_auth(TOKEN)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(last) = last {
        req = req.header("last-event-id", last);
    }
    req.send().await.expect("GET /mcp")
}

/// `resources/subscribe` (or unsubscribe) of `uri` in `session` through `gw`, answered
/// without an error.
async fn follow_resource(gw: &impl Target, session: &str, uri: &str, subscribe: bool) {
    let method = if subscribe {
        "resources/subscribe"
    } else {
        "resources/unsubscribe"
    };
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": {"uri": uri}});
    let (status, _, answer) = post(&gw.base_url(), TOKEN, Some(session), body).await;
    assert_eq!(
        (status, answer.get("error")),
        (200, None),
        "{method}: {answer}"
    );
}

/// Waits until `watcher` counts `n` upstream subscriptions.
async fn subscribed_upstream(watcher: &fixture::Fixture, n: usize, what: &str) {
    wait_until(what, Duration::from_secs(10), || {
        let now = watcher.subscribed().len();
        async move { now == n }
    })
    .await;
}

/// The JSON-RPC messages in `seen`: an SSE stream's events, or one plain JSON answer.
fn events(seen: &str) -> Vec<Value> {
    if let Ok(one) = serde_json::from_str::<Value>(seen) {
        return vec![one];
    }
    seen.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .collect()
}

/// A 2025-11-25 session opened on `gw` by a client declaring `capabilities`, confirmed.
async fn session_on(gw: &impl Target, name: &str, capabilities: Value) -> String {
    session_across(gw, gw, name, capabilities).await
}

/// A 2025-11-25 session opened on `open` and confirmed (`notifications/initialized`) on
/// `confirm`, as a round robin may send them.
async fn session_across(
    open: &impl Target,
    confirm: &impl Target,
    name: &str,
    capabilities: Value,
) -> String {
    let mut init = initialize(name);
    init["params"]["capabilities"] = capabilities;
    let (status, id, answer) = post(&open.base_url(), TOKEN, None, init).await;
    assert_eq!(status, 200, "{answer}");
    let id = id.expect("a session id");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(
        post(&confirm.base_url(), TOKEN, Some(&id), initialized)
            .await
            .0,
        202
    );
    id
}

/// What a 2025-era backend asks a client during a call (sampling here) is answered
/// through whichever replica the client's answer reaches: the request's id names the
/// replica that asked, and another replica passes the answer on to it. Then an rmcp
/// client with a sampling handler, through HAProxy's round robin (each call's POST and
/// its answer's POST on different replicas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_backend_asks_during_a_call_is_answered_through_any_replica() {
    let cl = Cluster::new("asks");
    let (a, b, stop, task) = cl.pair_with_fixture("test_sampling").await;
    let a_id = replica_id(&a).await;
    // A session's first request on a replica that has not served it yet gets its log
    // messages on its own stream, as on the replica that opened it.
    let plain = session_on(&a, "first-on-b", json!({})).await;
    assert!(
        logged(&b, &plain, 3).await > 0,
        "log messages of the first call on b"
    );
    let session = session_on(&a, "asked", json!({"sampling": {}})).await;
    // Answered on b, then on a itself.
    for (n, answering) in [(5, &b), (6, &a)] {
        let call = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "test_sampling", "arguments": {"prompt": "2+2?"}}});
        let mut stream = post_streaming(&a, &session, call).await;
        assert_eq!(stream.status(), 200);
        let mut seen = String::new();
        read_until(&mut stream, &mut seen, "sampling/createMessage").await;
        let asked = events(&seen)
            .into_iter()
            .find(|m| m["method"] == "sampling/createMessage")
            .expect("the backend's question");
        let id = asked["id"].as_str().expect("a string id").to_string();
        assert!(id.starts_with(&format!("{a_id}:")), "{id} names a");
        let from = if std::ptr::eq(answering, &b) {
            "b"
        } else {
            "a"
        };
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": {
            "role": "assistant", "model": "test-model", "stopReason": "endTurn",
            "content": {"type": "text", "text": format!("from {from}")}}});
        let (status, _, body) = post(&answering.base_url(), TOKEN, Some(&session), answer).await;
        assert_eq!(status, 202, "the answer accepted by {from}: {body}");
        read_until(&mut stream, &mut seen, &format!("\"id\":{n}")).await;
        let result = events(&seen)
            .into_iter()
            .find(|m| m["id"] == n)
            .expect("the call's answer");
        assert_eq!(
            result["result"]["content"][0]["text"],
            format!("LLM response: from {from}"),
            "{result}"
        );
    }

    // The rmcp client through the balancer.
    let addrs = [a.addr.to_string(), b.addr.to_string()];
    let (_lb, lb) = load_balancer(&addrs).await;
    let probe = crate::transparency::Probe {
        name: "balanced".into(),
        ..Default::default()
    };
    let client = session_with(&format!("{lb}/mcp"), "balanced", probe.clone()).await;
    for n in 0..4 {
        let params = rmcp::model::CallToolRequestParams::new("test_sampling").with_arguments(
            json!({"prompt": format!("question {n}")})
                .as_object()
                .cloned()
                .expect("object"),
        );
        let result = tokio::time::timeout(Duration::from_secs(20), client.call_tool(params))
            .await
            .unwrap_or_else(|_| panic!("call {n} unanswered: the client's answer was lost"))
            .unwrap_or_else(|e| panic!("call {n}: {e}"));
        let text = serde_json::to_value(&result.content).expect("content")[0]["text"].clone();
        assert_eq!(text, "LLM response: answer from balanced", "call {n}");
    }
    assert_eq!(probe.sampled.load(Ordering::SeqCst), 4);
    let _ = client.cancel().await;
    stop.cancel();
    let _ = task.await;
    for gw in [a, b] {
        gw.stop().await;
    }
}

/// The log messages in the answer of call `n` of `test_tool_with_logging` in `session`.
async fn logged(gw: &impl Target, session: &str, n: u64) -> usize {
    let call = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
        "params": {"name": "test_tool_with_logging", "arguments": {}}});
    let text = post_streaming(gw, session, call)
        .await
        .text()
        .await
        .expect("the call's answer");
    let all = events(&text);
    assert!(all.iter().any(|m| m["id"] == n), "answered: {text}");
    all.iter()
        .filter(|m| m["method"] == "notifications/message")
        .count()
}

/// A session's log level and resource subscriptions, set through one replica, hold on
/// every replica serving it: the client's GET stream on a third hears the updates of
/// what it subscribed to through the second, a call on the first is filtered at the
/// level set on the second, and an unsubscription through the third ends every
/// replica's upstream subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_level_and_subscriptions_hold_on_every_replica() {
    let cl = Cluster::new("settings");
    let gws = cl.replicas(3, |_| {}).await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let watcher = fixture::Fixture::new("watcher", &["touch"]).watching("fixture://watched");
    let up = serve_fixture(watcher.clone()).await;
    assert_eq!(register(a, "watcher", &up.mcp_url()).await.0, 201);
    let (stop, task) = crate::transparency::conformance_backend(a, "conf").await;
    for gw in [b, c] {
        wait_until(
            "both services everywhere",
            Duration::from_secs(5),
            || async {
                let names = tool_names(gw).await;
                names.contains(&"touch".to_string())
                    && names.contains(&"test_tool_with_logging".to_string())
            },
        )
        .await;
    }
    let session = session_on(a, "settings", json!({})).await;
    let mut stream = session_stream(c, &session, None).await;
    assert_eq!(stream.status(), 200);

    follow_resource(b, &session, "fixture://watched", true).await;
    // Every replica holding a copy subscribes upstream on its own connection.
    subscribed_upstream(&watcher, 3, "a, b and c subscribed upstream").await;
    let touch = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "touch", "arguments": {"uri": "fixture://watched"}}});
    assert_eq!(
        post(&a.base_url(), TOKEN, Some(&session), touch).await.0,
        200
    );
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "notifications/resources/updated").await;
    assert!(seen.contains("fixture://watched"), "{seen}");

    // The fixture logs at `info`: relayed at `info`, not once `warning` is set on b.
    let level = |level: &str| {
        json!({"jsonrpc": "2.0", "id": 4, "method": "logging/setLevel",
        "params": {"level": level}})
    };
    assert_eq!(
        post(&b.base_url(), TOKEN, Some(&session), level("info"))
            .await
            .0,
        200
    );
    assert!(logged(a, &session, 10).await > 0, "info relayed at info");
    assert_eq!(
        post(&b.base_url(), TOKEN, Some(&session), level("warning"))
            .await
            .0,
        200
    );
    // Answered once every replica's copy took it: a's next call filters at it.
    assert_eq!(logged(a, &session, 11).await, 0, "a filters at b's level");
    assert_eq!(logged(c, &session, 12).await, 0, "c filters at b's level");

    follow_resource(c, &session, "fixture://watched", false).await;
    subscribed_upstream(&watcher, 0, "every upstream subscription ended").await;
    drop(stream);

    // A session confirmed elsewhere than where it was opened: the replica that opened
    // it (and never heard `notifications/initialized`) writes what its client sets
    // there, and follows what is set elsewhere.
    let session = session_across(a, b, "confirmed-on-b", json!({})).await;
    let mut stream = session_stream(c, &session, None).await;
    assert_eq!(stream.status(), 200);
    follow_resource(a, &session, "fixture://watched", true).await;
    subscribed_upstream(
        &watcher,
        3,
        "a, b and c subscribed upstream for the second session",
    )
    .await;
    let touch = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "touch", "arguments": {"uri": "fixture://watched"}}});
    assert_eq!(
        post(&b.base_url(), TOKEN, Some(&session), touch).await.0,
        200
    );
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "notifications/resources/updated").await;
    follow_resource(b, &session, "fixture://watched", false).await;
    subscribed_upstream(&watcher, 0, "a followed b's unsubscription").await;
    drop(stream);
    stop.cancel();
    let _ = task.await;
    up.stop().await;
    for gw in gws {
        gw.stop().await;
    }
}

/// The id of the first SSE event in `seen` whose data contains `needle`.
fn event_id_of(seen: &str, needle: &str) -> String {
    let event = seen
        .split("\n\n")
        .find(|e| {
            e.lines()
                .any(|l| l.starts_with("data:") && l.contains(needle))
        })
        .unwrap_or_else(|| panic!("no event with {needle} in {seen}"));
    event
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("the event with {needle} has no id: {seen}"))
}

/// The ids of the `list_changed` events in `seen`.
fn list_changed_ids(seen: &str) -> Vec<String> {
    seen.split("\n\n")
        .filter(|e| e.contains("list_changed"))
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("id:")))
        .map(|id| id.trim().to_string())
        .collect()
}

/// A GET resuming a stream (`Last-Event-ID`) may reach any replica: the event id names
/// the replica holding the stream, which gets the request and replays what the client
/// missed, for the session's own stream (a list change announced while it was away) and
/// for a call's stream (dropped while the backend waited for the client's answer, then
/// resumed, and answered, through the other replica). Once that replica has left, a call's stream is gone
/// (410) and the session's own stream starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_through_any_replica() {
    let cl = Cluster::new("resume");
    let (a, b, stop, task) = cl.pair_with_fixture("test_sampling").await;
    let a_id = replica_id(&a).await;
    let session = session_on(&a, "resumer", json!({"sampling": {}})).await;

    // The session's own stream, on a: the client goes away after its first event
    // (rmcp's priming), and a list change is announced meanwhile.
    let mut stream = session_stream(&a, &session, None).await;
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "\n\n").await;
    let priming = seen
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("the priming event has an id: {seen}"));
    assert_eq!(priming, format!("0@{a_id}"), "the priming event names a");
    drop(stream);
    let one = start_fixture("one", &["oneTool"]).await;
    assert_eq!(register(&a, "one", &one.mcp_url()).await.0, 201);
    // Resumed through b: a replays the change.
    let mut stream = session_stream(&b, &session, Some(&priming)).await;
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "list_changed").await;
    let last = event_id_of(&seen, "list_changed");
    assert!(
        last.ends_with(&format!("@{a_id}")),
        "{last} names a: {seen}"
    );
    drop(stream);
    // Announced while it was away (registered through b; a hears and tells the session).
    let two = start_fixture("two", &["twoTool"]).await;
    assert_eq!(register(&b, "two", &two.mcp_url()).await.0, 201);
    wait_until("twoTool on a", Duration::from_secs(5), || async {
        tool_names(&a).await.contains(&"twoTool".to_string())
    })
    .await;
    let mut resumed = session_stream(&b, &session, Some(&last)).await;
    assert_eq!(resumed.status(), 200);
    // rmcp replays from the event named (it again) on: the change missed comes next.
    let mut replay = String::new();
    let missed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ids = list_changed_ids(&replay);
            if let Some(id) = ids.into_iter().find(|id| *id != last) {
                return id;
            }
            match resumed.chunk().await {
                Ok(Some(chunk)) => replay.push_str(&String::from_utf8_lossy(&chunk)),
                other => panic!("the resumed stream ended ({other:?}): {replay}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the change missed was not replayed: {replay}"));
    assert!(
        missed.ends_with(&format!("@{a_id}")),
        "replayed by a: {missed}"
    );
    drop(resumed);

    // A call's stream on a, dropped while the backend waits for the client's answer.
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "test_sampling", "arguments": {"prompt": "resume?"}}});
    let mut stream = post_streaming(&a, &session, call).await;
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "sampling/createMessage").await;
    let asked = event_id_of(&seen, "sampling/createMessage");
    let question = events(&seen)
        .into_iter()
        .find(|m| m["method"] == "sampling/createMessage")
        .expect("the question");
    drop(stream);
    // Resumed through b (the question replayed), then answered through b.
    let mut resumed = session_stream(&b, &session, Some(&asked)).await;
    assert_eq!(resumed.status(), 200);
    let mut replay = String::new();
    read_until(&mut resumed, &mut replay, "sampling/createMessage").await;
    let answer = json!({"jsonrpc": "2.0", "id": question["id"], "result": {
        "role": "assistant", "model": "m", "stopReason": "endTurn",
        "content": {"type": "text", "text": "resumed"}}});
    assert_eq!(
        post(&b.base_url(), TOKEN, Some(&session), answer).await.0,
        202
    );
    read_until(&mut resumed, &mut replay, "\"id\":7").await;
    let result = events(&replay)
        .into_iter()
        .find(|m| m["id"] == 7)
        .expect("the call's answer");
    assert_eq!(
        result["result"]["content"][0]["text"],
        "LLM response: resumed"
    );
    drop(resumed);

    // a leaves: its streams are gone.
    a.stop().await;
    wait_until("b to see a gone", Duration::from_secs(10), || async {
        live_replicas(&b).await == 1
    })
    .await;
    let gone = session_stream(&b, &session, Some(&asked)).await;
    assert_eq!(gone.status(), 410);
    let fresh = session_stream(&b, &session, Some(&last)).await;
    assert_eq!(
        fresh.status(),
        200,
        "the session's own stream starts afresh"
    );
    drop(fresh);
    stop.cancel();
    let _ = task.await;
    one.stop().await;
    two.stop().await;
    b.stop().await;
}

/// A backend's `list_changed` reaches only the upstream session it was sent on (one
/// replica's): that replica tells the others, which list the backend again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_list_change_heard_by_one_replica_reaches_every_replica() {
    let cl = Cluster::new("relist");
    let (a, b, stop, task) = cl.pair_with_fixture("test_trigger_tool_change").await;
    assert!(
        !tool_names(&b)
            .await
            .contains(&"test_trigger_added_tool".to_string())
    );
    let (status, body) = rpc(
        &a,
        "tools/call",
        json!({"name": "test_trigger_tool_change", "arguments": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for gw in [&a, &b] {
        wait_until(
            "the added tool on both",
            Duration::from_secs(10),
            || async {
                tool_names(gw)
                    .await
                    .contains(&"test_trigger_added_tool".to_string())
            },
        )
        .await;
    }
    stop.cancel();
    let _ = task.await;
    for gw in [a, b] {
        gw.stop().await;
    }
}
