//! Test harness: a private PostgreSQL cluster shared by every test of this binary, a fresh
//! migrated database per test, the RiverEdge-shaped fixture, and a spawned worker.
//!
//! The cluster is started on first use and stopped by its watchdog when this process exits,
//! however it exits. Set `TEST_DATABASE_URL` (a superuser URL) to use an existing server instead.

use std::sync::{Arc, OnceLock};

use riveredge_backup::local_cluster::{ClusterOptions, LocalCluster};
use riveredge_backup::pg::{quote_ident, ConnInfo, PgBinaries};
use riveredge_backup::settings::Settings;
use riveredge_backup::startup::{self, App, AppState, Database};
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;

/// The server every test database lives on.
pub struct TestServer {
    /// Superuser connection to the `postgres` database (unix socket or TEST_DATABASE_URL).
    pub admin: ConnInfo,
    pub bins: PgBinaries,
    /// Password-authenticated TCP URL template (local cluster only), for credential tests.
    tcp: Option<String>,
    _cluster: Option<LocalCluster>,
}

static SERVER: OnceLock<TestServer> = OnceLock::new();

pub fn server() -> &'static TestServer {
    SERVER.get_or_init(|| {
        riveredge_backup::telemetry::init_for_tests();
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            let admin = ConnInfo::parse(&url).expect("TEST_DATABASE_URL");
            let bins = PgBinaries::locate(None, None).expect("pg_dump for TEST_DATABASE_URL");
            return TestServer {
                admin,
                bins,
                tcp: None,
                _cluster: None,
            };
        }
        let bins = PgBinaries::locate(
            std::env::var_os("PG_BIN_DIR")
                .as_deref()
                .map(std::path::Path::new),
            None,
        )
        .expect("PostgreSQL binaries (apt-get install postgresql postgresql-client)");
        let cluster =
            LocalCluster::start(&bins, &ClusterOptions::default()).expect("start the test cluster");
        let admin = ConnInfo::parse(&cluster.url("postgres")).unwrap();
        let tcp = Some(cluster.tcp_url("DBNAME"));
        TestServer {
            admin,
            bins,
            tcp,
            _cluster: Some(cluster),
        }
    })
}

/// A database of its own for one test. Dropped (best effort) when the test passes.
pub struct TestDb {
    pub name: String,
    pub conn: ConnInfo,
    pub pool: PgPool,
}

impl TestDb {
    /// A new, empty database (no migrations).
    pub async fn empty() -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        create_database(&name).await;
        let conn = server().admin.with_database(&name);
        let pool = riveredge_backup::db::connect(&conn, 8)
            .await
            .expect("connect test db");
        Self { name, conn, pool }
    }

    /// A new database with our migrations applied.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        riveredge_backup::db::MIGRATOR
            .run(&db.pool)
            .await
            .expect("migrations");
        db
    }

    /// Migrated, plus the RiverEdge-shaped fixture (`tests/fixtures/riveredge.sql`).
    pub async fn with_fixture() -> Self {
        let db = Self::migrated().await;
        db.execute_script(include_str!("../fixtures/riveredge.sql"))
            .await;
        db
    }

    /// Migrated, plus the fixture of the real schema's awkward parts
    /// (`tests/fixtures/awkward.sql`).
    pub async fn with_awkward_fixture() -> Self {
        let db = Self::migrated().await;
        db.execute_script(include_str!("../fixtures/awkward.sql"))
            .await;
        db
    }

    /// Connects to an existing database of the test server (e.g. a restore target).
    pub async fn attach(name: &str) -> Self {
        let conn = server().admin.with_database(name);
        let pool = riveredge_backup::db::connect(&conn, 4)
            .await
            .expect("connect to existing db");
        Self {
            name: name.to_owned(),
            conn,
            pool,
        }
    }

    /// Runs a multi-statement SQL script.
    pub async fn execute_script(&self, sql: &str) {
        let mut conn = self.pool.acquire().await.unwrap();
        sqlx::raw_sql(sql)
            .execute(&mut *conn)
            .await
            .expect("script");
    }

    /// The password-authenticated TCP URL of this database (local cluster only).
    pub fn tcp_url(&self) -> Option<String> {
        Some(server().tcp.as_ref()?.replace("DBNAME", &self.name))
    }

    /// The same database reached over TCP with password authentication.
    pub fn tcp_conn(&self) -> Option<ConnInfo> {
        let template = server().tcp.as_ref()?;
        Some(ConnInfo::parse(&template.replace("DBNAME", &self.name)).unwrap())
    }

    /// Settings pointing at this database, with storage in `storage_dir`.
    pub fn settings(&self, storage_dir: &std::path::Path) -> Settings {
        self.settings_with(storage_dir, &[])
    }

    /// [`TestDb::settings`] with some variables overridden.
    pub fn settings_with(
        &self,
        storage_dir: &std::path::Path,
        overrides: &[(&str, &str)],
    ) -> Settings {
        let mut env = std::collections::BTreeMap::new();
        env.insert("DATABASE_URL".to_owned(), url_of(&self.conn));
        // Cloud mode with a signing key: every step call in the tests is signed and verified.
        env.insert("INNGEST_DEV".to_owned(), "0".to_owned());
        env.insert("INNGEST_SIGNING_KEY".to_owned(), SIGNING_KEY.to_owned());
        env.insert("INNGEST_SYNC_ON_STARTUP".to_owned(), "false".to_owned());
        env.insert(
            "BACKUP_STORAGE_DIR".to_owned(),
            storage_dir.display().to_string(),
        );
        env.insert("BIND_ADDRESS".to_owned(), "127.0.0.1:0".to_owned());
        for (k, v) in overrides {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        Settings::from_sources(&env, None).expect("test settings")
    }
}

