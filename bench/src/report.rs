//! The results: one row per scenario (direct, via gateway, ratio, target, met?, errors)
//! rendered as a markdown table under a header naming the date, the machine and the
//! commit, plus notes (first errors, skipped parts), then separate sections (the wrk
//! reference) with tables of their own. The same content is also rendered as JSON.

use std::{fmt::Write as _, process::Command, time::SystemTime};

/// How a row's figure is judged.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Reported for information; no target.
    None,
    /// `via / direct` must be at most this.
    RatioAtMost(f64),
    /// `via / direct` must be at least this.
    RatioAtLeast(f64),
    /// The gateway figure itself must be at most this (in the row's unit).
    ValueAtMost(f64),
}

/// Units of a row's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Micros,
    PerSecond,
    MiB,
    KiB,
    Instructions,
    /// Microseconds with one decimal (CPU time per call).
    MicrosFine,
    /// A count per call (context switches).
    PerCall,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::Micros if v >= 10_000.0 => format!("{:.1} ms", v / 1_000.0),
            Unit::Micros => format!("{v:.0} µs"),
            Unit::PerSecond => format!("{v:.0}/s"),
            Unit::MiB => format!("{v:.1} MiB"),
            Unit::KiB => format!("{v:.1} KiB"),
            Unit::Instructions => format!("{v:.0} Ir"),
            Unit::MicrosFine => format!("{v:.1} µs"),
            Unit::PerCall => format!("{v:.2} per call"),
        }
    }
}

/// One scenario's result.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    /// The direct (or baseline) figure, when there is one.
    pub direct: Option<f64>,
    pub via: f64,
    pub unit: Unit,
    pub target: Target,
    pub errors: u64,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        self.direct.filter(|d| *d > 0.0).map(|d| self.via / d)
    }

    /// `None` when there is no target; an errored row never meets its target.
    pub fn met(&self) -> Option<bool> {
        let ok = match self.target {
            Target::None => return None,
            Target::RatioAtMost(t) => self.ratio().is_some_and(|r| r <= t),
            Target::RatioAtLeast(t) => self.ratio().is_some_and(|r| r >= t),
            Target::ValueAtMost(t) => self.via <= t,
        };
        Some(ok && self.errors == 0)
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => "—".into(),
            Target::RatioAtMost(t) => format!("≤ {t}×"),
            Target::RatioAtLeast(t) => format!("≥ {t}×"),
            Target::ValueAtMost(t) => format!("≤ {}", self.unit.format(t)),
        }
    }
}

