//! The Inngest protocol benchmark: our endpoint and the official Python SDK behind the same
//! signed first call, loaded with `wrk`, with latency, throughput and server RSS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use inngest::signature::unix_now;

use crate::report::{human_bytes, human_us, one_line};

use crate::ProtocolArgs;

/// Signing key shared by both protocol servers and the load generator. Test-only by design: it
/// protects nothing, but makes both SDKs do the full HMAC check on every request.
pub(crate) const BENCH_SIGNING_KEY: &str =
    "signkey-test-8f5e3a7c9b1d2e4f6a8c0b2d4e6f8a1c3e5b7d9f0a2c4e6b8d1f3a5c7e9b0d2f4a";
/// App and function ids of the protocol benchmark; the composite id is `bench-echo` on both sides.
pub(crate) const PROTO_APP_ID: &str = "bench";
pub(crate) const PROTO_FN_SLUG: &str = "echo";

/// Result of one wrk run (parsed from the Lua script's `RBK_RESULT` line).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WrkResult {
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) requests: f64,
    pub(crate) errors: f64,
}

#[derive(Debug, Default)]
pub(crate) struct ProtocolSide {
    pub(crate) name: &'static str,
    pub(crate) runs: Vec<WrkResult>,
    pub(crate) failure: Option<String>,
    /// Peak RSS of the server process during the runs (Python only: ours shares the bench process).
    pub(crate) rss_kib: Option<u64>,
}

impl ProtocolSide {
    pub(crate) fn median(&self, f: impl Fn(&WrkResult) -> f64) -> Option<f64> {
        let mut v: Vec<f64> = self.runs.iter().map(f).collect();
        if v.is_empty() || self.failure.is_some() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }
}

#[derive(Debug, Default)]
pub(crate) struct ProtocolReport {
    pub(crate) ours: ProtocolSide,
    pub(crate) python: ProtocolSide,
    pub(crate) connections: u32,
    pub(crate) threads: u32,
    pub(crate) duration_secs: u64,
    pub(crate) versions: String,
}

impl ProtocolReport {
    pub(crate) fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| Server | calls/s (median) | p50 latency | p99 latency | calls/s per run | errors |\n|---|---:|---:|---:|---|---:|"
        );
        for side in [&self.ours, &self.python] {
            match &side.failure {
                Some(f) => {
                    let _ = writeln!(
                        s,
                        "| {} | unavailable: {} | | | | |",
                        side.name,
                        one_line(f)
                    );
                }
                None => {
                    let per_run: Vec<String> =
                        side.runs.iter().map(|r| format!("{:.0}", r.rps)).collect();
                    let errors: f64 = side.runs.iter().map(|r| r.errors).sum();
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} | {} |",
                        side.name,
                        side.median(|r| r.rps)
                            .map_or("–".into(), |v| format!("{v:.0}")),
                        side.median(|r| r.p50_us).map_or("–".into(), human_us),
                        side.median(|r| r.p99_us).map_or("–".into(), human_us),
                        per_run.join(" / "),
                        errors
                    );
                }
            }
        }
        if let (Some(a), Some(b)) = (self.ours.median(|r| r.rps), self.python.median(|r| r.rps)) {
            let _ = writeln!(
                s,
                "\nRatio: ours {:.1}x the Python SDK's calls/s; p99 {:.3}x of its p99; p50 {:.3}x of its p50.",
                a / b,
                self.ours.median(|r| r.p99_us).unwrap_or(0.0) / self.python.median(|r| r.p99_us).unwrap_or(1.0),
                self.ours.median(|r| r.p50_us).unwrap_or(0.0) / self.python.median(|r| r.p50_us).unwrap_or(1.0),
            );
        }
        if let Some(rss) = self.python.rss_kib {
            let _ = writeln!(
                s,
                "\nPython server peak RSS after the runs: {}.",
                human_bytes(rss as f64 * 1024.0)
            );
        }
        s
    }
}

/// The JCS-canonical body of a first call (sorted keys, no whitespace), as the executor sends
/// it (inngest-protocol.md §1.4.3, §3.8): one small event, empty steps, attempt 0 of 4.
pub(crate) fn call_body() -> String {
    let event = r#"{"data":{"backup_uuid":"5b1d8e0c-7a52-4e1c-9a4f-2f6b3c1d0e9a","tenant_id":42},"id":"01HMCW5WZ7D3N0Q1B2C3D4E5F6","name":"bench/echo","ts":1705586500000,"user":{}}"#;
    format!(
        r#"{{"ctx":{{"attempt":0,"disable_immediate_execution":false,"env":"","fn_id":"6d9f2b1e-1c6a-5f5e-9a0e-3f0a1b2c3d4e","max_attempts":4,"qi_id":"","run_id":"01HMCW5X3Q8ZK2V9J6Y4T7R1PA","stack":{{"current":0,"stack":[]}},"step_id":"step","use_api":false}},"defers":{{}},"event":{event},"events":[{event}],"steps":{{}},"use_api":false,"version":-1}}"#
    )
}

