//! Child processes of a benchmark run: loopback ports, spawning `mcp-bench` itself in a
//! role (or under valgrind), waiting for `GET /health`, reading RSS, and a guard that
//! stops the child when dropped (SIGTERM, then SIGKILL), so no process outlives a run.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// `n` distinct free loopback addresses (`127.0.0.1:PORT`). All are held until every
/// one is picked, so they cannot repeat.
pub fn free_addrs(n: usize) -> Result<Vec<String>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(
            std::net::TcpListener::bind("127.0.0.1:0")
                .context("binding 127.0.0.1:0 to pick a free port")?,
        );
    }
    held.iter()
        .map(|l| Ok(format!("127.0.0.1:{}", l.local_addr()?.port())))
        .collect()
}

/// A running child; stopped (SIGTERM, then SIGKILL after a grace period) on drop.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

/// How to start a child.
pub struct Spawn<'a> {
    /// Shown in errors ("gateway", "shopping-service", ...).
    pub name: &'a str,
    /// `mcp-bench` arguments (a role subcommand and its flags).
    pub args: Vec<String>,
    /// Extra environment (`RUST_LOG=warn` is always set).
    pub env: Vec<(String, String)>,
    /// Where the child's stdout and stderr go.
    pub log: PathBuf,
    /// Run under `valgrind` with these options (e.g. `--tool=callgrind`).
    pub valgrind: Option<Vec<String>>,
}

impl ChildGuard {
    pub fn spawn(spec: Spawn<'_>) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the mcp-bench executable")?;
        let mut cmd = match &spec.valgrind {
            Some(opts) => {
                let mut c = Command::new("valgrind");
                c.args(opts).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let log = File::create(&spec.log)
            .with_context(|| format!("creating log file {}", spec.log.display()))?;
        let log2 = log.try_clone().context("duplicating log file handle")?;
        cmd.args(&spec.args)
            .env("RUST_LOG", "warn")
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {} ({})", spec.name, exe.display()))?;
        Ok(Self {
            name: spec.name.to_string(),
            child: Some(child),
            log: spec.log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The last lines the child logged, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Fails (with the child's log) if the child has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            bail!(
                "{} exited early ({status}); its log ends with:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Waits until `GET {base}/health` answers 200, the child is gone, or `limit` passes.
    pub async fn wait_healthy(&mut self, base: &str, limit: Duration) -> Result<()> {
        service_kit::client::ensure_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("building the health-check HTTP client")?;
        let deadline = Instant::now() + limit;
        let url = format!("{base}/health");
        loop {
            self.check_alive()?;
            if let Ok(resp) = http.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer GET {url} within {} s; its log ends with:\n{}",
                    self.name,
                    limit.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident set size of the child, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// Asks the child to stop (SIGTERM) and waits up to `grace` for it to exit; kills it
    /// after that. Returns its exit status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("{} was already stopped", self.name);
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(status);
        }
        // `kill` from procps/coreutils: the crate forbids unsafe code (no libc::kill).
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait().context("reaping a killed child")?;
                bail!(
                    "{} did not stop within {} s of SIGTERM and was killed ({status})",
                    self.name,
                    grace.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop(Duration::from_secs(5));
        }
    }
}

/// CPU time (user + system, all threads) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    Ok(cpu_split(pid)?.total())
}

/// CPU time a process has used so far, in user mode and in the kernel (all threads).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cpu {
    pub user: Duration,
    pub system: Duration,
}

impl Cpu {
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// [`Cpu`] of process `pid` so far.
pub fn cpu_split(pid: u32) -> Result<Cpu> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let f = stat_fields(&stat).with_context(|| format!("no utime/stime in {path}"))?;
    let tick = |t: u64| Duration::from_secs_f64(t as f64 / clock_ticks_per_second() as f64);
    Ok(Cpu {
        user: tick(f.utime),
        system: tick(f.stime),
    })
}

/// The fields of a `/proc/PID/stat` line the bench reads (fields 4, 14 to 17), in clock
/// ticks for the times.
pub struct StatFields {
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    /// Of its children that were waited for.
    pub cutime: u64,
    pub cstime: u64,
}

/// [`StatFields`] of a `/proc/PID/stat` line. The command name (field 2) may hold spaces
/// and parentheses: fields are counted after the last `)`.
pub fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(StatFields {
        ppid: f.get(1)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
        cutime: f.get(13)?.parse().ok()?,
        cstime: f.get(14)?.parse().ok()?,
    })
}

/// `getconf CLK_TCK` (100 on Linux unless configured otherwise), asked once.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// VmRSS of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vmrss(&status).with_context(|| format!("no VmRSS line in {path}"))
}

fn parse_vmrss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Whether `program` is an executable on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(program)))
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(12345));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat =
            "4242 (mcp (bench) x) S 17 4242 4242 0 -1 4194560 900 0 0 0 250 75 30 12 20 0 3 0";
        let f = stat_fields(stat).expect("fields");
        assert_eq!(f.ppid, 17);
        assert_eq!((f.utime, f.stime, f.cutime, f.cstime), (250, 75, 30, 12));
        assert!(
            stat_fields("4242 (x) S 1 2").is_none(),
            "a short line has no times"
        );
        assert!(cpu_time(std::process::id()).is_ok());
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_kib(std::process::id()).expect("own RSS") > 0);
    }

    #[test]
    fn free_addrs_are_distinct() {
        let addrs = free_addrs(5).expect("ports");
        let unique: std::collections::HashSet<_> = addrs.iter().collect();
        assert_eq!(unique.len(), 5);
    }
}
