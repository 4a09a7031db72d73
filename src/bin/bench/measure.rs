//! Measuring child processes: `/usr/bin/time` around each command (wall, CPU, peak RSS),
//! samples and their medians, and small file-system helpers for sizes and clean-up.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::target::Target;

/// One measured execution.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    pub(crate) wall_s: f64,
    /// user + sys of the process tree (`/usr/bin/time`).
    pub(crate) cpu_s: f64,
    /// Largest resident set of any process in the tree, in KiB.
    pub(crate) rss_kib: u64,
    /// CPU of the PostgreSQL backends that served it (own cluster only).
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) output_bytes: Option<u64>,
}

/// All samples of one operation, or why it could not run.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpStats {
    pub(crate) samples: Vec<Sample>,
    pub(crate) failure: Option<String>,
    pub(crate) note: Option<String>,
}

impl OpStats {
    pub(crate) fn available(&self) -> bool {
        self.failure.is_none()
    }

    pub(crate) fn median(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        let mut values: Vec<f64> = self.samples.iter().filter_map(f).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        Some(if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        })
    }

    pub(crate) fn wall(&self) -> Option<f64> {
        if !self.available() {
            return None;
        }
        self.median(|s| Some(s.wall_s))
    }

    pub(crate) fn output(&self) -> Option<f64> {
        self.median(|s| s.output_bytes.map(|b| b as f64))
    }

    pub(crate) fn rss_max(&self) -> Option<u64> {
        self.samples.iter().map(|s| s.rss_kib).max()
    }

    pub(crate) fn record(&mut self, result: anyhow::Result<Sample>) -> Option<Sample> {
        match result {
            Ok(sample) => {
                self.samples.push(sample);
                Some(sample)
            }
            Err(e) => {
                if self.failure.is_none() {
                    self.failure = Some(format!("{e:#}"));
                }
                None
            }
        }
    }
}

/// What a measured child printed.
pub(crate) struct ChildOutput {
    pub(crate) sample: Sample,
    pub(crate) stdout: String,
}

/// Runs `program args` under `/usr/bin/time` and measures it.
pub(crate) async fn measure(
    target: &Target,
    work_dir: &Path,
    program: &Path,
    args: &[OsString],
    env: &[(String, String)],
) -> anyhow::Result<ChildOutput> {
    let time_file = work_dir.join("time.out");
    let mut cmd = tokio::process::Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&time_file)
        .arg(program)
        .args(args)
        .envs(target.child_env())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let server_before = target.server_cpu();
    let started = Instant::now();
    let out = cmd.output().await.with_context(|| {
        format!(
            "running {} under /usr/bin/time (apt-get install time)",
            program.display()
        )
    })?;
    let wall_s = started.elapsed().as_secs_f64();
    // Give the postmaster a moment to reap the backends of the child's connections.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let server_after = target.server_cpu();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut msg: String = stderr
            .lines()
            .filter(|l| !l.starts_with("Command exited with non-zero status"))
            .collect::<Vec<_>>()
            .join(" ")
            .trim()
            .to_owned();
        if msg.is_empty() {
            msg = format!("exit status {}", out.status);
        }
        if msg.len() > 300 {
            msg.truncate(300);
            msg.push('…');
        }
        bail!("{msg}");
    }
    let timing = tokio::fs::read_to_string(&time_file)
        .await
        .with_context(|| format!("reading {}", time_file.display()))?;
    // The last line holds the format; earlier lines may carry a "Command terminated" notice.
    let fields: Vec<f64> = timing
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [_, user, sys, rss] = fields[..] else {
        bail!("unexpected /usr/bin/time output: {timing:?}");
    };
    Ok(ChildOutput {
        sample: Sample {
            wall_s,
            cpu_s: user + sys,
            rss_kib: rss as u64,
            server_cpu_s: server_before
                .zip(server_after)
                .map(|(b, a)| (a - b).max(0.0)),
            output_bytes: None,
        },
        stdout,
    })
}

pub(crate) fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Bytes on disk of a file or directory tree (apparent sizes, as `du --apparent-size -b`).
pub(crate) fn disk_size(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += disk_size(&entry?.path())?;
    }
    Ok(total)
}

pub(crate) fn remove_path(path: &Path) {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("riveredge-bench: could not remove {}: {e}", path.display());
        }
    }
}

/// First UUID in a command's output (the CLI prints the new backup's uuid and a result line).
pub(crate) fn find_uuid(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let shape = |i: usize, c: u8| match i {
        8 | 13 | 18 | 23 => c == b'-',
        _ => c.is_ascii_hexdigit(),
    };
    (0..bytes.len().saturating_sub(35)).find_map(|start| {
        let candidate = &bytes[start..start + 36];
        let boundary_before = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let boundary_after = bytes
            .get(start + 36)
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        (boundary_before
            && boundary_after
            && candidate.iter().enumerate().all(|(i, c)| shape(i, *c)))
        .then(|| String::from_utf8_lossy(candidate).into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_uuid() {
        let out = "backup 3f2b8c1e-9d4a-4b7e-8c2f-1a2b3c4d5e6f created\nresult: ok";
        assert_eq!(
            find_uuid(out).as_deref(),
            Some("3f2b8c1e-9d4a-4b7e-8c2f-1a2b3c4d5e6f")
        );
        assert_eq!(find_uuid("no uuid here"), None);
        assert_eq!(find_uuid("x3f2b8c1e-9d4a-4b7e-8c2f-1a2b3c4d5e6f"), None);
    }

    #[test]
    fn medians() {
        let mut op = OpStats::default();
        for w in [3.0, 1.0, 2.0] {
            op.samples.push(Sample {
                wall_s: w,
                ..Sample::default()
            });
        }
        assert_eq!(op.wall(), Some(2.0));
    }
}
