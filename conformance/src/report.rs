//! Reading, summarizing and comparing the suite's result directories.
//!
//! `conformance server -o DIR` writes one directory per scenario,
//! `DIR/server-<scenario>-<ISO timestamp with : and . as ->/checks.json`, each an array
//! of checks (`id`, `name`, `status` SUCCESS/FAILURE/WARNING/INFO, `errorMessage`,
//! `details`, `timestamp`). A run's *score* is the scenario → checks table of statuses and
//! error messages; INFO checks (the suite's request/response log lines) and timestamps,
//! ports, UUIDs and session ids are left out, so two runs against different processes
//! compare equal exactly when they score the same.

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
}

/// A run's score: scenario name → its non-INFO checks in the order the suite made them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub scenarios: BTreeMap<String, Vec<Check>>,
    /// The `details` of each scored check (same order), normalized; not part of the score.
    #[serde(skip)]
    pub details: BTreeMap<String, Vec<Value>>,
}

/// Detail keys whose values differ between two runs of the same behaviour (HTTP headers,
/// SSE event ids and their arrival order, the retry hint of the last event seen).
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
        let mut details = BTreeMap::new();
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
            let scored = raw
                .iter()
                .filter(|c| c.get("status").and_then(Value::as_str) != Some("INFO"));
            details.insert(
                scenario.to_owned(),
                scored
                    .map(|c| normalize_details(c.get("details").unwrap_or(&Value::Null)))
                    .collect(),
            );
        }
        if scenarios.is_empty() {
            anyhow::bail!("no server-*/checks.json under {}", dir.display());
        }
        Ok(Self { scenarios, details })
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
            .filter(|(_, c)| c.status != "SUCCESS")
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

    /// Every difference between two scores, one line each; empty when they are equal.
    pub fn diff(&self, other: &Self, left: &str, right: &str) -> Vec<String> {
        let mut lines = Vec::new();
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
                            lines.push(format!(
                                "{name} #{i}: {left} {} | {right} {}",
                                describe(x),
                                describe(y)
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        lines
    }
}

impl Report {
    /// Checks scored the same in both runs whose `details` differ (volatile keys masked):
    /// what a pass hides, e.g. a list check that passes on an empty list. Not part of the
    /// score.
    pub fn detail_diff(&self, other: &Self, left: &str, right: &str) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, checks) in &self.scenarios {
            let Some(other_checks) = other.scenarios.get(name) else {
                continue;
            };
            let empty = Vec::new();
            let (da, db) = (
                self.details.get(name).unwrap_or(&empty),
                other.details.get(name).unwrap_or(&empty),
            );
            for (i, (a, b)) in checks.iter().zip(other_checks).enumerate() {
                if a != b {
                    continue;
                }
                let (x, y) = (da.get(i), db.get(i));
                if x != y {
                    lines.push(format!(
                        "{name} / {}: {left} {} | {right} {}",
                        a.id,
                        brief(x),
                        brief(y)
                    ));
                }
            }
        }
        lines
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

fn scored_checks(raw: &[Value]) -> Vec<Check> {
    raw.iter()
        .filter_map(|c| {
            let status = c.get("status")?.as_str()?;
            if status == "INFO" {
                return None;
            }
            let text = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or_default();
            Some(Check {
                id: text("id").to_owned(),
                name: text("name").to_owned(),
                status: status.to_owned(),
                error: c.get("errorMessage").and_then(Value::as_str).map(normalize),
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
        };
        let a = Report {
            scenarios: BTreeMap::from([
                ("ping".into(), vec![check("SUCCESS")]),
                ("only-a".into(), vec![]),
            ]),
            details: BTreeMap::new(),
        };
        let b = Report {
            scenarios: BTreeMap::from([("ping".into(), vec![check("FAILURE")])]),
            details: BTreeMap::new(),
        };
        assert!(a.diff(&a, "a", "b").is_empty());
        let lines = a.diff(&b, "fixture", "gateway");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("only in fixture"));
        assert!(lines[1].contains("SUCCESS") && lines[1].contains("FAILURE"));
    }

    #[test]
    fn detail_diff_shows_what_a_pass_hides() {
        let check = Check {
            id: "prompts-list".into(),
            name: "PromptsList".into(),
            status: "SUCCESS".into(),
            error: None,
        };
        let report = |count: u32, port: u16| Report {
            scenarios: BTreeMap::from([("prompts-list".into(), vec![check.clone()])]),
            details: BTreeMap::from([(
                "prompts-list".into(),
                vec![normalize_details(&serde_json::json!({
                    "promptCount": count,
                    "url": format!("http://localhost:{port}/mcp"),
                    "headers": {"date": format!("{port}")}
                }))],
            )]),
        };
        assert!(report(4, 1).detail_diff(&report(4, 2), "a", "b").is_empty());
        let lines = report(4, 1).detail_diff(&report(0, 2), "fixture", "gateway");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("\"promptCount\":4") && lines[0].contains("\"promptCount\":0"));
    }
}
