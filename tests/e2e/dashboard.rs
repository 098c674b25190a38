//! The dashboard at `/ui`, in headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`; `.ci/run` installs them): sign in, see both demo
//! services healthy, call a tool from the playground, find the call in the recent calls,
//! see the traffic and an error spike drawn on the trends page's charts and in the
//! services' sparklines, stop a service and see it go down. The screenshots in the
//! README are taken here (`UPDATE_SCREENSHOT=1` writes them to `docs/dashboard.png` and
//! `docs/trends.png`).

use std::{path::PathBuf, process::Stdio, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

async fn chromedriver() -> Driver {
    let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
    assert!(
        std::path::Path::new(&binary).is_file() && std::path::Path::new(CHROMIUM).is_file(),
        "the dashboard test needs Debian's chromium and chromium-driver: \
         apt-get install chromium chromium-driver (.ci/run installs them)"
    );
    let port = procs::free_port();
    let child = tokio::process::Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    wait_until(
        "chromedriver to answer",
        Duration::from_secs(20),
        || async { matches!(http().get(&status).send().await, Ok(r) if r.status().is_success()) },
    )
    .await;
    Driver { _child: child, url }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1360,820",
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Waits until the text of the first element matching `css` satisfies `ok`.
async fn wait_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(text) = e.text().await
        {
            if ok(&text) {
                return text;
            }
            last = text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: `{css}` still reads {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The circles of the chart `chart` of class `cls`, as (data-at, data-value), read in one
/// script (the page redraws every 2 s).
async fn chart_points(c: &Client, chart: &str, cls: &str) -> Vec<(i64, f64)> {
    let script = format!(
        "return [...document.querySelectorAll('figure[data-chart=\"{chart}\"] circle.point.{cls}')]\
           .map(c => [Number(c.dataset.at), Number(c.dataset.value)]);"
    );
    let found = c.execute(&script, vec![]).await.expect("run a script");
    serde_json::from_value(found).expect("pairs of numbers")
}

/// Waits until the chart `chart` (points of class `cls`) satisfies `ok`.
async fn wait_chart(
    c: &Client,
    chart: &str,
    cls: &str,
    what: &str,
    ok: impl Fn(&[(i64, f64)]) -> bool,
) -> Vec<(i64, f64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let points = chart_points(c, chart, cls).await;
        if ok(&points) {
            return points;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the {chart} chart drew {points:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks the element `css`.
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Chooses `value` in the select `css`.
async fn choose(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("{css}: choose {value}: {e}"));
}

fn save_screenshot(png: &[u8], name: &str) {
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("target dir");
    std::fs::write(target.join(name), png).expect("write screenshot");
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).expect("docs dir");
        std::fs::write(docs.join(name), png).expect("write docs screenshot");
    }
}

/// Opens `ui`, is refused with a wrong token, then signs in with the right one and waits
/// for the services page it opens (navigating before the token is kept would land on the
/// sign-in page, then on the services page).
async fn sign_in(c: &Client, ui: &str) {
    c.goto(ui).await.expect("open /ui");
    let token = c.find(Locator::Css("#token")).await.expect("token field");
    token.send_keys("not-the-token").await.expect("type");
    click(c, "#sign-in").await;
    wait_text(c, "#sign-in-error", "a refusal", |t| t.contains("401")).await;
    token.clear().await.expect("clear");
    token.send_keys(TOKEN).await.expect("type");
    click(c, "#sign-in").await;
    wait_text(c, "#services-updated", "the services page", |t| {
        t.starts_with("updated")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_and_drives_the_gateway_from_the_dashboard() {
    let driver = chromedriver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Beside the demo services, a stdio server the gateway runs (the conformance fixture).
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.upstreams = vec![gateway::config::UpstreamSpec {
        name: "fixture".into(),
        command: Some(procs::binary("conformance-fixture").display().to_string()),
        args: vec!["--stdio".into(), "--revision".into(), "2025".into()],
        ..Default::default()
    }];
    config.virtual_servers = vec![
        serde_json::from_str(include_str!("../../docs/customers-server.json"))
            .expect("the stack's virtual server"),
    ];
    let gw = start_gateway(config).await;
    let shopping = start_shopping(Some(&gw)).await;
    let mut user = procs::service("user-service", procs::free_port(), gw.addr.port(), true).await;
    wait_for_services(&gw, &["shopping-service", "user-service", "fixture"]).await;
    let c = browser(&driver).await;
    let ui = format!("{}/ui", gw.base());

    // Sign in: a wrong token is refused and said so; the right one opens the services.
    sign_in(&c, &ui).await;
    for service in ["shopping-service", "user-service", "fixture"] {
        let css = format!("tr[data-service=\"{service}\"] .state");
        wait_text(&c, &css, service, |t| t == "healthy").await;
    }
    // The virtual servers, with what they expose and their composites.
    wait_text(
        &c,
        "tr[data-virtual-server=\"customers\"] .composites",
        "the customers virtual server",
        |t| t == "getCustomerOverview",
    )
    .await;
    wait_text(
        &c,
        "tr[data-virtual-server=\"customers\"] .tool-count",
        "its tools",
        |t| t.parse::<u32>().is_ok_and(|n| n >= 16),
    )
    .await;
    // The stdio server's row shows its process: command, pid, uptime, restarts, memory.
    wait_text(
        &c,
        "tr[data-service=\"fixture\"] .process",
        "the stdio process line",
        |t| {
            t.contains("conformance-fixture --stdio")
                && t.contains("pid ")
                && t.contains("0 restarts")
                && t.contains("MiB")
        },
    )
    .await;

    // The playground builds a form from the tool's inputSchema and calls it.
    c.goto(&format!("{ui}#/playground?tool=getProductById"))
        .await
        .expect("playground");
    let id = c
        .wait()
        .for_element(Locator::Css("#tool-form input[name=\"id\"]"))
        .await
        .expect("an id field from the schema");
    id.send_keys("123").await.expect("type");
    click(&c, "#call-button").await;
    let result = wait_text(&c, "#result", "the result", |t| t.contains("\"123\"")).await;
    assert!(!result.starts_with("Error"), "{result}");

    // The call is in the recent calls (auto-refreshing).
    c.goto(&format!("{ui}#/calls")).await.expect("calls");
    let row = wait_text(&c, "tr[data-tool=\"getProductById\"]", "the call", |t| {
        t.contains("shopping-service") && t.contains("ok")
    })
    .await;
    assert!(row.contains("default"), "the identity: {row}");

    // Tools are searchable, with their schemas.
    c.goto(&format!("{ui}#/tools")).await.expect("tools");
    c.wait()
        .for_element(Locator::Css(".tool[data-tool=\"getUserById\"]"))
        .await
        .expect("getUserById listed");
    c.find(Locator::Css("#tool-search"))
        .await
        .expect("search")
        .send_keys("getUser")
        .await
        .expect("type");
    wait_text(&c, "#tools", "the filtered list", |t| {
        t.contains("getUserById") && !t.contains("getProductById")
    })
    .await;

    // Traffic with an error spike: 6 lookups that succeed, then 4 calls of a tool that
    // fails (the fixture's test_error_handling answers isError).
    for id in ["1", "2", "3", "4", "5", "6"] {
        let (status, body) = rpc(
            &gw,
            "tools/call",
            json!({"name": "getProductById", "arguments": {"id": id}}),
        )
        .await;
        assert!(status == 200 && body["result"]["isError"] != true, "{body}");
    }
    for _ in 0..4 {
        let (status, body) = rpc(
            &gw,
            "tools/call",
            json!({"name": "test_error_handling", "arguments": {}}),
        )
        .await;
        assert!(status == 200 && body["result"]["isError"] == true, "{body}");
    }
    wait_until("11 calls in the log", Duration::from_secs(10), || async {
        calls_per_minute(&gw)
            .await
            .values()
            .map(|m| m.0)
            .sum::<u64>()
            == 11
    })
    .await;
    let expected = calls_per_minute(&gw).await;

    // The trends page charts them: 15 points of a minute, each minute's calls and error
    // rate as the log has them, the spike where the errors were.
    c.goto(&format!("{ui}#/trends?window=15m"))
        .await
        .expect("trends");
    let calls = wait_chart(&c, "calls", "calls", "the calls per minute", |p| {
        p.len() == 15 && p.iter().map(|(_, v)| v).sum::<f64>() == 11.0
    })
    .await;
    for (at, value) in &calls {
        let (n, _) = expected.get(at).copied().unwrap_or_default();
        assert_eq!(*value, n as f64, "calls at {at}: {calls:?} vs {expected:?}");
    }
    let errors = chart_points(&c, "errors", "errors").await;
    assert_eq!(errors.len(), 15, "{errors:?}");
    for (at, value) in &errors {
        let rate = match expected.get(at) {
            Some((n, e)) if *n > 0 => *e as f64 / *n as f64,
            _ => 0.0,
        };
        assert!(
            (value - rate).abs() < 1e-9,
            "error rate at {at}: {errors:?} vs {expected:?}"
        );
    }
    let spike = errors.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    assert!(spike > 0.0, "an error spike: {errors:?}");
    let latency = chart_points(&c, "latency", "p95").await;
    assert_eq!(
        latency.len(),
        expected.len(),
        "a p95 per minute with calls: {latency:?}"
    );
    assert!(latency.iter().all(|(_, v)| *v > 0.0), "{latency:?}");
    wait_text(&c, "#trends-scope", "the totals", |t| {
        t.contains("every service: 11 calls, 4 errors")
    })
    .await;

    // One tool's charts, chosen from the page's own selects: every call of it failed.
    choose(&c, "#trend-service", "fixture").await;
    wait_text(&c, "#trends-scope", "the fixture's totals", |t| {
        t.contains("service fixture: 4 calls, 4 errors")
    })
    .await;
    choose(&c, "#trend-tool", "test_error_handling").await;
    wait_text(&c, "#trends-scope", "the tool's totals", |t| {
        t.contains("tool test_error_handling (fixture): 4 calls, 4 errors")
    })
    .await;
    wait_chart(&c, "errors", "errors", "the tool's error rate", |p| {
        p.len() == 15
            && p.iter().any(|(_, v)| *v == 1.0)
            && p.iter().all(|(at, v)| {
                *v == if expected.get(at).is_some_and(|m| m.1 > 0) {
                    1.0
                } else {
                    0.0
                }
            })
    })
    .await;
    // The other windows, keeping the tool: an hour of minutes, a day of 10-minute points.
    for (window, points, label) in [("1h", 60, "hour"), ("24h", 144, "24 hours")] {
        choose(&c, "#trend-window", window).await;
        wait_chart(&c, "calls", "calls", window, |p| {
            p.len() == points && p.iter().any(|(_, v)| *v > 0.0)
        })
        .await;
        wait_text(&c, "#trends-scope", "the tool's totals", |t| {
            t.contains(&format!(
                "tool test_error_handling (fixture): 4 calls, 4 errors in the last {label}"
            ))
        })
        .await;
    }
    c.goto(&format!("{ui}#/trends?window=1h"))
        .await
        .expect("trends");
    wait_chart(&c, "calls", "calls", "the hour", |p| p.len() == 60).await;
    save_screenshot(&c.screenshot().await.expect("screenshot"), "trends.png");

    // The services page, for the README: each service's last hour as a sparkline.
    c.goto(&format!("{ui}#/services")).await.expect("services");
    wait_text(
        &c,
        "tr[data-service=\"shopping-service\"]",
        "call stats",
        |t| t.contains("healthy") && t.contains("0.0%"),
    )
    .await;
    let spark = c
        .execute(
            "const bars = [...document.querySelectorAll('tr[data-service=\"fixture\"] svg.spark rect.calls')];\
             return [bars.length, bars.reduce((n, b) => n + Number(b.dataset.errors), 0)];",
            vec![],
        )
        .await
        .expect("read the sparkline");
    assert_eq!(
        spark,
        json!([60, 4]),
        "the fixture's sparkline: bars and errors"
    );
    save_screenshot(&c.screenshot().await.expect("screenshot"), "dashboard.png");

    // A service that dies turns down on the page by itself.
    user.kill9().await;
    wait_text(
        &c,
        "tr[data-service=\"user-service\"] .state",
        "user-service down",
        |t| t == "down",
    )
    .await;
    wait_text(
        &c,
        "tr[data-service=\"shopping-service\"] .state",
        "shopping still up",
        |t| t == "healthy",
    )
    .await;

    c.close().await.expect("close the browser");
    shopping.stop().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clusters_dashboard_lists_its_replicas_and_the_replica_that_served_each_call() {
    let driver = chromedriver().await;
    // Two replicas on one PostgreSQL, sharing the call log.
    let cluster = crate::cluster::Cluster::new("dashboard");
    let (a, b) = cluster.pair(|c| c.call_log_store = None).await;
    let (id_a, id_b) = (
        crate::cluster::replica_id(&a).await,
        crate::cluster::replica_id(&b).await,
    );
    let shopping = start_shopping(Some(&a)).await;
    wait_for_services(&b, &["shopping-service"]).await;
    let (status, body) = rpc(
        &b,
        "tools/call",
        json!({"name": "getProductById", "arguments": {"id": "7"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let c = browser(&driver).await;
    let ui = format!("{}/ui", a.base());
    sign_in(&c, &ui).await;
    let mine = format!("tr[data-replica=\"{id_a}\"]");
    wait_text(&c, &mine, "this replica's row", |t| {
        t.contains("(this page)")
    })
    .await;
    let other = format!("tr[data-replica=\"{id_b}\"]");
    let row = wait_text(&c, &other, "the other replica's row", |t| !t.is_empty()).await;
    assert!(!row.contains("(this page)"), "{row}");
    wait_text(&c, "#store-state", "the store", |t| t == "store reachable").await;

    // The call made through b, in a's recent calls, with b as its replica.
    c.goto(&format!("{ui}#/calls")).await.expect("calls");
    wait_text(
        &c,
        "tr[data-tool=\"getProductById\"] td.replica",
        "the serving replica",
        |t| t == id_b,
    )
    .await;
    c.close().await.expect("close the browser");
    shopping.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_call_log_the_trends_page_says_why_it_has_no_charts() {
    let driver = chromedriver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = gateway_config(&dir.path().join("gw.db"));
    config.call_log = false;
    let gw = start_gateway(config).await;
    let c = browser(&driver).await;
    let ui = format!("{}/ui", gw.base());
    sign_in(&c, &ui).await;
    c.goto(&format!("{ui}#/trends?window=15m"))
        .await
        .expect("trends");
    wait_text(&c, "#trends-scope", "the reason", |t| {
        t.contains("No trends") && t.contains("call log is off")
    })
    .await;
    assert!(chart_points(&c, "calls", "calls").await.is_empty());
    c.close().await.expect("close the browser");
    gw.stop().await;
}
