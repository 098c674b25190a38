//! What operators see: Prometheus metrics, the call log and its statistics, request ids.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{fixture::Fixture, *};

async fn get_as(gw: &impl Target, token: &str, path: &str) -> reqwest::Response {
    http()
        .get(format!("{}{path}", gw.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET")
}

/// The value of the sample `name{labels...}` in a text exposition (labels in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_part, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let (l, v) = r.split_once("} ")?;
                (l, v)
            }
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

async fn call_with(gw: &impl Target, tool: &str, arguments: Value, meta: bool) -> Value {
    let mut params = json!({"name": tool, "arguments": arguments});
    if meta {
        params["_meta"] = json!({"progressToken": 1});
    }
    let (status, body) = rpc(gw, "tools/call", params).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_by_tool_and_outcome_and_read_the_live_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.credentials = vec![credential("reader", &["list"])];
    let gw = start_gateway(config).await;
    let backend = start_fixture("obs", &["okTool", "failTool", "hangTool"]).await;
    let (status, body) = register_with(
        &gw,
        json!({"name": "obs", "url": backend.mcp_url(), "callTimeoutMs": 300}),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    for meta in [false, false, true] {
        let r = call_with(&gw, "okTool", json!({"id": "1"}), meta).await;
        assert!(r["result"].is_object(), "{r}");
    }
    let r = call_with(&gw, "failTool", json!({}), false).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let r = call_with(&gw, "hangTool", json!({}), true).await;
    assert!(r["error"].is_object(), "{r}");
    let r = call_with(&gw, "noSuchTool", json!({}), false).await;
    assert!(r["error"].is_object(), "{r}");
    let (status, _) = rpc(&gw, "tools/list", Value::Null).await;
    assert_eq!(status, 200);

    let r = get_as(&gw, TOKEN, "/metrics").await;
    assert_eq!(r.status().as_u16(), 200);
    let kind = r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = r.text().await.expect("text");
    let calls = "mcp_gateway_tool_calls_total";
    let of = |tool, outcome| {
        sample(
            &text,
            calls,
            &[("service", "obs"), ("tool", tool), ("outcome", outcome)],
        )
    };
    assert_eq!(of("okTool", "ok"), Some(3.0), "{text}");
    assert_eq!(of("failTool", "tool_error"), Some(1.0), "{text}");
    assert_eq!(of("hangTool", "timeout"), Some(1.0), "{text}");
    assert!(
        !text.contains("noSuchTool"),
        "an unknown tool is never a label"
    );
    assert_eq!(
        sample(
            &text,
            "mcp_gateway_tool_call_duration_seconds_count",
            &[("service", "obs")]
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "mcp_gateway_upstream_duration_seconds_count",
            &[("service", "obs")]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "mcp_gateway_requests_total",
            &[("method", "tools/call"), ("outcome", "error")]
        ),
        Some(2.0),
        "the timeout and the unknown tool: {text}"
    );
    assert!(
        sample(
            &text,
            "mcp_gateway_requests_total",
            &[("method", "tools/list"), ("outcome", "ok")]
        ) >= Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "mcp_gateway_services", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "mcp_gateway_tools", &[]), Some(3.0));
    // The timeout made the instance degraded: one state at a time.
    let state = |s| {
        sample(
            &text,
            "mcp_gateway_instance_state",
            &[("service", "obs"), ("state", s)],
        )
    };
    assert_eq!(
        (state("degraded"), state("healthy"), state("down")),
        (Some(1.0), Some(0.0), Some(0.0)),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));

    // Operators only.
    let r = http()
        .get(format!("{}/metrics", gw.base()))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    let r = get_as(&gw, &credential_token("reader"), "/metrics").await;
    assert_eq!(r.status().as_u16(), 403);

    // A backend that goes away shows as down.
    backend.stop().await;
    wait_until(
        "obs to be down in /metrics",
        Duration::from_secs(15),
        || async {
            let text = get_as(&gw, TOKEN, "/metrics")
                .await
                .text()
                .await
                .unwrap_or_default();
            sample(
                &text,
                "mcp_gateway_instance_state",
                &[("service", "obs"), ("state", "down")],
            ) == Some(1.0)
        },
    )
    .await;
    gw.stop().await;
}

