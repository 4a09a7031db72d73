//! Operator commands: the same code paths as the Inngest jobs, run once from the shell.
//!
//! One file per command. Each command calls into the use cases (`crate::backup`,
//! `crate::recovery`, `crate::restore`) in one place, prints a human summary (or nothing with
//! `--json`) and returns a JSON value that [`run`] prints as the one document on stdout.
//! Failures carry their exit code ([`Failure`]); logs always go to stderr.

mod backup;
mod check;
mod config;
mod context;
mod format;
mod info;
mod list;
mod progress;
mod prune;
mod queries;
mod reads;
mod restore;
mod restores;
mod serve;
mod verify;

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::cli::{Cli, Command};
use crate::settings::{Need, Settings};

pub use backup::take_backup;
pub use context::Ctx;

/// Why a command did not succeed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Exit 1: the work failed (the message says what and what to do).
    Failed(String),
    /// Exit 2: wrong usage or configuration; nothing was done.
    Usage(String),
    /// Exit 3: refused because it could destroy data; nothing was done.
    Refused(String),
    /// A failure whose `--json` document says more than the message (e.g. every `check`).
    Detailed(Box<Failure>, Value),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Self::Failed(_) => 1,
            Self::Usage(_) => 2,
            Self::Refused(_) => 3,
            Self::Detailed(inner, _) => inner.code(),
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::Failed(m) | Self::Usage(m) | Self::Refused(m) => m,
            Self::Detailed(inner, _) => inner.message(),
        }
    }

    /// A failure from an error chain, each cause said once.
    pub fn failed(e: &dyn std::error::Error) -> Self {
        Self::Failed(one_line(e))
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(one_line(e.as_ref()))
    }
}

/// The error and its causes on one line, skipping a cause whose text is already said: error
/// types that embed their source in their own message would otherwise print it twice
/// (`database "x" does not exist: database "x" does not exist`).
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text.replace('\n', " ")
}

pub type Outcome = Result<Value, Failure>;

/// Runs a parsed command line: loads only the settings the command needs, runs it, prints the
/// result (one JSON document with `--json`), and returns the documented exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Serve);
    let need = match command {
        Command::Serve => Need::Serve,
        _ => Need::Operator,
    };
    let out = Output {
        json: cli.json,
        quiet: cli.quiet || cli.json,
    };
    let result = match Settings::load_for(cli.config.as_deref(), need) {
        Err(e) => Err(Failure::Usage(e.to_string())),
        Ok(settings) => {
            crate::telemetry::init(settings.log_format);
            dispatch(command, settings, out).await
        }
    };
    match result {
        Ok(value) => {
            if out.json {
                out.document(&value);
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("riveredge-backup: {}", failure.message());
            if out.json {
                let mut doc = match &failure {
                    Failure::Detailed(_, doc) => doc.clone(),
                    _ => json!({}),
                };
                doc["ok"] = json!(false);
                doc["exit_code"] = json!(failure.code());
                doc["error"] = json!(failure.message());
                out.document(&doc);
            }
            ExitCode::from(failure.code())
        }
    }
}

async fn dispatch(command: Command, settings: Settings, out: Output) -> Outcome {
    match command {
        Command::Serve => serve::serve(settings).await,
        Command::Config => Ok(config::config(&settings, out)),
        Command::Check => check::check(settings, out).await,
        other => {
            let name = other.name();
            let ctx = Ctx::open(settings, name, out).await?;
            let result = match other {
                Command::Migrate => {
                    // Ctx::open applied the migrations.
                    let database = ctx.state.conn.display_url();
                    out.line(format!("migrations applied to {database}"));
                    Ok(json!({ "ok": true, "database": database }))
                }
                Command::Backup(args) => backup::backup(&ctx, args).await,
                Command::Restore(args) => restore::restore(&ctx, args).await,
                Command::Verify(a) => verify::verify(&ctx, &a.uuid).await,
                Command::List(args) => list::list(&ctx, &args).await,
                Command::Info(a) => info::info(&ctx, &a.uuid).await,
                Command::Restores(args) => restores::restores(&ctx, &args).await,
                Command::Drill(a) => verify::drill(&ctx, &a.uuid).await,
                Command::Prune(args) => prune::prune(&ctx, &args).await,
                Command::Policy => prune::policy(&ctx).await,
                Command::Serve | Command::Config | Command::Check => unreachable!("handled above"),
            };
            ctx.close().await;
            result
        }
    }
}

/// Where results go: human lines on stdout, or (with `--json`) nothing but the final document.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    /// No progress display.
    pub quiet: bool,
}

impl Output {
    /// A human line on stdout (suppressed under `--json`, whose stdout is one document).
    pub fn line(&self, text: impl AsRef<str>) {
        if !self.json {
            println!("{}", text.as_ref());
        }
    }

    /// A warning for the human reader; always on stderr, so `--json` stays parseable.
    pub fn warn(&self, text: impl AsRef<str>) {
        eprintln!("warning: {}", text.as_ref());
    }

    fn document(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database error while {context}: {source}")]
    struct Embedding {
        context: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = Embedding {
            context: "connecting",
            source: std::io::Error::other("database \"x\" does not exist"),
        };
        assert_eq!(
            one_line(&e),
            "database error while connecting: database \"x\" does not exist"
        );
        let chained = anyhow::Error::new(std::io::Error::other("refused")).context("connecting");
        assert_eq!(Failure::from(chained).message(), "connecting: refused");
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(Failure::Failed(String::new()).code(), 1);
        assert_eq!(Failure::Usage(String::new()).code(), 2);
        assert_eq!(Failure::Refused(String::new()).code(), 3);
        assert!(crate::cli::EXIT_CODES.contains("0 ok, 1 failed, 2 usage"));
    }
}
