//! The report code on result directories laid out as the suite (0.2.0-alpha.12) writes
//! them: scoring against a requirement set, the expected-failures file, and comparing two
//! runs check by check.

use std::path::Path;

use conformance::report::{Expected, Report, Requirements, Scoring};
use serde_json::{Value, json};

/// Writes `DIR/server-<scenario>-<timestamp>/checks.json` for each scenario.
fn write_run(dir: &Path, scenarios: &[(&str, Value)]) {
    for (i, (scenario, checks)) in scenarios.iter().enumerate() {
        let sub = dir.join(format!("server-{scenario}-2026-11-30T20-13-45-{i:03}Z"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join("checks.json"), checks.to_string()).expect("write");
    }
}

fn load(scenarios: &[(&str, Value)]) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    write_run(dir.path(), scenarios);
    Report::load(dir.path()).expect("load")
}

fn check(id: &str, status: &str) -> Value {
    json!({"id": id, "name": id, "status": status, "timestamp": "2026-11-30T20:13:45.485Z"})
}

fn failing(id: &str, message: &str) -> Value {
    json!({"id": id, "name": id, "status": "FAILURE", "errorMessage": message,
           "timestamp": "2026-11-30T20:13:45.485Z"})
}

const REQUIREMENTS: &str = r#"# Conformance requirements for the 2026-07-28 specification revision.
#
# `not_scored` is run and reported but never counts.

server:
  - server-stateless
  - tools-list   # listed
  - "caching"

client:
  - tools_call

not_scored:
  - scenario: auth/dpop
    leg: client
    reason: extension
  - scenario: tasks-lifecycle
    leg: server
    reason: extension
    note: >-
      io.modelcontextprotocol/tasks (SEP-2663); pending against the reference fixture,
      run for visibility
  - scenario: json-schema-2020-12
    leg: server
    reason: pending
"#;

fn requirements() -> Requirements {
    Requirements::parse("2026-07-28", REQUIREMENTS).expect("parses")
}

#[test]
fn a_requirement_set_names_the_scored_server_scenarios_and_why_others_are_not() {
    let r = requirements();
    assert_eq!(r.revision, "2026-07-28");
    assert_eq!(
        r.scored.iter().map(String::as_str).collect::<Vec<_>>(),
        ["caching", "server-stateless", "tools-list"]
    );
    assert_eq!(r.scoring("tools-list"), Scoring::Scored);
    assert_eq!(
        r.scoring("tasks-lifecycle"),
        Scoring::NotScored("extension".into())
    );
    assert_eq!(
        r.scoring("json-schema-2020-12"),
        Scoring::NotScored("pending".into())
    );
    // A client entry is not a server scenario; one in no list is not scored either.
    assert!(!r.not_scored.contains_key("auth/dpop"));
    assert_eq!(
        r.scoring("sep-2640-skills-directory"),
        Scoring::NotScored("not in 2026-07-28".into())
    );
    assert!(Requirements::parse("x", "client:\n  - a\n").is_err());
}

#[test]
fn the_bundled_requirement_sets_parse_when_the_suite_is_installed() {
    // The suite as scripts/conformance.sh installs it; skipped on a machine without it.
    let Some(home) = std::env::var_os("HOME") else {
        return;
    };
    let dir = Path::new(&home).join(
        ".cache/mcp-conformance/suite-0.2.0-alpha.12/node_modules/@modelcontextprotocol/conformance/requirements",
    );
    for (revision, scored, unscored) in [
        ("2025-11-25", "server-initialize", "server-sse-polling"),
        ("2026-07-28", "server-stateless", "tasks-lifecycle"),
    ] {
        let path = dir.join(format!("{revision}.yaml"));
        if !path.is_file() {
            continue;
        }
        let r = Requirements::load(&path).expect("parses");
        assert_eq!(r.revision, revision);
        assert_eq!(r.scoring(scored), Scoring::Scored, "{revision}");
        assert!(
            matches!(r.scoring(unscored), Scoring::NotScored(_)),
            "{revision}"
        );
    }
}

