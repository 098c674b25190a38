//! Reading, summarizing and comparing the suite's result directories.
//!
//! `conformance server -o DIR` writes one directory per scenario,
//! `DIR/server-<scenario>-<ISO timestamp with : and . as ->/checks.json`, each an array
//! of checks (`id`, `name`, `status` SUCCESS/FAILURE/WARNING/INFO, `errorMessage`,
//! `details`, `timestamp`). A run's *score* is the scenario → checks table: every check,
//! INFO ones (the suite's request/response log lines) included, with its status, error
//! message and details. What differs between two runs of the same behaviour is masked:
//! timestamps, loopback ports, UUIDs and other long hex ids in every string, and the
//! detail members that carry only such things ([`VOLATILE_DETAILS`]: HTTP headers, SSE
//! event ids). So two runs against different processes compare equal exactly when they
//! did and saw the same.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One scored check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub id: String,
    pub name: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The check's `details`, normalized (`null` when it has none).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

/// A run's score: scenario name → its checks in the order the suite made them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub scenarios: BTreeMap<String, Vec<Check>>,
}

/// Detail keys whose values differ between two runs of the same behaviour (HTTP headers,
/// SSE event ids and their arrival order, the retry hint of the last event seen): masked
/// like ports and times, everything else in `details` is compared.
const VOLATILE_DETAILS: &[&str] = &[
    "headers",
    "results",
    "retryValue",
    "serverUrl",
    "eventId",
    "lastEventId",
    "lastEventIdUsed",
];

/// The length of the suite's directory timestamp suffix, `-2025-01-01T00-00-00-000Z`.
const TIMESTAMP_SUFFIX: usize = 25;

