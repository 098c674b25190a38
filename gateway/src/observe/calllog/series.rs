//! The call log's time series: per-minute aggregates the writer keeps beside the log, and
//! the `/stats?window=&step=` answer built from them.
//!
//! Why aggregates and not the log itself: the log keeps at most `call_log_max_rows`
//! calls (100k by default, a few seconds of a busy gateway), so "the last 24 hours"
//! cannot be read from it, and reading it whole for every refresh of a chart costs a scan
//! of every retained row. The aggregates cost the writer one upsert per (minute, service,
//! tool, latency bucket) seen in a batch, in the batch's own transaction (nothing on a
//! call's path), and the database sums a chart's rows per point, service and bucket, so a
//! read returns at most points × services × buckets rows however busy the gateway was. In
//! a cluster the upserts add up in the shared table, so every replica charts the whole
//! cluster.
//!
//! Latency is kept as a histogram of log-spaced buckets, four per doubling from 10 µs:
//! p50 and p95 are read from it to within about 9% (the bucket's geometric middle; calls
//! under 12 µs or over 37 minutes fall in the end buckets), where `/stats` without a
//! window gives exact percentiles over the retained log.
//!
//! Invariant: aggregates are written only by the call-log writer, kept [`KEEP_MINUTES`],
//! and read only for a window of at most [`MAX_WINDOW_MS`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CallRecord;

/// How long aggregates are kept: the longest window, and an hour of slack.
pub const KEEP_MINUTES: i64 = 25 * 60;
/// The longest window `/stats` charts.
pub const MAX_WINDOW_MS: i64 = 24 * 3_600_000;
const MINUTE_MS: i64 = 60_000;
/// Most points in one series.
const MAX_POINTS: i64 = 1440;
/// The lower edge of the first latency bucket (ms); shorter calls count in it.
const BASE_MS: f64 = 0.01;
/// Buckets per doubling of latency.
const PER_DOUBLING: f64 = 4.0;
/// Buckets in all: the last one starts at 0.01 ms × 2^(111/4) ≈ 37 minutes.
const BUCKETS: i32 = 112;
/// The steps a window is shown in when none is asked for: the first that divides it into
/// at most [`DEFAULT_POINTS`] points.
const DEFAULT_STEPS: [i64; 6] = [1, 5, 10, 15, 30, 60];
const DEFAULT_POINTS: i64 = 150;

/// The latency bucket of a call of `ms` milliseconds.
pub fn bucket(ms: f64) -> i32 {
    if ms.is_nan() || ms <= BASE_MS {
        return 0;
    }
    ((ms / BASE_MS).log2() * PER_DOUBLING)
        .floor()
        .clamp(0.0, f64::from(BUCKETS - 1)) as i32
}

/// The latency a bucket stands for: its geometric middle, to the microsecond.
fn bucket_ms(bucket: i32) -> f64 {
    let ms = BASE_MS * ((f64::from(bucket) + 0.5) / PER_DOUBLING).exp2();
    (ms * 1000.0).round() / 1000.0
}

/// One aggregate: a (minute, service, tool, latency bucket) and its counts.
pub type Key<'a> = (i64, &'a str, &'a str, i32);

/// A batch of records summed up per [`Key`], in key order (writers of a shared table
/// then lock rows in one order, and never deadlock each other).
pub fn minutes(records: &[CallRecord]) -> BTreeMap<Key<'_>, (i64, i64)> {
    let mut sums: BTreeMap<Key<'_>, (i64, i64)> = BTreeMap::new();
    for r in records {
        let key = (
            r.at_ms.div_euclid(MINUTE_MS),
            &*r.service,
            &*r.tool,
            bucket(r.duration_ms),
        );
        let sum = sums.entry(key).or_default();
        sum.0 += 1;
        sum.1 += i64::from(r.outcome.failed());
    }
    sums
}

/// The first minute still kept at `now_ms`.
pub fn oldest_kept(now_ms: i64) -> i64 {
    now_ms.div_euclid(MINUTE_MS) - KEEP_MINUTES
}

/// `GET /stats` parameters; without `window` and `step` the answer has no series.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// The time charted, up to now: whole minutes or hours such as `15m`, `1h`, `24h`
    /// (at most 24h). Default `1h` when only `step` is given.
    pub window: Option<String>,
    /// The width of one point: whole minutes or hours (`1m`, `5m`, `1h`) that divide
    /// the window. Default: the first of 1m, 5m, 10m, 15m, 30m, 1h giving at most 150
    /// points.
    pub step: Option<String>,
    /// Only this service's series (and, with `tool`, its tool's).
    pub service: Option<String>,
    /// Also this tool's series (its public name), per service serving it.
    pub tool: Option<String>,
}

