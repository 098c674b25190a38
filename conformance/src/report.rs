//! Reading, scoring and comparing the suite's result directories.
//!
//! `conformance server -o DIR` (0.2.0-alpha.12) writes one directory per scenario,
//! `DIR/server-<scenario>-<ISO timestamp with : and . as ->/checks.json`, each an array
//! of checks (`id`, `name`, `description`, `status` SUCCESS/FAILURE/WARNING/INFO/SKIPPED,
//! `errorMessage`, `details`, `timestamp`, `specReferences`). A run's *report* is the
//! scenario → checks table: every check, INFO ones (the suite's request/response log
//! lines) included, with its status, error message and details. What differs between two
//! runs of the same behaviour is masked: timestamps, loopback ports, UUIDs and other long
//! hex ids in every string, and the detail members that carry only such things
//! ([`VOLATILE_DETAILS`]: HTTP headers, SSE event ids). So two runs against different
//! processes compare equal exactly when they did and saw the same.
//!
//! With `--requirements R` the suite runs exactly what spec revision R requires plus what
//! its requirement set lists as `not_scored` (extensions, pending scenarios, scenarios
//! added after the revision shipped): those run and are reported but never count.
//! [`Requirements`] reads the suite's `requirements/R.yaml` so a [`Score`] tells the
//! scored failures from the unscored ones, as the suite's own summary does.
//!
//! [`Expected`] reads the expected-failures file: checks known to fail or to differ in a
//! given run (through the gateway), each with its reason. [`Report::compare`] and
//! [`Report::score`] list those apart instead of failing on them, and name the entries
//! that no longer match anything, so the file can be pruned.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One check of a scenario.
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

/// A run's report: scenario name → its checks in the order the suite made them.
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

/// Detail keys whose values are minted per run (the server's sealed multi round-trip
/// `requestState`, subscription ids taken from the clock): their values are replaced by a
/// placeholder, so that they are there (or not) is still compared.
const MINTED_DETAILS: &[(&str, &str)] = &[
    ("requestState", "STATE"),
    ("subscriptionId", "ID"),
    ("io.modelcontextprotocol/subscriptionId", "ID"),
];

/// The length of the suite's directory timestamp suffix, `-2025-01-01T00-00-00-000Z`.
const TIMESTAMP_SUFFIX: usize = 25;

