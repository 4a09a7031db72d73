//! The foundation: the harness itself, migrations, the fixture, health and shutdown.

use crate::helpers::{spawn_app, table_checksum, TestDb};

#[tokio::test]
async fn migrations_create_the_backup_table_with_its_constraints() {
    let db = TestDb::migrated().await;
    let insert = |scope: &'static str, tenant: Option<i32>, tables: Option<Vec<String>>| {
        let pool = db.pool.clone();
        async move {
            sqlx::query("INSERT INTO root_data_backups (uuid, tenant_id, name, backup_scope, backup_tables) VALUES ($1, $2, 'n', $3, $4)")
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(tenant)
                .bind(scope)
                .bind(tables)
                .execute(&pool)
                .await
        }
    };
    assert!(insert("all", None, None).await.is_ok());
    assert!(insert("tenant", Some(1), None).await.is_ok());
    assert!(insert("table", None, Some(vec!["core_users".into()]))
        .await
        .is_ok());
    assert!(
        insert("all", Some(1), None).await.is_err(),
        "a platform-wide backup cannot belong to a tenant"
    );
    assert!(
        insert("tenant", None, None).await.is_err(),
        "a tenant backup needs its tenant"
    );
    assert!(
        insert("table", None, Some(vec![])).await.is_err(),
        "a table backup needs tables"
    );
    assert!(insert("everything", None, None).await.is_err());
    let bad_status =
        sqlx::query("INSERT INTO root_data_backups (uuid, name, status) VALUES ('x', 'n', 'done')")
            .execute(&db.pool)
            .await;
    assert!(bad_status.is_err());
}

#[tokio::test]
async fn the_fixture_loads_with_tenants_platform_rows_and_cycles() {
    let db = TestDb::with_fixture().await;
    let (users_t1, _) = table_checksum(&db.pool, "core_users", "tenant_id = 1").await;
    let (platform_users, _) = table_checksum(&db.pool, "core_users", "tenant_id IS NULL").await;
    assert_eq!((users_t1, platform_users), (12, 2));
    let managers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM core_departments WHERE manager_id IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let cycle: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apps_kuaizhizao_work_orders WHERE sales_order_item_id IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(managers > 0 && cycle > 0, "both FK cycles are populated");
}

#[tokio::test]
async fn health_answers_and_reports_the_database() {
    let db = TestDb::migrated().await;
    let app = spawn_app(&db).await;
    let res = reqwest::get(app.url("/health")).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    app.shutdown.cancel();
}

