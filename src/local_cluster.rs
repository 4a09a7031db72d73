//! A private, throwaway PostgreSQL cluster started from the installed server binaries.
//!
//! Used by `serve` when no `DATABASE_URL` is given (a newcomer sees the worker run at once), by
//! the test harness and by the benchmark. The cluster lives in a fresh temporary directory,
//! listens on a unix socket in that directory (trust auth; the directory is private) and on
//! `127.0.0.1:<free port>` with a password (so the password-file path is exercised for real).
//!
//! Cleanup must happen even when the owner dies without running destructors (a panicking test
//! binary, `kill -9`): a small watchdog process polls the owner's pid and stops the cluster and
//! removes its directory once the owner is gone. `Drop` does the same at once when it runs.
//!
//! `initdb` refuses to run as root, so as root the cluster runs as the `postgres` OS user that
//! Debian's server package creates.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::pg::PgBinaries;

/// Password of the cluster's superuser for TCP connections. The cluster is reachable only from
/// this machine and lives for one process; the value is not a secret worth protecting, but it
/// does make connections over TCP go through password authentication and `PGPASSFILE`.
const TCP_PASSWORD: &str = "rbk-local-only";

/// Settings for [`LocalCluster::start`]; the default suits tests (not durable, no extras).
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `false` turns off fsync and synchronous commit: fine for tests, wrong for benchmarks.
    pub durable: bool,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
}

/// A running throwaway cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct LocalCluster {
    root: PathBuf,
    data_dir: PathBuf,
    port: u16,
    bins: PgBinaries,
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    stopped: std::sync::atomic::AtomicBool,
}

impl LocalCluster {
    /// initdb + start. Blocks for a couple of seconds.
    ///
    /// # Errors
    /// Missing server binaries, no `postgres` user when run as root, or a server that fails to
    /// start (its log is included).
    pub fn start(bins: &PgBinaries, options: &ClusterOptions) -> anyhow::Result<Self> {
        for program in ["initdb", "pg_ctl", "postgres"] {
            if bins.dir().is_some() && !bins.program(program).exists() {
                bail!(
                    "{} is missing: the PostgreSQL server package is needed for a local cluster \
                     (apt-get install postgresql), or set DATABASE_URL",
                    bins.program(program).display()
                );
            }
        }
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .context("looking up the postgres user")?
                .context("running as root, a local cluster needs the 'postgres' OS user (created by apt-get install postgresql)")?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        // Short path: unix socket paths are limited to ~107 bytes.
        let root = tempfile::Builder::new()
            .prefix("rbk-pg-")
            .tempdir_in("/tmp")
            .context("creating the cluster directory")?
            .keep();
        let mut cluster = Self {
            data_dir: root.join("data"),
            root,
            port: free_port()?,
            bins: bins.clone(),
            run_as,
            stopped: std::sync::atomic::AtomicBool::new(false),
        };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&cluster.root, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        cluster.spawn_watchdog()?;
        cluster.initdb()?;
        // A port taken between free_port() and start: try a few others.
        let mut last = None;
        for _ in 0..5 {
            match cluster.pg_ctl_start(options) {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    last = Some(e);
                    cluster.port = free_port()?;
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("the cluster did not start")))
    }

    /// Superuser URL over the private unix socket (no password needed).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host={}&port={}",
            self.root.display(),
            self.port
        )
    }

    /// Superuser URL over TCP with password authentication.
    pub fn tcp_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{TCP_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bins.program(program));
        cmd.env_remove("PGPASSWORD")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let pwfile = self.root.join("pwfile");
        std::fs::write(&pwfile, TCP_PASSWORD)?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("running initdb")?;
        std::fs::remove_file(&pwfile).ok();
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn pg_ctl_start(&self, options: &ClusterOptions) -> anyhow::Result<()> {
        let mut server_opts = vec![
            format!("-p {}", self.port),
            "-c listen_addresses=127.0.0.1".to_owned(),
            format!("-c unix_socket_directories={}", self.root.display()),
            "-c max_connections=200".to_owned(),
            "-c shared_buffers=256MB".to_owned(),
            "-c max_wal_size=4GB".to_owned(),
        ];
        if !options.durable {
            server_opts.extend(
                [
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                ]
                .map(String::from),
            );
        }
        server_opts.extend(options.settings.iter().map(|(k, v)| format!("-c {k}={v}")));
        let log = self.root.join("server.log");
        use std::os::unix::process::CommandExt;
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &server_opts.join(" "), "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Own process group: a ctrl-c meant for us must not kill the server under in-flight
            // requests; our shutdown stops it in order.
            .process_group(0)
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "the local PostgreSQL did not start: {}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log_text
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        Ok(())
    }

    /// Stops the server at once and deletes its files. Idempotent.
    pub fn stop(&self) {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }

    /// A detached shell that stops the cluster once this process is gone.
    fn spawn_watchdog(&self) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let pg_ctl = self.bins.program("pg_ctl");
        let stop = match self.run_as {
            // runuser is util-linux, present wherever the server package is.
            Some(_) => format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                shell_quote(&pg_ctl),
                shell_quote(&self.data_dir)
            ),
            None => format!(
                "{} -D {} -m immediate stop",
                shell_quote(&pg_ctl),
                shell_quote(&self.data_dir)
            ),
        };
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; if [ -f {pidfile} ]; then {stop}; fi >/dev/null 2>&1; rm -rf {root}",
            pid = std::process::id(),
            pidfile = shell_quote(&self.data_dir.join("postmaster.pid")),
            root = shell_quote(&self.root),
        );
        Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the cluster watchdog")?;
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