/// The signing key the test worker and the test executor share.
pub const SIGNING_KEY: &str =
    "signkey-test-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A superuser URL for a database on the test server (unix socket; no password).
pub fn url_of(conn: &ConnInfo) -> String {
    if conn.host.starts_with('/') {
        format!(
            "postgres://{}@localhost/{}?host={}&port={}",
            conn.user, conn.database, conn.host, conn.port
        )
    } else {
        // TEST_DATABASE_URL: reuse it with another database name.
        let mut url = url::Url::parse(&std::env::var("TEST_DATABASE_URL").unwrap()).unwrap();
        url.set_path(&conn.database);
        url.to_string()
    }
}

async fn admin_connection() -> sqlx::PgConnection {
    sqlx::PgConnection::connect_with(&server().admin.connect_options())
        .await
        .expect("admin connection")
}

pub async fn create_database(name: &str) {
    let mut admin = admin_connection().await;
    sqlx::raw_sql(&format!("CREATE DATABASE {}", quote_ident(name)))
        .execute(&mut admin)
        .await
        .expect("create database");
}

pub async fn database_exists(name: &str) -> bool {
    let mut admin = admin_connection().await;
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

/// A worker serving on 127.0.0.1:<random port> against `db`.
pub struct TestApp {
    pub address: String,
    pub storage_dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    /// The worker's own state, for calling its use cases directly.
    pub state: AppState,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// An executor that drives this worker like Inngest does, signing every request.
    pub fn executor(&self) -> inngest::testing::TestExecutor {
        inngest::testing::TestExecutor::new(
            self.url("/api/inngest"),
            Some(inngest::SigningKey::parse(SIGNING_KEY).unwrap()),
        )
    }

    /// Runs one of the worker's functions (by slug) for an event, to the end.
    pub async fn run(
        &self,
        slug: &str,
        name: &str,
        data: serde_json::Value,
    ) -> inngest::testing::RunRecord {
        let event = inngest::Event::new(name, data).with_id(uuid::Uuid::new_v4().to_string());
        self.run_event(slug, event).await
    }

    /// A run of `slug` for `event` that advances only when told (interleaving, reruns, kills).
    pub fn start(&self, slug: &str, event: inngest::Event) -> inngest::testing::RunHandle {
        self.executor()
            .start(&format!("riveredge-backup-{slug}"), event, Some(4))
    }

    pub async fn run_event(
        &self,
        slug: &str,
        event: inngest::Event,
    ) -> inngest::testing::RunRecord {
        let fn_id = format!("riveredge-backup-{slug}");
        tokio::time::timeout(
            std::time::Duration::from_secs(300),
            self.executor().run(&fn_id, event, Some(4)),
        )
        .await
        .expect("run finished within 5 minutes")
    }

    /// Files currently under the backup's prefix in storage.
    pub fn artifact_files(&self, uuid: &str) -> Vec<std::path::PathBuf> {
        let dir = self.storage_dir.path().join(uuid);
        let mut out = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }
}

/// A backup row as the tests look at it (read with SQL, independent of the worker's queries).
#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    pub tenant_id: Option<i32>,
    pub status: String,
    pub file_path: Option<String>,
    pub file_size: Option<i64>,
    pub checksum: Option<String>,
    pub error_message: Option<String>,
    pub inngest_run_id: Option<String>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn backup_row(pool: &PgPool, uuid: &str) -> Row {
    sqlx::query_as(
        "SELECT tenant_id, status, file_path, file_size, checksum, error_message, inngest_run_id, started_at, completed_at
         FROM root_data_backups WHERE uuid = $1",
    )
    .bind(uuid)
    .fetch_one(pool)
    .await
    .expect("backup row")
}

/// Inserts a pending row the way the RiverEdge app does before sending its event.
pub async fn insert_pending(
    pool: &PgPool,
    tenant: Option<i32>,
    scope: &str,
    tables: Option<Vec<&str>>,
) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    sqlx::query("INSERT INTO root_data_backups (uuid, tenant_id, name, backup_type, backup_scope, backup_tables, status) VALUES ($1, $2, 'from app', 'full', $3, $4, 'pending')")
        .bind(&uuid)
        .bind(tenant)
        .bind(scope)
        .bind(tables.map(|t| t.into_iter().map(str::to_owned).collect::<Vec<_>>()))
        .execute(pool)
        .await
        .unwrap();
    uuid
}