/// How many differing detail members one difference line shows.
const DETAIL_PATHS_SHOWN: usize = 3;

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

    /// `(passed, failed, warnings)` over all scenarios, scored or not.
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

    /// This run scored against `requirements` (every scenario scored without one), the
    /// failures named in `expected` (the entries for this run) counted apart.
    pub fn score(&self, requirements: Option<&Requirements>, expected: &[ExpectedEntry]) -> Score {
        let rows = self
            .scenarios
            .iter()
            .map(|(name, checks)| {
                let scoring = requirements.map_or(Scoring::Scored, |r| r.scoring(name));
                let count = |s: &str| checks.iter().filter(|c| c.status == s).count();
                let listed = |status: &str| {
                    checks
                        .iter()
                        .filter(|c| c.status == status)
                        .map(|c| with_entry(expected, name, c))
                        .collect()
                };
                ScenarioScore {
                    scenario: name.clone(),
                    scoring,
                    passed: count("SUCCESS"),
                    skipped: count("SKIPPED"),
                    failures: listed("FAILURE"),
                    warnings: listed("WARNING"),
                }
            })
            .collect();
        Score {
            revision: requirements.map(|r| r.revision.clone()),
            rows,
        }
    }

    /// [`Self::score`] with no requirement set and nothing expected, rendered.
    pub fn summary(&self) -> String {
        self.score(None, &[]).render()
    }

    /// Every difference between two reports (statuses, error messages, details, INFO
    /// checks too), one line each; empty when they are equal.
    pub fn diff(&self, other: &Self, left: &str, right: &str) -> Vec<String> {
        self.compare(other, left, right, &[], &[])
            .differences
            .into_iter()
            .map(|d| d.text)
            .collect()
    }

    /// Compares two reports check by check. Checks pair up by scenario, check id and
    /// occurrence (the n-th `outgoing-request` with the n-th), so one check more or less
    /// shows as that check alone; a changed order of the same checks is one difference
    /// more.
    ///
    /// A difference on a check named in `accepted` (`scenario/check-id`, with the reason)
    /// whose verdict (status, error message) is the same on both sides, only its details
    /// differing, is listed apart with its reason; a different verdict is never accepted.
    /// A difference matching an `expected` entry (those for this comparison's run) is
    /// listed apart with the entry's reason, whatever it is; the entries that match no
    /// difference are returned as unused, but for the intermittent ones.
    pub fn compare(
        &self,
        other: &Self,
        left: &str,
        right: &str,
        accepted: &[(String, String)],
        expected: &[ExpectedEntry],
    ) -> Comparison {
        let mut all = Vec::new();
        let names: BTreeSet<&String> = self
            .scenarios
            .keys()
            .chain(other.scenarios.keys())
            .collect();
        for name in names {
            match (self.scenarios.get(name), other.scenarios.get(name)) {
                (Some(_), None) => all.push(Difference {
                    scenario: name.clone(),
                    check: None,
                    same_verdict: false,
                    text: format!("{name}: the scenario ran only in {left}"),
                }),
                (None, Some(_)) => all.push(Difference {
                    scenario: name.clone(),
                    check: None,
                    same_verdict: false,
                    text: format!("{name}: the scenario ran only in {right}"),
                }),
                (Some(a), Some(b)) if a != b => diff_checks(name, a, b, left, right, &mut all),
                _ => {}
            }
        }
        let mut comparison = Comparison::default();
        let mut used = BTreeSet::new();
        for difference in all {
            let key = difference
                .check
                .as_ref()
                .map(|id| format!("{}/{id}", difference.scenario));
            let acceptance = accepted
                .iter()
                .find(|(k, _)| difference.same_verdict && Some(k) == key.as_ref());
            if let Some((_, why)) = acceptance {
                comparison.accepted.push((difference, why.clone()));
            } else if let Some((i, entry)) =
                find_expected(expected, &difference.scenario, difference.check.as_deref())
            {
                used.insert(i);
                comparison.expected.push((difference, entry.clone()));
            } else {
                comparison.differences.push(difference);
            }
        }
        comparison.unused = expected
            .iter()
            .enumerate()
            .filter(|(i, e)| !used.contains(i) && !e.intermittent)
            .map(|(_, e)| e.clone())
            .collect();
        comparison
    }
}

/// One difference between two reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub scenario: String,
    /// The check's id; `None` for a scenario that ran on one side only, or whose checks
    /// came in another order.
    pub check: Option<String>,
    /// Both sides have the check with the same status and error message.
    pub same_verdict: bool,
    pub text: String,
}

/// What [`Report::compare`] found.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// Differences nothing excuses: the runs are not identical when there is one.
    pub differences: Vec<Difference>,
    /// Details-only differences of accepted checks, with the reason.
    pub accepted: Vec<(Difference, String)>,
    /// Differences listed in the expected-failures file, with their entry.
    pub expected: Vec<(Difference, ExpectedEntry)>,
    /// Expected-failures entries for this run that matched no difference.
    pub unused: Vec<ExpectedEntry>,
}

impl Comparison {
    /// No difference but the accepted and the expected ones.
    pub fn identical(&self) -> bool {
        self.differences.is_empty()
    }

