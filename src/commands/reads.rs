//! Progress of work that reads a backup (verify, restore, drill), measured where every engine
//! gets its bytes: a [`Storage`] decorator that counts what is read from data files. The
//! engines are untouched; they are handed a state whose storage counts.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncRead, ReadBuf};

use super::Output;
use crate::artifact::Manifest;
use crate::startup::AppState;
use crate::storage::{ObjectKey, ObjectReader, ObjectWriter, Storage};

/// Bytes read from data files and data files read to their end, since the last reset.
#[derive(Debug, Default)]
struct Counters {
    bytes: AtomicU64,
    files: AtomicU64,
    /// Data files the current phase reads.
    tables: AtomicU64,
}

#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Storage>,
    counters: Arc<Counters>,
}

/// Data files are `<uuid>/data/NNNN.copy.zst`; the schema and manifest are not counted.
fn is_data(key: &ObjectKey) -> bool {
    key.as_str().contains("/data/")
}

impl Storage for Counting {
    fn create<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        self.inner.create(key)
    }

    fn create_new<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        self.inner.create_new(key)
    }

    fn open<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, io::Result<ObjectReader>> {
        Box::pin(async move {
            let reader = self.inner.open(key).await?;
            if !is_data(key) {
                return Ok(reader);
            }
            Ok(Box::new(CountingReader {
                inner: reader,
                counters: self.counters.clone(),
                ended: false,
            }) as ObjectReader)
        })
    }

    fn size<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, io::Result<Option<u64>>> {
        self.inner.size(key)
    }

    fn list<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, io::Result<Vec<ObjectKey>>> {
        self.inner.list(prefix)
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, io::Result<()>> {
        self.inner.delete_prefix(prefix)
    }

    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        self.inner.local_path(key)
    }

    fn prefixes(&self) -> BoxFuture<'_, io::Result<Vec<(ObjectKey, std::time::SystemTime)>>> {
        self.inner.prefixes()
    }

    fn sweep_partials(&self, min_age: std::time::Duration) -> BoxFuture<'_, io::Result<usize>> {
        self.inner.sweep_partials(min_age)
    }
}

struct CountingReader {
    inner: ObjectReader,
    counters: Arc<Counters>,
    ended: bool,
}

impl AsyncRead for CountingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        futures::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = (buf.filled().len() - before) as u64;
        self.counters.bytes.fetch_add(n, Ordering::Relaxed);
        if n == 0 && wanted && !self.ended {
            self.ended = true;
            self.counters.files.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

/// A display of bytes and tables read, one phase at a time.
pub struct Reads {
    counters: Arc<Counters>,
    bar: ProgressBar,
    watcher: tokio::task::JoinHandle<()>,
}

impl Reads {
    /// `state` with counting storage, and the display (hidden with `--quiet`/`--json` or off a
    /// terminal).
    pub fn start(state: &AppState, out: Output) -> (AppState, Self) {
        let counters = Arc::new(Counters::default());
        let mut counted = state.clone();
        counted.storage = Arc::new(Counting {
            inner: state.storage.clone(),
            counters: counters.clone(),
        });
        let bar = if out.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        bar.enable_steady_tick(std::time::Duration::from_millis(250));
        let watcher = {
            let (bar, counters) = (bar.clone(), counters.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    bar.set_position(counters.bytes.load(Ordering::Relaxed));
                    let tables = counters.tables.load(Ordering::Relaxed);
                    let done = counters.files.load(Ordering::Relaxed).min(tables);
                    bar.set_message(format!("tables {done}/{tables}"));
                }
            })
        };
        (
            counted,
            Self {
                counters,
                bar,
                watcher,
            },
        )
    }

    /// A phase that reads `tables` data files of `bytes` stored bytes in all.
    pub fn phase(&self, label: &str, tables: usize, bytes: u64) {
        self.counters.bytes.store(0, Ordering::Relaxed);
        self.counters.files.store(0, Ordering::Relaxed);
        self.counters.tables.store(tables as u64, Ordering::Relaxed);
        self.bar.reset();
        self.bar.set_length(bytes.max(1));
        self.bar.set_prefix(label.to_owned());
        self.bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix}: [{bar:25}] {binary_bytes}/{binary_total_bytes}, {msg}, \
                 {binary_bytes_per_sec}, ETA {eta} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
    }

    /// A phase that reads no artifact (a safety backup, a comparison in the database).
    pub fn waiting(&self, label: &str) {
        self.bar.set_prefix(label.to_owned());
        self.bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
    }

    pub fn finish(self) {
        self.watcher.abort();
        self.bar.finish_and_clear();
    }
}

/// Data files and their stored bytes in `manifest`, optionally only `tables`.
pub fn data_size(manifest: &Manifest, only: Option<&[String]>) -> (usize, u64) {
    let chosen: Vec<_> = manifest
        .tables
        .iter()
        .filter(|t| {
            only.is_none_or(|names| {
                names
                    .iter()
                    .any(|n| *n == t.table_ref().to_string() || *n == t.name)
            })
        })
        .collect();
    (chosen.len(), chosen.iter().map(|t| t.size).sum())
}

/// The manifest a backup row carries (`None` for backups that did not succeed).
pub fn manifest_of(row: &crate::db::backups::BackupRow) -> Option<Manifest> {
    row.manifest
        .clone()
        .and_then(|m| serde_json::from_value(m).ok())
}