impl Report {
    /// Reads every `server-*/checks.json` under `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let mut scenarios = BTreeMap::new();
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("checks.json").is_file())
            .collect();
        paths.sort();
        for path in paths {
            let dir_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let Some(scenario) = scenario_name(dir_name) else {
                continue;
            };
            let file = path.join("checks.json");
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let raw: Vec<Value> = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON array", file.display()))?;
            scenarios.insert(scenario.to_owned(), scored_checks(&raw));
        }
        if scenarios.is_empty() {
            anyhow::bail!("no server-*/checks.json under {}", dir.display());
        }
        Ok(Self { scenarios })
    }

    /// `(passed, failed, warnings)` over all scenarios.
    pub fn totals(&self) -> (usize, usize, usize) {
        let count = |status: &str| {
            self.scenarios
                .values()
                .flatten()
                .filter(|c| c.status == status)
                .count()
        };
        (count("SUCCESS"), count("FAILURE"), count("WARNING"))
    }

    /// A table of the scenarios, then every failing and warning check with its message.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let width = self.scenarios.keys().map(String::len).max().unwrap_or(8);
        let _ = writeln!(out, "{:width$}  pass  fail  warn", "scenario");
        for (scenario, checks) in &self.scenarios {
            let n = |s: &str| checks.iter().filter(|c| c.status == s).count();
            let mark = if n("FAILURE") > 0 { "FAIL" } else { "ok" };
            let _ = writeln!(
                out,
                "{scenario:width$}  {:4}  {:4}  {:4}  {mark}",
                n("SUCCESS"),
                n("FAILURE"),
                n("WARNING")
            );
        }
        let problems: Vec<_> = self
            .scenarios
            .iter()
            .flat_map(|(s, checks)| checks.iter().map(move |c| (s, c)))
            .filter(|(_, c)| c.status == "FAILURE" || c.status == "WARNING")
            .collect();
        if !problems.is_empty() {
            let _ = writeln!(out, "\nfailing and warning checks:");
            for (scenario, check) in problems {
                let _ = writeln!(
                    out,
                    "  {} {scenario} / {}: {}",
                    check.status,
                    check.id,
                    check.error.as_deref().unwrap_or("(no message)")
                );
            }
        }
        let (passed, failed, warnings) = self.totals();
        let _ = writeln!(
            out,
            "\ntotal: {} scenarios, {passed} checks passed, {failed} failed, {warnings} warnings",
            self.scenarios.len()
        );
        out
    }

    /// Every difference between two scores (statuses, error messages, details, INFO checks
    /// too), one line each; empty when they are equal.
    pub fn diff(&self, other: &Self, left: &str, right: &str) -> Vec<String> {
        self.diff_accepting(other, left, right, &[]).0
    }

    /// [`Self::diff`], but a check named in `accepted` (`scenario/check-id`, with the
    /// reason) whose verdict is the same on both sides and only its details differ is
    /// listed apart, with its reason, instead of as a difference. A different verdict is
    /// never accepted.
    pub fn diff_accepting(
        &self,
        other: &Self,
        left: &str,
        right: &str,
        accepted: &[(String, String)],
    ) -> (Vec<String>, Vec<String>) {
        let mut lines = Vec::new();
        let mut excused = Vec::new();
        let names: std::collections::BTreeSet<&String> = self
            .scenarios
            .keys()
            .chain(other.scenarios.keys())
            .collect();
        for name in names {
            match (self.scenarios.get(name), other.scenarios.get(name)) {
                (Some(_), None) => lines.push(format!("{name}: only in {left}")),
                (None, Some(_)) => lines.push(format!("{name}: only in {right}")),
                (Some(a), Some(b)) if a != b => {
                    let n = a.len().max(b.len());
                    for i in 0..n {
                        let (x, y) = (a.get(i), b.get(i));
                        if x != y {
                            let reason = match (x, y) {
                                (Some(x), Some(y)) if same_verdict(x, y) => accepted
                                    .iter()
                                    .find(|(key, _)| *key == format!("{name}/{}", x.id))
                                    .map(|(_, why)| why),
                                _ => None,
                            };
                            let (x, y) = match (x, y) {
                                // Scored the same, seen differently: show what was seen.
                                (Some(x), Some(y)) if same_verdict(x, y) => {
                                    (with_details(x), with_details(y))
                                }
                                _ => (describe(x), describe(y)),
                            };
                            let line = format!("{name} #{i}: {left} {x} | {right} {y}");
                            match reason {
                                Some(why) => excused.push(format!("{line} (accepted: {why})")),
                                None => lines.push(line),
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        (lines, excused)
    }
}

fn brief(details: Option<&Value>) -> String {
    let text = details.map_or_else(|| "(none)".to_owned(), Value::to_string);
    if text.chars().count() > 240 {
        format!("{}...", text.chars().take(240).collect::<String>())
    } else {
        text
    }
}

/// `details` with volatile keys dropped and every string [`normalize`]d.
fn normalize_details(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(normalize(s)),
        Value::Array(items) => Value::Array(items.iter().map(normalize_details).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !VOLATILE_DETAILS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), normalize_details(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The same id, status and error message.
fn same_verdict(a: &Check, b: &Check) -> bool {
    (&a.id, &a.status, &a.error) == (&b.id, &b.status, &b.error)
}

fn with_details(check: &Check) -> String {
    format!(
        "{} details {}",
        describe(Some(check)),
        brief(Some(&check.details))
    )
}

fn describe(check: Option<&Check>) -> String {
    match check {
        None => "(none)".to_owned(),
        Some(c) => match &c.error {
            Some(e) => format!("[{} {}: {e}]", c.id, c.status),
            None => format!("[{} {}]", c.id, c.status),
        },
    }
}

/// `server-<scenario>-<timestamp>` → `<scenario>`.
fn scenario_name(dir_name: &str) -> Option<&str> {
    let rest = dir_name.strip_prefix("server-")?;
    let cut = rest.len().checked_sub(TIMESTAMP_SUFFIX)?;
    let (scenario, suffix) = rest.split_at(cut);
    (suffix.starts_with('-') && suffix.ends_with('Z') && !scenario.is_empty()).then_some(scenario)
}

/// Every check of one scenario's `checks.json`, normalized (INFO checks included: what
/// the suite saw is part of the comparison).
fn scored_checks(raw: &[Value]) -> Vec<Check> {
    raw.iter()
        .filter_map(|c| {
            let status = c.get("status")?.as_str()?;
            let text = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or_default();
            Some(Check {
                id: text("id").to_owned(),
                name: text("name").to_owned(),
                status: status.to_owned(),
                error: c.get("errorMessage").and_then(Value::as_str).map(normalize),
                details: normalize_details(c.get("details").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

/// Masks what differs between two runs of the same behaviour: loopback ports, UUIDs and
/// other long hex ids, and ISO timestamps.
pub fn normalize(text: &str) -> String {
    let text = mask_ports(text);
    let text = mask_words(&text);
    text.trim().to_owned()
}

fn mask_ports(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let next = ["localhost:", "127.0.0.1:", "[::1]:"]
            .iter()
            .filter_map(|host| rest.find(host).map(|i| (i, host.len())))
            .min();
        let Some((at, len)) = next else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..at + len]);
        rest = &rest[at + len..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("PORT");
            rest = &rest[digits..];
        }
    }
    out
}

/// Replaces UUID-like and long hex tokens with `ID` and ISO timestamps with `TIME`.
fn mask_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if is_id(word) {
            out.push_str("ID");
        } else if is_timestamp(word) {
            out.push_str("TIME");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() || matches!(ch, '-' | ':' | '.') {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn is_id(word: &str) -> bool {
    let hex = word.chars().filter(char::is_ascii_hexdigit).count();
    word.len() >= 16
        && word.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && hex >= 16
        && word.chars().any(|c| c.is_ascii_digit())
}

fn is_timestamp(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && word.ends_with('Z')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_come_from_directory_names() {
        assert_eq!(
            scenario_name("server-tools-call-simple-text-2026-05-01T12-34-56-789Z"),
            Some("tools-call-simple-text")
        );
        assert_eq!(scenario_name("server-x"), None);
        assert_eq!(scenario_name("other-ping-2026-05-01T12-34-56-789Z"), None);
    }

    #[test]
    fn normalize_masks_ports_ids_and_times() {
        assert_eq!(
            normalize("fetch http://localhost:41234/mcp failed at 2026-05-01T12:34:56.789Z"),
            "fetch http://localhost:PORT/mcp failed at TIME"
        );
        assert_eq!(
            normalize("session 0f8fad5b-d9cb-469f-a165-70867728950e not found"),
            "session ID not found"
        );
        assert_eq!(
            normalize("Expected at least 3 log messages, got 0"),
            "Expected at least 3 log messages, got 0"
        );
    }

    #[test]
    fn diff_reports_status_changes_and_missing_scenarios() {
        let check = |status: &str| Check {
            id: "ping".into(),
            name: "Ping".into(),
            status: status.into(),
            error: None,
            details: Value::Null,
        };
        let a = Report {
            scenarios: BTreeMap::from([
                ("ping".into(), vec![check("SUCCESS")]),
                ("only-a".into(), vec![]),
            ]),
        };
        let b = Report {
            scenarios: BTreeMap::from([("ping".into(), vec![check("FAILURE")])]),
        };
        assert!(a.diff(&a, "a", "b").is_empty());
        let lines = a.diff(&b, "fixture", "gateway");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("only in fixture"));
        assert!(lines[1].contains("SUCCESS") && lines[1].contains("FAILURE"));
    }

    /// One scenario's report from the suite's raw checks, as `load` reads them.
    fn run(raw: Value) -> Report {
        let raw: Vec<Value> = serde_json::from_value(raw).expect("an array of checks");
        Report {
            scenarios: BTreeMap::from([("tools-list".into(), scored_checks(&raw))]),
        }
    }

    /// A run of the tools-list scenario against a server on `port`, at `time`, in
    /// session `session`, that listed `tools` tools.
    fn tools_list(port: u16, time: &str, session: &str, tools: u32) -> Value {
        serde_json::json!([
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

    #[test]
    fn runs_differing_only_in_ports_ids_and_times_are_identical() {
        let a = run(tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4));
        let b = run(tools_list(50001, "2026-05-02T01:02:03.004Z", SESSION_B, 4));
        assert_eq!(a.diff(&b, "a", "b"), Vec::<String>::new());
        assert_eq!(a, b);
    }

    #[test]
    fn runs_differing_in_a_detail_are_different() {
        let a = run(tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4));
        let b = run(tools_list(50001, "2026-05-02T01:02:03.004Z", SESSION_B, 0));
        let lines = a.diff(&b, "fixture", "gateway");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("tools-list #1")
                && lines[0].contains("\"toolCount\":4")
                && lines[0].contains("\"toolCount\":0"),
            "{lines:?}"
        );
    }

    #[test]
    fn an_accepted_check_differs_only_in_its_details_and_only_with_its_reason() {
        let a = run(tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4));
        let b = run(tools_list(50001, "2026-05-02T01:02:03.004Z", SESSION_B, 0));
        let accepted = [("tools-list/tools-list".to_string(), "a reason".to_string())];
        let (lines, excused) = a.diff_accepting(&b, "fixture", "gateway", &accepted);
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(excused.len(), 1, "{excused:?}");
        assert!(excused[0].contains("accepted: a reason"), "{excused:?}");
        // Another check's difference is not excused by it...
        let other = [("tools-list/request".to_string(), "no".to_string())];
        assert_eq!(a.diff_accepting(&b, "f", "g", &other).0.len(), 1);
        // ...and a different verdict never is.
        let mut raw = tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4);
        raw[1]["status"] = "FAILURE".into();
        let (lines, excused) = a.diff_accepting(&run(raw), "f", "g", &accepted);
        assert_eq!((lines.len(), excused.len()), (1, 0), "{lines:?}");
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
        assert!(!a.diff(&run(raw), "fixture", "gateway").is_empty());
    }

    #[test]
    fn a_summary_lists_failures_and_warnings_not_info_checks() {
        let report = run(tools_list(41234, "2026-05-01T12:34:56.789Z", SESSION_A, 4));
        assert_eq!(report.totals(), (1, 1, 0));
        let summary = report.summary();
        assert!(
            summary.contains("FAILURE tools-list / tools-list-page"),
            "{summary}"
        );
        assert!(!summary.contains("INFO"), "{summary}");
    }
}