    /// Every difference, the expected and accepted ones apart, then the unused entries.
    pub fn render(&self, left: &str, right: &str, scenarios: usize) -> String {
        let mut out = String::new();
        if !self.expected.is_empty() {
            let _ = writeln!(
                out,
                "{} expected difference(s) (the expected-failures file):",
                self.expected.len()
            );
            for (d, entry) in &self.expected {
                let _ = writeln!(out, "  {} (expected: {})", d.text, entry.reason);
            }
        }
        if !self.accepted.is_empty() {
            let _ = writeln!(
                out,
                "{} accepted difference(s) (details only):",
                self.accepted.len()
            );
            for (d, why) in &self.accepted {
                let _ = writeln!(out, "  {} (accepted: {why})", d.text);
            }
        }
        if !self.unused.is_empty() {
            let _ = writeln!(
                out,
                "{} expected-failures entr{} matched nothing here (fixed? prune):",
                self.unused.len(),
                if self.unused.len() == 1 { "y" } else { "ies" }
            );
            for entry in &self.unused {
                let _ = writeln!(out, "  {entry}");
            }
        }
        if self.identical() {
            let _ = writeln!(
                out,
                "identical: {left} and {right} ({scenarios} scenarios; {} expected, {} accepted)",
                self.expected.len(),
                self.accepted.len()
            );
        } else {
            let _ = writeln!(
                out,
                "{} unexpected difference(s) between {left} and {right}:",
                self.differences.len()
            );
            for d in &self.differences {
                let _ = writeln!(out, "  {}", d.text);
            }
        }
        out
    }
}

/// Whether a scenario counts toward a revision's score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scoring {
    Scored,
    /// Run and reported, never counted; the reason (`extension`, `pending`,
    /// `added-after-release`, or not in the requirement set at all).
    NotScored(String),
}

/// One scenario's line of a [`Score`].
#[derive(Debug, Clone)]
pub struct ScenarioScore {
    pub scenario: String,
    pub scoring: Scoring,
    pub passed: usize,
    pub skipped: usize,
    /// The failing checks, each with the expected-failures entry naming it, if any.
    pub failures: Vec<(Check, Option<ExpectedEntry>)>,
    /// The warnings, likewise.
    pub warnings: Vec<(Check, Option<ExpectedEntry>)>,
}

/// Totals of a [`Score`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub scenarios: usize,
    pub scored_scenarios: usize,
    /// Checks of scored scenarios.
    pub passed: usize,
    /// Failing checks of scored scenarios that no expected-failures entry names.
    pub failed: usize,
    /// Failing checks of scored scenarios that an expected-failures entry names.
    pub expected: usize,
    pub warnings: usize,
    pub skipped: usize,
    pub unscored_scenarios: usize,
    /// Unscored scenarios with at least one failing check.
    pub unscored_failing: usize,
}

impl Totals {
    /// `key=value` pairs on one line, for scripts.
    pub fn line(&self) -> String {
        format!(
            "scenarios={} scored_scenarios={} passed={} failed={} expected={} warnings={} skipped={} unscored_scenarios={} unscored_failing={}",
            self.scenarios,
            self.scored_scenarios,
            self.passed,
            self.failed,
            self.expected,
            self.warnings,
            self.skipped,
            self.unscored_scenarios,
            self.unscored_failing
        )
    }
}

/// A run scored against a requirement set.
#[derive(Debug, Clone)]
pub struct Score {
    /// The requirement set's revision, if any.
    pub revision: Option<String>,
    pub rows: Vec<ScenarioScore>,
}

