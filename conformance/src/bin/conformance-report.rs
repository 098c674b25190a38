//! The `conformance-report` binary: scores of conformance-suite result directories.
//!
//! - `conformance-report summary DIR [--requirements FILE] [--expected FILE --run NAME]
//!   [--json FILE] [--totals FILE]`: the per-scenario table (scored or not, and why),
//!   every failing check of a scored scenario, the warnings, the unscored failing
//!   scenarios; exit status 1 when a scored check failed that the expected-failures file
//!   does not name for this run.
//! - `conformance-report compare LEFT RIGHT [--left-name N] [--right-name N]
//!   [--accept SCENARIO/CHECK=REASON]... [--expected FILE --run NAME]`: every difference
//!   between two runs' reports (statuses, error messages, details, INFO checks; ports,
//!   ids and times masked), the accepted and expected ones apart; exit status 1 when
//!   another difference remains.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use conformance::report::{Expected, ExpectedEntry, Report, Requirements};

/// Summarize or compare result directories written by `conformance server -o DIR`.
#[derive(Debug, Parser)]
#[command(name = "conformance-report", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Known failures and differences (the expected-failures file).
#[derive(Debug, Args)]
struct ExpectedArgs {
    /// The expected-failures file: lines `RUN SCENARIO[/CHECK] REASON`, RUN being
    /// `LEG@REVISION` (`*` for any part), `?RUN` for an intermittent entry.
    #[arg(long, requires = "run")]
    expected: Option<PathBuf>,
    /// This run's name, `LEG@REVISION` (e.g. `gateway-2026@2026-07-28`): the entries for
    /// it apply.
    #[arg(long, requires = "expected")]
    run: Option<String>,
}

impl ExpectedArgs {
    fn entries(&self) -> anyhow::Result<Vec<ExpectedEntry>> {
        match (&self.expected, &self.run) {
            (Some(path), Some(run)) => Ok(Expected::load(path)?.for_run(run)),
            _ => Ok(Vec::new()),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print one run's score; exit 1 if a scored check failed unexpectedly.
    Summary {
        dir: PathBuf,
        /// The suite's requirement set for the run (`requirements/<revision>.yaml` in
        /// the suite's package): scenarios it does not score are listed apart and never
        /// fail the run. Without it every scenario is scored.
        #[arg(long)]
        requirements: Option<PathBuf>,
        #[command(flatten)]
        expected: ExpectedArgs,
        /// Also write the normalized report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write the totals as one line of `key=value` pairs to this file.
        #[arg(long)]
        totals: Option<PathBuf>,
    },
    /// Print the differences between two runs' reports; exit 1 if there are any but
    /// accepted and expected ones.
    Compare {
        left: PathBuf,
        right: PathBuf,
        #[arg(long, default_value = "left")]
        left_name: String,
        #[arg(long, default_value = "right")]
        right_name: String,
        /// `SCENARIO/CHECK=REASON`: a check that is scored the same on both sides may
        /// differ in its details for this reason (listed, not counted). Repeatable.
        #[arg(long = "accept", value_name = "SCENARIO/CHECK=REASON")]
        accept: Vec<String>,
        /// The entries for `--run` (the right-hand run) excuse any difference on the
        /// checks they name.
        #[command(flatten)]
        expected: ExpectedArgs,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("conformance-report: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Summary {
            dir,
            requirements,
            expected,
            json,
            totals,
        } => {
            let report = Report::load(&dir)?;
            let requirements = requirements
                .as_deref()
                .map(Requirements::load)
                .transpose()?;
            let score = report.score(requirements.as_ref(), &expected.entries()?);
            print!("{}", score.render());
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
            }
            if let Some(path) = totals {
                std::fs::write(&path, score.totals().line() + "\n")?;
            }
            Ok(score.passed())
        }
        Command::Compare {
            left,
            right,
            left_name,
            right_name,
            accept,
            expected,
        } => {
            let (a, b) = (Report::load(&left)?, Report::load(&right)?);
            let accepted = accept
                .iter()
                .map(|a| {
                    a.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| {
                            anyhow::anyhow!("--accept {a:?}: expected SCENARIO/CHECK=REASON")
                        })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let comparison =
                a.compare(&b, &left_name, &right_name, &accepted, &expected.entries()?);
            let scenarios = a.scenarios.keys().chain(b.scenarios.keys());
            let scenarios = scenarios.collect::<std::collections::BTreeSet<_>>().len();
            print!("{}", comparison.render(&left_name, &right_name, scenarios));
            Ok(comparison.identical())
        }
    }
}
