//! The operator CLI, tested as operators use it: the binary spawned as a process with only the
//! variables they would set, judged by its exit code, stdout (JSON with `--json`) and stderr.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Command;

use crate::helpers::{backup_row, url_of, TestDb};

/// The binary with a clean environment: the test runner's variables must not leak in.
fn bin(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riveredge-backup"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Only `DATABASE_URL` and `BACKUP_STORAGE_DIR`: the acceptance criterion's setup.
fn operator(db: &TestDb, storage: &Path) -> Command {
    bin(&[
        ("DATABASE_URL", &url_of(&db.conn)),
        ("BACKUP_STORAGE_DIR", &storage.display().to_string()),
    ])
}

async fn run(mut cmd: Command, args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(300), cmd.args(args).output())
        .await
        .expect("the command finished within 5 minutes")
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exactly one JSON document on stdout.
#[track_caller]
fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// A backup taken through the CLI; returns its uuid.
async fn cli_backup(db: &TestDb, storage: &Path, args: &[&str]) -> String {
    let mut all = vec!["--json", "backup"];
    all.extend_from_slice(args);
    let out = run(operator(db, storage), &all).await;
    assert_exit(&out, 0);
    json(&out)["uuid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_operator_command_works_with_only_the_database_and_storage_set() {
    let db = TestDb::with_fixture().await;
    let storage = tempfile::tempdir().unwrap();

    let uuid = cli_backup(&db, storage.path(), &["--scope", "all"]).await;
    for args in [
        vec!["--json", "list"],
        vec!["--json", "config"],
        vec!["--json", "check"],
        vec!["--json", "verify", &uuid],
        vec!["--json", "info", &uuid],
        vec!["--json", "drill", &uuid],
        vec!["--json", "restores"],
        vec!["--json", "migrate"],
    ] {
        let out = run(operator(&db, storage.path()), &args).await;
        assert_exit(&out, 0);
        assert_eq!(json(&out)["ok"], true, "{args:?}");
        assert!(
            !stderr(&out).contains("INNGEST"),
            "{args:?} talks about Inngest: {}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn serve_alone_requires_the_inngest_settings_and_mode_values_are_strict() {
    let db = TestDb::migrated().await;
    let storage = tempfile::tempdir().unwrap();

    let serve = run(operator(&db, storage.path()), &["serve"]).await;
    let mut maybe = operator(&db, storage.path());
    maybe.env("INNGEST_DEV", "maybe");
    let maybe = run(maybe, &["serve"]).await;

    assert_exit(&serve, 2);
    assert!(stderr(&serve).contains("INNGEST_SIGNING_KEY is required"));
    assert_exit(&maybe, 2);
    assert!(
        stderr(&maybe).contains("INNGEST_DEV=\"maybe\""),
        "{}",
        stderr(&maybe)
    );
}

#[tokio::test]
async fn data_commands_without_database_url_stop_with_exit_2_and_leave_no_files() {
    let storage = tempfile::tempdir().unwrap();
    let dir = storage.path().display().to_string();

    for args in [
        vec!["backup", "--scope", "all"],
        vec!["list"],
        vec!["verify", "00000000-0000-0000-0000-000000000000"],
        vec!["restores"],
    ] {
        let out = run(bin(&[("BACKUP_STORAGE_DIR", &dir)]), &args).await;
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("needs DATABASE_URL"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(files_under(storage.path()).is_empty());
}

#[tokio::test]
async fn a_missing_tenants_table_is_an_error_unless_the_check_is_turned_off() {
    let db = TestDb::with_fixture().await;
    let storage = tempfile::tempdir().unwrap();
    let with = |value: &str| {
        let mut cmd = operator(&db, storage.path());
        cmd.env("TENANTS_TABLE", value);
        cmd
    };
    let tenant = ["--json", "backup", "--scope", "tenant", "--tenant", "99"];

    let misspelled = run(with("infra_tenant"), &tenant).await;
    let unknown = run(operator(&db, storage.path()), &tenant).await;
    let unchecked = run(with("none"), &tenant).await;

    assert_exit(&misspelled, 2);
    assert!(stderr(&misspelled).contains("TENANTS_TABLE infra_tenant does not exist"));
    assert_exit(&unknown, 2);
    assert!(stderr(&unknown).contains("tenant 99 does not exist"));
    assert_exit(&unchecked, 0);
    let doc = json(&unchecked);
    assert_eq!(doc["rows"], 0);
    assert_eq!(doc["empty"], true);
    assert!(stderr(&unchecked).contains("tenant 99 has no rows"));
}

#[tokio::test]
async fn a_tenant_backup_with_no_rows_says_so() {
    // The fixture's tenant 4 exists and owns no rows.
    let db = TestDb::with_fixture().await;
    let storage = tempfile::tempdir().unwrap();

    let out = run(
        operator(&db, storage.path()),
        &["backup", "--scope", "tenant", "--tenant", "4"],
    )
    .await;

    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("tenant 4 has no rows in the backed-up tables"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn restoring_into_a_populated_database_is_refused_unless_replace_which_keeps_the_old_one() {
    let db = TestDb::with_fixture().await;
    let storage = tempfile::tempdir().unwrap();
    let uuid = cli_backup(&db, storage.path(), &["--scope", "all"]).await;
    let target = TestDb::with_fixture().await;
    target
        .execute_script("UPDATE infra_platform_settings SET value = 'changed here'")
        .await;
    let restore = |extra: &[&str]| {
        let mut args = vec!["--json", "restore", uuid.as_str(), "--target-database"];
        args.push(&target.name);
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };

    let refused = run(
        operator(&db, storage.path()),
        &restore(&[]).iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let untouched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM infra_platform_settings WHERE value = 'changed here'",
    )
    .fetch_one(&target.pool)
    .await
    .unwrap();
    let replaced = run(
        operator(&db, storage.path()),
        &restore(&["--replace"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;

    assert_exit(&refused, 3);
    assert!(stderr(&refused).contains("refused for safety"));
    assert_eq!(json(&refused)["exit_code"], 3);
    assert_eq!(untouched, 2, "the refused restore changed nothing");
    assert_exit(&replaced, 0);
    let kept = json(&replaced)["replaced_database"]
        .as_str()
        .expect("the replaced database was kept")
        .to_owned();
    let old = TestDb::attach(&kept).await;
    let preserved: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM infra_platform_settings WHERE value = 'changed here'",
    )
    .fetch_one(&old.pool)
    .await
    .unwrap();
    assert_eq!(preserved, 2, "the old database holds what was replaced");
    let changed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM infra_platform_settings WHERE value = 'changed here'",
    )
    .fetch_one(&target.pool)
    .await
    .unwrap();
    assert_eq!(changed, 0, "the backup's rows replaced the target's");
}

#[tokio::test]
async fn system_databases_and_the_workers_own_database_are_refused_as_targets() {
    let db = TestDb::with_fixture().await;
    let storage = tempfile::tempdir().unwrap();
    let uuid = cli_backup(&db, storage.path(), &["--scope", "all"]).await;

    for target in ["template0", "template1", "postgres", db.name.as_str()] {
        let out = run(
            operator(&db, storage.path()),
            &["restore", &uuid, "--target-database", target, "--replace"],
        )
        .await;
        assert_exit(&out, 3);
        assert!(stderr(&out).contains("refused for safety"), "{target}");
    }
    let live = run(operator(&db, storage.path()), &["restore", &uuid]).await;
    assert_exit(&live, 3);
    let restores: i64 = sqlx::query_scalar("SELECT count(*) FROM root_data_restores")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        restores, 0,
        "refusals are decided before anything is recorded"
    );
}

#[tokio::test]
async fn ctrl_c_during_a_level_19_backup_exits_within_2_seconds_leaving_nothing_behind() {
    let db = TestDb::migrated().await;
    // Incompressible-looking text, so level 19 has minutes of work: the backup is surely
    // running when the signal arrives.
    db.execute_script(
        "CREATE TABLE big (id int PRIMARY KEY, payload text);
         INSERT INTO big SELECT g, repeat(md5(g::text) || md5((g * 7)::text), 4)
         FROM generate_series(1, 200000) g;",
    )
    .await;
    let storage = tempfile::tempdir().unwrap();
    let mut cmd = operator(&db, storage.path());
    cmd.env("BACKUP_COMPRESSION_LEVEL", "19")
        .env("BACKUP_JOBS", "1")
        .args(["--json", "backup", "--scope", "all"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let uuid = running_backup(&db).await;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    let signalled = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the backup stopped")
        .unwrap();
    let elapsed = signalled.elapsed();

    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("will be retried"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json(&out)["ok"], false);
    let row = backup_row(&db.pool, &uuid).await;
    assert_eq!(row.status, "failed");
    let left: Vec<_> = files_under(storage.path());
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Waits (bounded) until the CLI's backup row shows rows copied; returns its uuid.
async fn running_backup(db: &TestDb) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let found: Option<String> = sqlx::query_scalar(
            "SELECT uuid FROM root_data_backups WHERE status = 'running' AND (rows_written > 0 OR bytes_written > 0)",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        if let Some(uuid) = found {
            return uuid;
        }
        assert!(
            Instant::now() < deadline,
            "the backup never showed progress"
        );
    }
}

#[tokio::test]
async fn json_outputs_parse_and_list_shows_human_sizes_and_filters() {
    let db = TestDb::with_fixture().await;
    let storage = tempfile::tempdir().unwrap();
    let all = cli_backup(&db, storage.path(), &["--scope", "all"]).await;
    let tenant = cli_backup(&db, storage.path(), &["--scope", "tenant", "--tenant", "2"]).await;

    let human = run(operator(&db, storage.path()), &["list"]).await;
    let tenants = run(
        operator(&db, storage.path()),
        &["--json", "list", "--scope", "tenant", "--since", "1h"],
    )
    .await;
    let none = run(
        operator(&db, storage.path()),
        &["--json", "list", "--status", "failed"],
    )
    .await;
    let info = run(operator(&db, storage.path()), &["--json", "info", &all]).await;
    let bad_since = run(operator(&db, storage.path()), &["list", "--since", "soon"]).await;

    assert_exit(&human, 0);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("KiB") || text.contains("MiB"), "{text}");
    assert!(text.contains("SCOPE") && text.contains("TOOK"), "{text}");
    let listed = json(&tenants)["backups"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["uuid"], tenant.as_str());
    assert!(json(&none)["backups"].as_array().unwrap().is_empty());
    let info = json(&info);
    assert_eq!(info["status"], "success");
    assert!(info["verified_at"].is_string());
    assert!(!info["tables"].as_array().unwrap().is_empty());
    assert!(info["tables"][0]["sha256"].as_str().unwrap().len() == 64);
    assert_exit(&bad_since, 2);
}

#[tokio::test]
async fn restores_are_listed_with_their_safety_backups() {
    let db = TestDb::with_fixture().await;
    let storage = tempfile::tempdir().unwrap();
    let uuid = cli_backup(&db, storage.path(), &["--scope", "tenant", "--tenant", "1"]).await;
    let restored = run(operator(&db, storage.path()), &["--json", "restore", &uuid]).await;
    assert_exit(&restored, 0);

    let out = run(
        operator(&db, storage.path()),
        &["--json", "restores", "--backup", &uuid],
    )
    .await;
    let info = run(operator(&db, storage.path()), &["--json", "info", &uuid]).await;

    assert_exit(&out, 0);
    let list = json(&out)["restores"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "success");
    assert!(list[0]["safety_backup_uuid"].is_string());
    assert_eq!(json(&info)["restores"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn config_prints_documented_names_with_secrets_redacted() {
    let db = TestDb::migrated().await;
    let storage = tempfile::tempdir().unwrap();
    let mut cmd = bin(&[
        (
            "DATABASE_URL",
            "postgres://app:hunter2@db.invalid:5432/riveredge",
        ),
        ("BACKUP_STORAGE_DIR", &storage.path().display().to_string()),
        ("JWT_SECRET_KEY", "jwt-secret-value"),
    ]);
    cmd.env("INNGEST_EVENT_KEY", "evkey-secret");
    let _ = &db;

    let out = run(cmd, &["config"]).await;

    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "DATABASE_URL",
        "BACKUP_STORAGE_DIR",
        "TENANTS_TABLE",
        "JWT_SECRET_KEY",
    ] {
        assert!(text.contains(name), "{name} missing: {text}");
    }
    for secret in ["hunter2", "jwt-secret-value", "evkey-secret"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(
        !text.contains("DatabaseSettings"),
        "no Rust Debug output: {text}"
    );
}

#[tokio::test]
async fn errors_say_each_cause_once_and_a_refused_connection_fails_fast() {
    let storage = tempfile::tempdir().unwrap();
    let dir = storage.path().display().to_string();
    let db = TestDb::migrated().await;
    let missing = url_of(&db.conn).replace(&db.name, "no_such_database");
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused_url = format!("postgres://u:p@127.0.0.1:{port}/riveredge");

    let started = Instant::now();
    let refused = run(
        bin(&[("DATABASE_URL", &refused_url), ("BACKUP_STORAGE_DIR", &dir)]),
        &["list"],
    )
    .await;
    let refused_took = started.elapsed();
    let absent = run(
        bin(&[("DATABASE_URL", &missing), ("BACKUP_STORAGE_DIR", &dir)]),
        &["list"],
    )
    .await;

    assert_exit(&refused, 1);
    assert!(refused_took < Duration::from_secs(10), "{refused_took:?}");
    let text = stderr(&refused);
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!text.contains("pool timed out"), "{text}");
    assert!(!text.contains(":p@"), "no password in messages: {text}");
    assert_exit(&absent, 1);
    let text = stderr(&absent);
    assert_eq!(
        text.matches("does not exist").count(),
        1,
        "each cause once: {text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
}

#[tokio::test]
async fn a_failed_cli_backup_is_not_called_a_safety_backup() {
    let db = TestDb::with_fixture().await;
    let storage = tempfile::tempdir().unwrap();
    let bins = crate::helpers::pg_bin_dir_with(&["psql"]);
    let mut cmd = operator(&db, storage.path());
    cmd.env("PG_BIN_DIR", bins.path());

    let out = run(cmd, &["backup", "--scope", "all"]).await;

    assert_ne!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains("safety backup"), "{}", stderr(&out));
}

#[tokio::test]
async fn help_is_honest_and_a_first_incremental_is_a_full_that_says_why() {
    let db = TestDb::migrated().await;
    let storage = tempfile::tempdir().unwrap();

    let serve_help = run(bin(&[]), &["serve", "--help"]).await;
    let restore_help = run(bin(&[]), &["restore", "--help"]).await;
    let list_help = run(bin(&[]), &["list", "--help"]).await;
    let top_help = run(bin(&[]), &["--help"]).await;
    let incremental = run(
        operator(&db, storage.path()),
        &["backup", "--type", "incremental"],
    )
    .await;

    let text = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text(&serve_help).contains("Serve the worker (Inngest endpoint, health, REST API)"));
    assert!(text(&restore_help).contains("The backup's uuid"));
    assert!(text(&list_help).contains("Only this tenant's backups"));
    assert!(text(&list_help).contains("Show at most this many backups"));
    assert!(text(&top_help).contains("3 refused for safety"));
    assert!(text(&restore_help).contains("3 refused for safety"));
    // The first incremental has nothing to build on: a full, and the operator is told why.
    assert_exit(&incremental, 0);
    assert!(
        stderr(&incremental).contains(
            "taken as a full backup instead of an incremental: no earlier successful backup"
        ),
        "{}",
        stderr(&incremental)
    );
}

#[tokio::test]
async fn progress_stays_off_stdout_and_off_a_non_terminal_stderr() {
    let db = TestDb::with_fixture().await;
    let storage = tempfile::tempdir().unwrap();

    let out = run(operator(&db, storage.path()), &["backup", "--scope", "all"]).await;

    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(!err.contains("ETA") && !err.contains("rows/s"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("succeeded"), "{text}");
}

/// On a terminal (a pseudo-terminal from util-linux's `script`), backup and verify draw their
/// progress.
#[tokio::test]
async fn backup_and_verify_on_a_terminal_show_tables_rows_bytes_and_an_eta() {
    let db = TestDb::migrated().await;
    db.execute_script(
        "CREATE TABLE big (id int PRIMARY KEY, payload text);
         INSERT INTO big SELECT g, repeat(md5(g::text) || md5((g * 7)::text), 4)
         FROM generate_series(1, 100000) g; ANALYZE big;",
    )
    .await;
    let storage = tempfile::tempdir().unwrap();
    let line = format!(
        "DATABASE_URL='{}' BACKUP_STORAGE_DIR='{}' BACKUP_COMPRESSION_LEVEL=9 '{}' backup --scope all",
        url_of(&db.conn),
        storage.path().display(),
        env!("CARGO_BIN_EXE_riveredge-backup")
    );
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]).kill_on_drop(true);

    let out = tokio::time::timeout(Duration::from_secs(300), script.output())
        .await
        .unwrap()
        .expect("script(1) from util-linux");

    assert_exit(&out, 0);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("/~100,000 rows"), "{screen}");
    assert!(
        screen.contains("tables 0/1") || screen.contains("tables 1/1"),
        "{screen}"
    );
    assert!(screen.contains("MiB") && screen.contains("ETA"), "{screen}");
    assert!(screen.contains("succeeded"), "{screen}");

    let uuid: String = sqlx::query_scalar("SELECT uuid FROM root_data_backups")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let line = line.replace("backup --scope all", &format!("verify {uuid}"));
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]).kill_on_drop(true);
    let out = script.output().await.unwrap();
    assert_exit(&out, 0);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("verifying: ["), "{screen}");
    assert!(screen.contains("MiB, tables 0/1"), "{screen}");
    assert!(screen.contains("verified"), "{screen}");
}

#[tokio::test]
async fn a_restore_request_that_cannot_work_is_a_usage_error_and_creates_nothing() {
    let db = TestDb::with_fixture().await;
    let storage = tempfile::tempdir().unwrap();
    let all = cli_backup(&db, storage.path(), &["--scope", "all"]).await;
    let tenant = cli_backup(&db, storage.path(), &["--scope", "tenant", "--tenant", "1"]).await;
    let missing = format!("t_missing_{}", uuid::Uuid::new_v4().simple());

    let into_nothing = run(
        operator(&db, storage.path()),
        &["restore", &tenant, "--target-database", &missing],
    )
    .await;
    let unknown_table = run(
        operator(&db, storage.path()),
        &[
            "restore",
            &all,
            "--target-database",
            &missing,
            "--tables",
            "nope",
        ],
    )
    .await;
    let unknown_backup = run(
        operator(&db, storage.path()),
        &["restore", "00000000-0000-0000-0000-000000000000"],
    )
    .await;

    assert_exit(&into_nothing, 2);
    assert!(stderr(&into_nothing).contains("does not exist"));
    assert_exit(&unknown_table, 2);
    assert!(stderr(&unknown_table).contains("nope"));
    assert_exit(&unknown_backup, 2);
    assert!(!crate::helpers::database_exists(&missing).await);
    let restores: i64 = sqlx::query_scalar("SELECT count(*) FROM root_data_restores")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(restores, 0);
}
