//! stdio upstreams: MCP servers the gateway runs as child processes and speaks to over
//! their stdin and stdout (newline-delimited JSON-RPC). The gateway is the one MCP client
//! of each process: every downstream client's calls share its one session, each with
//! the gateway's own request id, so answers go back to the call that made them.
//!
//! A [`Process`] is the supervised side of one stdio instance: its command, the child
//! running now, the restart budget, the last exit status and a bounded ring of the
//! child's stderr. The instance's supervisor (in `upstream`) asks it for a child when it
//! (re)connects; the process refuses when an operator stopped it or when it crashed more
//! than [`RESTART_BUDGET`] times in [`RESTART_WINDOW`] (then it stays `failed` until an
//! operator starts it again: no restart storm).
//!
//! Every child runs in its own process group with `PR_SET_PDEATHSIG`, so a gateway
//! killed with SIGKILL takes it along; a stop closes stdin, then SIGTERMs the group, then
//! SIGKILLs it after [`STOP_GRACE`]. One task per child owns it and reaps it; right after
//! the reap it SIGKILLs what is left of the group (a grandchild an `npx` left behind).
//! The child's environment is its command's `env` over a short list of the gateway's own
//! variables ([`INHERITED`]): the gateway's token and keys never reach it.
//!
//! Invariant: every child is reaped by exactly one task and never outlives the gateway;
//! a process restarts at most [`RESTART_BUDGET`] times in [`RESTART_WINDOW`].

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{ChildStdin, ChildStdout},
    sync::watch,
};

use crate::vocab::Invalid;

/// The command of a stdio server, as configured or registered.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The program: a name looked up in `PATH`, or a path.
    pub command: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Set for the child (values may be secrets: never shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The child's working directory (default: the gateway's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cwd: Option<PathBuf>,
}

/// At most this many arguments, environment variables, and bytes in each.
pub const MAX_ARGS: usize = 256;
pub const MAX_ENV: usize = 64;
pub const MAX_ARG_BYTES: usize = 4096;

/// Crashes tolerated in [`RESTART_WINDOW`] before a process is `failed`.
pub const RESTART_BUDGET: usize = 5;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long a child whose stdin closed has to exit before it gets SIGTERM.
pub const EOF_GRACE: Duration = Duration::from_millis(500);
/// Between SIGTERM and SIGKILL when a process is stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// The stderr ring: lines kept, and bytes kept of each line.
pub const STDERR_LINES: usize = 200;
pub const STDERR_LINE_BYTES: usize = 1024;

/// The gateway's own environment variables a child gets (when set); nothing else.
pub const INHERITED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

impl std::fmt::Debug for Command {
    // The environment's values may be secrets: names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .finish()
    }
}

impl Command {
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |what: &str| Err(Invalid(what.to_string()));
        if self.command.trim().is_empty() {
            return bad("command must not be empty");
        }
        if self.args.len() > MAX_ARGS {
            return Err(Invalid(format!("at most {MAX_ARGS} args")));
        }
        if self.env.len() > MAX_ENV {
            return Err(Invalid(format!("at most {MAX_ENV} env variables")));
        }
        let strings = std::iter::once(&self.command)
            .chain(&self.args)
            .chain(self.env.keys())
            .chain(self.env.values());
        for s in strings {
            if s.len() > MAX_ARG_BYTES {
                return Err(Invalid(format!(
                    "command, args and env entries are at most {MAX_ARG_BYTES} bytes each"
                )));
            }
            if s.contains('\0') {
                return bad("command, args and env must not contain NUL");
            }
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') {
                return Err(Invalid(format!("env name {key:?} is not a variable name")));
            }
        }
        if let Some(cwd) = &self.cwd
            && !cwd.is_absolute()
        {
            return bad("cwd must be an absolute path");
        }
        Ok(())
    }

    /// The command line as shown (`/services`, logs): program and arguments; of the
    /// environment, names only.
    pub fn describe(&self) -> String {
        let mut line = self.command.clone();
        for a in &self.args {
            line.push(' ');
            line.push_str(a);
        }
        line
    }
}