/// A gateway whose configuration defines the virtual server `definition`.
async fn gateway_with_server(dir: &std::path::Path, definition: Value) -> Running {
    let mut config = gateway_config(&dir.join("gw.db"));
    config.virtual_servers = vec![serde_json::from_value(definition).expect("definition")];
    start_gateway(config).await
}

/// `GET /metrics`, as the operator.
async fn metrics(gw: &impl Target) -> String {
    get_as(gw, TOKEN, "/metrics")
        .await
        .text()
        .await
        .expect("text")
}

/// `service`'s series in a text exposition: the call counters and the histograms.
fn series_of(text: &str, service: &str) -> Vec<String> {
    let label = format!("service=\"{service}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&label))
        .filter(|l| !l.starts_with("mcp_gateway_instance_state"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_keep_series_only_of_what_is_registered_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A virtual server that shows `keepTool` renamed: a name the catalog does not have.
    let gw = gateway_with_server(
        dir.path(),
        json!({"name": "view", "tools": ["keep/*"], "rename": {"keepTool": {"name": "kept"}}}),
    )
    .await;
    let keep = start_fixture("keep", &["keepTool"]).await;
    let (status, body) = register(&gw, "keep", &keep.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    let r = call_with(&gw, "keepTool", json!({}), false).await;
    assert!(r["result"].is_object(), "{r}");
    let r = crate::servers::rpc_on(
        &gw,
        "view",
        TOKEN,
        "tools/call",
        json!({"name": "kept", "arguments": {}}),
    )
    .await;
    assert!(r["result"].is_object(), "{r}");

    // Services come and go (a registrant churning names): each leaves no series behind.
    let delete = |name: String| {
        let url = format!("{}/services/{name}", gw.base());
        async move {
            let r = http()
                .delete(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("DELETE");
            assert_eq!(r.status().as_u16(), 200, "DELETE {name}");
        }
    };
    for i in 0..3 {
        let name = format!("churn{i}");
        let backend = start_fixture(&name, &[&format!("churnTool{i}")]).await;
        let (status, body) = register(&gw, &name, &backend.mcp_url()).await;
        assert_eq!(status, 201, "{body}");
        for meta in [false, true] {
            let r = call_with(&gw, &format!("churnTool{i}"), json!({}), meta).await;
            assert!(r["result"].is_object(), "{r}");
        }
        let text = metrics(&gw).await;
        assert_eq!(
            sample(
                &text,
                "mcp_gateway_tool_calls_total",
                &[("service", &name), ("outcome", "ok")]
            ),
            Some(2.0),
            "{text}"
        );
        delete(name.clone()).await;
        backend.stop().await;
        let text = metrics(&gw).await;
        assert_eq!(series_of(&text, &name), Vec::<String>::new(), "{text}");
    }

    // What is still registered keeps its series through every change of the catalog,
    // the renamed tool's too.
    let text = metrics(&gw).await;
    for tool in ["keepTool", "kept"] {
        assert_eq!(
            sample(
                &text,
                "mcp_gateway_tool_calls_total",
                &[("service", "keep"), ("tool", tool), ("outcome", "ok")]
            ),
            Some(1.0),
            "{tool}: {text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "mcp_gateway_tool_call_duration_seconds_count",
            &[("service", "keep")]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(!text.contains("churn"), "{text}");
    gw.stop().await;
    keep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_is_one_request_and_each_of_its_steps_a_tool_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway_with_server(
        dir.path(),
        json!({
            "name": "desk",
            "tools": ["crm/*"],
            "composites": [{"name": "both", "steps": [
                {"name": "a", "tool": "crm/first"},
                {"name": "b", "tool": "crm/second"},
                {"name": "c", "tool": "crm/failThird"}
            ]}]
        }),
    )
    .await;
    let crm = start_fixture("crm", &["first", "second", "failThird"]).await;
    let (status, body) = register(&gw, "crm", &crm.mcp_url()).await;
    assert_eq!(status, 201, "{body}");
    let r = crate::servers::rpc_on(
        &gw,
        "desk",
        TOKEN,
        "tools/call",
        json!({"name": "both", "arguments": {}}),
    )
    .await;
    assert_eq!(
        r["result"]["structuredContent"]["steps"]["b"]["ok"], true,
        "{r}"
    );

    let text = metrics(&gw).await;
    let requests = |outcome| {
        sample(
            &text,
            "mcp_gateway_requests_total",
            &[("method", "tools/call"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (requests("ok"), requests("error")),
        (Some(1.0), None),
        "one request, the composite's: {text}"
    );
    let calls = |service, tool, outcome| {
        sample(
            &text,
            "mcp_gateway_tool_calls_total",
            &[("service", service), ("tool", tool), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("servers/desk", "both", "ok"), Some(1.0), "{text}");
    assert_eq!(calls("crm", "first", "ok"), Some(1.0), "{text}");
    assert_eq!(calls("crm", "second", "ok"), Some(1.0), "{text}");
    assert_eq!(calls("crm", "failThird", "tool_error"), Some(1.0), "{text}");
    gw.stop().await;
    crm.stop().await;
}

/// A text argument that carries a header line and a query string with secrets in them.
const NOTE: &str =
    "retry with Authorization: Bearer bearer-s3cret\nthen GET /cb?access_token=query-s3cret&page=2";

/// A `tools/call` with the given token and request id (`meta`: with `_meta`, so it
/// takes the typed path).
async fn logged_call(
    gw: &impl Target,
    token: &str,
    tool: &str,
    meta: bool,
    request_id: &str,
) -> Value {
    let mut params = json!({"name": tool, "arguments": {
        "id": "x",
        "password": "hunter2",
        // Secrets inside a text, under a name that is no secret.
        "note": NOTE,
    }});
    if meta {
        params["_meta"] = json!({"progressToken": 5});
    }
    let r = http()
        .post(gw.mcp())
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}))
        .send()
        .await
        .expect("call");
    assert_eq!(r.headers()["x-request-id"], request_id);
    r.json::<Value>().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_in_the_call_log_with_who_what_how_long_and_how_it_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db");
    let config = |max_rows: usize| {
        let mut c = gateway_config(&store);
        c.call_log_payloads = true;
        c.call_log_max_rows = max_rows;
        c.credentials = vec![credential("agent", &["list", "call"])];
        c
    };
    let gw = start_gateway(config(100)).await;
    let backend = serve_fixture(Fixture::new("logged", &["okTool", "failTool"])).await;
    let (status, _) = register(&gw, "logged", &backend.mcp_url()).await;
    assert_eq!(status, 201);
    let agent = &credential_token("agent");
    logged_call(&gw, agent, "okTool", false, "req-1").await;
    logged_call(&gw, agent, "okTool", true, "req-2").await;
    logged_call(&gw, agent, "failTool", false, "req-3").await;
    logged_call(&gw, TOKEN, "okTool", false, "req-4").await;

    wait_until("4 calls in the log", Duration::from_secs(10), || async {
        get_json(&gw, "/calls").await.1["count"] == 4
    })
    .await;
    let instance = services(&gw).await["services"][0]["instances"][0]["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .expect("the instance's id in /services")
        .to_string();
    let (_, mine) = get_json(&gw, "/calls?identity=agent").await;
    let calls = mine["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 3, "{mine}");
    assert_eq!(calls[0]["requestId"], "req-3", "newest first: {mine}");
    for c in calls {
        assert_eq!(
            (c["service"].as_str(), c["identity"].as_str()),
            (Some("logged"), Some("agent"))
        );
        assert_eq!(c["instance"].as_str(), Some(instance.as_str()), "{c}");
        let duration = c["durationMs"]
            .as_f64()
            .unwrap_or_else(|| panic!("durationMs: {c}"));
        let upstream = c["upstreamMs"]
            .as_f64()
            .unwrap_or_else(|| panic!("upstreamMs: {c}"));
        assert!(duration > 0.0, "{c}");
        assert!((0.0..=duration).contains(&upstream), "{c}");
        let at = c["at"].as_i64().unwrap_or_else(|| panic!("at: {c}"));
        assert!(at > 1_700_000_000_000, "{c}");
        assert_eq!(c["arguments"]["id"], "x", "{c}");
        assert_eq!(c["arguments"]["password"], "[redacted]", "{c}");
        assert_eq!(
            c["arguments"]["note"],
            "retry with Authorization: [redacted]\nthen GET /cb?access_token=[redacted]&page=2",
            "{c}"
        );
        assert!(c["result"]["content"].is_array(), "{c}");
    }
    for secret in ["hunter2", "bearer-s3cret", "query-s3cret"] {
        assert!(!mine.to_string().contains(secret), "{secret}: {mine}");
    }
    assert_eq!(calls[0]["outcome"], "tool_error");
    assert_eq!(calls[1]["outcome"], "ok");
    let (_, failed) = get_json(&gw, "/calls?outcome=tool_error").await;
    assert_eq!(failed["count"], 1);
    let (_, by_tool) = get_json(&gw, "/calls?tool=okTool&limit=2").await;
    assert_eq!(by_tool["count"], 2);
    let (_, future) = get_json(&gw, "/calls?since=99999999999999").await;
    assert_eq!(future["count"], 0);
    for bad in [
        "/calls?outcome=bogus",
        "/calls?limit=many",
        "/calls?colour=red",
    ] {
        let (status, body) = get_json(&gw, bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
    }

    let (status, stats) = get_json(&gw, "/stats").await;
    assert_eq!(status, 200);
    let s = &stats["services"]["logged"];
    assert_eq!(
        (s["calls"].as_u64(), s["errors"].as_u64()),
        (Some(4), Some(1)),
        "{stats}"
    );
    assert_eq!(s["errorRate"], 0.25);
    let (p50, p95) = (
        s["p50Ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("p50Ms: {stats}")),
        s["p95Ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("p95Ms: {stats}")),
    );
    assert!(p50 > 0.0 && p95 >= p50, "{stats}");
    let last_used = s["lastUsedMs"]
        .as_i64()
        .unwrap_or_else(|| panic!("lastUsedMs: {stats}"));
    assert!(last_used > 0, "{stats}");
    let ok_tool = stats["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tool"] == "okTool"))
        .expect("okTool stats");
    assert_eq!(ok_tool["calls"], 3);
    assert_eq!(services(&gw).await["services"][0]["stats"]["calls"], 4);

    // The log survives a restart, and keeps at most call_log_max_rows.
    gw.stop().await;
    let gw = start_gateway(config(100)).await;
    assert_eq!(get_json(&gw, "/calls").await.1["count"], 4);
    gw.stop().await;
    let gw = start_gateway(config(2)).await;
    wait_for_services(&gw, &["logged"]).await;
    logged_call(&gw, TOKEN, "okTool", false, "req-5").await;
    gw.stop().await;
    let gw = start_gateway(config(2)).await;
    let (_, kept) = get_json(&gw, "/calls").await;
    let ids: Vec<&str> = kept["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["requestId"].as_str())
        .collect();
    assert_eq!(ids, ["req-5", "req-4"], "{kept}");
    gw.stop().await;

    // Off: nothing recorded, and the API says so.
    let mut off = gateway_config(&dir.path().join("off.db"));
    off.call_log = false;
    let gw = start_gateway(off).await;
    let (status, body) = get_json(&gw, "/calls").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("call_log_off"))
    );
    gw.stop().await;
    backend.stop().await;
}

/// The points of `series` (an array of `{at, calls, errors, ...}`).
fn points(series: &Value) -> &Vec<Value> {
    series
        .as_array()
        .unwrap_or_else(|| panic!("points: {series}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_time_series_count_every_call_in_its_minute_and_refuse_bad_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("gw.db");
    let gw = start_gateway(gateway_config(&store)).await;
    let backend = serve_fixture(Fixture::new("charted", &["okTool", "failTool"])).await;
    let (status, _) = register(&gw, "charted", &backend.mcp_url()).await;
    assert_eq!(status, 201);
    // 7 that succeed and 3 that fail, on both call paths.
    for (i, (tool, meta)) in std::iter::repeat_n(("okTool", false), 5)
        .chain([("okTool", true), ("okTool", true)])
        .chain([("failTool", false), ("failTool", true), ("failTool", false)])
        .enumerate()
    {
        logged_call(&gw, TOKEN, tool, meta, &format!("c-{i}")).await;
    }
    wait_until("10 calls in the log", Duration::from_secs(10), || async {
        get_json(&gw, "/calls").await.1["count"] == 10
    })
    .await;
    // What each minute should hold, from the log's own times.
    let expected = calls_per_minute(&gw).await;

    let (status, stats) = get_json(&gw, "/stats?window=15m&step=1m").await;
    assert_eq!(status, 200, "{stats}");
    let series = &stats["series"];
    assert_eq!(
        (
            series["window"].as_str(),
            series["step"].as_str(),
            series["stepMs"].as_i64()
        ),
        (Some("15m"), Some("1m"), Some(60_000)),
        "{series}"
    );
    let gateway = points(&series["gateway"]);
    assert_eq!(gateway.len(), 15, "{series}");
    assert_eq!(series["from"], gateway[0]["at"]);
    assert_eq!(
        series["to"].as_i64(),
        gateway[14]["at"].as_i64().map(|a| a + 60_000)
    );
    for p in gateway {
        let at = p["at"].as_i64().expect("at");
        let (calls, errors) = expected.get(&at).copied().unwrap_or_default();
        assert_eq!(
            (p["calls"].as_u64(), p["errors"].as_u64()),
            (Some(calls), Some(errors)),
            "the point at {at}: {series}"
        );
        if calls > 0 {
            let (p50, p95) = (p["p50Ms"].as_f64(), p["p95Ms"].as_f64());
            assert!(p50.is_some_and(|p50| p50 > 0.0 && p95 >= Some(p50)), "{p}");
            assert_eq!(p["errorRate"].as_f64(), Some(errors as f64 / calls as f64));
            assert_eq!(p["callsPerMinute"].as_f64(), Some(calls as f64));
        } else {
            assert!(p["p50Ms"].is_null(), "{p}");
        }
    }
    assert_eq!(
        &series["services"]["charted"], &series["gateway"],
        "{series}"
    );
    assert_eq!(series["tools"], json!([]), "no tool asked for");

    // A tool's own series; another service's is empty.
    let (_, one) = get_json(&gw, "/stats?window=15m&tool=failTool").await;
    let tools = one["series"]["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 1, "{one}");
    assert_eq!(tools[0]["service"], "charted");
    let failed = points(&tools[0]["points"]);
    let sum =
        |ps: &Vec<Value>, field: &str| ps.iter().filter_map(|p| p[field].as_u64()).sum::<u64>();
    assert_eq!(
        (sum(failed, "calls"), sum(failed, "errors")),
        (3, 3),
        "{one}"
    );
    let (_, other) = get_json(&gw, "/stats?window=15m&service=nobody").await;
    assert_eq!(
        sum(points(&other["series"]["gateway"]), "calls"),
        0,
        "{other}"
    );
    assert_eq!(other["series"]["services"], json!({}));

    // Default steps keep a chart near 150 points at most.
    for (query, n) in [("window=1h", 60), ("window=24h", 144), ("step=5m", 12)] {
        let (status, body) = get_json(&gw, &format!("/stats?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(points(&body["series"]["gateway"]).len(), n, "{query}");
        assert_eq!(
            sum(points(&body["series"]["gateway"]), "calls"),
            10,
            "{query}"
        );
    }
    // Without a window there is no series, as before; with one, only the series (the
    // totals read the whole log).
    let (_, totals) = get_json(&gw, "/stats").await;
    assert!(totals.get("series").is_none(), "{totals}");
    assert_eq!(totals["services"]["charted"]["calls"], 10, "{totals}");
    assert!(
        stats.get("services").is_none() && stats.get("tools").is_none(),
        "{stats}"
    );

    // Bad values are refused with the parameter named, and change nothing.
    for (query, named) in [
        ("window=2x", "window"),
        ("window=25h", "window"),
        ("window=0m", "window"),
        // A multi-byte last character (schemathesis found it panicking the handler).
        ("window=1%C3%A9", "window"),
        ("window=%C3%A9", "window"),
        ("window=1h&step=7m", "step"),
        ("window=15m&step=1h", "step"),
        ("window=1h&step=30s", "step"),
        ("colour=red", "colour"),
        ("tool=okTool", "window"),
    ] {
        let (status, body) = get_json(&gw, &format!("/stats?{query}")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_query")),
            "{query}: {body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{query}: {message}");
    }

    // The aggregates are kept in the store: a restart keeps the series.
    gw.stop().await;
    let gw = start_gateway(gateway_config(&store)).await;
    let (_, again) = get_json(&gw, "/stats?window=15m&step=1m").await;
    assert_eq!(
        sum(points(&again["series"]["gateway"]), "calls"),
        10,
        "{again}"
    );
    gw.stop().await;
    backend.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_carries_its_id_which_the_client_gets_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let backend = start_fixture("traced", &["tracedTool"]).await;
    let port = procs::free_port();
    let mut gw = procs::gateway_logging(
        port,
        &dir.path().join("gw.db"),
        &[("RUST_LOG", "debug".to_string())],
        Some(log),
    )
    .await;
    let (status, _) = register(&gw, "traced", &backend.mcp_url()).await;
    assert_eq!(status, 201);
    let r = http()
        .post(gw.mcp())
        .bearer_auth(TOKEN)
        .header("x-request-id", "req-trace-4711")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "tracedTool", "arguments": {}}}))
        .send()
        .await
        .expect("call");
    assert_eq!(r.headers()["x-request-id"], "req-trace-4711");
    // The typed path runs in rmcp's session task; its lines carry the id too.
    let r = http()
        .post(gw.mcp())
        .bearer_auth(TOKEN)
        .header("x-request-id", "req-typed-0815")
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "tracedTool", "arguments": {}, "_meta": {"progressToken": 1}}}))
        .send()
        .await
        .expect("typed call");
    assert_eq!(r.headers()["x-request-id"], "req-typed-0815");
    // Without one, the gateway makes one (a UUID).
    let r = http()
        .get(format!("{}/services", gw.base()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    let made = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!((made.len(), made.matches('-').count()), (36, 4), "{made}");
    wait_until("both calls in the log", Duration::from_secs(10), || async {
        let calls = get_json(&gw, "/calls").await.1;
        let ids: Vec<String> = calls["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["requestId"].as_str().map(String::from))
            .collect();
        ids.contains(&"req-trace-4711".to_string()) && ids.contains(&"req-typed-0815".to_string())
    })
    .await;
    gw.terminate().await;
    backend.stop().await;
    let text = std::fs::read_to_string(&log_path).expect("log");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("req-trace-4711"))
        .collect();
    assert!(
        lines.len() >= 2,
        "the request's lines carry its id:\n{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("finished processing request")),
        "{lines:#?}"
    );
    assert!(text.contains(&made), "the made-up id is logged too");
    assert!(
        text.lines()
            .any(|l| l.contains("req-typed-0815") && l.contains("forwarding to the upstream")),
        "the typed path's own lines carry the id:\n{text}"
    );
}

/// A stand-in OpenTelemetry collector: every OTLP/HTTP JSON trace export it receives.
async fn collector() -> (Running, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let received: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let store = std::sync::Arc::clone(&received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = std::sync::Arc::clone(&store);
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    store.lock().expect("lock").push(v);
                }
                axum::Json(json!({}))
            }
        }),
    );
    let running = serve_router(listener, app);
    (running, received)
}

/// (trace id, span id, parent span id, name) of every exported span; a span without a
/// trace id, span id or name fails the test (a root span's parent id is "").
fn spans(exports: &[Value]) -> Vec<(String, String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_lowercase();
    let id = |v: &Value, hex_digits: usize, what: &str| {
        let id = text(v);
        assert!(
            id.len() == hex_digits && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "a span's {what} is not {hex_digits} hex digits: {v}"
        );
        id
    };
    exports
        .iter()
        .flat_map(|e| e["resourceSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
        .map(|s| {
            let name = text(&s["name"]);
            assert!(!name.is_empty(), "a span without a name: {s}");
            (
                id(&s["traceId"], 32, "trace id"),
                id(&s["spanId"], 16, "span id"),
                text(&s["parentSpanId"]),
                name,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_go_to_the_collector_and_their_context_to_the_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (otel, received) = collector().await;
    let fixture = Fixture::new("traced", &["traceTool"]);
    let backend = serve_fixture(fixture.clone()).await;
    let port = procs::free_port();
    let mut gw = procs::gateway(
        port,
        &dir.path().join("gw.db"),
        &[
            ("GATEWAY_OTLP_ENDPOINT", otel.base()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ],
    )
    .await;
    let (status, _) = register(&gw, "traced", &backend.mcp_url()).await;
    assert_eq!(status, 201);

    // The pass-through path, continuing the client's own trace.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = http()
        .post(gw.mcp())
        .bearer_auth(TOKEN)
        .header(
            "traceparent",
            format!("00-{client_trace}-00f067aa0ba902b7-01"),
        )
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "traceTool", "arguments": {}}}))
        .send()
        .await
        .expect("call");
    assert_eq!(r.status().as_u16(), 200);
    // The typed path (`_meta` sends it there), a trace of its own.
    let (_, typed) = rpc(
        &gw,
        "tools/call",
        json!({"name": "traceTool", "arguments": {}, "_meta": {"progressToken": 1}}),
    )
    .await;
    assert!(typed["result"].is_object(), "{typed}");

    wait_until(
        "both calls' spans exported",
        Duration::from_secs(15),
        || async {
            let all = spans(&received.lock().expect("lock"));
            all.iter().filter(|s| s.3 == "tools/call tracetool").count() >= 2
        },
    )
    .await;
    let all = spans(&received.lock().expect("lock"));
    let upstream: Vec<_> = all
        .iter()
        .filter(|s| s.3 == "tools/call tracetool")
        .collect();
    for call in &upstream {
        // Each upstream span is the child of its request's server span.
        assert_eq!(
            call.2.len(),
            16,
            "an upstream span without a parent: {call:?}"
        );
        let parent = all
            .iter()
            .find(|s| s.1 == call.2)
            .unwrap_or_else(|| panic!("no parent for {call:?} in {all:?}"));
        assert_eq!(
            (parent.0.as_str(), parent.3.as_str()),
            (call.0.as_str(), "post /mcp")
        );
        // The backend heard of it: header and `_meta`, naming this very span.
        let expected = format!("00-{}-{}-01", call.0, call.1);
        for (what, seen) in [
            ("header", &fixture.traceparent_headers),
            ("_meta", &fixture.traceparent_metas),
        ] {
            let seen = seen.lock().expect("lock").clone();
            assert!(
                seen.contains(&expected),
                "{what}: {expected} not in {seen:?}"
            );
        }
    }
    assert!(
        upstream.iter().any(|s| s.0 == client_trace),
        "the pass-through call continues the client's trace: {upstream:?}"
    );
    assert!(
        upstream.iter().any(|s| s.0 != client_trace),
        "the typed call has its own"
    );
    gw.terminate().await;
    backend.stop().await;
    otel.stop().await;
}

/// The gateway binary run under `script`, which gives it a pseudo-terminal as stdout,
/// with `NO_COLOR` as given (removed for `None`): what it wrote up to its start-up line.
async fn gateway_on_a_terminal(dir: &std::path::Path, no_color: Option<&str>) -> String {
    use tokio::io::AsyncReadExt;
    let store = dir.join("tty.db");
    let command = format!(
        "exec {} --listen 127.0.0.1:0 --store {}",
        procs::binary("gateway").display(),
        store.display()
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qfec", &command, "/dev/null"])
        .env("RUST_LOG", "info")
        .env("MCP_BEARER_TOKEN", TOKEN)
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    procs::without_gateway_settings(cmd.as_std_mut());
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let mut child = cmd
        .spawn()
        .expect("run script (util-linux) to give the gateway a terminal");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("gateway listening") {
            let n = stdout.read(&mut chunk).await.expect("read the terminal");
            assert!(
                n > 0,
                "the gateway stopped: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("no start-up line within 20 s"));
    let _ = child.kill().await;
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `gateway > gateway.log`: plain text.
    let path = dir.path().join("gateway.log");
    let file = std::fs::File::create(&path).expect("log file");
    let port = procs::free_port();
    let mut gw = procs::gateway_logging(
        port,
        &dir.path().join("gw.db"),
        &[("RUST_LOG", "info".into())],
        Some(file),
    )
    .await;
    assert_eq!(gw.terminate().await, Some(0));
    let log = std::fs::read_to_string(&path).expect("read the log");
    assert!(
        log.contains("gateway listening") && log.contains("shutdown signal received"),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "escape codes in a log file: {log:?}");

    // On a terminal: colour, unless NO_COLOR is set to something.
    for (no_color, coloured) in [(None, true), (Some(""), true), (Some("1"), false)] {
        let out = gateway_on_a_terminal(dir.path(), no_color).await;
        assert_eq!(
            out.contains("\x1b["),
            coloured,
            "NO_COLOR={no_color:?}: {out:?}"
        );
    }
}