#[test]
fn a_score_fails_on_scored_failures_only_and_lists_the_unscored_ones() {
    let report = load(&[
        (
            "tools-list",
            json!([
                check("tools-list", "SUCCESS"),
                check("tools-name-format", "WARNING")
            ]),
        ),
        (
            "tasks-lifecycle",
            json!([failing(
                "sep-2663-result-type-task-on-create",
                "expected a task"
            )]),
        ),
        (
            "caching",
            json!([check("caching-ttl", "SUCCESS"), check("x", "SKIPPED")]),
        ),
    ]);
    let score = report.score(Some(&requirements()), &[]);
    assert!(score.passed());
    let t = score.totals();
    assert_eq!(
        (
            t.scored_scenarios,
            t.passed,
            t.failed,
            t.warnings,
            t.skipped
        ),
        (2, 2, 0, 1, 1)
    );
    assert_eq!((t.unscored_scenarios, t.unscored_failing), (1, 1));
    let text = score.render();
    assert!(
        text.contains("failing scenarios not scored for 2026-07-28")
            && text.contains("tasks-lifecycle (extension): 1 failed")
            && text.contains("FAILURE sep-2663-result-type-task-on-create: expected a task"),
        "{text}"
    );
    assert!(
        text.lines().last().unwrap_or_default().contains(
            "scored checks: 2 passed, 0 failed, 0 expected failures, 1 warnings, 1 skipped; not scored: 1 scenarios, 1 failing"
        ),
        "{text}"
    );
    assert!(
        t.line().contains("passed=2 failed=0 expected=0"),
        "{}",
        t.line()
    );

    // Without a requirement set every scenario counts.
    assert!(!report.score(None, &[]).passed());
}

#[test]
fn a_scored_failure_named_in_the_expected_failures_is_counted_apart() {
    let report = load(&[(
        "tools-list",
        json!([
            failing("tools-list", "no tools"),
            check("wire-schema-valid", "SUCCESS")
        ]),
    )]);
    let expected = Expected::parse(
        "# comment\n\ngateway-2026@2026-07-28  tools-list/tools-list  the gateway lists none\n",
    )
    .expect("parses");
    let entries = expected.for_run("gateway-2026@2026-07-28");
    let score = report.score(Some(&requirements()), &entries);
    assert!(score.passed());
    assert_eq!((score.totals().failed, score.totals().expected), (0, 1));
    assert!(
        score.render().contains(
            "FAILURE tools-list / tools-list: no tools (expected: the gateway lists none)"
        )
    );
    // Another run's entries do not apply.
    let other = expected.for_run("gateway-2025@2026-07-28");
    assert!(!report.score(Some(&requirements()), &other).passed());
}

#[test]
fn expected_failure_entries_select_runs_scenarios_and_checks() {
    let expected = Expected::parse(
        "*@2026-07-28 tasks-lifecycle   no tasks extension\n\
         gateway-2025@* tools-list/tools-list  fewer tools\n\
         * caching/*   every run\n",
    )
    .expect("parses");
    assert_eq!(expected.entries.len(), 3);
    assert_eq!(expected.entries[0].check, None);
    assert_eq!(expected.entries[0].reason, "no tasks extension");
    assert_eq!(expected.entries[1].check.as_deref(), Some("tools-list"));
    assert_eq!(expected.entries[2].check, None);
    let runs = |run: &str| {
        expected
            .for_run(run)
            .iter()
            .map(|e| e.line)
            .collect::<Vec<_>>()
    };
    assert_eq!(runs("gateway-2026@2026-07-28"), [1, 3]);
    assert_eq!(runs("gateway-2025@2025-11-25"), [2, 3]);
    assert_eq!(runs("gateway-2025@2026-07-28"), [1, 2, 3]);

    let flaky =
        Expected::parse("?gateway-2025@* tools-list/tools-list  sometimes\n").expect("parses");
    assert!(flaky.entries[0].intermittent && !expected.entries[0].intermittent);
    assert_eq!(flaky.entries[0].run, "gateway-2025@*");
    assert_eq!(flaky.for_run("gateway-2025@2025-11-25").len(), 1);

    let either = Expected::parse("gateway-2026|gateway-stdio-2026@2025-11-25 tools-list  both\n")
        .expect("parses");
    assert_eq!(either.for_run("gateway-2026@2025-11-25").len(), 1);
    assert_eq!(either.for_run("gateway-stdio-2026@2025-11-25").len(), 1);
    assert_eq!(either.for_run("gateway-stdio-2026@2026-07-28").len(), 0);
    assert_eq!(either.for_run("gateway-2025@2025-11-25").len(), 0);
    assert_eq!(either.for_run("gateway-stdio@2025-11-25").len(), 0);

    assert!(Expected::parse("gateway-2026@2026-07-28 tools-list\n").is_err());
    assert!(Expected::parse("gateway tools-list reason\n").is_err());
    assert_eq!(Expected::parse("").expect("empty").entries.len(), 0);
}

