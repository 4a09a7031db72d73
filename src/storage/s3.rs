//! Artifacts in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW, …) through the
//! `object_store` crate: signing, retries with backoff on throttling and 5xx answers, multipart
//! uploads.
//!
//! How the [`Storage`] promises hold on a bucket:
//! - Atomic objects: a writer buffers one part (5 MiB) and switches to a multipart upload when
//!   the object is larger, with at most [`PARTS_IN_FLIGHT`] parts uploading at once, so memory
//!   stays bounded whatever the size. Nothing is visible until [`ObjectWriter::commit`]
//!   completes the upload; a writer dropped before that aborts it. A process killed mid-upload
//!   leaves only an incomplete multipart upload, which no `GET`/`LIST` ever shows; the bucket's
//!   `AbortIncompleteMultipartUpload` lifecycle rule reclaims its parts (see the README).
//! - Write-once manifests: [`Storage::create_new`] publishes with `If-None-Match: *`, so a
//!   manifest is never overwritten (the server answers 412 and the commit fails).
//! - Deletion removes the completion marker (`manifest.json`) first, so a backup half deleted
//!   never looks complete.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutMode, PutOptions, RetryConfig};
use secrecy::ExposeSecret;
use tokio::io::AsyncWrite;

use super::{ObjectKey, ObjectReader, ObjectWriter, Storage, COMPLETION_MARKER};
use crate::settings::S3Settings;

/// S3's smallest multipart part (except the last): also the largest object sent in one `PUT`.
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts of one object uploading at once: memory per writer is about this many parts.
const PARTS_IN_FLIGHT: usize = 2;
/// A manifest larger than this is not a manifest (it is buffered whole for its conditional put).
const MAX_BUFFERED: usize = 64 * 1024 * 1024;

/// A bucket (and optional key prefix) holding artifacts.
pub struct S3Storage {
    store: Arc<dyn ObjectStore>,
    root: Option<Path>,
    /// `s3://bucket/prefix at endpoint`, for messages; never any credential.
    location: String,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    /// A client for the configured bucket (no request is made yet).
    ///
    /// # Errors
    /// The settings cannot make a client (e.g. a malformed endpoint).
    pub fn open(settings: &S3Settings) -> io::Result<Self> {
        let endpoint_is_http = settings
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                max_retries: 6,
                retry_timeout: Duration::from_secs(120),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(endpoint_is_http)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300)),
            );
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(c) = &settings.credentials {
            builder = builder
                .with_access_key_id(&c.access_key_id)
                .with_secret_access_key(c.secret_access_key.expose_secret());
            if let Some(token) = &c.session_token {
                builder = builder.with_token(token.expose_secret());
            }
        }
        let store = builder.build().map_err(to_io)?;
        let root = settings
            .prefix
            .as_deref()
            .map(Path::parse)
            .transpose()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let location = format!(
            "s3://{}/{} at {}",
            settings.bucket,
            settings.prefix.as_deref().unwrap_or(""),
            settings.endpoint.as_deref().unwrap_or("AWS")
        );
        Ok(Self {
            store: Arc::new(store),
            root,
            location,
        })
    }

    /// Where the artifacts are, for messages (`s3://bucket/prefix at endpoint`).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, key: &ObjectKey) -> Path {
        match &self.root {
            Some(root) => Path::from_iter(root.parts().chain(Path::from(key.as_str()).parts())),
            None => Path::from(key.as_str()),
        }
    }

    /// The key of a listed object, `None` for objects that are not ours (outside the prefix,
    /// or names we would never write).
    fn key_of(&self, path: &Path) -> Option<ObjectKey> {
        let rel: Vec<String> = match &self.root {
            Some(root) => path
                .prefix_match(root)?
                .map(|p| p.as_ref().to_owned())
                .collect(),
            None => path.parts().map(|p| p.as_ref().to_owned()).collect(),
        };
        ObjectKey::parse(&rel.join("/")).ok()
    }

    async fn list_under(&self, prefix: Option<&Path>) -> io::Result<Vec<object_store::ObjectMeta>> {
        self.store.list(prefix).try_collect().await.map_err(to_io)
    }
}

/// `object_store` errors as `io::Error`s of the kind callers test for.
fn to_io(e: object_store::Error) -> io::Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => io::ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// The `io::Error`s `BufWriter` makes from `object_store` errors keep only some kinds; this
/// restores the rest (a refused write must read as permission denied).
fn remap(e: io::Error) -> io::Error {
    if !e
        .get_ref()
        .is_some_and(|inner| inner.is::<object_store::Error>())
    {
        return e;
    }
    match e
        .into_inner()
        .map(|inner| inner.downcast::<object_store::Error>())
    {
        Some(Ok(store)) => to_io(*store),
        Some(Err(other)) => io::Error::other(other),
        None => io::Error::other("storage error"),
    }
}