impl Score {
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            scenarios: self.rows.len(),
            ..Totals::default()
        };
        for row in &self.rows {
            match row.scoring {
                Scoring::Scored => {
                    t.scored_scenarios += 1;
                    t.passed += row.passed;
                    t.skipped += row.skipped;
                    t.warnings += row.warnings.len();
                    for (_, entry) in &row.failures {
                        if entry.is_some() {
                            t.expected += 1;
                        } else {
                            t.failed += 1;
                        }
                    }
                }
                Scoring::NotScored(_) => {
                    t.unscored_scenarios += 1;
                    if !row.failures.is_empty() {
                        t.unscored_failing += 1;
                    }
                }
            }
        }
        t
    }

    /// Every scored check passed (or failed as expected).
    pub fn passed(&self) -> bool {
        self.totals().failed == 0
    }

    /// The scenario table, the scored failures and warnings, the unscored failing
    /// scenarios with their failing checks, and the totals (last line).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let width = self
            .rows
            .iter()
            .map(|r| r.scenario.len())
            .max()
            .unwrap_or(8)
            .max(8);
        let label = |s: &Scoring| match s {
            Scoring::Scored => "scored".to_owned(),
            Scoring::NotScored(why) => why.clone(),
        };
        let _ = writeln!(
            out,
            "{:width$}  {:19}  pass  fail  warn  skip",
            "scenario", "counts"
        );
        for row in &self.rows {
            let failed = row.failures.len();
            let unexpected = row.failures.iter().filter(|(_, e)| e.is_none()).count();
            let mark = match (&row.scoring, failed, unexpected) {
                (_, 0, _) => "ok",
                (Scoring::NotScored(_), _, _) => "fail (not scored)",
                (Scoring::Scored, _, 0) => "fail (expected)",
                (Scoring::Scored, _, _) => "FAIL",
            };
            let _ = writeln!(
                out,
                "{:width$}  {:19}  {:4}  {:4}  {:4}  {:4}  {mark}",
                row.scenario,
                label(&row.scoring),
                row.passed,
                failed,
                row.warnings.len(),
                row.skipped,
            );
        }
        let scored: Vec<_> = self
            .rows
            .iter()
            .filter(|r| r.scoring == Scoring::Scored)
            .collect();
        let failing: Vec<_> = scored
            .iter()
            .flat_map(|r| r.failures.iter().map(move |f| (&r.scenario, f)))
            .collect();
        if !failing.is_empty() {
            let _ = writeln!(out, "\nfailing checks (scored):");
            for (scenario, (check, entry)) in failing {
                let _ = writeln!(
                    out,
                    "  FAILURE {scenario} / {}",
                    listed(check, entry.as_ref())
                );
            }
        }
        let warnings: Vec<_> = scored
            .iter()
            .flat_map(|r| r.warnings.iter().map(move |c| (&r.scenario, c)))
            .collect();
        if !warnings.is_empty() {
            let _ = writeln!(
                out,
                "\nwarnings (scored scenarios; they do not fail a run):"
            );
            for (scenario, (check, entry)) in warnings {
                let _ = writeln!(
                    out,
                    "  WARNING {scenario} / {}",
                    listed(check, entry.as_ref())
                );
            }
        }
        let unscored: Vec<_> = self
            .rows
            .iter()
            .filter(|r| r.scoring != Scoring::Scored && !r.failures.is_empty())
            .collect();
        if !unscored.is_empty() {
            let _ = writeln!(
                out,
                "\nfailing scenarios not scored{} (they do not fail a run):",
                self.revision
                    .as_ref()
                    .map(|r| format!(" for {r}"))
                    .unwrap_or_default()
            );
            for row in unscored {
                let _ = writeln!(
                    out,
                    "  {} ({}): {} failed",
                    row.scenario,
                    label(&row.scoring),
                    row.failures.len()
                );
                for (check, _) in &row.failures {
                    let _ = writeln!(out, "    FAILURE {}: {}", check.id, message(check));
                }
            }
        }
        let t = self.totals();
        let _ = writeln!(
            out,
            "\ntotal: {} scenarios, {} scored{}; scored checks: {} passed, {} failed, {} expected failures, {} warnings, {} skipped; not scored: {} scenarios, {} failing",
            t.scenarios,
            t.scored_scenarios,
            self.revision
                .as_ref()
                .map(|r| format!(" for {r}"))
                .unwrap_or_default(),
            t.passed,
            t.failed,
            t.expected,
            t.warnings,
            t.skipped,
            t.unscored_scenarios,
            t.unscored_failing
        );
        out
    }
}

