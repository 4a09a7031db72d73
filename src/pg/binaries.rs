//! Finding PostgreSQL's programs, of the right major version.
//!
//! `pg_dump` refuses servers newer than itself, and an older `pg_restore` may not read a newer
//! archive; containerised schedulers regularly ship a client older than the server
//! (backup-practice §4 item 9). So we look for the programs beside the server of the same major
//! version (`/usr/lib/postgresql/<major>/bin`, Debian's layout), then `PG_BIN_DIR`, then `PATH`,
//! and check the version we found.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where PostgreSQL's programs live, and their major version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    /// `None`: rely on `PATH`.
    dir: Option<PathBuf>,
    pub major: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    #[error("pg_dump was not found (looked in {looked}); install postgresql-client-{want} or set PG_BIN_DIR")]
    NotFound { looked: String, want: String },
    #[error("pg_dump in {dir} is version {found}, older than the server ({server}); install postgresql-client-{server} or set PG_BIN_DIR to its bin directory")]
    TooOld {
        dir: String,
        found: u32,
        server: u32,
    },
    #[error("cannot read the version of {program}: {detail}")]
    Version { program: String, detail: String },
}

const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

impl PgBinaries {
    /// Finds the programs for a server of major version `server_major` (when known).
    ///
    /// # Errors
    /// No `pg_dump` anywhere, or only one older than the server.
    pub fn locate(
        configured: Option<&Path>,
        server_major: Option<u32>,
    ) -> Result<Self, BinariesError> {
        let mut candidates: Vec<Option<PathBuf>> = Vec::new();
        if let Some(dir) = configured {
            candidates.push(Some(dir.to_owned()));
        } else {
            if let Some(major) = server_major {
                candidates.push(Some(
                    Path::new(DEBIAN_ROOT).join(major.to_string()).join("bin"),
                ));
            }
            candidates.extend(
                debian_versions()
                    .into_iter()
                    .rev()
                    .map(|(_, dir)| Some(dir)),
            );
            candidates.push(None);
        }
        let mut looked = Vec::new();
        for dir in candidates {
            let program = program_path(dir.as_deref(), "pg_dump");
            looked.push(
                dir.as_ref()
                    .map_or_else(|| "PATH".to_owned(), |d| d.display().to_string()),
            );
            let Ok(major) = tool_major(&program) else {
                continue;
            };
            if let Some(server) = server_major {
                if major < server {
                    if configured.is_some() {
                        return Err(BinariesError::TooOld {
                            dir: looked.last().cloned().unwrap_or_default(),
                            found: major,
                            server,
                        });
                    }
                    continue;
                }
            }
            return Ok(Self { dir, major });
        }
        Err(BinariesError::NotFound {
            looked: looked.join(", "),
            want: server_major.map_or_else(|| "<major>".to_owned(), |m| m.to_string()),
        })
    }

    /// Full path (or bare name on `PATH`) of one of the programs.
    pub fn program(&self, name: &str) -> PathBuf {
        program_path(self.dir.as_deref(), name)
    }

    /// The directory, when not relying on `PATH`.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

fn program_path(dir: Option<&Path>, name: &str) -> PathBuf {
    dir.map_or_else(|| PathBuf::from(name), |d| d.join(name))
}

/// Installed Debian server versions, ascending.
fn debian_versions() -> Vec<(u32, PathBuf)> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_dump").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found
}

/// Major version printed by `<program> --version`, e.g. `pg_dump (PostgreSQL) 15.18 (Debian …)`.
///
/// # Errors
/// The program cannot run or prints something unexpected.
pub fn tool_major(program: &Path) -> Result<u32, BinariesError> {
    let err = |detail: String| BinariesError::Version {
        program: program.display().to_string(),
        detail,
    };
    let out = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_major(&text).ok_or_else(|| err(format!("unexpected output {:?}", text.trim())))
}

fn parse_major(version_output: &str) -> Option<u32> {
    let version = version_output
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("psql (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn a_configured_directory_without_pg_dump_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = PgBinaries::locate(Some(dir.path()), Some(15)).unwrap_err();
        assert!(
            err.to_string().contains("install postgresql-client-15"),
            "{err}"
        );
    }
}
