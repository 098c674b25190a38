//! Real processes for fault tests: the workspace's own binaries (`gateway`,
//! `shopping-service`, `user-service`), started on free loopback ports and killed with
//! SIGKILL or stopped with SIGTERM. `cargo test --workspace` builds these binaries
//! before any test runs (each package has integration tests).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

use super::{TOKEN, http, service_token, wait_until};

/// Builds the stack's binaries once per test run, so a test never runs a stale one
/// (`cargo test -p mcp-federation` alone would not rebuild them).
fn build_binaries() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "gateway",
                "-p",
                "shopping-service",
                "-p",
                "user-service",
                // conformance-fixture: the stdio server of the stdio upstream tests.
                "-p",
                "conformance",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the stack's binaries failed");
    });
}

/// Keeps the `GATEWAY_*` settings of the test's own environment from `cmd`: a child
/// gateway is configured by what its test says only.
pub fn without_gateway_settings(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEWAY_") {
            cmd.env_remove(k);
        }
    }
}

/// `target/<profile>/<name>`, next to this test binary's `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    build_binaries();
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds every binary)",
        path.display()
    );
    path
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A running component known only by its base URL (cloneable, for concurrent tasks).
#[derive(Clone)]
pub struct Url(pub String);

impl super::Target for Url {
    fn base_url(&self) -> String {
        self.0.clone()
    }
}

/// A child process of the stack; killed when dropped.
pub struct Proc {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
}

impl Proc {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL: no shutdown code runs (a crash).
    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within 15 s of SIGTERM", self.name))
            .expect("wait")
            .code()
    }

    async fn wait_healthy(&self) {
        let url = format!("{}/health", self.base());
        wait_until(
            &format!("{} to answer /health", self.name),
            Duration::from_secs(20),
            || async { matches!(http().get(&url).send().await, Ok(r) if r.status().is_success()) },
        )
        .await;
    }
}

async fn start(name: &'static str, port: u16, args: &[String], envs: &[(&str, String)]) -> Proc {
    start_logging(name, port, args, envs, None).await
}

async fn start_logging(
    name: &'static str,
    port: u16,
    args: &[String],
    envs: &[(&str, String)],
    log: Option<std::fs::File>,
) -> Proc {
    let mut cmd = Command::new(binary(name));
    cmd.args(args)
        .env_remove("MCP_BEARER_TOKEN")
        .env_remove("SHOPPING_SERVICE_TOKEN")
        .env_remove("USER_SERVICE_TOKEN")
        .env(
            "RUST_LOG",
            std::env::var("E2E_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("MCP_BEARER_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(match &log {
            Some(file) => Stdio::from(file.try_clone().expect("log file")),
            None if std::env::var_os("E2E_CHILD_LOG").is_some() => Stdio::inherit(),
            None => Stdio::null(),
        })
        .stderr(match log {
            Some(file) => Stdio::from(file),
            None => Stdio::inherit(),
        })
        .kill_on_drop(true);
    without_gateway_settings(cmd.as_std_mut());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
    let proc = Proc {
        name,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
    };
    proc.wait_healthy().await;
    proc
}

/// The gateway binary with exactly `args` and `envs` (besides the test token), which
/// listens on `port` by what they say.
pub async fn gateway_args(port: u16, args: &[String], envs: &[(&str, String)]) -> Proc {
    start("gateway", port, args, envs).await
}

/// A demo service binary with exactly `args` and `envs`, listening on `port`.
pub async fn service_args(
    name: &'static str,
    port: u16,
    args: &[String],
    envs: &[(&str, String)],
) -> Proc {
    start(name, port, args, envs).await
}

/// The gateway on `port` with its store at `store`, fast health checks.
pub async fn gateway(port: u16, store: &Path, envs: &[(&str, String)]) -> Proc {
    gateway_logging(port, store, envs, None).await
}

/// Like [`gateway`], its output (log lines and errors) going to `log` when given.
pub async fn gateway_logging(
    port: u16,
    store: &Path,
    envs: &[(&str, String)],
    log: Option<std::fs::File>,
) -> Proc {
    let mut all = vec![
        ("GATEWAY_HEALTH_INTERVAL_MS", "300".to_string()),
        ("GATEWAY_CONNECT_TIMEOUT_MS", "2000".to_string()),
        ("GATEWAY_CALL_TIMEOUT_MS", "5000".to_string()),
    ];
    all.extend(envs.iter().cloned());
    start_logging(
        "gateway",
        port,
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--store".into(),
            store.display().to_string(),
        ],
        &all,
        log,
    )
    .await
}

/// A demo service (`shopping-service` or `user-service`) on `port`, registering with
/// the gateway on `gateway_port` unless `register` is false; its `/mcp` accepts
/// [`service_token`]`(name)`, set in its own variable.
pub async fn service(name: &'static str, port: u16, gateway_port: u16, register: bool) -> Proc {
    let variable = token_variable(name);
    service_with(
        name,
        port,
        gateway_port,
        register,
        &[(variable, service_token(name))],
    )
    .await
}

/// Like [`service`], with `envs` as the only extra environment: without the service's
/// own token variable, it accepts the gateway's token (`MCP_BEARER_TOKEN`, [`TOKEN`]).
pub async fn service_with(
    name: &'static str,
    port: u16,
    gateway_port: u16,
    register: bool,
    envs: &[(&str, String)],
) -> Proc {
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--gateway-url".into(),
        format!("http://127.0.0.1:{gateway_port}"),
    ];
    if !register {
        args.push("--no-register".into());
    }
    start(name, port, &args, envs).await
}

/// The variable holding the token a demo service accepts on `/mcp`.
pub fn token_variable(name: &str) -> &'static str {
    match name {
        "shopping-service" => "SHOPPING_SERVICE_TOKEN",
        "user-service" => "USER_SERVICE_TOKEN",
        other => panic!("{other} is not a demo service"),
    }
}