fn message(check: &Check) -> &str {
    check.error.as_deref().unwrap_or("(no message)")
}

/// `id: message`, and the expected-failures entry's reason if one names it.
fn listed(check: &Check, entry: Option<&ExpectedEntry>) -> String {
    match entry {
        Some(e) => format!("{}: {} (expected: {})", check.id, message(check), e.reason),
        None => format!("{}: {}", check.id, message(check)),
    }
}

/// A check with the expected-failures entry naming it, if any.
fn with_entry(
    expected: &[ExpectedEntry],
    scenario: &str,
    check: &Check,
) -> (Check, Option<ExpectedEntry>) {
    let entry = find_expected(expected, scenario, Some(&check.id)).map(|(_, e)| e.clone());
    (check.clone(), entry)
}

// ---------------------------------------------------------------------------------------
// Requirement sets

/// What the suite's `requirements/<revision>.yaml` says about server scenarios: those
/// scored for the revision and those run but never scored, with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    pub revision: String,
    pub scored: BTreeSet<String>,
    pub not_scored: BTreeMap<String, String>,
}

impl Requirements {
    /// Reads a requirement set; the revision is the file's stem.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let revision = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        Self::parse(revision, &text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the subset of YAML the requirement sets use: top-level `server:`,
    /// `client:` and `not_scored:` keys; `- name` items under `server:`; under
    /// `not_scored:` items `- scenario: name` with `leg:` and `reason:` members (other
    /// members, folded notes included, are skipped). Client entries are left out.
    pub fn parse(revision: &str, text: &str) -> anyhow::Result<Self> {
        let mut section = String::new();
        let mut scored = BTreeSet::new();
        let mut not_scored = BTreeMap::new();
        // The not_scored entry being read: scenario, leg, reason.
        let mut entry: Option<(String, String, String)> = None;
        let mut finish = |entry: &mut Option<(String, String, String)>| {
            if let Some((scenario, leg, reason)) = entry.take()
                && leg == "server"
            {
                not_scored.insert(scenario, reason);
            }
        };
        for (n, raw) in text.lines().enumerate() {
            let line = strip_comment(raw);
            if line.trim().is_empty() {
                continue;
            }
            if !line.starts_with([' ', '\t', '-']) {
                let Some(key) = line.trim().strip_suffix(':') else {
                    anyhow::bail!("line {}: expected a top-level key, got {raw:?}", n + 1);
                };
                finish(&mut entry);
                key.clone_into(&mut section);
                continue;
            }
            let item = line.trim_start().strip_prefix("- ").map(str::trim);
            match section.as_str() {
                "server" => {
                    if let Some(name) = item {
                        scored.insert(unquote(name).to_owned());
                    }
                }
                "not_scored" => {
                    if let Some(item) = item {
                        finish(&mut entry);
                        let Some(name) = member(item, "scenario") else {
                            anyhow::bail!(
                                "line {}: a not_scored entry starts with `- scenario: NAME`",
                                n + 1
                            );
                        };
                        entry = Some((name.to_owned(), "server".to_owned(), String::new()));
                    } else if let Some((_, leg, reason)) = entry.as_mut() {
                        let member_line = line.trim();
                        if let Some(v) = member(member_line, "leg") {
                            v.clone_into(leg);
                        } else if let Some(v) = member(member_line, "reason") {
                            v.clone_into(reason);
                        }
                    }
                }
                _ => {}
            }
        }
        finish(&mut entry);
        if scored.is_empty() {
            anyhow::bail!("no server scenarios listed under `server:`");
        }
        Ok(Self {
            revision: revision.to_owned(),
            scored,
            not_scored,
        })
    }

