//! The `conformance-report` binary: scores of conformance-suite result directories.
//!
//! - `conformance-report summary DIR [--json FILE]`: the per-scenario table and every
//!   failing or warning check; exit status 1 when a check failed.
//! - `conformance-report compare LEFT RIGHT [--left-name N] [--right-name N]`: every
//!   difference between two runs' scores (statuses, error messages, details, INFO checks;
//!   ports, ids and times masked); exit status 1 when they differ.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use conformance::report::Report;

/// Summarize or compare result directories written by `conformance server -o DIR`.
#[derive(Debug, Parser)]
#[command(name = "conformance-report", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print one run's score; exit 1 if any check failed.
    Summary {
        dir: PathBuf,
        /// Also write the normalized score as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Print the differences between two runs' scores; exit 1 if there are any.
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
        Command::Summary { dir, json } => {
            let report = Report::load(&dir)?;
            print!("{}", report.summary());
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
            }
            Ok(report.totals().1 == 0)
        }
        Command::Compare {
            left,
            right,
            left_name,
            right_name,
            accept,
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
            let (lines, excused) = a.diff_accepting(&b, &left_name, &right_name, &accepted);
            for line in &excused {
                println!("  {line}");
            }
            if lines.is_empty() {
                println!(
                    "identical scores: {left_name} and {right_name} ({} scenarios)",
                    a.scenarios.len()
                );
                return Ok(true);
            }
            println!(
                "{} difference(s) between {left_name} and {right_name}:",
                lines.len()
            );
            for line in lines {
                println!("  {line}");
            }
            Ok(false)
        }
    }
}