/// A section of its own after the main table (the wrk reference): paragraphs, a table
/// of rows judged like the main ones, and notes.
pub struct Section {
    pub title: String,
    pub lines: Vec<String>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

/// Everything a report says besides the rows.
pub struct Header {
    pub quick: bool,
    /// `/proc/loadavg` when the run started (other work on the machine skews ratios).
    pub load_at_start: String,
    pub notes: Vec<String>,
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The whole report as markdown: the main table (left out when it has no rows and
/// there are sections, as in `mcp-bench wrk`), then each section.
pub fn render(header: &Header, rows: &[Row], sections: &[Section]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# mcp-bench results\n");
    let _ = writeln!(out, "- date: {}", utc_now());
    let _ = writeln!(out, "- machine: {}", machine());
    let _ = writeln!(out, "- commit: {}", commit());
    let _ = writeln!(
        out,
        "- gateway worker threads: {}",
        crate::scenarios::gateway_workers()
    );
    let _ = writeln!(
        out,
        "- load average (1/5/15 min) at start: {}; at end: {}",
        header.load_at_start,
        load_average()
    );
    let _ = writeln!(
        out,
        "- run: {}",
        if header.quick {
            "--quick (smoke run: every scenario briefly; the numbers are not meaningful)"
        } else {
            "full"
        }
    );
    let _ = writeln!(
        out,
        "- ratio: via gateway ÷ direct (or ÷ the baseline named in the row)\n"
    );
    if !rows.is_empty() || sections.is_empty() {
        table(&mut out, rows, "Targets met");
    }
    notes(&mut out, &header.notes);
    for section in sections {
        let _ = writeln!(out, "\n## {}\n", section.title);
        for line in &section.lines {
            let _ = writeln!(out, "{line}\n");
        }
        if !section.rows.is_empty() {
            table(
                &mut out,
                &section.rows,
                &format!("{} targets met", section.title),
            );
        }
        notes(&mut out, &section.notes);
    }
    out
}

fn notes(out: &mut String, notes: &[String]) {
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
}

/// A table of rows and its summary line ("{summary}: N of M. Errors: E.").
fn table(out: &mut String, rows: &[Row], summary: &str) {
    let _ = writeln!(
        out,
        "| scenario | direct | via gateway | ratio | target | met? | errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---|---:|");
    for row in rows {
        let direct = row
            .direct
            .map_or_else(|| "—".to_string(), |d| row.unit.format(d));
        let ratio = row
            .ratio()
            .map_or_else(|| "—".to_string(), |r| format!("{r:.2}×"));
        let met = match row.met() {
            None => "—",
            Some(true) => "yes",
            Some(false) => "**no**",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            direct,
            row.unit.format(row.via),
            ratio,
            row.target_text(),
            met,
            row.errors
        );
    }
    let judged: Vec<bool> = rows.iter().filter_map(Row::met).collect();
    let met = judged.iter().filter(|m| **m).count();
    let errors: u64 = rows.iter().map(|r| r.errors).sum();
    let _ = writeln!(
        out,
        "\n{summary}: {met} of {}. Errors: {errors}.",
        judged.len()
    );
}

/// The same report as JSON: the header, every row (with its ratio and verdict), the
/// sections, and `data` (a section's raw figures, keyed by name, e.g. `wrk`).
pub fn render_json(
    header: &Header,
    rows: &[Row],
    sections: &[Section],
    data: serde_json::Map<String, serde_json::Value>,
) -> String {
    let row_json = |r: &Row| {
        serde_json::json!({
            "scenario": r.scenario,
            "direct": r.direct,
            "via": r.via,
            "unit": format!("{:?}", r.unit),
            "ratio": r.ratio(),
            "target": r.target_text(),
            "met": r.met(),
            "errors": r.errors,
        })
    };
    let mut doc = serde_json::json!({
        "date": utc_now(),
        "machine": machine(),
        "commit": commit(),
        "load_average_start": header.load_at_start,
        "load_average_end": load_average(),
        "quick": header.quick,
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
        "notes": header.notes,
        "sections": sections.iter().map(|s| serde_json::json!({
            "title": s.title,
            "lines": s.lines,
            "rows": s.rows.iter().map(row_json).collect::<Vec<_>>(),
            "notes": s.notes,
        })).collect::<Vec<_>>(),
    });
    if let Some(obj) = doc.as_object_mut() {
        obj.extend(data);
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Cores, memory and CPU model, from the OS.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or_else(
            || "unknown memory".to_string(),
            |kib| format!("{:.1} GiB memory", kib / 1024.0 / 1024.0),
        );
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    format!(
        "{cores} cores ({model}), {mem_gib}, {}",
        std::env::consts::ARCH
    )
}

/// `MCP_BENCH_COMMIT` when set (a build from an exported tree), else `git rev-parse
/// --short HEAD` (plus a mark when the work tree has changes), if git and a repository
/// are there.
fn commit() -> String {
    if let Ok(commit) = std::env::var("MCP_BENCH_COMMIT")
        && !commit.trim().is_empty()
    {
        return commit.trim().to_string();
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash} (with uncommitted changes)")
            } else {
                hash
            }
        }
        _ => "unknown (not a git checkout)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }

    #[test]
    fn rows_judge_their_targets() {
        let row = |direct, via, target| Row {
            scenario: "x".into(),
            direct,
            via,
            unit: Unit::Micros,
            target,
            errors: 0,
        };
        assert_eq!(
            row(Some(100.0), 190.0, Target::RatioAtMost(2.0)).met(),
            Some(true)
        );
        assert_eq!(
            row(Some(100.0), 210.0, Target::RatioAtMost(2.0)).met(),
            Some(false)
        );
        assert_eq!(
            row(Some(100.0), 40.0, Target::RatioAtLeast(0.5)).met(),
            Some(false)
        );
        assert_eq!(row(None, 20.0, Target::ValueAtMost(25.0)).met(), Some(true));
        assert_eq!(row(None, 20.0, Target::None).met(), None);
        let mut errored = row(Some(100.0), 100.0, Target::RatioAtMost(2.0));
        errored.errors = 1;
        assert_eq!(errored.met(), Some(false));
    }

    #[test]
    fn table_has_one_line_per_row() {
        let rows = vec![Row {
            scenario: "tools/call p50".into(),
            direct: Some(100.0),
            via: 150.0,
            unit: Unit::Micros,
            target: Target::RatioAtMost(2.0),
            errors: 0,
        }];
        let header = Header {
            quick: true,
            load_at_start: "0.00 0.00 0.00".into(),
            notes: vec![],
        };
        let text = render(&header, &rows, &[]);
        assert!(
            text.contains("| tools/call p50 | 100 µs | 150 µs | 1.50× | ≤ 2× | yes | 0 |"),
            "{text}"
        );
        assert!(text.contains("Targets met: 1 of 1. Errors: 0."));

        let section = Section {
            title: "wrk reference".into(),
            lines: vec!["Measured with wrk.".into()],
            rows: vec![Row {
                scenario: "wrk plain: context switches per call".into(),
                direct: Some(3.0),
                via: 2.5,
                unit: Unit::PerCall,
                target: Target::ValueAtMost(2.0),
                errors: 0,
            }],
            notes: vec!["a note".into()],
        };
        let text = render(&header, &[], std::slice::from_ref(&section));
        assert!(!text.contains("\nTargets met:"), "{text}");
        assert!(
            text.contains("## wrk reference\n\nMeasured with wrk.\n"),
            "{text}"
        );
        assert!(
            text.contains("| wrk plain: context switches per call | 3.00 per call | 2.50 per call | 0.83× | ≤ 2.00 per call | **no** | 0 |"),
            "{text}"
        );
        assert!(
            text.contains("wrk reference targets met: 0 of 1. Errors: 0."),
            "{text}"
        );
        let mut data = serde_json::Map::new();
        data.insert("wrk".into(), serde_json::json!({"x": 1}));
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&header, &rows, &[section], data)).expect("JSON");
        assert_eq!(json["rows"][0]["ratio"], 1.5);
        assert_eq!(json["sections"][0]["rows"][0]["met"], false);
        assert_eq!(json["wrk"]["x"], 1);
    }
}