    pub fn scoring(&self, scenario: &str) -> Scoring {
        if self.scored.contains(scenario) {
            Scoring::Scored
        } else if let Some(why) = self.not_scored.get(scenario) {
            Scoring::NotScored(if why.is_empty() {
                "not scored".to_owned()
            } else {
                why.clone()
            })
        } else {
            Scoring::NotScored(format!("not in {}", self.revision))
        }
    }
}

fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    }
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(s)
}

/// `key: value` → `value`.
fn member<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(key)?.strip_prefix(':')?;
    Some(unquote(rest))
}

// ---------------------------------------------------------------------------------------
// Expected failures

/// One line of the expected-failures file: `[?]RUN SCENARIO[/CHECK] REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedEntry {
    /// Which runs it is for: `LEG@REVISION`, either part `*`, or `*` for every run; LEG
    /// may name several legs, `LEG1|LEG2`.
    pub run: String,
    /// Marked `?` (before RUN): seen only in some runs, so never reported as matching
    /// nothing.
    pub intermittent: bool,
    pub scenario: String,
    /// The check id; `None` for every check of the scenario (and the scenario running on
    /// one side only).
    pub check: Option<String>,
    pub reason: String,
    /// The line in the file.
    pub line: usize,
}

impl std::fmt::Display for ExpectedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.intermittent { "?" } else { "" };
        write!(
            f,
            "line {}: {mark}{} {}",
            self.line, self.run, self.scenario
        )?;
        if let Some(check) = &self.check {
            write!(f, "/{check}")?;
        }
        write!(f, " ({})", self.reason)
    }
}

impl ExpectedEntry {
    /// Whether the entry is for run `run` (`LEG@REVISION`).
    pub fn is_for(&self, run: &str) -> bool {
        if self.run == "*" || self.run == run {
            return true;
        }
        let (Some((leg, rev)), Some((run_leg, run_rev))) =
            (self.run.split_once('@'), run.split_once('@'))
        else {
            return false;
        };
        (leg == "*" || leg.split('|').any(|l| l == run_leg)) && (rev == "*" || rev == run_rev)
    }

    fn matches(&self, scenario: &str, check: Option<&str>) -> bool {
        self.scenario == scenario
            && match (&self.check, check) {
                (None, _) => true,
                (Some(mine), Some(theirs)) => mine == theirs,
                (Some(_), None) => false,
            }
    }
}

fn find_expected<'a>(
    entries: &'a [ExpectedEntry],
    scenario: &str,
    check: Option<&str>,
) -> Option<(usize, &'a ExpectedEntry)> {
    // A check's own entry first, then its scenario's.
    entries
        .iter()
        .enumerate()
        .find(|(_, e)| e.check.is_some() && e.matches(scenario, check))
        .or_else(|| {
            entries
                .iter()
                .enumerate()
                .find(|(_, e)| e.matches(scenario, check))
        })
}

/// `"word  rest"` → `("word", "rest")`, white space around both trimmed.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim()),
        None => (text, ""),
    }
}

/// The expected-failures file: known failures and differences, each with its reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub entries: Vec<ExpectedEntry>,
}

