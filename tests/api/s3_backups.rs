//! Backups through S3-compatible storage (SeaweedFS on loopback): every scope taken by one
//! worker process and verified, drilled and restored by another that shares only the bucket;
//! the REST download streamed from the bucket; refused writes and `check`.

use std::path::Path;
use std::sync::Arc;

use reqwest::StatusCode;
use riveredge_backup::settings::S3Settings;
use riveredge_backup::storage::{ObjectKey, S3Storage, Storage};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::helpers::{all_checksums, backup_row, table_checksum, TestDb};
use crate::s3_server::{ok_json, read_only, run, s3_overrides, s3_settings, worker};

/// The binary with only the database and the bucket configured (and an empty local directory
/// that must stay empty).
fn operator(db: &TestDb, s3: &S3Settings, unused_dir: &Path) -> Command {
    worker(db, s3, unused_dir, &[])
}

async fn object_keys(s3: &S3Settings, uuid: &str) -> Vec<String> {
    let storage = S3Storage::open(s3).unwrap();
    storage
        .list(&ObjectKey::parse(uuid).unwrap())
        .await
        .unwrap()
        .iter()
        .map(|k| {
            k.as_str()
                .trim_start_matches(&format!("{uuid}/"))
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn every_scope_backed_up_by_one_process_is_verified_drilled_and_restored_by_another() {
    let db = TestDb::with_fixture().await;
    let s3 = s3_settings();
    let unused = tempfile::tempdir().unwrap();
    let backup = |args: &'static [&'static str]| {
        let cmd = operator(&db, &s3, unused.path());
        async move {
            let mut all = vec!["--json", "backup"];
            all.extend_from_slice(args);
            ok_json(&run(cmd, &all).await)["uuid"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let full = backup(&["--scope", "all"]).await;
    let tenant = backup(&["--scope", "tenant", "--tenant", "1"]).await;
    let table = backup(&["--scope", "table", "--tables", "infra_platform_settings"]).await;

    for uuid in [&full, &tenant, &table] {
        let keys = object_keys(&s3, uuid).await;
        assert!(keys.contains(&"manifest.json".to_owned()), "{keys:?}");
        assert!(keys.contains(&"schema.dump".to_owned()), "{keys:?}");
        assert_eq!(backup_row(&db.pool, uuid).await.status, "success");
    }
    assert_eq!(
        std::fs::read_dir(unused.path()).unwrap().count(),
        0,
        "nothing stored locally"
    );

    // Another process, sharing only the database and the bucket.
    for uuid in [&full, &tenant, &table] {
        let verified = ok_json(
            &run(
                operator(&db, &s3, unused.path()),
                &["--json", "verify", uuid],
            )
            .await,
        );
        assert_eq!(verified["ok"], true, "{verified}");
        let drilled = ok_json(
            &run(
                operator(&db, &s3, unused.path()),
                &["--json", "drill", uuid],
            )
            .await,
        );
        assert_eq!(drilled["ok"], true, "{drilled}");
    }
    let target = format!("t_{}", uuid::Uuid::new_v4().simple());
    ok_json(
        &run(
            operator(&db, &s3, unused.path()),
            &["--json", "restore", &full, "--target-database", &target],
        )
        .await,
    );
    let restored = TestDb::attach(&target).await;
    assert_eq!(
        all_checksums(&restored.pool).await,
        all_checksums(&db.pool).await
    );

    // The tenant backup repairs tenant 1's rows in the live database (a live tenant restore,
    // whose safety backup goes to the bucket too).
    let before = table_checksum(&db.pool, "core_departments", "tenant_id = 1").await;
    db.execute_script("UPDATE core_departments SET name = 'damaged' WHERE tenant_id = 1")
        .await;
    assert_ne!(
        table_checksum(&db.pool, "core_departments", "tenant_id = 1").await,
        before
    );
    ok_json(
        &run(
            operator(&db, &s3, unused.path()),
            &["--json", "restore", &tenant, "--replace"],
        )
        .await,
    );
    assert_eq!(
        table_checksum(&db.pool, "core_departments", "tenant_id = 1").await,
        before
    );
    assert_eq!(
        std::fs::read_dir(unused.path()).unwrap().count(),
        0,
        "nothing stored locally"
    );
}

#[tokio::test]
async fn a_damaged_object_in_the_bucket_fails_verify_naming_it() {
    let db = TestDb::with_fixture().await;
    let s3 = s3_settings();
    let unused = tempfile::tempdir().unwrap();
    let uuid = ok_json(
        &run(
            operator(&db, &s3, unused.path()),
            &["--json", "backup", "--scope", "all"],
        )
        .await,
    )["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let storage = S3Storage::open(&s3).unwrap();
    let data = storage
        .list(&ObjectKey::parse(&format!("{uuid}/data")).unwrap())
        .await
        .unwrap()[0]
        .clone();
    let mut body = Vec::new();
    storage
        .open(&data)
        .await
        .unwrap()
        .read_to_end(&mut body)
        .await
        .unwrap();
    let last = body.len() - 1;
    body[last] ^= 0xff;
    let mut w = storage.create(&data).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut w, &body)
        .await
        .unwrap();
    w.commit().await.unwrap();

    let out = run(
        operator(&db, &s3, unused.path()),
        &["--json", "verify", &uuid],
    )
    .await;
    assert_ne!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(data.as_str()), "{text}");
}

#[tokio::test]
async fn check_reports_a_writable_bucket_and_a_bucket_that_refuses_writes() {
    let db = TestDb::with_fixture().await;
    let s3 = s3_settings();
    let unused = tempfile::tempdir().unwrap();
    let good = ok_json(&run(operator(&db, &s3, unused.path()), &["--json", "check"]).await);
    let storage = good["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "storage")
        .unwrap()
        .clone();
    assert_eq!(storage["ok"], true, "{storage}");
    assert!(storage["detail"]
        .as_str()
        .unwrap()
        .contains("s3://backups/"));

    let refused = run(
        operator(&db, &read_only(&s3), unused.path()),
        &["--json", "check"],
    )
    .await;
    assert_ne!(refused.status.code(), Some(0));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(text.contains("storage"), "{text}");
    assert!(
        text.contains("privileges") || text.contains("AccessDenied"),
        "{text}"
    );
    assert!(!text.contains(crate::s3_server::READ_ONLY_SECRET), "{text}");

    // A backup into it fails with that cause and leaves no manifest.
    let out = run(
        operator(&db, &read_only(&s3), unused.path()),
        &["--json", "backup", "--scope", "all"],
    )
    .await;
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("privileges") || err.contains("AccessDenied"),
        "{err}"
    );
    let writable = S3Storage::open(&s3).unwrap();
    let prefixes = writable.prefixes().await.unwrap();
    assert!(prefixes.is_empty(), "{prefixes:?}");
}

#[tokio::test]
async fn the_rest_download_streams_the_stored_files_from_the_bucket() {
    let s3 = s3_settings();
    let overrides = s3_overrides(&s3);
    let pairs: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api = crate::rest::Api::spawn_with(&pairs).await;
    let me = crate::rest::tenant_admin(1);
    let uuid = crate::rest_download::backed_up(&api, 1, "s3").await;
    let response = crate::rest_download::get(
        &api,
        &format!("{}/{uuid}/download", crate::rest::BASE),
        &me,
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let zip = response.bytes().await.unwrap();
    let files = crate::rest_download::unzip(&zip);
    let storage: Arc<dyn Storage> = Arc::new(S3Storage::open(&s3).unwrap());
    let mut stored = std::collections::BTreeMap::new();
    for key in storage
        .list(&ObjectKey::parse(&uuid).unwrap())
        .await
        .unwrap()
    {
        let mut body = Vec::new();
        storage
            .open(&key)
            .await
            .unwrap()
            .read_to_end(&mut body)
            .await
            .unwrap();
        stored.insert(key.as_str()[uuid.len() + 1..].to_owned(), body);
    }
    assert!(stored.contains_key("manifest.json"));
    assert_eq!(files, stored);
    assert!(
        api.app.artifact_files(&uuid).is_empty(),
        "nothing on the local disk"
    );
}
