//! The benchmark never rots: `mcp-bench run --quick` runs every scenario briefly, against
//! real child processes over loopback, and must produce every row with numbers and no
//! errors. Speed is never asserted here (CI machines vary); only that it all works, and
//! that every figure a real run cannot leave at zero (a latency, a rate, a memory size) is
//! above zero: an empty histogram or a window with no calls reads as 0.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Every scenario the table must contain (row prefixes).
const SCENARIOS: &[&str] = &[
    "tools/call sequential p50 (session, 1 client)",
    "tools/call sequential p90 (session, 1 client)",
    "tools/call sequential p99 (session, 1 client)",
    "tools/call sequential p50 (sessionless, 1 client)",
    "tools/call sequential p90 (sessionless, 1 client)",
    "tools/call sequential p99 (sessionless, 1 client)",
    "tools/call throughput (16 clients",
    "tools/call throughput (64 clients",
    "tools/call p99 under load (16 clients)",
    "tools/call p99 under load (64 clients)",
    "CPU per call under load (16 clients)",
    "CPU per call under load (64 clients)",
    "session set-up rate",
    "tools/list p50, 1 upstream (20 tools)",
    "tools/list p50, one request, 10 upstreams (200 tools)",
    "tools/list p50, one request, 100 upstreams (2000 tools)",
    "tools/list p50, all pages, 10 upstreams (200 tools)",
    "tools/list p50, all pages, 100 upstreams (2000 tools)",
    "tools/list p50, all pages, 2000 tools: one server direct vs 100 upstreams via gateway",
    "tools/call p50 via gateway, 100 upstreams",
    "gateway RSS idle",
    "gateway RSS with 100 idle sessions",
    "gateway RSS with 200 idle sessions",
    "gateway RSS per idle session",
    "gateway RSS after closing",
    "gateway RSS after a 2nd open/close cycle",
    "gateway RSS per session holding rmcp's copy (ping after initialize) at 100",
    "gateway RSS after closing the 100 sessions holding rmcp's copy",
];

/// The rows of the wrk reference section, for each kind of session ("wrk plain: ...",
/// "wrk capable: ...", "wrk stateless: ..."), required when wrk is installed.
const WRK_SCENARIOS: &[&str] = &[
    "tools/call p50, 1 connection",
    "tools/call p99, 1 connection",
    "tools/call throughput, 16 connections",
    "tools/call throughput, 64 connections",
    "CPU per call, 1 connection: backend direct vs gateway",
    "CPU per call, 16 connections: backend direct vs gateway",
    "CPU per call, 64 connections: backend direct vs gateway",
    "context switches per call, 1 connection: backend direct vs gateway",
];

/// Rows whose "via gateway" figure may be zero in a real run: the growth of the RSS per
/// session is a difference of two readings, 0 when the allocator had room to spare; CPU
/// time is read in clock ticks (10 ms), which a one-second quick run may not fill.
const MAY_BE_ZERO: &[&str] = &["gateway RSS per idle session", "CPU per call"];

/// The figure a cell starts with (units follow), if it holds a finite one.
fn figure(cell: &str) -> Option<f64> {
    cell.split_whitespace()
        .next()
        .map(|n| n.trim_end_matches(['×', '/', 's']))
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| n.is_finite())
}

#[test]
fn quick_run_reports_every_scenario_with_numbers_and_no_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("q.md");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-bench"))
        .args(["run", "--quick", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mcp-bench");
    // Bounded: a hung run fails the test instead of hanging CI.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mcp-bench") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mcp-bench run --quick did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    println!("{stdout}");
    assert!(status.success(), "mcp-bench run --quick failed: {status}");

    let table = std::fs::read_to_string(&out).expect("the results file was written");
    assert!(table.contains("- run: --quick"), "{table}");
    assert!(table.contains("- machine: "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Targets met: ") && l.ends_with("Errors: 0.")),
        "{table}"
    );
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario"))
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    let mut wanted: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
    // The wrk reference is always there: measured, or skipped with the reason (wrk
    // missing and not installable).
    assert!(table.contains("\n## wrk reference\n"), "{table}");
    if let Some(skipped) = table.lines().find(|l| l.starts_with("Skipped: ")) {
        println!("the wrk reference was skipped: {skipped}");
    } else {
        assert!(
            table.contains("\nwrk reference targets met: ")
                && table
                    .lines()
                    .any(|l| l.starts_with("wrk reference targets met: ")
                        && l.ends_with("Errors: 0.")),
            "{table}"
        );
        for kind in ["plain", "capable", "stateless"] {
            wanted.extend(WRK_SCENARIOS.iter().map(|s| format!("wrk {kind}: {s}")));
        }
        let json = out.with_extension("json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON results"))
                .expect("the JSON results parse");
        assert_eq!(
            json["wrk"]["kinds"].as_array().map(Vec::len),
            Some(3),
            "{json}"
        );
    }
    for scenario in &wanted {
        let scenario = scenario.as_str();
        let row = rows
            .iter()
            .find(|r| r[0].starts_with(scenario))
            .unwrap_or_else(|| panic!("no row for {scenario:?} in\n{table}"));
        assert_eq!(row.len(), 7, "malformed row {row:?}");
        let (direct, via, ratio, errors) = (row[1], row[2], row[3], row[6]);
        let Some(v) = figure(via) else {
            panic!("{scenario}: via gateway is not a number: {via}");
        };
        if MAY_BE_ZERO
            .iter()
            .any(|m| scenario.starts_with(m) || scenario.contains(&format!(": {m}")))
        {
            assert!(v >= 0.0, "{scenario}: via gateway is negative: {via}");
        } else {
            assert!(v > 0.0, "{scenario}: via gateway is zero: {via}\n{table}");
        }
        if direct == "—" {
            assert_eq!(ratio, "—", "{scenario}: a ratio without a direct figure");
        } else {
            let d = figure(direct)
                .unwrap_or_else(|| panic!("{scenario}: direct is not a number: {direct}"));
            assert!(d > 0.0, "{scenario}: direct is zero: {direct}\n{table}");
            // Both figures above zero: the ratio is there (it may round to 0.00×
            // only if one is 200 times the other).
            assert!(
                figure(ratio).is_some(),
                "{scenario}: ratio is not a number: {ratio}"
            );
        }
        assert_eq!(errors, "0", "{scenario}: errors in\n{table}");
    }
}