/// A window cut into points, aligned on multiples of the step since the Unix epoch (the
/// last point is the one in progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub window: String,
    pub step: String,
    pub step_ms: i64,
    pub points: i64,
}

/// `text` as whole minutes (`15m`, `2h`), or why not, naming `param`.
fn minutes_of(param: &str, text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{param}: {text:?} is not a duration in whole minutes or hours; write e.g. 1m, 15m, 1h or 24h"
        )
    };
    let (digits, per) = if let Some(digits) = text.strip_suffix('m') {
        (digits, 1)
    } else if let Some(digits) = text.strip_suffix('h') {
        (digits, 60)
    } else {
        return Err(bad());
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 6 {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!("{param}: {text:?} must be longer than zero"));
    }
    Ok(n * per)
}

impl SeriesQuery {
    /// The span asked for; `None` without `window` and `step`; an error naming the bad
    /// parameter.
    pub fn span(&self) -> Result<Option<Span>, String> {
        if self.window.is_none() && self.step.is_none() {
            if self.service.is_some() || self.tool.is_some() {
                return Err(
                    "service and tool select a time series: give window (and step) too".into(),
                );
            }
            return Ok(None);
        }
        let window_text = self.window.clone().unwrap_or_else(|| "1h".into());
        let window = minutes_of("window", &window_text)?;
        if window * MINUTE_MS > MAX_WINDOW_MS {
            return Err(format!(
                "window: {window_text:?} is longer than the 24h the time series are kept"
            ));
        }
        let step = match &self.step {
            Some(text) => {
                let step = minutes_of("step", text)?;
                if step > window || window % step != 0 {
                    return Err(format!(
                        "step: {text:?} must divide the window ({window_text}) into whole points"
                    ));
                }
                step
            }
            None => DEFAULT_STEPS
                .into_iter()
                .find(|s| window % s == 0 && window / s <= DEFAULT_POINTS)
                .unwrap_or(1),
        };
        debug_assert!(window / step <= MAX_POINTS);
        let step_text = match &self.step {
            Some(text) => text.clone(),
            None if step % 60 == 0 => format!("{}h", step / 60),
            None => format!("{step}m"),
        };
        Ok(Some(Span {
            window: window_text,
            step: step_text,
            step_ms: step * MINUTE_MS,
            points: window / step,
        }))
    }
}

impl Span {
    /// The start of the first point, for a series ending with the point holding `now_ms`.
    pub fn first(&self, now_ms: i64) -> i64 {
        now_ms.div_euclid(self.step_ms) * self.step_ms - (self.points - 1) * self.step_ms
    }

    /// What to read for the span ending with the point holding `now_ms` (of `service`
    /// only, when given; a tool's read is this one with its `tool` set).
    pub fn read(&self, now_ms: i64, service: Option<&str>) -> Read {
        let first = self.first(now_ms).div_euclid(MINUTE_MS);
        let step = self.step_ms / MINUTE_MS;
        Read {
            first,
            end: first + self.points * step,
            step,
            service: service.map(String::from),
            tool: None,
        }
    }
}

/// The aggregates of one point, service and latency bucket, summed by the database
/// (`point` counts steps from the span's first; rows are at most points × services ×
/// buckets, whatever the traffic).
#[derive(Debug, Clone)]
pub struct Cell {
    pub point: i64,
    pub service: String,
    pub bucket: i32,
    pub calls: i64,
    pub errors: i64,
}

/// What a span reads: its minutes, `[first, end)`, summed per `step` minutes, of
/// `service` only and `tool` only when given.
#[derive(Debug, Clone)]
pub struct Read {
    pub first: i64,
    pub end: i64,
    pub step: i64,
    pub service: Option<String>,
    pub tool: Option<String>,
}

/// One point of a series.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Unix ms the point starts (it covers one step).
    pub at: i64,
    pub calls: u64,
    pub errors: u64,
    /// errors / calls; 0 without calls.
    pub error_rate: f64,
    /// calls / the step in minutes; for the point in progress, / the minutes it has run
    /// (at least one).
    pub calls_per_minute: f64,
    /// From the latency histogram (to within about 9%); null without calls.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

