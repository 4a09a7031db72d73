//! Encryption at rest (age): the storage wrapper on both backends, and the acceptance path —
//! a write-only worker's backups verified, drilled and restored by another process holding the
//! identity, unreadable without it, damage and swaps caught, keys rotated.

use std::io::ErrorKind;
use std::process::Output;
use std::sync::Arc;

use riveredge_backup::storage::{
    EncryptedStorage, Keys, LocalStorage, ObjectKey, S3Storage, Storage,
};
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{all_checksums, TestDb};
use crate::s3_server::{ok_json, run, s3_settings, worker};

fn key(k: &str) -> ObjectKey {
    ObjectKey::parse(k).unwrap()
}

/// A new X25519 key pair: (identity line, public key).
fn key_pair() -> (String, String) {
    let id = age::x25519::Identity::generate();
    (
        id.to_string().expose_secret().to_owned(),
        id.to_public().to_string(),
    )
}

fn encrypted(inner: Arc<dyn Storage>, identity: &str) -> EncryptedStorage {
    EncryptedStorage::new(inner, Keys::x25519(&[], Some(identity)).unwrap())
}

async fn put(s: &dyn Storage, k: &str, body: &[u8]) {
    let mut w = s.create(&key(k)).await.unwrap();
    w.write_all(body).await.unwrap();
    w.shutdown().await.unwrap();
    assert_eq!(w.commit().await.unwrap(), body.len() as u64);
}

async fn read(s: &dyn Storage, k: &str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.open(&key(k)).await?.read_to_end(&mut out).await?;
    Ok(out)
}

fn text(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"tenant_id rows "[i % 15]).collect()
}

async fn wrapper_round_trips_and_fails_specifically(plain: Arc<dyn Storage>) {
    let (identity, _) = key_pair();
    let (other, _) = key_pair();
    let s = encrypted(plain.clone(), &identity);
    for len in [0, 1, 65_536, 65_537, 3 * 65_536, 6 * 1024 * 1024 + 7] {
        let k = format!("e/{len}");
        let body = text(len);
        put(&s, &k, &body).await;
        assert_eq!(read(&s, &k).await.unwrap(), body, "{len}");
        assert_eq!(
            s.size(&key(&k)).await.unwrap(),
            Some(len as u64),
            "size of {len}"
        );
        let stored = read(plain.as_ref(), &k).await.unwrap();
        assert!(stored.starts_with(b"age-encryption.org/v1\n"));
        if len > 100 {
            assert!(
                !stored.windows(15).any(|w| w == b"tenant_id rows "),
                "plaintext leaked"
            );
        }
    }
    let k = "e/196608";

    // Wrong key, and no key at all.
    let wrong = encrypted(plain.clone(), &other);
    let err = read(&wrong, k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert!(
        err.to_string()
            .contains("none of the configured identities"),
        "{err}"
    );
    let (_, public) = key_pair();
    let write_only = EncryptedStorage::new(plain.clone(), Keys::x25519(&[public], None).unwrap());
    let err = read(&write_only, k).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("none of the configured identities"),
        "{err}"
    );
    // …but reads back what it wrote itself (its session key), for verify-after-write.
    put(&write_only, "e/own", b"own rows").await;
    assert_eq!(read(&write_only, "e/own").await.unwrap(), b"own rows");
    assert!(!write_only.keys().can_read());

    // Tampered and truncated stored bytes.
    let stored = read(plain.as_ref(), k).await.unwrap();
    let mut tampered = stored.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    put(plain.as_ref(), "e/tampered", &tampered).await;
    let err = read(&s, "e/tampered").await.unwrap_err();
    assert!(err.to_string().contains("tampered"), "{err}");
    put(
        plain.as_ref(),
        "e/truncated",
        &stored[..stored.len() - 70_000],
    )
    .await;
    let err = read(&s, "e/truncated").await.unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    // A passphrase instead of keys.
    let p = EncryptedStorage::new(
        plain.clone(),
        Keys::passphrase("correct horse".to_owned().into()),
    );
    put(&p, "e/pass", b"secret rows").await;
    assert_eq!(read(&p, "e/pass").await.unwrap(), b"secret rows");
    let bad = EncryptedStorage::new(plain.clone(), Keys::passphrase("wrong".to_owned().into()));
    let err = read(&bad, "e/pass").await.unwrap_err();
    assert!(err.to_string().contains("decryption failed"), "{err}");

    // Objects stored before encryption was turned on stay readable.
    put(plain.as_ref(), "e/old", b"plain old").await;
    assert_eq!(read(&s, "e/old").await.unwrap(), b"plain old");
}

#[tokio::test]
async fn the_encrypting_wrapper_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    wrapper_round_trips_and_fails_specifically(Arc::new(LocalStorage::open(dir.path()).unwrap()))
        .await;
}

#[tokio::test]
async fn the_encrypting_wrapper_on_s3() {
    wrapper_round_trips_and_fails_specifically(Arc::new(S3Storage::open(&s3_settings()).unwrap()))
        .await;
}