#[tokio::test]
async fn password_authentication_over_tcp_works_for_the_pool() {
    let db = TestDb::migrated().await;
    let Some(tcp) = db.tcp_conn() else { return };
    let pool = riveredge_backup::db::connect(&tcp, 2)
        .await
        .expect("password login over TCP");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn the_catalog_sees_fixture_tables_keys_cycles_and_identity() {
    use riveredge_backup::catalog::{Catalog, TableRef};
    let db = TestDb::with_fixture().await;
    let catalog = Catalog::load(&db.pool).await.unwrap();
    let users = catalog
        .table(&TableRef::new("public", "core_users"))
        .unwrap();
    assert!(users.has_tenant_id());
    assert_eq!(users.primary_key, vec!["id".to_owned()]);
    let user_roles = catalog
        .table(&TableRef::new("public", "core_user_roles"))
        .unwrap();
    assert!(!user_roles.has_tenant_id());
    let parents: Vec<String> = catalog
        .fks_from(&user_roles.table)
        .map(|fk| fk.referenced.name.clone())
        .collect();
    assert_eq!(
        parents,
        vec!["core_roles".to_owned(), "core_users".to_owned()]
    );
    let logs = catalog
        .table(&TableRef::new("public", "core_operation_logs"))
        .unwrap();
    assert_eq!(logs.column("id").unwrap().identity, Some('a'));
    let seqs: Vec<_> = catalog.sequences_of(&logs.table).collect();
    assert_eq!(
        seqs.len(),
        1,
        "identity sequence is found and owned by its column"
    );
    assert!(catalog
        .fks_from(&TableRef::new("public", "core_departments"))
        .any(|fk| fk.referenced.name == "core_users"));
    assert_eq!(catalog.resolve("core_users").unwrap(), users.table);
    assert!(catalog.resolve("core_userz").is_err());
}

/// There is no Docker engine on the build machines, so the compose file is checked for the
/// structure the stack depends on rather than run.
#[test]
fn docker_compose_wires_postgres_inngest_and_the_worker() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let services = &doc["services"];
    let postgres = services["postgres"]["image"].as_str().unwrap();
    assert!(
        postgres.starts_with("postgres:15.") && postgres.len() > "postgres:15.".len(),
        "postgres is pinned to a minor release: {postgres}"
    );
    let inngest = services["inngest"]["image"].as_str().unwrap();
    let tag = inngest
        .strip_prefix("inngest/inngest:v")
        .unwrap_or_default();
    assert!(
        tag.split('.').count() == 3 && tag.split('.').all(|p| p.parse::<u32>().is_ok()),
        "the Inngest image is pinned to a version tag: {inngest}"
    );
    assert_eq!(
        services["inngest"]["command"].as_str(),
        Some("inngest dev -u http://worker:3000/api/inngest")
    );
    let worker = &services["worker"];
    assert_eq!(worker["build"].as_str(), Some("."));
    let env = &worker["environment"];
    assert_eq!(env["INNGEST_DEV"].as_str(), Some("1"));
    assert_eq!(
        env["INNGEST_BASE_URL"].as_str(),
        Some("http://inngest:8288")
    );
    assert!(env["DATABASE_URL"]
        .as_str()
        .unwrap()
        .contains("@postgres:5432/"));
    assert_eq!(
        env["INNGEST_SERVE_ORIGIN"].as_str(),
        Some("http://worker:3000")
    );
    let volume = worker["volumes"][0].as_str().unwrap();
    assert!(
        volume.ends_with(env["BACKUP_STORAGE_DIR"].as_str().unwrap()),
        "backups live on a volume"
    );
    let health = worker["healthcheck"]["test"]
        .as_sequence()
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    assert!(health.contains("/health"), "worker healthcheck: {health}");
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("postgresql-client-${PG_MAJOR}"),
        "the image carries pg_dump of the server's major version"
    );
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("/health"));
    let toolchain =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rust-toolchain.toml"))
            .unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap();
    assert!(
        dockerfile.contains(&format!("FROM rust:{channel}-")),
        "the build image is the pinned toolchain"
    );
    assert!(
        dockerfile.contains("rustup component add rustfmt clippy"),
        "the toolchain file's components are in the image"
    );
    let stub_build = dockerfile.find("COPY Cargo.toml Cargo.lock").unwrap();
    assert!(
        stub_build < dockerfile.find("COPY . .").unwrap(),
        "dependencies are built in a layer of their own before the sources are copied"
    );
    let ignore =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore")).unwrap();
    for excluded in ["target/", ".git/", "backups/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            "{excluded} stays out of the build context"
        );
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_the_in_flight_request_finish() {
    use riveredge_backup::startup::App;
    use tokio_util::sync::CancellationToken;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // An endpoint that is still working when the shutdown signal arrives.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let router = axum::Router::new().route(
        "/slow",
        axum::routing::get(move || {
            let tx = started_tx.lock().unwrap().take();
            async move {
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                "done"
            }
        }),
    );
    let token = CancellationToken::new();
    let app = App::build(
        listener,
        router,
        std::time::Duration::from_secs(10),
        token.clone(),
    );
    let url = format!("http://127.0.0.1:{}/slow", app.port());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));
    let in_flight = tokio::spawn(reqwest::get(url.clone()));
    tokio::time::timeout(std::time::Duration::from_secs(10), started_rx)
        .await
        .unwrap()
        .unwrap();

    stop_tx.send(()).unwrap();

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.text().await.unwrap(), "done");
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(token.is_cancelled(), "long work is told to stop");
    assert!(
        reqwest::get(url).await.is_err(),
        "no new connections after shutdown"
    );
}