/// Why a process gives no child now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parked {
    /// An operator stopped it.
    Stopped,
    /// It crashed past its restart budget; the reason says how it last ended.
    Failed(String),
}

impl std::fmt::Display for Parked {
    /// The reason calls and `/services` give.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parked::Stopped => f.write_str("stopped by an operator"),
            Parked::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// The supervised side of one stdio instance.
pub struct Process {
    pub command: Arc<Command>,
    stderr: Arc<Ring>,
    state: Mutex<ProcessState>,
    restarts: AtomicU64,
    /// The server ignored `server/discover` and then answered `initialize`: its later
    /// children are spoken to in 2025-11-25 at once, without the probe's wait.
    legacy: AtomicBool,
}

#[derive(Default)]
struct ProcessState {
    child: Option<Arc<Child>>,
    /// A child being stopped, until it is reaped: no other starts meanwhile.
    stopping: Option<Arc<Child>>,
    parked: Option<Parked>,
    /// When children were started within the restart window.
    starts: VecDeque<Instant>,
    last_exit: Option<String>,
    /// Whether a child has been started since the last operator start.
    started_once: bool,
    /// A child stopped on purpose to start another at once (a probe that found no
    /// revision in common): its end is not the process's last exit.
    quiet: Option<Arc<Child>>,
    /// The child whose end `last_exit` records, and what `last_exit` said before: a
    /// child may end on its own (its session dropped) before it is marked quiet.
    recorded: Option<(Arc<Child>, Option<String>)>,
}

/// What `/services` shows of a stdio instance's process.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessView {
    /// Program and arguments (the environment's values are never shown).
    pub command: String,
    /// Names of the variables set for it.
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Children started after the first (crashes and operator restarts).
    pub restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// CPU time (user + system) and resident memory of the running child, from /proc.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// The last lines it wrote to stderr (at most 5; `/services/{name}/logs` has more).
    pub stderr_tail: Vec<String>,
}

/// A running child: its stdout and stdin for the MCP session.
pub struct Spawned {
    pub child: Arc<Child>,
    pub stdout: ChildStdout,
    pub stdin: ChildStdin,
}

impl Process {
    pub fn new(command: Command) -> Self {
        Self {
            command: Arc::new(command),
            stderr: Arc::new(Ring::default()),
            state: Mutex::new(ProcessState::default()),
            restarts: AtomicU64::new(0),
            legacy: AtomicBool::new(false),
        }
    }

    /// Whether its children are spoken to in 2025-11-25 without probing first.
    pub fn legacy(&self) -> bool {
        self.legacy.load(Ordering::Acquire)
    }