impl Storage for S3Storage {
    fn create<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        let writer = BufWriter::with_capacity(Arc::clone(&self.store), self.path(key), PART_SIZE)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        Box::pin(async move {
            Ok(Box::new(S3Writer {
                inner: Some(writer),
                written: 0,
            }) as Box<dyn ObjectWriter>)
        })
    }

    fn create_new<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        let writer = CreateOnceWriter {
            store: Arc::clone(&self.store),
            path: self.path(key),
            body: Vec::new(),
        };
        Box::pin(async move { Ok(Box::new(writer) as Box<dyn ObjectWriter>) })
    }

    fn open<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, io::Result<ObjectReader>> {
        Box::pin(async move {
            let result = self.store.get(&self.path(key)).await.map_err(to_io)?;
            let stream = result.into_stream().map_err(to_io);
            Ok(Box::new(tokio_util::io::StreamReader::new(stream)) as ObjectReader)
        })
    }

    fn size<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, io::Result<Option<u64>>> {
        Box::pin(async move {
            match self.store.head(&self.path(key)).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(to_io(e)),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, io::Result<Vec<ObjectKey>>> {
        Box::pin(async move {
            let mut keys: Vec<ObjectKey> = self
                .list_under(Some(&self.path(prefix)))
                .await?
                .iter()
                .filter_map(|m| self.key_of(&m.location))
                .collect();
            keys.sort();
            Ok(keys)
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut paths: Vec<Path> = self
                .list_under(Some(&self.path(prefix)))
                .await?
                .into_iter()
                .map(|m| m.location)
                .collect();
            paths.push(self.path(prefix));
            // The completion marker first: a delete cut short leaves an incomplete backup,
            // never a complete-looking one missing files.
            let (markers, rest): (Vec<Path>, Vec<Path>) = paths
                .into_iter()
                .partition(|p| p.filename() == Some(COMPLETION_MARKER));
            for marker in markers {
                ignore_missing(self.store.delete(&marker).await)?;
            }
            let mut results = self
                .store
                .delete_stream(futures::stream::iter(rest.into_iter().map(Ok)).boxed());
            while let Some(result) = results.next().await {
                ignore_missing(result.map(|_| ()))?;
            }
            Ok(())
        })
    }

    fn local_path(&self, _key: &ObjectKey) -> Option<std::path::PathBuf> {
        None
    }

    fn prefixes(&self) -> BoxFuture<'_, io::Result<Vec<(ObjectKey, SystemTime)>>> {
        Box::pin(async move {
            let mut newest: std::collections::BTreeMap<ObjectKey, SystemTime> =
                std::collections::BTreeMap::new();
            for meta in self.list_under(self.root.as_ref()).await? {
                let Some(key) = self.key_of(&meta.location) else {
                    continue;
                };
                let Some(top) = key
                    .as_str()
                    .split('/')
                    .next()
                    .and_then(|t| ObjectKey::parse(t).ok())
                else {
                    continue;
                };
                let changed = SystemTime::from(meta.last_modified);
                let entry = newest.entry(top).or_insert(changed);
                *entry = (*entry).max(changed);
            }
            Ok(newest.into_iter().collect())
        })
    }

    /// Incomplete multipart uploads are invisible to every read and list, so there is nothing
    /// here that could look like an artifact; `object_store` offers no way to list them, and
    /// the bucket's `AbortIncompleteMultipartUpload` lifecycle rule reclaims their space.
    fn sweep_partials(&self, _min_age: Duration) -> BoxFuture<'_, io::Result<usize>> {
        Box::pin(async { Ok(0) })
    }
}

fn ignore_missing(result: object_store::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(to_io(e)),
    }
}

/// A streaming upload; completed by `commit`, aborted when dropped before.
struct S3Writer {
    /// `None` once committed.
    inner: Option<BufWriter>,
    written: u64,
}

impl S3Writer {
    fn inner(&mut self) -> io::Result<&mut BufWriter> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already committed"))
    }
}

impl AsyncWrite for S3Writer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = futures::ready!(Pin::new(self.inner()?).poll_write(cx, buf)).map_err(remap)?;
        self.written += n as u64;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner()?).poll_flush(cx).map_err(remap)
    }

    /// Not the end of the object: completing the upload would publish it, which only
    /// `commit` may do.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl ObjectWriter for S3Writer {
    fn commit(mut self: Box<Self>) -> BoxFuture<'static, io::Result<u64>> {
        Box::pin(async move {
            let mut inner = self
                .inner
                .take()
                .ok_or_else(|| io::Error::other("writer already committed"))?;
            tokio::io::AsyncWriteExt::shutdown(&mut inner)
                .await
                .map_err(remap)?;
            Ok(self.written)
        })
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if let Some(mut inner) = self.inner.take() {
            // Parts already uploaded cost money until aborted; a runtime is always there
            // unless the process is exiting (then the lifecycle rule cleans up).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = inner.abort().await {
                        tracing::warn!(error = %e, "aborting an unfinished upload failed");
                    }
                });
            }
        }
    }
}

/// A small object published with `If-None-Match: *` (never overwriting) on commit.
struct CreateOnceWriter {
    store: Arc<dyn ObjectStore>,
    path: Path,
    body: Vec<u8>,
}

impl AsyncWrite for CreateOnceWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.body.len() + buf.len() > MAX_BUFFERED {
            return Poll::Ready(Err(io::Error::other(format!(
                "{}: write-once objects are limited to {MAX_BUFFERED} bytes",
                self.path
            ))));
        }
        self.body.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl ObjectWriter for CreateOnceWriter {
    fn commit(self: Box<Self>) -> BoxFuture<'static, io::Result<u64>> {
        Box::pin(async move {
            let size = self.body.len() as u64;
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            self.store
                .put_opts(&self.path, self.body.into(), opts)
                .await
                .map_err(to_io)?;
            Ok(size)
        })
    }
}