/// A run of the tools-list scenario against a server on `port`, at `time`, in session
/// `session`, that listed `tools` tools.
fn tools_list(port: u16, time: &str, session: &str, tools: u32) -> Value {
    json!([
        {"id": "request", "name": "Request", "status": "INFO",
         "timestamp": time,
         "details": {"method": "tools/list", "url": format!("http://localhost:{port}/mcp"),
                     "sessionId": session, "headers": {"date": time}}},
        {"id": "tools-list", "name": "ToolsList", "status": "SUCCESS",
         "timestamp": time,
         "details": {"toolCount": tools, "session": session,
                     "at": time, "eventId": format!("{port}-1")}},
        {"id": "tools-list-page", "name": "ToolsListPage", "status": "FAILURE",
         "timestamp": time,
         "errorMessage": format!("GET http://127.0.0.1:{port}/mcp in session {session} failed at {time}"),
         "details": null}
    ])
}

const SESSION_A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const SESSION_B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

fn run(checks: Value) -> Report {
    load(&[("tools-list", checks)])
}

#[test]
fn runs_differing_only_in_ports_ids_times_and_minted_state_are_identical() {
    let a = run(tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4));
    let b = run(tools_list(50001, "2026-05-02T01:02:03.004Z", SESSION_B, 4));
    assert_eq!(a.diff(&b, "a", "b"), Vec::<String>::new());
    assert_eq!(a, b);

    // A sealed requestState and a clock-based subscription id are minted per run; that
    // one is there is still compared.
    let state = |s: &str, id: u64| {
        json!([{"id": "r1", "name": "R1", "status": "SUCCESS",
                "details": {"result": {"requestState": s},
                            "_meta": {"io.modelcontextprotocol/subscriptionId": id}}}])
    };
    let a = load(&[("mrtr", state("rs1.AAABoi5NOTt7In0.Z4xp", 1_796_072_540_641))]);
    let b = load(&[("mrtr", state("rs1.AAABoi5WTYx7In0.DR3m", 1_796_073_135_513))]);
    assert_eq!(a.diff(&b, "a", "b"), Vec::<String>::new());
    let c = load(&[(
        "mrtr",
        json!([{"id": "r1", "name": "R1", "status": "SUCCESS",
                "details": {"result": {}, "_meta": {"io.modelcontextprotocol/subscriptionId": 1}}}]),
    )]);
    assert_eq!(a.diff(&c, "a", "c").len(), 1);
}

#[test]
fn a_detail_difference_names_its_path() {
    let a = run(tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4));
    let b = run(tools_list(50001, "2026-05-02T01:02:03.004Z", SESSION_B, 0));
    let lines = a.diff(&b, "fixture", "gateway");
    assert_eq!(
        lines,
        [
            "tools-list / tools-list: both SUCCESS, details differ: details.toolCount: fixture 4 | gateway 0"
        ]
    );
}

#[test]
fn checks_pair_by_id_so_one_missing_check_is_one_difference() {
    let a = load(&[(
        "http-header-validation",
        json!([
            check("setup", "SUCCESS"),
            check("reject", "SUCCESS"),
            check("reject", "SUCCESS"),
            check("wire-schema-valid", "SUCCESS")
        ]),
    )]);
    let b = load(&[(
        "http-header-validation",
        json!([
            check("setup", "SUCCESS"),
            check("reject", "SUCCESS"),
            check("wire-schema-valid", "SUCCESS")
        ]),
    )]);
    assert_eq!(
        a.diff(&b, "fixture", "gateway"),
        ["http-header-validation / reject #2: fixture SUCCESS | gateway (none)"]
    );
    // The same checks in another order is a difference too.
    let c = load(&[(
        "http-header-validation",
        json!([
            check("reject", "SUCCESS"),
            check("setup", "SUCCESS"),
            check("reject", "SUCCESS"),
            check("wire-schema-valid", "SUCCESS")
        ]),
    )]);
    assert_eq!(
        a.diff(&c, "f", "g"),
        ["http-header-validation: the checks came in another order in f and g"]
    );
}