    /// Remembers that the server does not answer `server/discover`.
    pub fn set_legacy(&self) {
        self.legacy.store(true, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProcessState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why no child may start now, if none may.
    pub fn parked(&self) -> Option<Parked> {
        self.lock().parked.clone()
    }

    /// Starts a child, unless the process is parked or its budget is spent (then it is
    /// parked as failed). `service` names it in the gateway's log.
    pub fn spawn(&self, service: &str) -> Result<Spawned, String> {
        self.spawn_counted(service, true)
    }

    /// Starts a child again right after the last one was stopped for speaking no
    /// protocol revision the gateway tried (the `initialize` fallback): one start, as
    /// far as the restart budget and count go.
    pub fn respawn(&self, service: &str) -> Result<Spawned, String> {
        self.spawn_counted(service, false)
    }

    fn spawn_counted(&self, service: &str, counted: bool) -> Result<Spawned, String> {
        let mut state = self.lock();
        if let Some(parked) = &state.parked {
            return Err(parked.to_string());
        }
        let now = Instant::now();
        while state
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            state.starts.pop_front();
        }
        if state.starts.len() > RESTART_BUDGET {
            let why = format!(
                "restarted {RESTART_BUDGET} times within {} s; last exit: {}",
                RESTART_WINDOW.as_secs(),
                state.last_exit.as_deref().unwrap_or("none")
            );
            tracing::error!(service, "stdio server failed: {why}; start it to try again");
            let parked = Parked::Failed(why);
            let reason = parked.to_string();
            state.parked = Some(parked);
            return Err(reason);
        }
        if let Some(old) = state.child.take() {
            // The supervisor only asks when the last one is gone; make sure of it.
            old.kill_group();
        }
        if let Some(stopping) = &state.stopping {
            // Two children of one instance never run at once (a port, a lock file).
            stopping.kill_group();
            return Err("the previous process is still stopping".into());
        }
        let spawned = spawn(&self.command, service, &self.stderr).map_err(|e| {
            let why = format!("cannot start {}: {e}", self.command.command);
            state.last_exit = Some(why.clone());
            state.recorded = None;
            why
        });
        if counted {
            state.starts.push_back(now);
            if std::mem::replace(&mut state.started_once, true) {
                self.restarts.fetch_add(1, Ordering::Relaxed);
            }
        }
        let spawned = spawned?;
        state.child = Some(Arc::clone(&spawned.child));
        Ok(spawned)
    }

    /// Records how the child `child` ended (its task calls this after the reap).
    pub fn exited(&self, child: &Arc<Child>, status: &str) {
        let mut state = self.lock();
        if state.quiet.as_ref().is_some_and(|q| Arc::ptr_eq(q, child)) {
            state.quiet = None;
        } else {
            let before = state.last_exit.replace(status.to_string());
            state.recorded = Some((Arc::clone(child), before));
        }
        // By identity, not pid: a reaped child's pid may already be another's.
        if state.child.as_ref().is_some_and(|c| Arc::ptr_eq(c, child)) {
            state.child = None;
        }
        if state
            .stopping
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, child))
        {
            state.stopping = None;
        }
    }

    /// `child` is being stopped to start another at once: its end is not recorded as
    /// the process's last exit (and is taken back if it already was).
    pub fn quiet(&self, child: &Arc<Child>) {
        let mut state = self.lock();
        match state.recorded.take() {
            Some((ended, before)) if Arc::ptr_eq(&ended, child) => state.last_exit = before,
            recorded => {
                state.recorded = recorded;
                state.quiet = Some(Arc::clone(child));
            }
        }
    }

    /// Parks the process (an operator's stop): no child starts until [`Self::unpark`].
    pub fn park(&self) {
        self.lock().parked = Some(Parked::Stopped);
    }

    /// Ends the running child, if any: a moment to exit on its own (its stdin is
    /// closed with its session), then SIGTERM to its group, then SIGKILL after
    /// [`STOP_GRACE`].
    pub async fn kill(&self) {
        let child = {
            let mut state = self.lock();
            let child = state.child.take();
            if let Some(c) = &child {
                state.stopping = Some(Arc::clone(c));
            }
            child
        };
        if let Some(child) = child {
            child.stop(STOP_GRACE).await;
            let mut state = self.lock();
            if state
                .stopping
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &child))
            {
                state.stopping = None;
            }
        }
    }

    /// Lets the process run again with a fresh restart budget (an operator's start).
    pub fn unpark(&self) {
        let mut state = self.lock();
        state.parked = None;
        state.starts.clear();
    }

    pub fn child(&self) -> Option<Arc<Child>> {
        self.lock().child.clone()
    }

    /// The stderr lines kept, oldest first.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lines()
    }

    pub fn view(&self) -> ProcessView {
        let (child, last_exit) = {
            let state = self.lock();
            (state.child.clone(), state.last_exit.clone())
        };
        let usage = child.as_ref().and_then(|c| c.usage());
        let lines = self.stderr.lines();
        ProcessView {
            command: self.command.describe(),
            env: self.command.env.keys().cloned().collect(),
            pid: child.as_ref().map(|c| c.pid),
            uptime_ms: child
                .as_ref()
                .map(|c| c.started.elapsed().as_millis() as u64),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_exit,
            cpu_ms: usage.map(|u| u.0),
            rss_bytes: usage.map(|u| u.1),
            stderr_tail: lines[lines.len().saturating_sub(5)..].to_vec(),
        }
    }
}

impl Drop for Process {
    // An instance dropped without `close` (a registration whose request went away while
    // it connected): its child must not run on untracked. SIGKILL to its group; its
    // reaping task reaps it.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for child in [state.child.take(), state.stopping.take()]
            .into_iter()
            .flatten()
        {
            child.kill_group();
        }
    }
}