/// One tool's series.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ToolSeries {
    pub service: String,
    pub tool: String,
    pub points: Vec<Point>,
}

/// `/stats`' `series`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub window: String,
    pub step: String,
    pub step_ms: i64,
    /// Unix ms the first point starts.
    pub from: i64,
    /// Unix ms the last point ends (it is in progress).
    pub to: i64,
    /// Every call of the gateway (or of `service`, when given).
    pub gateway: Vec<Point>,
    /// Per service that had calls in the window.
    pub services: BTreeMap<String, Vec<Point>>,
    /// With `tool`: that tool's, per service serving it.
    pub tools: Vec<ToolSeries>,
}

#[derive(Debug, Clone, Default)]
struct Acc {
    calls: u64,
    errors: u64,
    latency: BTreeMap<i32, u64>,
}

impl Acc {
    fn add(&mut self, cell: &Cell) {
        let calls = u64::try_from(cell.calls).unwrap_or(0);
        self.calls += calls;
        self.errors += u64::try_from(cell.errors).unwrap_or(0);
        *self.latency.entry(cell.bucket).or_default() += calls;
    }

    /// Nearest rank over the histogram, as `Stats` is over the durations.
    fn percentile(&self, p: f64) -> Option<f64> {
        if self.calls == 0 {
            return None;
        }
        let rank = super::nearest_rank(p, self.calls);
        let mut seen = 0;
        for (bucket, n) in &self.latency {
            seen += n;
            if seen >= rank {
                return Some(bucket_ms(*bucket));
            }
        }
        None
    }

    /// The point starting `at`; its rate per minute over the step, or for the point in
    /// progress over the minutes it has run (at least one), so it does not dip.
    fn point(&self, at: i64, step_ms: i64, now_ms: i64) -> Point {
        let minutes =
            ((now_ms - at) as f64 / MINUTE_MS as f64).clamp(1.0, (step_ms / MINUTE_MS) as f64);
        Point {
            at,
            calls: self.calls,
            errors: self.errors,
            error_rate: super::error_rate(self.calls, self.errors),
            calls_per_minute: self.calls as f64 / minutes,
            p50_ms: self.percentile(0.50),
            p95_ms: self.percentile(0.95),
        }
    }
}

