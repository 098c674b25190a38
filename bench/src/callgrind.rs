//! Instructions per call, a figure that does not move with machine noise: a process runs
//! under `valgrind --tool=callgrind` for two fixed-count loops in two separate runs, and
//! `(Ir(long) - Ir(short)) / (long - short)` cancels start-up, registration and shutdown,
//! leaving the instructions the process executes per call.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// valgrind options for a callgrind run writing its profile to `out`.
pub fn valgrind_args(out: &Path) -> Vec<String> {
    vec![
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ]
}

/// The total instruction count of a callgrind profile (its `summary:` or `totals:` line).
pub fn read_total(profile: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(profile)
        .with_context(|| format!("reading callgrind profile {}", profile.display()))?;
    parse_total(&text).with_context(|| format!("no summary:/totals: line in {}", profile.display()))
}

fn parse_total(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .find_map(|v| v.split_whitespace().next()?.parse().ok())
}

/// Instructions per call from two runs of `short` and `long` calls.
pub fn per_call(short: (u64, u64), long: (u64, u64)) -> Result<f64> {
    let ((n1, ir1), (n2, ir2)) = (short, long);
    if n2 <= n1 || ir2 <= ir1 {
        bail!(
            "callgrind totals do not grow with calls ({n1} calls: {ir1} Ir, {n2} calls: {ir2} Ir)"
        );
    }
    Ok((ir2 - ir1) as f64 / (n2 - n1) as f64)
}

/// `callgrind_annotate` of a profile (exclusive, or inclusive of callees), written next
/// to it as `<profile>.annotate[-inclusive].txt`. Returns the file written.
pub fn annotate(profile: &Path, inclusive: bool) -> Result<PathBuf> {
    let mut cmd = Command::new("callgrind_annotate");
    if inclusive {
        cmd.arg("--inclusive=yes");
    }
    let output = cmd
        .arg(profile)
        .output()
        .context("running callgrind_annotate")?;
    if !output.status.success() {
        bail!(
            "callgrind_annotate {} failed: {}",
            profile.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let suffix = if inclusive {
        "annotate-inclusive.txt"
    } else {
        "annotate.txt"
    };
    let path = profile.with_extension(suffix);
    std::fs::write(&path, &output.stdout).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_from_either_line() {
        let profile = "version: 1\ncmd: x\nevents: Ir\nsummary: 123456\nfn=main\n";
        assert_eq!(parse_total(profile), Some(123_456));
        assert_eq!(parse_total("events: Ir\ntotals: 42\n"), Some(42));
        assert_eq!(parse_total("events: Ir\n"), None);
    }

    #[test]
    fn per_call_is_the_slope() {
        let ir = per_call((500, 1_000_000), (1500, 3_000_000)).expect("slope");
        assert_eq!(ir, 2000.0);
        assert!(per_call((500, 10), (1500, 5)).is_err());
    }
}
