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
            return TestServer { admin, bins, tcp: None, _cluster: None };
        }
        let bins = PgBinaries::locate(std::env::var_os("PG_BIN_DIR").as_deref().map(std::path::Path::new), None)
            .expect("PostgreSQL binaries (apt-get install postgresql postgresql-client)");
        let cluster = LocalCluster::start(&bins, &ClusterOptions::default()).expect("start the test cluster");
        let admin = ConnInfo::parse(&cluster.url("postgres")).unwrap();
        let tcp = Some(cluster.tcp_url("DBNAME"));
        TestServer { admin, bins, tcp, _cluster: Some(cluster) }
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
        let pool = riveredge_backup::db::connect(&conn, 8).await.expect("connect test db");
        Self { name, conn, pool }
    }

    /// A new database with our migrations applied.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        riveredge_backup::db::MIGRATOR.run(&db.pool).await.expect("migrations");
        db
    }

    /// Migrated, plus the RiverEdge-shaped fixture (`tests/fixtures/riveredge.sql`).
    pub async fn with_fixture() -> Self {
        let db = Self::migrated().await;
        db.execute_script(include_str!("../fixtures/riveredge.sql")).await;
        db
    }

    /// Runs a multi-statement SQL script.
    pub async fn execute_script(&self, sql: &str) {
        let mut conn = self.pool.acquire().await.unwrap();
        sqlx::raw_sql(sql).execute(&mut *conn).await.expect("script");
    }

    /// The same database reached over TCP with password authentication.
    pub fn tcp_conn(&self) -> Option<ConnInfo> {
        let template = server().tcp.as_ref()?;
        Some(ConnInfo::parse(&template.replace("DBNAME", &self.name)).unwrap())
    }

    /// Settings pointing at this database, with storage in `storage_dir`.
    pub fn settings(&self, storage_dir: &std::path::Path) -> Settings {
        let mut env = std::collections::BTreeMap::new();
        env.insert("DATABASE_URL".to_owned(), url_of(&self.conn));
        env.insert("INNGEST_DEV".to_owned(), "1".to_owned());
        env.insert("INNGEST_SYNC_ON_STARTUP".to_owned(), "false".to_owned());
        env.insert("BACKUP_STORAGE_DIR".to_owned(), storage_dir.display().to_string());
        env.insert("BIND_ADDRESS".to_owned(), "127.0.0.1:0".to_owned());
        Settings::from_sources(&env, None).expect("test settings")
    }
}

/// A superuser URL for a database on the test server (unix socket; no password).
pub fn url_of(conn: &ConnInfo) -> String {
    if conn.host.starts_with('/') {
        format!("postgres://{}@localhost/{}?host={}&port={}", conn.user, conn.database, conn.host, conn.port)
    } else {
        // TEST_DATABASE_URL: reuse it with another database name.
        let mut url = url::Url::parse(&std::env::var("TEST_DATABASE_URL").unwrap()).unwrap();
        url.set_path(&conn.database);
        url.to_string()
    }
}

async fn admin_connection() -> sqlx::PgConnection {
    sqlx::PgConnection::connect_with(&server().admin.connect_options()).await.expect("admin connection")
}

pub async fn create_database(name: &str) {
    let mut admin = admin_connection().await;
    sqlx::raw_sql(&format!("CREATE DATABASE {}", quote_ident(name))).execute(&mut admin).await.expect("create database");
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
    pub state: AppState,
    pub storage_dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }
}

pub async fn spawn_app(db: &TestDb) -> TestApp {
    let storage_dir = tempfile::tempdir().unwrap();
    let settings = Arc::new(db.settings(storage_dir.path()));
    let database = Database::open(&settings).await.expect("open database");
    let shutdown = CancellationToken::new();
    let state = AppState::new(settings.clone(), &database, shutdown.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = startup::router(state.clone(), axum::Router::new());
    let app = App::build(listener, router, settings.http.shutdown_timeout, shutdown.clone());
    let address = format!("http://127.0.0.1:{}", app.port());
    let stop = shutdown.clone();
    tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }));
    TestApp { address, state, storage_dir, shutdown }
}

/// Order-independent content checksum of a table, computed by the server: an oracle that shares
/// no code with the worker's own checksums.
pub async fn table_checksum(pool: &PgPool, table: &str, filter: &str) -> (i64, String) {
    let sql = format!(
        "SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') FROM {table} t WHERE {filter}"
    );
    sqlx::query_as(&sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}
