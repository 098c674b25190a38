//! A real PostgreSQL server for the cluster tests: `initdb` in a temporary directory,
//! `pg_ctl` on a free loopback port (trust authentication, loopback only, no fsync),
//! stopped when dropped. As root it runs as the `postgres` user (PostgreSQL refuses
//! root), through `runuser`. `.ci/run` installs Debian's PostgreSQL when it is missing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::procs::free_port;

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// `runuser -u postgres --` when running as root.
    user: Option<String>,
}

/// The directory of `initdb`: on the PATH, else Debian's newest
/// `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        && out.status.success()
    {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        if let Some(dir) = path.parent() {
            return dir.to_path_buf();
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).expect(
        "PostgreSQL's initdb is needed by the cluster tests: apt-get install postgresql (.ci/run does)",
    )
}

impl Postgres {
    /// Initializes and starts a server; panics with the server's log when it cannot.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        // SAFETY-free check of the effective user: root runs the server as `postgres`.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let user = root.then(|| "postgres".to_string());
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:", &dir.path().display().to_string()])
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown the PostgreSQL directory to postgres"
            );
        }
        let pg = Self {
            dir,
            bin,
            port: free_port(),
            user,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "gateway",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start_server();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut cmd = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}\n{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// Starts the server (again, after [`Self::stop`]) on its port; waits until it
    /// accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-o",
                &options,
                "-l",
                &self.log().display().to_string(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
    }

    /// Stops the server (fast: connections are closed), as an outage.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    /// A new, empty database; its URL (`postgres://gateway:...@127.0.0.1:PORT/NAME`).
    pub fn database(&self, name: &str) -> String {
        self.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "gateway",
                name,
            ],
        );
        self.url(name)
    }

    /// The URL of database `name` (trust authentication: the password is not checked,
    /// but is given as an operator would).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://gateway:secret@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL statement with psql; its output (unaligned, tuples only).
    pub fn sql(&self, database: &str, statement: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "gateway",
                "-d",
                database,
                "-At",
                "-c",
                statement,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {statement}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data().display().to_string();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = match &self.user {
            Some(user) => Command::new("runuser")
                .args(["-u", user, "--"])
                .arg(&program)
                .args(args)
                .output(),
            None => Command::new(&program).args(args).output(),
        };
    }
}