/// sha256 (hex) of a file.
pub fn sha256_file(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Every table's oracle checksum in `pool` (schema public), for before/after comparisons.
pub async fn all_checksums(pool: &PgPool) -> std::collections::BTreeMap<String, (i64, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        // The worker's own tables are never part of the data (db::OWN_TABLES).
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename <> ALL($1) ORDER BY 1",
    )
    .bind(riveredge_backup::db::OWN_TABLES)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for t in tables {
        let quoted = format!("\"{t}\"");
        out.insert(t, table_checksum(pool, &quoted, "true").await);
    }
    out
}

pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, &[]).await
}

/// A worker with some settings overridden (e.g. `PG_BIN_DIR`, `BACKUP_JOBS`).
pub async fn spawn_app_with(db: &TestDb, overrides: &[(&str, &str)]) -> TestApp {
    let storage_dir = tempfile::tempdir().unwrap();
    let settings = Arc::new(db.settings_with(storage_dir.path(), overrides));
    let database = Database::open(&settings).await.expect("open database");
    let shutdown = CancellationToken::new();
    let state = AppState::new(settings.clone(), &database, shutdown.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inngest_app = riveredge_backup::jobs::inngest_app(&state).expect("inngest app");
    let router = startup::router(state.clone(), inngest_app.router());
    let app = App::build(
        listener,
        router,
        settings.http.shutdown_timeout,
        shutdown.clone(),
    );
    let address = format!("http://127.0.0.1:{}", app.port());
    let stop = shutdown.clone();
    tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }));
    TestApp {
        address,
        storage_dir,
        shutdown,
        state,
    }
}

/// Order-independent content checksum of a table, computed by the server: an oracle that shares
/// no code with the worker's own checksums.
pub async fn table_checksum(pool: &PgPool, table: &str, filter: &str) -> (i64, String) {
    let sql = format!(
        "SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') FROM {table} t WHERE {filter}"
    );
    sqlx::query_as(&sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The run completed (200 with the function's value).
#[track_caller]
pub fn assert_completed(run: &inngest::testing::RunRecord) {
    assert!(
        matches!(run.status, inngest::testing::RunStatus::Completed(_)),
        "{:?}",
        run.status
    );
}

/// The run failed for good; returns the error body.
#[track_caller]
pub fn assert_failed(run: &inngest::testing::RunRecord) -> &serde_json::Value {
    match &run.status {
        inngest::testing::RunStatus::Failed(body) => body,
        other => panic!("expected a failed run, got {other:?}"),
    }
}

/// A directory holding links to the real PostgreSQL programs named in `tools`, to be used as
/// `PG_BIN_DIR` by tests that remove or replace one of them.
pub fn pg_bin_dir_with(tools: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let real = server().bins.program("pg_dump");
    for tool in tools {
        std::os::unix::fs::symlink(real.with_file_name(tool), dir.path().join(tool)).unwrap();
    }
    dir
}
