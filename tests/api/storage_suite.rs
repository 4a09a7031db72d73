//! One suite of the `Storage` promises, run against both backends: the local directory and a
//! real S3-compatible server (SeaweedFS on loopback).

use std::io::ErrorKind;
use std::sync::Arc;

use riveredge_backup::storage::{LocalStorage, ObjectKey, S3Storage, Storage};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::s3_server::{read_only, s3_settings};

struct Backend {
    storage: Arc<dyn Storage>,
    _dir: Option<tempfile::TempDir>,
}

fn local() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    Backend {
        storage: Arc::new(LocalStorage::open(dir.path()).unwrap()),
        _dir: Some(dir),
    }
}

fn s3() -> Backend {
    Backend {
        storage: Arc::new(S3Storage::open(&s3_settings()).unwrap()),
        _dir: None,
    }
}

fn key(k: &str) -> ObjectKey {
    ObjectKey::parse(k).unwrap()
}

async fn put(storage: &dyn Storage, k: &str, body: &[u8]) -> u64 {
    let mut w = storage.create(&key(k)).await.unwrap();
    w.write_all(body).await.unwrap();
    w.shutdown().await.unwrap();
    w.commit().await.unwrap()
}

async fn get(storage: &dyn Storage, k: &str) -> Vec<u8> {
    let mut out = Vec::new();
    storage
        .open(&key(k))
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

/// Deterministic, incompressible-looking bytes (so sizes are real).
fn bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = sha2::Sha256::digest(b"seed").to_vec();
    while out.len() < len {
        block = sha2::Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

/// Generates one test per backend for each case.
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod local_backend {
            $(#[tokio::test] async fn $case() { super::$case(super::local()).await })*
        }
        mod s3_backend {
            $(#[tokio::test] async fn $case() { super::$case(super::s3()).await })*
        }
    };
}

both_backends!(
    objects_appear_only_on_commit,
    large_objects_stream_in_parts_and_read_back_whole,
    a_dropped_writer_leaves_nothing_visible,
    an_abandoned_upload_never_looks_complete,
    write_once_objects_are_never_overwritten,
    delete_prefix_removes_everything_below,
    prefixes_name_each_backup_with_its_last_change,
    missing_objects_are_not_found,
);

async fn objects_appear_only_on_commit(b: Backend) {
    let s = b.storage.as_ref();
    let mut w = s.create(&key("b1/data/0001.copy.zst")).await.unwrap();
    w.write_all(b"hello").await.unwrap();
    w.shutdown().await.unwrap();
    assert_eq!(s.size(&key("b1/data/0001.copy.zst")).await.unwrap(), None);
    assert!(s.list(&key("b1")).await.unwrap().is_empty());
    assert_eq!(w.commit().await.unwrap(), 5);
    put(s, "b1/manifest.json", b"{}").await;
    put(s, "b10/other", b"x").await;
    assert_eq!(
        s.size(&key("b1/data/0001.copy.zst")).await.unwrap(),
        Some(5)
    );
    assert_eq!(get(s, "b1/data/0001.copy.zst").await, b"hello");
    assert_eq!(
        s.list(&key("b1")).await.unwrap(),
        vec![key("b1/data/0001.copy.zst"), key("b1/manifest.json")],
        "sorted, and b10 is not under b1/"
    );
}

async fn large_objects_stream_in_parts_and_read_back_whole(b: Backend) {
    let s = b.storage.as_ref();
    // Larger than two S3 parts, written in uneven pieces.
    let body = bytes(12 * 1024 * 1024 + 12345);
    let mut w = s.create(&key("big/data/0001.copy.zst")).await.unwrap();
    for piece in body.chunks(300_001) {
        w.write_all(piece).await.unwrap();
    }
    w.shutdown().await.unwrap();
    assert_eq!(w.commit().await.unwrap(), body.len() as u64);
    let back = get(s, "big/data/0001.copy.zst").await;
    assert_eq!(back.len(), body.len());
    assert!(back == body, "content differs");
}

async fn a_dropped_writer_leaves_nothing_visible(b: Backend) {
    let s = b.storage.as_ref();
    for (k, len) in [("d/small", 1000), ("d/large", 11 * 1024 * 1024)] {
        let mut w = s.create(&key(k)).await.unwrap();
        w.write_all(&bytes(len)).await.unwrap();
        drop(w);
        assert_eq!(s.size(&key(k)).await.unwrap(), None, "{k}");
    }
    assert!(s.list(&key("d")).await.unwrap().is_empty());
    assert!(s
        .prefixes()
        .await
        .unwrap()
        .iter()
        .all(|(p, _)| p != &key("d")));
}

/// A process killed mid-upload runs no destructor: its parts stay, unseen.
async fn an_abandoned_upload_never_looks_complete(b: Backend) {
    let s = b.storage.as_ref();
    let mut w = s.create(&key("k/data/0001.copy.zst")).await.unwrap();
    w.write_all(&bytes(11 * 1024 * 1024)).await.unwrap();
    w.flush().await.unwrap();
    std::mem::forget(w);
    assert_eq!(s.size(&key("k/data/0001.copy.zst")).await.unwrap(), None);
    assert!(s.list(&key("k")).await.unwrap().is_empty());
    assert!(matches!(
        s.open(&key("k/data/0001.copy.zst")).await.map(|_| ()),
        Err(e) if e.kind() == ErrorKind::NotFound
    ));
}

async fn write_once_objects_are_never_overwritten(b: Backend) {
    let s = b.storage.as_ref();
    let k = key("w/manifest.json");
    let mut first = s.create_new(&k).await.unwrap();
    first.write_all(b"first").await.unwrap();
    first.shutdown().await.unwrap();
    // A second writer racing the first: whichever commits second loses.
    let mut second = s.create_new(&k).await.unwrap();
    second.write_all(b"second, longer").await.unwrap();
    second.shutdown().await.unwrap();
    assert_eq!(first.commit().await.unwrap(), 5);
    let err = second.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(get(s, "w/manifest.json").await, b"first");
}

async fn delete_prefix_removes_everything_below(b: Backend) {
    let s = b.storage.as_ref();
    for k in [
        "x/manifest.json",
        "x/schema.dump",
        "x/data/0001.copy.zst",
        "xy/keep",
    ] {
        put(s, k, k.as_bytes()).await;
    }
    s.delete_prefix(&key("x")).await.unwrap();
    assert!(s.list(&key("x")).await.unwrap().is_empty());
    assert_eq!(s.size(&key("x/manifest.json")).await.unwrap(), None);
    assert_eq!(s.list(&key("xy")).await.unwrap(), vec![key("xy/keep")]);
    s.delete_prefix(&key("x")).await.unwrap();
}

async fn prefixes_name_each_backup_with_its_last_change(b: Backend) {
    let s = b.storage.as_ref();
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
    put(s, "p1/manifest.json", b"1").await;
    put(s, "p1/data/0001.copy.zst", b"1").await;
    put(s, "p2/schema.dump", b"2").await;
    let prefixes = s.prefixes().await.unwrap();
    let names: Vec<&str> = prefixes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["p1", "p2"]);
    assert!(prefixes.iter().all(|(_, t)| *t >= before));
}

async fn missing_objects_are_not_found(b: Backend) {
    let s = b.storage.as_ref();
    assert_eq!(s.size(&key("none/here")).await.unwrap(), None);
    let err = s.open(&key("none/here")).await.map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(s.list(&key("none")).await.unwrap().is_empty());
    assert!(s.prefixes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_bucket_that_refuses_writes_fails_the_commit_with_access_denied() {
    let settings = s3_settings();
    let storage = S3Storage::open(&read_only(&settings)).unwrap();
    for large in [false, true] {
        let k = key(if large { "r/large" } else { "r/small" });
        let body = bytes(if large { 11 * 1024 * 1024 } else { 100 });
        let result = async {
            let mut w = storage.create(&k).await?;
            w.write_all(&body).await?;
            w.shutdown().await?;
            w.commit().await
        }
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(
            err.to_string().contains("AccessDenied") || err.to_string().contains("denied"),
            "{err}"
        );
    }
    let writable = S3Storage::open(&settings).unwrap();
    assert!(writable.list(&key("r")).await.unwrap().is_empty());
}

#[test]
fn s3_settings_never_print_the_secret() {
    let settings = s3_settings();
    let shown = format!("{settings:?} {:?}", S3Storage::open(&settings).unwrap());
    assert!(!shown.contains(crate::s3_server::SECRET_KEY), "{shown}");
}
