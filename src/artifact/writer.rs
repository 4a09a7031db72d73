//! Streaming writers: COPY text → row hasher → zstd → sha256 → storage, with nothing buffered
//! beyond one chunk and the encoder's window, so memory stays flat whatever the table size.
//! Objects are committed only when complete; a dropped writer leaves nothing visible.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use std::io::Write;

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
/// Row hashing and zstd run on a blocking thread of their own, fed through a bounded channel:
/// at level 19 one block takes a good fraction of a second, and on the async executor that
/// starved progress reports, Ctrl-C and shutdown for minutes. Dropping this future closes the
/// channel, and the thread stops after the block it is on.
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
    let mut sink = Sha256Writer::new(object, progress.clone());
    let (blocks_tx, blocks_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let encoder = tokio::task::spawn_blocking(move || {
        encode_blocks(blocks_rx, out_tx, level, progress.as_deref())
    });
    // PostgreSQL sends one CopyData message per row (a few hundred bytes): batching them
    // before hashing and compressing saves a zstd call, a scan and an atomic per row.
    let feed = async move {
        let mut block = Vec::with_capacity(BLOCK);
        while let Some(chunk) = source.try_next().await? {
            block.extend_from_slice(&chunk);
            if block.len() >= BLOCK {
                let full = std::mem::replace(&mut block, Vec::with_capacity(BLOCK));
                if blocks_tx.send(full).await.is_err() {
                    break; // the encoder stopped; its error is reported below
                }
            }
        }
        if !block.is_empty() {
            let _ = blocks_tx.send(block).await;
        }
        Ok::<(), WriteError>(())
    };
    let drain = async {
        while let Some(compressed) = out_rx.recv().await {
            sink.write_all(&compressed).await?;
        }
        Ok::<(), io::Error>(())
    };
    let (fed, drained) = tokio::join!(feed, drain);
    fed?;
    drained?;
    let (raw_size, digest) = encoder
        .await
        .map_err(|e| io::Error::other(format!("the compression thread failed: {e}")))??;
    sink.shutdown().await?;
    let entry = commit(sink, key).await?;
    Ok(WrittenTable {
        object: entry,
        raw_size,
        digest,
    })
}

/// How much COPY text is gathered before it is hashed and compressed.
pub(super) const BLOCK: usize = 256 * 1024;

/// Blocks queued between the COPY reader, the encoder thread and storage: enough to keep each
/// side busy, few enough that memory stays at a few blocks per table.
pub(super) const IN_FLIGHT: usize = 4;

/// The encoder thread: hashes and compresses each block, counts rows in `progress`, and sends
/// the compressed bytes on. Returns the raw size and the rows' digest at the end of input.
fn encode_blocks(
    mut blocks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    out: tokio::sync::mpsc::Sender<Vec<u8>>,
    level: i32,
    progress: Option<&Progress>,
) -> io::Result<(u64, RowDigest)> {
    let mut encoder = zstd::stream::write::Encoder::new(ChannelWriter { out }, level)?;
    let mut rows = RowHasher::new();
    let mut raw_size = 0u64;
    while let Some(block) = blocks.blocking_recv() {
        let lines = rows.update(&block);
        encoder.write_all(&block)?;
        raw_size += block.len() as u64;
        if let Some(p) = progress {
            p.rows.fetch_add(lines, Ordering::Relaxed);
        }
    }
    let mut writer = encoder.finish()?;
    writer.flush()?;
    Ok((raw_size, rows.finish()))
}

/// A blocking `Write` that hands each write to the async side; an error once that side is gone.
struct ChannelWriter {
    out: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out
            .blocking_send(buf.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the writer was dropped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
    // Written once: a second writer of the same backup fails instead of replacing it.
    let object = storage.create_new(key).await?;
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