#[track_caller]
fn failed(out: &Output) -> String {
    assert_ne!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn backups_of_a_write_only_worker_are_read_only_with_the_identity() {
    let db = TestDb::with_fixture().await;
    let s3 = s3_settings();
    let dir = tempfile::tempdir().unwrap();
    let (old_identity, old_public) = key_pair();
    let (new_identity, new_public) = key_pair();
    let ids = dir.path().join("identities");
    std::fs::write(&ids, format!("{old_identity}\n")).unwrap();
    let id_path = ids.display().to_string();
    let writer = [("BACKUP_ENCRYPTION_RECIPIENTS", old_public.clone())];
    let reader = [("BACKUP_ENCRYPTION_IDENTITY_FILE", id_path.clone())];

    // The backup worker holds public keys only.
    let check = ok_json(&run(worker(&db, &s3, dir.path(), &writer), &["--json", "check"]).await);
    assert!(check.to_string().contains("write-only"), "{check}");
    let backup = |args: &'static [&'static str], vars: Vec<(&'static str, String)>| {
        let cmd = worker(&db, &s3, dir.path(), &vars);
        async move {
            let mut all = vec!["--json", "backup"];
            all.extend_from_slice(args);
            ok_json(&run(cmd, &all).await)["uuid"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let full = backup(&["--scope", "all"], writer.to_vec()).await;
    let tenant = backup(&["--scope", "tenant", "--tenant", "1"], writer.to_vec()).await;

    // Nothing in the bucket reads as plaintext: not even table names in the manifest.
    let raw = S3Storage::open(&s3).unwrap();
    for k in raw.list(&key(&full)).await.unwrap() {
        let mut body = Vec::new();
        raw.open(&k)
            .await
            .unwrap()
            .read_to_end(&mut body)
            .await
            .unwrap();
        assert!(body.starts_with(b"age-encryption.org/v1\n"), "{k}");
        assert!(
            !body.windows(12).any(|w| w == b"core_departm"),
            "{k} leaks a table name"
        );
    }

    // Without the identity nothing can be read.
    let err = failed(&run(worker(&db, &s3, dir.path(), &writer), &["verify", &full]).await);
    assert!(err.contains("none of the configured identities"), "{err}");
    let (stranger, _) = key_pair();
    let wrong_path = dir.path().join("wrong");
    std::fs::write(&wrong_path, stranger).unwrap();
    let wrong = [(
        "BACKUP_ENCRYPTION_IDENTITY_FILE",
        wrong_path.display().to_string(),
    )];
    let err = failed(&run(worker(&db, &s3, dir.path(), &wrong), &["drill", &full]).await);
    assert!(err.contains("none of the configured identities"), "{err}");

    // Another process with the identity verifies, drills and restores both.
    let check = ok_json(&run(worker(&db, &s3, dir.path(), &reader), &["--json", "check"]).await);
    assert!(
        check.to_string().contains("decrypted with the identities"),
        "{check}"
    );
    for uuid in [&full, &tenant] {
        ok_json(
            &run(
                worker(&db, &s3, dir.path(), &reader),
                &["--json", "verify", uuid],
            )
            .await,
        );
        ok_json(
            &run(
                worker(&db, &s3, dir.path(), &reader),
                &["--json", "drill", uuid],
            )
            .await,
        );
    }
    let target = format!("t_{}", uuid::Uuid::new_v4().simple());
    ok_json(
        &run(
            worker(&db, &s3, dir.path(), &reader),
            &["--json", "restore", &full, "--target-database", &target],
        )
        .await,
    );
    let restored = TestDb::attach(&target).await;
    assert_eq!(
        all_checksums(&restored.pool).await,
        all_checksums(&db.pool).await
    );
    db.execute_script("UPDATE core_departments SET name = 'damaged' WHERE tenant_id = 1")
        .await;
    ok_json(
        &run(
            worker(&db, &s3, dir.path(), &reader),
            &["--json", "restore", &tenant, "--replace"],
        )
        .await,
    );
    assert_eq!(
        all_checksums(&restored.pool).await,
        all_checksums(&db.pool).await
    );

    // Rotation: new backups go to the new key; the identity file keeps the old one too.
    std::fs::write(&ids, format!("{new_identity}\n{old_identity}\n")).unwrap();
    let rotated = backup(
        &["--scope", "all"],
        vec![("BACKUP_ENCRYPTION_RECIPIENTS", new_public.clone())],
    )
    .await;
    for uuid in [&full, &rotated] {
        ok_json(
            &run(
                worker(&db, &s3, dir.path(), &reader),
                &["--json", "verify", uuid],
            )
            .await,
        );
    }
    let only_new = dir.path().join("only-new");
    std::fs::write(&only_new, &new_identity).unwrap();
    let only_new = [(
        "BACKUP_ENCRYPTION_IDENTITY_FILE",
        only_new.display().to_string(),
    )];
    ok_json(
        &run(
            worker(&db, &s3, dir.path(), &only_new),
            &["--json", "verify", &rotated],
        )
        .await,
    );
    let err = failed(&run(worker(&db, &s3, dir.path(), &only_new), &["verify", &full]).await);
    assert!(err.contains("none of the configured identities"), "{err}");

    // Swapped files (each validly encrypted) are caught by the manifest's sha256.
    let data = raw.list(&key(&format!("{full}/data"))).await.unwrap();
    assert!(data.len() >= 2);
    let body = |k: ObjectKey| {
        let raw = &raw;
        async move {
            let mut b = Vec::new();
            raw.open(&k)
                .await
                .unwrap()
                .read_to_end(&mut b)
                .await
                .unwrap();
            b
        }
    };
    let (a, b) = (body(data[0].clone()).await, body(data[1].clone()).await);
    put(&raw, data[0].as_str(), &b).await;
    put(&raw, data[1].as_str(), &a).await;
    let err = failed(&run(worker(&db, &s3, dir.path(), &reader), &["verify", &full]).await);
    assert!(err.contains("sha256") || err.contains("size"), "{err}");
}