/// A bounded ring of a child's stderr lines (of every child of one process, in order).
#[derive(Default)]
pub struct Ring {
    lines: Mutex<VecDeque<String>>,
}

impl Ring {
    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() >= STDERR_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn lines(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().cloned().collect()
    }
}

/// One running child. Signals go to its process group, and only while the task that
/// reaps it has not (a reaped pid may be reused).
pub struct Child {
    pub pid: u32,
    started: Instant,
    alive: Mutex<bool>,
    exited: watch::Receiver<Option<String>>,
}

impl Child {
    /// Sends `signal` to the child's process group while the child is unreaped.
    fn signal_group(&self, signal: i32) {
        let alive = self.alive.lock().unwrap_or_else(|p| p.into_inner());
        if *alive {
            kill_group(self.pid, signal);
        }
    }

    fn kill_group(&self) {
        self.signal_group(libc::SIGKILL);
    }

    /// Waits until the child has exited and been reaped; its exit status.
    pub async fn wait(&self) -> String {
        let mut rx = self.exited.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_default(),
            Err(_) => "exited".into(),
        }
    }

    /// A moment to exit on its own, then SIGTERM to the group, then SIGKILL if it has
    /// not exited within `grace`.
    pub async fn stop(&self, grace: Duration) {
        if tokio::time::timeout(EOF_GRACE, self.wait()).await.is_ok() {
            return;
        }
        self.signal_group(libc::SIGTERM);
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            self.kill_group();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.wait()).await;
        }
    }

    /// CPU time (ms, user + system) and resident bytes, from /proc; `None` once gone.
    fn usage(&self) -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // The command name (field 2) may hold spaces and parentheses: fields are
        // counted after its closing parenthesis.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid)).ok()?;
        let pages: u64 = statm.split(' ').nth(1)?.parse().ok()?;
        let (hz, page) = clock_and_page();
        Some((ticks * 1000 / hz.max(1), pages * page))
    }
}

/// Starts `command`'s child: own process group, dies with the gateway, stdin and stdout
/// piped for the session, stderr into `ring`. Must be called on a runtime worker thread
/// (never a blocking-pool one): `PR_SET_PDEATHSIG` fires when the *thread* that forked
/// the child ends, and worker threads live as long as the gateway.
fn spawn(command: &Command, service: &str, ring: &Arc<Ring>) -> std::io::Result<Spawned> {
    let mut cmd = tokio::process::Command::new(&command.command);
    cmd.args(&command.args)
        .env_clear()
        .envs(
            INHERITED
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .envs(&command.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // The reaping task owns the child; dropping a handle never kills it.
        .kill_on_drop(false);
    if let Some(cwd) = &command.cwd {
        cmd.current_dir(cwd);
    }
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or_default();
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take().expect("piped stdin");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, exited) = watch::channel(None);
    let handle = Arc::new(Child {
        pid,
        started: Instant::now(),
        alive: Mutex::new(true),
        exited,
    });
    tracing::info!(service, pid, command = %command.describe(), "stdio server started");
    // The child's stderr, line by line, each cut at STDERR_LINE_BYTES (a line without
    // an end is read in pieces, never held whole).
    let (ring, svc) = (Arc::clone(ring), service.to_string());
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(STDERR_LINE_BYTES, stderr);
        let mut line = Vec::with_capacity(STDERR_LINE_BYTES);
        loop {
            let buf = match reader.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(buf) => buf,
            };
            let end = buf.iter().position(|b| *b == b'\n');
            let take = end.map_or(buf.len(), |i| i + 1);
            let room = STDERR_LINE_BYTES.saturating_sub(line.len());
            line.extend_from_slice(&buf[..take.min(room)]);
            reader.consume(take);
            if end.is_some() || line.len() >= STDERR_LINE_BYTES {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                tracing::debug!(service = %svc, pid, "stderr: {text}");
                ring.push(text);
                line.clear();
                if end.is_none() {
                    // The rest of an overlong line is dropped.
                    loop {
                        let buf = match reader.fill_buf().await {
                            Ok([]) | Err(_) => return,
                            Ok(buf) => buf,
                        };
                        match buf.iter().position(|b| *b == b'\n') {
                            Some(i) => {
                                reader.consume(i + 1);
                                break;
                            }
                            None => {
                                let n = buf.len();
                                reader.consume(n);
                            }
                        }
                    }
                }
            }
        }
    });
    // The one task that reaps the child, then clears what is left of its group.
    let reaped = Arc::clone(&handle);
    let svc = service.to_string();
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => describe_status(s),
            Err(e) => format!("wait failed: {e}"),
        };
        {
            let mut alive = reaped.alive.lock().unwrap_or_else(|p| p.into_inner());
            // The group outlives its leader while a grandchild holds it, so its id is
            // not reused yet: this reaches only what the child left behind.
            kill_group(pid, libc::SIGKILL);
            *alive = false;
        }
        tracing::info!(service = %svc, pid, status = %status, "stdio server exited");
        let _ = tx.send(Some(status));
    });
    Ok(Spawned {
        child: handle,
        stdout,
        stdin,
    })
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

