//! Streaming writers: COPY text → row hasher → zstd → sha256 → storage, with nothing buffered
//! beyond one chunk and the encoder's window, so memory stays flat whatever the table size.
//! Objects are committed only when complete; a dropped writer leaves nothing visible.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_compression::tokio::write::ZstdEncoder;
use async_compression::Level;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::hash::{RowDigest, RowHasher};
use super::{Manifest, ObjectEntry};
use crate::storage::{ObjectKey, ObjectWriter, Storage};

/// Bytes and rows written so far by one backup, read by the progress reporter.
#[derive(Debug, Default)]
pub struct Progress {
    /// Stored (compressed) bytes.
    pub bytes: AtomicU64,
    pub rows: AtomicU64,
}

impl Progress {
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
        )
    }
}

/// Passes writes through to `inner` while hashing and counting them.
pub struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
    progress: Option<Arc<Progress>>,
}

impl<W> Sha256Writer<W> {
    pub fn new(inner: W, progress: Option<Arc<Progress>>) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
            progress,
        }
    }

    /// The inner writer, the hex sha256 and the byte count of everything written.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.size)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Sha256Writer<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = futures::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.hasher.update(&buf[..n]);
        this.size += n as u64;
        if let Some(p) = &this.progress {
            p.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why writing a data file failed: reading from PostgreSQL, or storing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("reading COPY data: {0}")]
    Database(#[from] sqlx::Error),
    #[error("writing to storage: {0}")]
    Storage(#[from] io::Error),
}

/// A committed object.
#[derive(Debug, Clone)]
pub struct WrittenObject {
    pub entry: ObjectEntry,
}

/// A committed data file and what the rows hashed to.
#[derive(Debug, Clone)]
pub struct WrittenTable {
    pub object: ObjectEntry,
    pub raw_size: u64,
    pub digest: RowDigest,
}

/// Compresses a COPY text stream into `key` (one zstd frame), hashing rows and stored bytes.
///
/// # Errors
/// The source stream fails, or storage does (including a full disk); nothing is committed then.
pub async fn write_table<S>(
    storage: &dyn Storage,
    key: &ObjectKey,
    level: i32,
    mut source: S,
    progress: Option<Arc<Progress>>,
) -> Result<WrittenTable, WriteError>
where
    S: Stream<Item = Result<Bytes, sqlx::Error>> + Unpin,
{
    let object = storage.create(key).await?;
    let mut encoder = ZstdEncoder::with_quality(
        Sha256Writer::new(object, progress.clone()),
        Level::Precise(level),
    );
    let mut rows = RowHasher::new();
    let mut raw_size = 0u64;
    // PostgreSQL sends one CopyData message per row (a few hundred bytes): batching them
    // before hashing and compressing saves a zstd call, a scan and an atomic per row, which
    // was most of this loop's CPU.
    let mut block = Vec::with_capacity(BLOCK);
    while let Some(chunk) = source.try_next().await? {
        block.extend_from_slice(&chunk);
        if block.len() >= BLOCK {
            raw_size += feed(&mut encoder, &mut rows, &mut block, progress.as_deref()).await?;
        }
    }
    raw_size += feed(&mut encoder, &mut rows, &mut block, progress.as_deref()).await?;
    encoder.shutdown().await?;
    let entry = commit(encoder.into_inner(), key).await?;
    Ok(WrittenTable {
        object: entry,
        raw_size,
        digest: rows.finish(),
    })
}

/// How much COPY text is gathered before it is hashed and compressed.
const BLOCK: usize = 256 * 1024;

/// Hashes and compresses one block, counts its rows in `progress`, and empties it.
async fn feed<W: AsyncWrite + Unpin>(
    encoder: &mut ZstdEncoder<W>,
    rows: &mut RowHasher,
    block: &mut Vec<u8>,
    progress: Option<&Progress>,
) -> io::Result<u64> {
    if block.is_empty() {
        return Ok(0);
    }
    let lines = rows.update(block);
    encoder.write_all(block).await?;
    if let Some(p) = progress {
        p.rows.fetch_add(lines, Ordering::Relaxed);
    }
    let len = block.len() as u64;
    block.clear();
    Ok(len)
}

/// Stores `source` as it is (the `pg_dump` custom archive is compressed by nobody: schema only).
///
/// # Errors
/// Reading `source` or storing fails; nothing is committed then.
pub async fn write_schema(
    storage: &dyn Storage,
    key: &ObjectKey,
    mut source: impl AsyncRead + Unpin,
) -> io::Result<WrittenObject> {
    let object = storage.create(key).await?;
    let mut writer = Sha256Writer::new(object, None);
    tokio::io::copy(&mut source, &mut writer).await?;
    writer.shutdown().await?;
    Ok(WrittenObject {
        entry: commit(writer, key).await?,
    })
}

/// Publishes the manifest (the backup exists from now on); returns its sha256 and size.
///
/// # Errors
/// Storage fails.
pub async fn write_manifest(
    storage: &dyn Storage,
    key: &ObjectKey,
    manifest: &Manifest,
) -> io::Result<(String, u64)> {
    let body = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    let object = storage.create(key).await?;
    let mut writer = Sha256Writer::new(object, None);
    writer.write_all(&body).await?;
    writer.shutdown().await?;
    let entry = commit(writer, key).await?;
    Ok((entry.sha256, entry.size))
}

async fn commit(
    writer: Sha256Writer<Box<dyn ObjectWriter>>,
    key: &ObjectKey,
) -> io::Result<ObjectEntry> {
    let (object, sha256, size) = writer.finish();
    let stored = object.commit().await?;
    if stored != size {
        return Err(io::Error::other(format!(
            "{key}: storage reports {stored} bytes, {size} were written"
        )));
    }
    Ok(ObjectEntry {
        key: key.to_string(),
        sha256,
        size,
    })
}
