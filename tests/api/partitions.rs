//! A table-scope backup of a partitioned table: choosing the table chooses every partition (any
//! depth), so the backup restores into a new database partition by partition and drills; naming
//! a partition alone is refused with a message naming the table to choose.

use riveredge_backup::backup::BackupScope;
use riveredge_backup::restore::{self, RestoreMode};

use crate::backup::{spec, Engine};
use crate::helpers::{database_exists, table_checksum, TestDb};

/// Range partitions, one of them itself partitioned, and a default partition; rows in each
/// leaf; a table outside the selection.
const SCHEMA: &str = "
    CREATE TABLE events (id int NOT NULL, kind text NOT NULL, body text) PARTITION BY RANGE (id);
    CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (100);
    CREATE TABLE events_mid PARTITION OF events FOR VALUES FROM (100) TO (200)
        PARTITION BY LIST (kind);
    CREATE TABLE events_mid_a PARTITION OF events_mid FOR VALUES IN ('a');
    CREATE TABLE events_mid_rest PARTITION OF events_mid DEFAULT;
    CREATE TABLE events_other PARTITION OF events DEFAULT;
    CREATE TABLE unrelated (id int);
    INSERT INTO events SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 'e' || g
        FROM generate_series(1, 250) g;
    INSERT INTO unrelated VALUES (1);";

const LEAVES: &[&str] = &[
    "events",
    "events_low",
    "events_mid",
    "events_mid_a",
    "events_mid_rest",
    "events_other",
];

async fn per_partition(db: &TestDb) -> Vec<(String, (i64, String))> {
    let mut out = Vec::new();
    for t in LEAVES {
        // ONLY: the partition's own rows, not its descendants'.
        let only = format!("ONLY {t}");
        out.push((
            (*t).to_owned(),
            table_checksum(&db.pool, &only, "true").await,
        ));
    }
    out
}

#[tokio::test]
async fn a_table_backup_of_a_partitioned_table_restores_every_partition_and_drills() {
    let source = TestDb::migrated().await;
    source.execute_script(SCHEMA).await;
    let engine = Engine::new(&source).await;
    let s = spec(BackupScope::Table, None, &["events"]);
    let outcome = riveredge_backup::commands::take_backup(&engine.state, &s, "partitions")
        .await
        .unwrap_or_else(|e| panic!("backup: {e:#}"));
    let expected = per_partition(&source).await;
    let leaves = [
        "events_low",
        "events_mid_a",
        "events_mid_rest",
        "events_other",
    ];
    assert!(
        expected
            .iter()
            .all(|(t, (n, _))| *n > 0 || !leaves.contains(&t.as_str())),
        "every leaf holds rows: {expected:?}"
    );

    let target = TestDb::empty().await;
    restore::restore_into_database(
        &engine.state,
        &outcome.manifest,
        &target.conn,
        None,
        RestoreMode::Fresh,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("fresh restore: {e}"));
    assert_eq!(per_partition(&target).await, expected);
    let unrelated: Option<String> = sqlx::query_scalar("SELECT to_regclass('unrelated')::text")
        .fetch_one(&target.pool)
        .await
        .unwrap();
    assert_eq!(unrelated, None, "a table outside the selection stays out");

    let drill = restore::drill(&engine.state, &outcome.manifest.backup_uuid)
        .await
        .unwrap_or_else(|e| panic!("drill: {e}"));
    assert!(!drill.tables.is_empty());
    assert!(drill.tables.iter().all(restore::TableCheck::matches));
    assert!(!database_exists(&drill.database).await);
}

#[tokio::test]
async fn naming_a_partition_alone_is_refused_naming_its_partitioned_table() {
    let source = TestDb::migrated().await;
    source.execute_script(SCHEMA).await;
    let engine = Engine::new(&source).await;
    for name in ["events_mid_a", "public.events_low"] {
        let s = spec(BackupScope::Table, None, &[name]);
        let err = riveredge_backup::commands::take_backup(&engine.state, &s, "partitions")
            .await
            .expect_err("a partition alone is refused");
        let message = format!("{err:#}");
        assert!(
            message.contains("is a partition of public.events")
                && message.contains("choose public.events"),
            "{message}"
        );
        assert!(
            engine.files(&s.uuid).is_empty(),
            "a refused backup leaves no file"
        );
    }
}