/// The series of `span` ending now (`now_ms`) from `all` cells, and from `tool`'s own
/// when a tool's series was asked for (cells outside the span are ignored).
pub fn build(span: &Span, now_ms: i64, all: &[Cell], tool: Option<(&str, &[Cell])>) -> Series {
    let first = span.first(now_ms);
    let n = span.points as usize;
    let slot = |cell: &Cell| usize::try_from(cell.point).ok().filter(|i| *i < n);
    let mut gateway = vec![Acc::default(); n];
    let mut services: BTreeMap<&str, Vec<Acc>> = BTreeMap::new();
    for cell in all {
        let Some(i) = slot(cell) else { continue };
        gateway[i].add(cell);
        services
            .entry(&cell.service)
            .or_insert_with(|| vec![Acc::default(); n])[i]
            .add(cell);
    }
    let mut tools: BTreeMap<&str, Vec<Acc>> = BTreeMap::new();
    for cell in tool.map_or(&[][..], |(_, cells)| cells) {
        let Some(i) = slot(cell) else { continue };
        tools
            .entry(&cell.service)
            .or_insert_with(|| vec![Acc::default(); n])[i]
            .add(cell);
    }
    let points = |accs: &[Acc]| -> Vec<Point> {
        accs.iter()
            .enumerate()
            .map(|(i, a)| a.point(first + i as i64 * span.step_ms, span.step_ms, now_ms))
            .collect()
    };
    Series {
        window: span.window.clone(),
        step: span.step.clone(),
        step_ms: span.step_ms,
        from: first,
        to: first + span.points * span.step_ms,
        gateway: points(&gateway),
        services: services
            .iter()
            .map(|(s, accs)| (s.to_string(), points(accs)))
            .collect(),
        tools: tools
            .iter()
            .map(|(s, accs)| ToolSeries {
                service: s.to_string(),
                tool: tool.map(|(t, _)| t.to_string()).unwrap_or_default(),
                points: points(accs),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(window: Option<&str>, step: Option<&str>) -> SeriesQuery {
        SeriesQuery {
            window: window.map(String::from),
            step: step.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn windows_and_steps_are_whole_minutes_and_bad_ones_name_their_parameter() {
        let span = |w, s| query(w, s).span();
        assert_eq!(span(None, None), Ok(None));
        let hour = span(Some("1h"), Some("1m")).unwrap().unwrap();
        assert_eq!((hour.points, hour.step_ms), (60, 60_000));
        assert_eq!(span(Some("15m"), None).unwrap().unwrap().points, 15);
        let day = span(Some("24h"), None).unwrap().unwrap();
        assert_eq!((day.points, day.step.as_str()), (144, "10m"));
        assert_eq!(span(None, Some("5m")).unwrap().unwrap().points, 12);
        for (w, s, named) in [
            (Some("1x"), None, "window"),
            (Some("h"), None, "window"),
            (Some("-1h"), None, "window"),
            (Some("0m"), None, "window"),
            (Some("25h"), None, "window"),
            (Some("1.5h"), None, "window"),
            (Some(""), None, "window"),
            (Some("99999999999h"), None, "window"),
            (Some("1é"), None, "window"),
            (Some("é"), None, "window"),
            (Some("1h"), Some("5\u{1F600}"), "step"),
            (Some("1h"), Some("7m"), "step"),
            (Some("1h"), Some("2h"), "step"),
            (Some("1h"), Some("30s"), "step"),
            (Some("1h"), Some("0m"), "step"),
        ] {
            let why = span(w, s).expect_err("refused");
            assert!(why.starts_with(named), "{w:?} {s:?}: {why}");
        }
        let mut lone = query(None, None);
        lone.tool = Some("t".into());
        assert!(lone.span().unwrap_err().contains("window"));
    }

    #[test]
    fn buckets_are_log_spaced_and_read_back_within_about_nine_percent() {
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(f64::NAN), 0);
        assert_eq!(bucket(1e12), BUCKETS - 1);
        for ms in [0.05, 0.3, 1.0, 7.5, 42.0, 900.0, 30_000.0] {
            let back = bucket_ms(bucket(ms));
            assert!((back / ms - 1.0).abs() < 0.095, "{ms} read back as {back}");
        }
    }

    #[test]
    fn points_sum_the_cells_they_cover() {
        let span = query(Some("10m"), Some("5m")).span().unwrap().unwrap();
        let now = 1_000 * MINUTE_MS + 30_000; // minute 1000, half way
        assert_eq!(span.first(now), 995 * MINUTE_MS);
        let read = span.read(now, None);
        assert_eq!((read.first, read.end, read.step), (995, 1005, 5));
        let cell = |point, service: &str, bucket, calls, errors| Cell {
            point,
            service: service.into(),
            bucket,
            calls,
            errors,
        };
        let all = [
            cell(-1, "a", 10, 50, 0), // before the window
            cell(0, "a", 10, 3, 1),
            cell(0, "a", 20, 1, 0),
            cell(1, "b", 30, 4, 4),
            cell(2, "b", 30, 9, 0), // after it
        ];
        let tool = [cell(0, "a", 10, 3, 1), cell(1, "b", 30, 4, 4)];
        let s = build(&span, now, &all, Some(("t", &tool)));
        assert_eq!(s.gateway.len(), 2);
        assert_eq!((s.gateway[0].calls, s.gateway[0].errors), (4, 1));
        assert_eq!((s.gateway[1].calls, s.gateway[1].errors), (4, 4));
        assert_eq!(s.gateway[1].error_rate, 1.0);
        // A past point's rate is over its 5 minutes; the one in progress over the one
        // minute it has run (at least one), not the whole step.
        assert_eq!(s.gateway[0].calls_per_minute, 0.8);
        assert_eq!(s.gateway[1].calls_per_minute, 4.0);
        assert_eq!(s.gateway[0].p50_ms, Some(bucket_ms(10)));
        assert_eq!(s.gateway[0].p95_ms, Some(bucket_ms(20)));
        assert_eq!(s.services["a"][1].calls, 0);
        assert_eq!(s.services["b"][1].calls, 4);
        assert_eq!(s.tools.len(), 2, "t is served by a and b");
        assert_eq!(
            (s.tools[0].service.as_str(), s.tools[0].tool.as_str()),
            ("a", "t")
        );
        assert_eq!(s.tools[0].points[0].calls, 3);
        assert_eq!((s.from, s.to), (995 * MINUTE_MS, 1005 * MINUTE_MS));
        let later = build(&span, now + 3 * MINUTE_MS, &all, None);
        assert_eq!(later.gateway[1].calls_per_minute, 4.0 / 3.5);
    }
}