impl Expected {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// One entry a line, `RUN SCENARIO[/CHECK] REASON` separated by white space, the
    /// reason being the rest of the line, RUN marked `?RUN` for an intermittent one;
    /// blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut entries = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (run, rest) = split_word(line);
            let (run, intermittent) = match run.strip_prefix('?') {
                Some(run) => (run, true),
                None => (run, false),
            };
            let (target, reason) = split_word(rest);
            if target.is_empty() {
                anyhow::bail!("line {}: expected `RUN SCENARIO[/CHECK] REASON`", n + 1);
            }
            if reason.is_empty() {
                anyhow::bail!("line {}: the reason is missing", n + 1);
            }
            if run != "*" && !run.contains('@') {
                anyhow::bail!(
                    "line {}: the run {run:?} is not LEG@REVISION (`*` for any part)",
                    n + 1
                );
            }
            let (scenario, check) = match target.split_once('/') {
                Some((s, "*")) => (s, None),
                Some((s, c)) => (s, Some(c.to_owned())),
                None => (target, None),
            };
            entries.push(ExpectedEntry {
                run: run.to_owned(),
                intermittent,
                scenario: scenario.to_owned(),
                check,
                reason: reason.to_owned(),
                line: n + 1,
            });
        }
        Ok(Self { entries })
    }

    /// The entries for run `run` (`LEG@REVISION`).
    pub fn for_run(&self, run: &str) -> Vec<ExpectedEntry> {
        self.entries
            .iter()
            .filter(|e| e.is_for(run))
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Check by check

/// The differences between one scenario's checks on both sides, paired by id and
/// occurrence.
fn diff_checks(
    name: &str,
    a: &[Check],
    b: &[Check],
    left: &str,
    right: &str,
    out: &mut Vec<Difference>,
) {
    let (ka, kb) = (keyed(a), keyed(b));
    let map_b: BTreeMap<_, _> = kb.iter().map(|(k, c)| (k.clone(), *c)).collect();
    let map_a: BTreeMap<_, _> = ka.iter().map(|(k, c)| (k.clone(), *c)).collect();
    let label = |(id, n): &(String, usize)| {
        if *n == 0 {
            format!("{name} / {id}")
        } else {
            format!("{name} / {id} #{}", n + 1)
        }
    };
    for (key, x) in &ka {
        let text = match map_b.get(key) {
            Some(y) if x == y => continue,
            Some(y) if same_verdict(x, y) => {
                let paths = detail_differences(&x.details, &y.details, left, right);
                let shown: Vec<&str> = paths
                    .iter()
                    .take(DETAIL_PATHS_SHOWN)
                    .map(String::as_str)
                    .collect();
                let more = paths.len().saturating_sub(DETAIL_PATHS_SHOWN);
                let more = if more > 0 {
                    format!("; {more} more")
                } else {
                    String::new()
                };
                out.push(Difference {
                    scenario: name.to_owned(),
                    check: Some(key.0.clone()),
                    same_verdict: true,
                    text: format!(
                        "{}: both {}, details differ: {}{more}",
                        label(key),
                        verdict(x),
                        shown.join("; ")
                    ),
                });
                continue;
            }
            Some(y) => format!(
                "{}: {left} {} | {right} {}",
                label(key),
                verdict(x),
                verdict(y)
            ),
            None => format!("{}: {left} {} | {right} (none)", label(key), verdict(x)),
        };
        out.push(Difference {
            scenario: name.to_owned(),
            check: Some(key.0.clone()),
            same_verdict: false,
            text,
        });
    }
    for (key, y) in &kb {
        if !map_a.contains_key(key) {
            out.push(Difference {
                scenario: name.to_owned(),
                check: Some(key.0.clone()),
                same_verdict: false,
                text: format!("{}: {left} (none) | {right} {}", label(key), verdict(y)),
            });
        }
    }
    // The same checks in another order.
    let common_a: Vec<_> = ka.iter().filter(|(k, _)| map_b.contains_key(k)).collect();
    let common_b: Vec<_> = kb.iter().filter(|(k, _)| map_a.contains_key(k)).collect();
    if common_a
        .iter()
        .map(|(k, _)| k)
        .ne(common_b.iter().map(|(k, _)| k))
    {
        out.push(Difference {
            scenario: name.to_owned(),
            check: None,
            same_verdict: false,
            text: format!("{name}: the checks came in another order in {left} and {right}"),
        });
    }
}

/// Each check with its key: its id and how many checks of that id came before it.
fn keyed(checks: &[Check]) -> Vec<((String, usize), &Check)> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    checks
        .iter()
        .map(|c| {
            let n = seen.entry(c.id.as_str()).or_default();
            let key = (c.id.clone(), *n);
            *n += 1;
            (key, c)
        })
        .collect()
}

