//! kill -9 of the worker process between an effect and the record of its result, then
//! Inngest's retry against a restarted worker: no row stays `running`, no partial file or
//! password file stays, nothing half-done is reported as done, and a restore is applied once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use inngest::testing::{RunHandle, RunStatus, TestExecutor};
use inngest::{Event, SigningKey};
use serde_json::json;

use crate::helpers::{backup_row, insert_pending, sha256_file, TestDb, SIGNING_KEY};

/// The worker binary as an operator runs it, on its own port and storage directory.
struct Worker {
    child: tokio::process::Child,
    url: String,
    env: Vec<(String, String)>,
}

impl Worker {
    async fn start(db: &TestDb, storage: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = vec![
            // Password authentication over TCP, so the worker writes a password file.
            (
                "DATABASE_URL".into(),
                db.tcp_url().expect("local test cluster"),
            ),
            ("INNGEST_DEV".into(), "0".into()),
            ("INNGEST_SIGNING_KEY".into(), SIGNING_KEY.into()),
            ("INNGEST_SYNC_ON_STARTUP".into(), "false".into()),
            ("BACKUP_STORAGE_DIR".into(), storage.display().to_string()),
            ("BIND_ADDRESS".into(), format!("127.0.0.1:{port}")),
            ("TENANTS_TABLE".into(), "infra_tenants".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        let mut worker = Self {
            child: spawn(&env),
            url: format!("http://127.0.0.1:{port}"),
            env,
        };
        worker.wait_healthy().await;
        worker
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/health", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the worker exited during start-up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the worker did not become healthy");
    }

    async fn kill9(&mut self) -> u32 {
        let pid = self.child.id().unwrap();
        self.child.start_kill().unwrap(); // SIGKILL: no destructor, no cleanup runs
        self.child.wait().await.unwrap();
        pid
    }

    async fn restart(&mut self) {
        self.child = spawn(&self.env);
        self.wait_healthy().await;
    }

    fn executor(&self) -> TestExecutor {
        TestExecutor::new(
            format!("{}/api/inngest", self.url),
            Some(SigningKey::parse(SIGNING_KEY).unwrap()),
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn spawn(env: &[(String, String)]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_riveredge-backup"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the worker")
}

/// Polls `ready` every 10 ms for at most 60 s.
async fn until(mut ready: impl AsyncFnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn partials(storage: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(storage.join(".partial"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn passfiles_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("{}{pid}-", riveredge_backup::pg::PASSFILE_PREFIX);
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Enough operation logs for tenant 3 that a dump or restore takes a moment.
async fn grow(db: &TestDb) {
    db.execute_script(
        "INSERT INTO core_operation_logs (uuid, tenant_id, user_id, operation_type, operation_content)
         SELECT md5(g::text), 3, 1, 'update', repeat(md5(g::text), 8) FROM generate_series(1, 300000) g",
    )
    .await;
}

async fn finish(run: RunHandle) -> serde_json::Value {
    let record = run.finish().await;
    match record.status {
        RunStatus::Completed(v) => v,
        other => panic!("the run did not complete after the restart: {other:?}"),
    }
}

#[tokio::test]
async fn a_worker_killed_mid_dump_leaves_nothing_behind_once_the_retry_ran() {
    let db = TestDb::with_fixture().await;
    if db.tcp_url().is_none() {
        return; // TEST_DATABASE_URL: no password-authenticated server to exercise
    }
    grow(&db).await;
    let storage = tempfile::tempdir().unwrap();
    let mut worker = Worker::start(&db, storage.path()).await;
    let uuid = insert_pending(&db.pool, Some(3), "tenant", None).await;
    let mut run = worker.executor().start(
        "riveredge-backup-backup-execute",
        Event::new(
            "backup/execute",
            json!({"backup_uuid": uuid, "tenant_id": 3}),
        )
        .with_id("killed-mid-dump"),
        Some(4),
    );
    assert!(run.run_until("mark-running").await);

    // The dump call is in flight; kill the worker as soon as it writes.
    let dir = storage.path().to_path_buf();
    let (advanced, pid) = tokio::join!(run.advance(), async {
        until(async || !partials(&dir).is_empty(), "the dump to write").await;
        worker.kill9().await
    });
    assert!(advanced, "the run goes on: the executor retries the call");
    assert_eq!(
        backup_row(&db.pool, &uuid).await.status,
        "running",
        "killed: nobody recorded anything"
    );
    assert!(
        !passfiles_of(pid).is_empty(),
        "kill -9 left its password file"
    );
    assert!(!partials(storage.path()).is_empty(), "and a partial file");

    worker.restart().await;
    let out = finish(run).await;

    assert_eq!(out["status"], "success");
    let row = backup_row(&db.pool, &uuid).await;
    assert_eq!(row.status, "success");
    let manifest = storage.path().join(&uuid).join("manifest.json");
    assert_eq!(Some(sha256_file(&manifest)), row.checksum);
    assert!(partials(storage.path()).is_empty(), "no partial file stays");
    assert!(
        passfiles_of(pid).is_empty(),
        "the dead worker's password file is gone"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_restore_rolls_back_and_the_retry_applies_it_once() {
    let db = TestDb::with_fixture().await;
    if db.tcp_url().is_none() {
        return;
    }
    grow(&db).await;
    let storage = tempfile::tempdir().unwrap();
    let mut worker = Worker::start(&db, storage.path()).await;
    let backup = insert_pending(&db.pool, Some(3), "tenant", None).await;
    let run = worker
        .executor()
        .run(
            "riveredge-backup-backup-execute",
            Event::new(
                "backup/execute",
                json!({"backup_uuid": backup, "tenant_id": 3}),
            ),
            Some(4),
        )
        .await;
    assert!(matches!(run.status, RunStatus::Completed(_)), "{run:?}");
    db.execute_script("DELETE FROM core_operation_logs WHERE tenant_id = 3 AND id % 2 = 0")
        .await;
    let mut run = worker.executor().start(
        "riveredge-backup-backup-restore",
        Event::new(
            "backup/restore",
            json!({"backup_uuid": backup, "tenant_id": 3}),
        )
        .with_id("killed-mid-restore"),
        Some(4),
    );
    assert!(run.run_until("safety-backup").await);

    // The tenant restore stages the backup's rows inside its transaction.
    let pool = db.pool.clone();
    let (advanced, _) = tokio::join!(run.advance(), async {
        until(
            async || {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND query LIKE 'COPY pg\\_temp.rbk\\_stage%'",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
                    > 0
            },
            "the restore transaction",
        )
        .await;
        worker.kill9().await
    });
    assert!(advanced);
    let (status, applied): (String, bool) = sqlx::query_as(
        "SELECT status, applied_at IS NOT NULL FROM root_data_restores WHERE backup_uuid = $1",
    )
    .bind(&backup)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), applied), ("running", false));

    worker.restart().await;
    let out = finish(run).await;

    assert_eq!(out["status"], "success");
    let logs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM core_operation_logs WHERE tenant_id = 3")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let manifest: serde_json::Value =
        sqlx::query_scalar("SELECT manifest FROM root_data_backups WHERE uuid = $1")
            .bind(&backup)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let backed_up = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "core_operation_logs")
        .unwrap()["rows"]
        .as_i64()
        .unwrap();
    assert_eq!(logs, backed_up, "the tenant is back at its backup");
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM root_data_restores WHERE backup_uuid = $1 AND applied_at IS NOT NULL AND status = 'success'",
    )
    .bind(&backup)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(applied, 1);
}