#[test]
fn runs_differing_in_an_info_check_are_different() {
    let a = run(tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4));
    // The suite saw another request...
    let mut raw = tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4);
    raw[0]["details"]["method"] = "prompts/list".into();
    let lines = a.diff(&run(raw), "fixture", "gateway");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("prompts/list"), "{lines:?}");
    // ...or one request more.
    let mut raw = tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4);
    let extra = raw[0].clone();
    raw.as_array_mut().expect("array").insert(0, extra);
    let lines = a.diff(&run(raw), "fixture", "gateway");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("request #2: fixture (none) | gateway INFO")),
        "{lines:?}"
    );
}

#[test]
fn an_accepted_check_differs_only_in_its_details_and_only_with_its_reason() {
    let a = run(tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4));
    let b = run(tools_list(50001, "2026-05-02T01:02:03.004Z", SESSION_B, 0));
    let accepted = [("tools-list/tools-list".to_string(), "a reason".to_string())];
    let c = a.compare(&b, "fixture", "gateway", &accepted, &[]);
    assert!(c.identical(), "{:?}", c.differences);
    assert_eq!(c.accepted.len(), 1);
    assert!(
        c.render("fixture", "gateway", 1)
            .contains("(accepted: a reason)")
    );
    // Another check's difference is not excused by it...
    let other = [("tools-list/request".to_string(), "no".to_string())];
    assert_eq!(a.compare(&b, "f", "g", &other, &[]).differences.len(), 1);
    // ...and a different verdict never is.
    let mut raw = tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4);
    raw[1]["status"] = "FAILURE".into();
    let c = a.compare(&run(raw), "f", "g", &accepted, &[]);
    assert_eq!((c.differences.len(), c.accepted.len()), (1, 0));
}

#[test]
fn expected_differences_are_listed_apart_and_stale_entries_named() {
    let fixture = load(&[
        ("tools-list", json!([check("tools-list", "SUCCESS")])),
        ("caching", json!([check("caching-ttl", "SUCCESS")])),
        ("tasks-lifecycle", json!([check("create", "SUCCESS")])),
    ]);
    let gateway = load(&[
        ("tools-list", json!([failing("tools-list", "no tools")])),
        ("caching", json!([check("caching-ttl", "SUCCESS")])),
    ]);
    let expected = Expected::parse(
        "gateway-2026@2026-07-28 tools-list/tools-list  the gateway lists none\n\
         gateway-2026@2026-07-28 tasks-lifecycle  no tasks extension\n\
         gateway-2026@2026-07-28 caching/caching-ttl  fixed since\n",
    )
    .expect("parses")
    .for_run("gateway-2026@2026-07-28");
    let c = fixture.compare(&gateway, "fixture", "gateway", &[], &expected);
    assert!(c.identical(), "{:?}", c.differences);
    assert_eq!(c.expected.len(), 2);
    assert_eq!(c.unused.len(), 1);
    assert_eq!(c.unused[0].scenario, "caching");
    let text = c.render("fixture", "gateway", 3);
    assert!(
        text.contains("tools-list / tools-list: fixture SUCCESS | gateway FAILURE: no tools (expected: the gateway lists none)")
            && text.contains("tasks-lifecycle: the scenario ran only in fixture (expected: no tasks extension)")
            && text.contains("matched nothing here")
            && text.contains("identical: fixture and gateway (3 scenarios; 2 expected, 0 accepted)"),
        "{text}"
    );
    // An intermittent entry excuses the difference when it occurs, and is never stale.
    let flaky = Expected::parse(
        "?gateway-2026@2026-07-28 tools-list/tools-list  now and then\n\
         ?gateway-2026@2026-07-28 caching/caching-ttl  now and then\n\
         gateway-2026@2026-07-28 tasks-lifecycle  no tasks extension\n",
    )
    .expect("parses")
    .for_run("gateway-2026@2026-07-28");
    let c = fixture.compare(&gateway, "fixture", "gateway", &[], &flaky);
    assert!(c.identical() && c.unused.is_empty(), "{c:?}");
    // Without the entries the same runs differ.
    let c = fixture.compare(&gateway, "fixture", "gateway", &[], &[]);
    assert!(!c.identical());
    assert!(
        c.render("fixture", "gateway", 3)
            .contains("2 unexpected difference(s)")
    );
}
