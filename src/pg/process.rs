//! The one place that runs PostgreSQL's programs.
//!
//! Every child: gets a clean environment (no inherited `PGPASSWORD`, `PGSERVICE`, locale), is
//! killed when its handle is dropped (a cancelled step never leaves a `pg_dump` running), is
//! bounded by a timeout, and has a non-zero exit turned into a typed error carrying the tail of
//! its stderr. A pipeline whose producer failed must never look successful
//! (backup-practice §4 item 8: "exit code lost in a pipe").

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// How much of a child's stderr we keep for the error message.
const STDERR_TAIL: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{program} not found; install the PostgreSQL client of the server's major version or set PG_BIN_DIR")]
    NotFound { program: String },
    #[error("{program} is not executable: permission denied")]
    PermissionDenied { program: String },
    #[error("{program} did not finish within {after:?} and was killed")]
    Timeout { program: String, after: Duration },
    #[error("{program} failed ({status}): {stderr}")]
    Status {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{program}: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// A PostgreSQL program to run: built up, then [`PgCommand::spawn`]ed.
#[derive(Debug)]
pub struct PgCommand {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
    stdin: bool,
    stdout: bool,
}

impl PgCommand {
    pub fn new(program: PathBuf, timeout: Duration) -> Self {
        Self {
            program,
            args: Vec::new(),
            env: Vec::new(),
            timeout,
            stdin: false,
            stdout: false,
        }
    }

    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    #[must_use]
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn envs(mut self, env: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        self.env.extend(env);
        self
    }

    /// Pipe the child's stdin (for `psql`/`pg_restore` fed from a stream).
    #[must_use]
    pub fn piped_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// Pipe the child's stdout (for `pg_dump` streaming into our writer).
    #[must_use]
    pub fn piped_stdout(mut self) -> Self {
        self.stdout = true;
        self
    }

    fn name(&self) -> String {
        self.program.file_name().map_or_else(
            || self.program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Starts the program.
    ///
    /// # Errors
    /// The program is missing or cannot be executed.
    pub fn spawn(self) -> Result<Running, ProcessError> {
        let name = self.name();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            // English, unlocalised messages: they end up in error_message and in our matching.
            .env("LC_ALL", "C")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if self.stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ProcessError::NotFound {
                program: self.program.display().to_string(),
            },
            std::io::ErrorKind::PermissionDenied => ProcessError::PermissionDenied {
                program: self.program.display().to_string(),
            },
            _ => ProcessError::Io {
                program: name.clone(),
                source: e,
            },
        })?;
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_tail(s)));
        Ok(Running {
            name,
            child,
            stderr,
            timeout: self.timeout,
            deadline: tokio::time::Instant::now() + self.timeout,
        })
    }

    /// Runs to completion and returns stdout (for small outputs such as `pg_restore -l`).
    ///
    /// # Errors
    /// See [`Running::wait`].
    pub async fn output(self) -> Result<Vec<u8>, ProcessError> {
        let mut running = self.piped_stdout().spawn()?;
        let mut stdout = running.take_stdout();
        let mut buf = Vec::new();
        let name = running.name.clone();
        let read = async {
            stdout
                .read_to_end(&mut buf)
                .await
                .map_err(|source| ProcessError::Io {
                    program: name,
                    source,
                })
        };
        match tokio::time::timeout_at(running.deadline, read).await {
            Ok(r) => r?,
            Err(_) => return Err(running.kill_for_timeout().await),
        };
        running.wait().await?;
        Ok(buf)
    }
}

/// A started child. Dropping it kills the process.
pub struct Running {
    name: String,
    child: Child,
    stderr: Option<JoinHandle<String>>,
    timeout: Duration,
    deadline: tokio::time::Instant,
}

impl Running {
    /// The child's stdout, when [`PgCommand::piped_stdout`] was set.
    ///
    /// # Panics
    /// If stdout was not piped or was taken already: a programming error.
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout piped once")
    }

    /// The child's stdin, when [`PgCommand::piped_stdin`] was set.
    ///
    /// # Panics
    /// If stdin was not piped or was taken already: a programming error.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin piped once")
    }

    /// When the child will be killed.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Waits for exit; any non-zero exit or signal is an error.
    ///
    /// # Errors
    /// Timeout (the child is killed), non-zero exit, or I/O failure.
    pub async fn wait(mut self) -> Result<(), ProcessError> {
        let status = match tokio::time::timeout_at(self.deadline, self.child.wait()).await {
            Ok(status) => status.map_err(|source| ProcessError::Io {
                program: self.name.clone(),
                source,
            })?,
            Err(_) => return Err(self.kill_for_timeout().await),
        };
        let stderr = self.stderr_text().await;
        if status.success() {
            if !stderr.trim().is_empty() {
                tracing::debug!(program = %self.name, stderr = %stderr.trim(), "child wrote to stderr");
            }
            Ok(())
        } else {
            Err(ProcessError::Status {
                program: self.name.clone(),
                status: describe(status),
                stderr: stderr.trim().to_owned(),
            })
        }
    }

    /// Kills the child now (cancellation, or the consumer failed).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    async fn kill_for_timeout(&mut self) -> ProcessError {
        let _ = self.child.kill().await;
        ProcessError::Timeout {
            program: self.name.clone(),
            after: self.timeout,
        }
    }

    async fn stderr_text(&mut self) -> String {
        match self.stderr.take() {
            Some(handle) => handle.await.unwrap_or_default(),
            None => String::new(),
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".to_owned(),
    }
}

/// Reads a stream to its end, keeping only the last [`STDERR_TAIL`] bytes.
async fn read_tail(mut r: impl AsyncRead + Unpin) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL * 2 {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
    if tail.len() > STDERR_TAIL {
        tail.drain(..tail.len() - STDERR_TAIL);
    }
    String::from_utf8_lossy(&tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_program_is_not_found() {
        let err = PgCommand::new("/nonexistent/pg_dump".into(), Duration::from_secs(5))
            .spawn()
            .err()
            .unwrap();
        assert!(matches!(err, ProcessError::NotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn non_zero_exit_carries_stderr() {
        let err = PgCommand::new("/bin/sh".into(), Duration::from_secs(5))
            .args([
                "-c",
                "echo 'pg_dump: error: no matching tables' >&2; exit 1",
            ])
            .output()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("exit code 1") && text.contains("no matching tables"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_hung_child_is_killed_at_the_deadline() {
        let err = PgCommand::new("/bin/sh".into(), Duration::from_millis(200))
            .args(["-c", "sleep 30"])
            .output()
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn children_do_not_inherit_the_password_environment() {
        std::env::set_var("PGPASSWORD", "leak");
        let out = PgCommand::new("/bin/sh".into(), Duration::from_secs(5))
            .args(["-c", "echo \"[$PGPASSWORD]\""])
            .output()
            .await
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap().trim(), "[]");
    }
}