/// Starts our endpoint in-process: cloud mode, the bench key, one function with one step.
pub(crate) async fn start_ours(
    key: inngest::SigningKey,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    use inngest::{App, Config, Ctx, Function, Trigger};
    let config = Config::cloud(PROTO_APP_ID, key);
    let echo = Function::new(PROTO_FN_SLUG, "Echo")
        .trigger(Trigger::event("bench/echo"))
        .retries(3)
        .handler(|ctx: Ctx| async move {
            let value: serde_json::Value = ctx
                .step
                .run("step-1", || async {
                    Ok::<_, inngest::Error>(serde_json::json!({"ok": true, "n": 1}))
                })
                .await?;
            Ok(value)
        });
    let app = App::new(config).register(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the Rust protocol server")?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let router = app.router();
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("riveredge-bench: the Rust protocol server stopped: {e}");
        }
    });
    Ok((format!("http://{addr}/api/inngest"), handle))
}

pub(crate) fn default_python() -> PathBuf {
    let venv = PathBuf::from("/tmp/rbk-bench-venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Starts `bench/python_app.py` under uvicorn (one worker, as RiverEdge runs it).
pub(crate) async fn start_python(
    python: &Path,
    bench_dir: &Path,
) -> anyhow::Result<(String, tokio::process::Child, String)> {
    let versions = tokio::process::Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m, sys; print('Python ' + sys.version.split()[0], *[f'{p} {m.version(p)}' for p in ('inngest','fastapi','uvicorn')], 'uvloop' if __import__('importlib').util.find_spec('uvloop') else 'no uvloop', 'httptools' if __import__('importlib').util.find_spec('httptools') else 'no httptools', sep=', ')",
        ])
        .output()
        .await
        .with_context(|| format!("running {}", python.display()))?;
    if !versions.status.success() {
        bail!(
            "{} lacks the Python SDK (pip install -r bench/requirements.txt): {}",
            python.display(),
            one_line(&String::from_utf8_lossy(&versions.stderr))
        );
    }
    let versions = String::from_utf8_lossy(&versions.stdout).trim().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port")?
        .port();
    let child = tokio::process::Command::new(python)
        .args([
            "-m",
            "uvicorn",
            "python_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args([
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ])
        .current_dir(bench_dir)
        .env("INNGEST_DEV", "0")
        .env("INNGEST_SIGNING_KEY", BENCH_SIGNING_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting uvicorn")?;
    let url = format!("http://127.0.0.1:{port}/api/inngest");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.get(&url).send().await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("uvicorn did not answer on {url} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((url, child, versions))
}

/// One signed call must come back as a 206 with a StepRun op, and a forged signature must be
/// refused: otherwise the load test would measure an error path.
pub(crate) async fn verify_endpoint(
    url: &str,
    key: &inngest::SigningKey,
    body: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let call_url = format!("{url}?fnId={PROTO_APP_ID}-{PROTO_FN_SLUG}&stepId=step");
    let response = client
        .post(&call_url)
        .header("Content-Type", "application/json")
        .header("X-Inngest-Signature", key.sign(body.as_bytes(), unix_now()))
        .body(body.to_owned())
        .send()
        .await
        .with_context(|| format!("calling {call_url}"))?;
    let status = response.status();
    let text = response.text().await.context("reading the answer")?;
    if status.as_u16() != 206 || !text.contains("\"StepRun\"") {
        bail!(
            "expected 206 with a StepRun op from {call_url}, got {status}: {}",
            one_line(&text)
        );
    }
    let forged = client
        .post(&call_url)
        .header("Content-Type", "application/json")
        .header(
            "X-Inngest-Signature",
            format!("t={}&s={}", unix_now(), "0".repeat(64)),
        )
        .body(body.to_owned())
        .send()
        .await
        .with_context(|| format!("calling {call_url}"))?;
    if forged.status().is_success() {
        bail!("{call_url} accepted a forged signature ({}): the benchmark would not measure verification", forged.status());
    }
    Ok(())
}

pub(crate) async fn run_wrk(
    args: &ProtocolArgs,
    bench_dir: &Path,
    url: &str,
    body_file: &Path,
    key: &inngest::SigningKey,
    body: &str,
    secs: u64,
) -> anyhow::Result<WrkResult> {
    let call_url = format!("{url}?fnId={PROTO_APP_ID}-{PROTO_FN_SLUG}&stepId=step");
    // Signed just before the run: the Rust SDK accepts 300 s of skew, a run is far shorter.
    let signature = key.sign(body.as_bytes(), unix_now());
    let out = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", args.wrk_threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(bench_dir.join("wrk_inngest.lua"))
        .arg(&call_url)
        .env("RBK_BODY_FILE", body_file)
        .env("RBK_SIGNATURE", signature)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {}",
            one_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RBK_RESULT "))
        .with_context(|| format!("no RBK_RESULT line in wrk's output: {stdout}"))?;
    let fields: BTreeMap<&str, f64> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
        .collect();
    let get = |k: &str| fields.get(k).copied().unwrap_or(0.0);
    let errors = [
        "errors_connect",
        "errors_read",
        "errors_write",
        "errors_status",
        "errors_timeout",
    ]
    .iter()
    .map(|k| get(k))
    .sum();
    Ok(WrkResult {
        rps: get("rps"),
        p50_us: get("p50_us"),
        p99_us: get("p99_us"),
        requests: get("requests"),
        errors,
    })
}

pub(crate) fn process_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub(crate) async fn protocol_bench(
    args: &ProtocolArgs,
    bench_dir: &Path,
    runs: usize,
) -> anyhow::Result<ProtocolReport> {
    let key = inngest::SigningKey::parse(BENCH_SIGNING_KEY)
        .map_err(|e| anyhow::anyhow!("bench signing key: {e}"))?;
    let body = call_body();
    let body_dir = tempfile::Builder::new()
        .prefix("rbk-bench-proto-")
        .tempdir()
        .context("creating a scratch directory")?;
    let body_file = body_dir.path().join("body.json");
    std::fs::write(&body_file, &body)
        .with_context(|| format!("writing {}", body_file.display()))?;

    let mut report = ProtocolReport {
        ours: ProtocolSide {
            name: "ours (Rust `inngest` crate, axum, in-process)",
            ..ProtocolSide::default()
        },
        python: ProtocolSide {
            name: "Inngest Python SDK (FastAPI + uvicorn, 1 worker)",
            ..ProtocolSide::default()
        },
        connections: args.connections,
        threads: args.wrk_threads,
        duration_secs: args.duration_secs,
        versions: String::new(),
    };

    let (ours_url, ours_handle) = start_ours(key.clone()).await?;
    if let Err(e) = verify_endpoint(&ours_url, &key, &body).await {
        report.ours.failure = Some(format!("{e:#}"));
    }
    let python = args.python.clone().unwrap_or_else(default_python);
    let mut python_child = None;
    match start_python(&python, bench_dir).await {
        Ok((url, child, versions)) => {
            report.versions = versions;
            if let Err(e) = verify_endpoint(&url, &key, &body).await {
                report.python.failure = Some(format!("{e:#}"));
            }
            python_child = Some((url, child));
        }
        Err(e) => report.python.failure = Some(format!("{e:#}")),
    }

    for run in 0..runs.max(1) {
        for side in ["ours", "python"] {
            let (url, result_side) = match side {
                "ours" => (ours_url.clone(), &mut report.ours),
                _ => match &python_child {
                    Some((url, _)) => (url.clone(), &mut report.python),
                    None => continue,
                },
            };
            if result_side.failure.is_some() {
                continue;
            }
            let measured = async {
                run_wrk(
                    args,
                    bench_dir,
                    &url,
                    &body_file,
                    &key,
                    &body,
                    args.warmup_secs,
                )
                .await?;
                run_wrk(
                    args,
                    bench_dir,
                    &url,
                    &body_file,
                    &key,
                    &body,
                    args.duration_secs,
                )
                .await
            }
            .await;
            match measured {
                Ok(r) => {
                    eprintln!(
                        "riveredge-bench: protocol {side} run {}: {:.0} calls/s, p50 {}, p99 {}, {} requests, {} errors",
                        run + 1,
                        r.rps,
                        human_us(r.p50_us),
                        human_us(r.p99_us),
                        r.requests,
                        r.errors
                    );
                    result_side.runs.push(r);
                }
                Err(e) => result_side.failure = Some(format!("{e:#}")),
            }
        }
    }
    if let Some((_, mut child)) = python_child {
        report.python.rss_kib = child.id().and_then(process_rss_kib);
        // Our own child, stopped by its handle.
        if let Err(e) = child.kill().await {
            eprintln!("riveredge-bench: stopping uvicorn: {e}");
        }
    }
    ours_handle.abort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_body_is_canonical_json() {
        let body = call_body();
        let value: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(value["ctx"]["max_attempts"], 4);
        assert!(!body.contains(' '));
    }

    #[test]
    fn signing_matches_the_reference_vector() {
        // inngest-protocol.md §3.8.
        let key = inngest::SigningKey::parse(
            "signkey-test-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )
        .expect("valid key");
        let body = r#"{"ctx":{"attempt":0,"disable_immediate_execution":false,"env":"","fn_id":"6d9f2b1e-1c6a-5f5e-9a0e-3f0a1b2c3d4e","max_attempts":5,"qi_id":"","run_id":"01HMCW5X3Q8ZK2V9J6Y4T7R1PA","stack":{"current":0,"stack":[]},"step_id":"step","use_api":false},"defers":{},"event":{"data":{"msg":"hi"},"id":"01HMCW5WZ7D3N0Q1B2C3D4E5F6","name":"test/hello","ts":1705586500000,"user":{}},"events":[{"data":{"msg":"hi"},"id":"01HMCW5WZ7D3N0Q1B2C3D4E5F6","name":"test/hello","ts":1705586500000,"user":{}}],"steps":{},"use_api":false,"version":-1}"#;
        assert_eq!(
            key.sign(body.as_bytes(), 1_705_586_504),
            "t=1705586504&s=1b4b876f35f25f1079f0c93ffed8286fab7591591c6436277f05f593e57c5fbc"
        );
    }
}