#[allow(unsafe_code)] // SAFETY notes below; the only unsafe code besides trim.rs
fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: runs in the forked child before exec; prctl and getppid are
    // async-signal-safe and touch no memory of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The gateway died between fork and prctl: nobody would kill this child.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("the gateway exited"));
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn kill_group(pgid: u32, signal: i32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return; // never the whole session or init
    }
    // SAFETY: kill has no memory preconditions; a negative pid names a process group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

#[allow(unsafe_code)]
fn clock_and_page() -> (u64, u64) {
    // SAFETY: sysconf only reads system constants.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (
        u64::try_from(hz).unwrap_or(100),
        u64::try_from(page).unwrap_or(4096),
    )
}

#[cfg(test)]
mod tests {
    //! Spawning real children (`sh`): process group and reaping, the stderr ring's
    //! bounds, the restart budget, and validation.

    use super::*;

    fn sh(script: &str) -> Command {
        Command {
            command: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::from([("SECRET".into(), "hunter2".into())]),
            cwd: None,
        }
    }

    #[tokio::test]
    async fn a_child_is_reaped_and_its_stderr_kept_in_bounds() {
        let p = Process::new(sh(
            "head -c 300000 /dev/zero | tr '\\0' x >&2; echo >&2; echo last line >&2; echo $SECRET-$GATEWAY_TOKEN >&2; exit 3",
        ));
        let s = p.spawn("t").expect("spawn");
        let status = s.child.wait().await;
        assert_eq!(status, "exit code 3");
        // The reaper ran: no such process any more.
        // Reaped: no process (not even a zombie) has that pid any more.
        assert!(!std::path::Path::new(&format!("/proc/{}", s.child.pid)).exists());
        // Wait for the stderr task to drain.
        for _ in 0..100 {
            if p.stderr().iter().any(|l| l.starts_with("hunter2")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lines = p.stderr();
        assert!(
            lines.iter().all(|l| l.len() <= STDERR_LINE_BYTES),
            "{lines:?}"
        );
        assert!(lines.contains(&"last line".to_string()), "{lines:?}");
        // Only the command's env and the inherited names reach the child.
        assert!(lines.contains(&"hunter2-".to_string()), "{lines:?}");
        // What `/services` shows names the variable, never its value.
        let view = p.view();
        assert_eq!(view.env, vec!["SECRET".to_string()]);
        assert!(!format!("{:?} {}", p.command, view.command).contains("hunter2"));
    }

    #[tokio::test]
    async fn the_budget_parks_a_crashing_process_until_unparked() {
        let p = Process::new(sh("exit 1"));
        for _ in 0..=RESTART_BUDGET {
            let s = p.spawn("t").expect("within budget");
            s.child.wait().await;
        }
        let refused = p.spawn("t").err().expect("budget spent");
        assert!(
            refused.starts_with("failed: restarted 5 times"),
            "{refused}"
        );
        assert!(matches!(p.parked(), Some(Parked::Failed(_))));
        p.unpark();
        let s = p.spawn("t").expect("an operator's start");
        s.child.wait().await;
        assert_eq!(p.view().restarts, RESTART_BUDGET as u64 + 1);
    }

    #[tokio::test]
    async fn stop_ends_the_whole_group_even_when_sigterm_is_ignored() {
        let p = Process::new(sh("trap '' TERM; sleep 600 & echo $! >&2; wait"));
        let s = p.spawn("t").expect("spawn");
        let mut grandchild = None;
        for _ in 0..100 {
            grandchild = p.stderr().first().and_then(|l| l.parse::<u32>().ok());
            if grandchild.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let grandchild = grandchild.expect("grandchild pid");
        p.park();
        p.kill().await;
        assert!(s.child.wait().await.starts_with("killed by signal"));
        assert_eq!(p.parked(), Some(Parked::Stopped));
        assert!(p.spawn("t").is_err());
        // The grandchild (same group) is gone too (a zombie awaiting its reaper counts
        // as gone; a signal takes a moment to land).
        let alive = || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .is_ok_and(|s| !s.contains(") Z "))
        };
        for _ in 0..100 {
            if !alive() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(), "grandchild {grandchild} survived the stop");
    }

    #[tokio::test]
    async fn a_quiet_child_leaves_no_last_exit_whether_it_ended_before_or_after() {
        // Each child exits with its own code: 10, 11, 12.
        let dir = tempfile::tempdir().expect("tempdir");
        let count = dir.path().join("n");
        let p = Process::new(sh(&format!(
            "n=$(cat {count:?} 2>/dev/null || echo 0); echo $((n+1)) > {count:?}; exit $((n+10))"
        )));
        let run = |quiet_first: bool| {
            let s = p.spawn("t").expect("spawn");
            let p = &p;
            async move {
                if quiet_first {
                    p.quiet(&s.child);
                }
                let status = s.child.wait().await;
                p.exited(&s.child, &status);
                s.child
            }
        };
        // Marked quiet before it ends: its end is not recorded.
        run(true).await;
        assert_eq!(p.view().last_exit, None);
        // An end that is recorded stays recorded.
        run(false).await;
        assert_eq!(p.view().last_exit.as_deref(), Some("exit code 11"));
        // Ended (its session dropped) before it was marked quiet: the record is taken
        // back, and the earlier one stands.
        let child = run(false).await;
        assert_eq!(p.view().last_exit.as_deref(), Some("exit code 12"));
        p.quiet(&child);
        assert_eq!(p.view().last_exit.as_deref(), Some("exit code 11"));
    }

    #[tokio::test]
    async fn a_dropped_process_takes_its_child_along() {
        let p = Process::new(sh("trap '' TERM; exec sleep 600"));
        let s = p.spawn("t").expect("spawn");
        drop(p);
        assert!(s.child.wait().await.starts_with("killed by signal"));
    }

    #[tokio::test]
    async fn no_second_child_starts_while_the_first_is_stopping() {
        let p = Arc::new(Process::new(sh(
            "trap '' TERM; while true; do sleep 0.1; done",
        )));
        let s = p.spawn("t").expect("spawn");
        let stopping = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.kill().await }
        });
        // While it is stopping (it ignores SIGTERM: 0.5 s + 3 s until SIGKILL), a start
        // is refused rather than running a second child beside it.
        tokio::time::sleep(Duration::from_millis(700)).await;
        p.unpark();
        let refused = p.spawn("t").err().expect("refused while stopping");
        assert!(refused.contains("still stopping"), "{refused}");
        stopping.await.expect("stop task");
        assert!(s.child.wait().await.starts_with("killed by signal"));
        let next = p.spawn("t").expect("starts once the first is gone");
        p.kill().await;
        next.child.wait().await;
    }

    #[test]
    fn commands_are_validated() {
        let ok = sh("true");
        assert!(ok.validate().is_ok());
        for bad in [
            Command {
                command: " ".into(),
                ..ok.clone()
            },
            Command {
                cwd: Some("relative".into()),
                ..ok.clone()
            },
            Command {
                args: vec!["a".into(); MAX_ARGS + 1],
                ..ok.clone()
            },
            Command {
                env: BTreeMap::from([("A=B".into(), "x".into())]),
                ..ok.clone()
            },
            Command {
                args: vec!["a\0b".into()],
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(ok.describe(), "sh -c true");
    }
}
