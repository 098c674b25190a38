//! The dashboard at `/ui`, in headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`; `.ci/run` installs them): sign in, see both demo
//! services healthy, call a tool from the playground, find the call in the recent calls,
//! stop a service and see it go down. The screenshot in the README is taken here
//! (`UPDATE_SCREENSHOT=1` writes it to `docs/dashboard.png`).

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
    c.goto(&ui).await.expect("open /ui");
    let token = c.find(Locator::Css("#token")).await.expect("token field");
    token.send_keys("not-the-token").await.expect("type");
    c.find(Locator::Css("#sign-in"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    wait_text(&c, "#sign-in-error", "a refusal", |t| t.contains("401")).await;
    token.clear().await.expect("clear");
    token.send_keys(TOKEN).await.expect("type");
    c.find(Locator::Css("#sign-in"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
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
    c.find(Locator::Css("#call-button"))
        .await
        .expect("call")
        .click()
        .await
        .expect("click");
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

    // The services page, for the README.
    c.goto(&format!("{ui}#/services")).await.expect("services");
    wait_text(
        &c,
        "tr[data-service=\"shopping-service\"]",
        "call stats",
        |t| t.contains("healthy") && t.contains("0.0%"),
    )
    .await;
    let png = c.screenshot().await.expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("target dir");
    std::fs::write(target.join("dashboard.png"), &png).expect("write screenshot");
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).expect("docs dir");
        std::fs::write(docs.join("dashboard.png"), &png).expect("write docs screenshot");
    }

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