/// Every leaf where two detail values differ, as `path: left X | right Y`. Two lists of
/// different lengths are told by what is only in one of them.
fn detail_differences(a: &Value, b: &Value, left: &str, right: &str) -> Vec<String> {
    fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, names: (&str, &str)) -> Vec<String> {
        let (left, right) = names;
        match (a, b) {
            (Some(x), Some(y)) if x == y => Vec::new(),
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                keys.into_iter()
                    .flat_map(|k| walk(&format!("{path}.{k}"), x.get(k), y.get(k), names))
                    .collect()
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .flat_map(|(i, (p, q))| walk(&format!("{path}[{i}]"), Some(p), Some(q), names))
                .collect(),
            (Some(Value::Array(x)), Some(Value::Array(y))) => {
                let only = |these: &[Value], those: &[Value]| -> Value {
                    Value::Array(
                        these
                            .iter()
                            .filter(|v| !those.contains(v))
                            .cloned()
                            .collect(),
                    )
                };
                vec![format!(
                    "{path}: {left} {} items | {right} {}; only in {left}: {}; only in {right}: {}",
                    x.len(),
                    y.len(),
                    brief(Some(&only(x, y))),
                    brief(Some(&only(y, x)))
                )]
            }
            _ => vec![format!(
                "{path}: {left} {} | {right} {}",
                brief(a),
                brief(b)
            )],
        }
    }
    walk("details", Some(a), Some(b), (left, right))
}

fn brief(value: Option<&Value>) -> String {
    let text = value.map_or_else(|| "(absent)".to_owned(), Value::to_string);
    if text.chars().count() > 160 {
        format!("{}...", text.chars().take(160).collect::<String>())
    } else {
        text
    }
}

/// `details` with volatile keys dropped, minted values replaced and every string
/// [`normalize`]d.
fn normalize_details(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(normalize(s)),
        Value::Array(items) => Value::Array(items.iter().map(normalize_details).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !VOLATILE_DETAILS.contains(&k.as_str()))
                .map(|(k, v)| {
                    let minted = MINTED_DETAILS.iter().find(|(key, _)| key == k);
                    let v = match minted {
                        Some((_, mask)) if !v.is_null() => Value::String((*mask).to_owned()),
                        _ => normalize_details(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The same id, status and error message.
fn same_verdict(a: &Check, b: &Check) -> bool {
    (&a.id, &a.status, &a.error) == (&b.id, &b.status, &b.error)
}

fn verdict(check: &Check) -> String {
    match &check.error {
        Some(e) => format!("{}: {e}", check.status),
        None => check.status.clone(),
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
        assert_eq!(
            scenario_name("server-server-stateless-2026-11-30T20-13-45-341Z"),
            Some("server-stateless")
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
    fn detail_differences_name_the_paths() {
        let a = serde_json::json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        let b = serde_json::json!({"a": {"b": 2, "c": [1, 3]}, "e": true});
        assert_eq!(
            detail_differences(&a, &b, "l", "r"),
            [
                "details.a.b: l 1 | r 2",
                "details.a.c[1]: l 2 | r 3",
                "details.d: l \"x\" | r (absent)",
                "details.e: l (absent) | r true"
            ]
        );
        let a = serde_json::json!({"tools": ["a", "b", "c"]});
        let b = serde_json::json!({"tools": ["a", "d"]});
        assert_eq!(
            detail_differences(&a, &b, "l", "r"),
            [r#"details.tools: l 3 items | r 2; only in l: ["b","c"]; only in r: ["d"]"#]
        );
    }

    #[test]
    fn strip_comment_keeps_values() {
        assert_eq!(strip_comment("  - ping # why"), "  - ping");
        assert_eq!(strip_comment("# all"), "");
        assert_eq!(strip_comment("  reason: pending"), "  reason: pending");
    }
}
