//! Where artifacts live: a small object-store-shaped interface, its local-directory form and
//! its S3-compatible form ([`s3`]); [`open`] picks one from the settings.
//!
//! The interface is what an object store offers (write-once objects under keys, whole-object
//! reads, prefix listing and deletion), so backup code never knows which one it writes to. Writes are atomic: an object becomes visible under its key only on
//! [`ObjectWriter::commit`]; dropping a writer discards what it wrote. Keys are validated, so no
//! key built from input can escape the storage root.
//!
//! Local layout: `<root>/<key>`; files 0600, directories 0700; uncommitted data lives in
//! `<root>/.partial/` under a random name and is fsynced and renamed into place on commit.

use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::settings::Settings;

pub mod encrypted;
pub mod s3;

pub use encrypted::{EncryptedStorage, Keys};
pub use s3::S3Storage;

/// The name of the object that marks a backup complete (the artifact layer's manifest): it is
/// written last with [`Storage::create_new`] and deleted first by [`Storage::delete_prefix`].
pub const COMPLETION_MARKER: &str = "manifest.json";

/// The configured storage: the bucket when `BACKUP_STORAGE=s3`, else the local directory.
///
/// # Errors
/// The directory cannot be created, or the S3 settings cannot make a client.
pub fn open(settings: &Settings) -> io::Result<std::sync::Arc<dyn Storage>> {
    let plain: std::sync::Arc<dyn Storage> = match &settings.s3 {
        Some(s3) => std::sync::Arc::new(S3Storage::open(s3)?),
        None => std::sync::Arc::new(LocalStorage::open(&settings.storage_dir)?),
    };
    Ok(match keys(settings)? {
        Some(keys) => std::sync::Arc::new(EncryptedStorage::new(plain, keys)),
        None => plain,
    })
}

/// The encryption keys the settings name, read from their files; `None` when encryption is off.
///
/// # Errors
/// A key file cannot be read, or holds no valid key.
pub fn keys(settings: &Settings) -> io::Result<Option<Keys>> {
    let Some(e) = &settings.encryption else {
        return Ok(None);
    };
    let read = |path: &Path, what: &str| {
        std::fs::read_to_string(path)
            .map_err(|err| io::Error::new(err.kind(), format!("{what} {}: {err}", path.display())))
    };
    if let Some(path) = &e.passphrase_file {
        let text = read(path, "BACKUP_ENCRYPTION_PASSPHRASE_FILE")?;
        let passphrase = text.lines().next().unwrap_or("").to_owned();
        if passphrase.is_empty() {
            return Err(io::Error::other(format!(
                "BACKUP_ENCRYPTION_PASSPHRASE_FILE {} is empty",
                path.display()
            )));
        }
        return Ok(Some(Keys::passphrase(passphrase.into())));
    }
    let identities = match &e.identity_file {
        Some(path) => Some(read(path, "BACKUP_ENCRYPTION_IDENTITY_FILE")?),
        None => None,
    };
    Keys::x25519(&e.recipients, identities.as_deref())
        .map(Some)
        .map_err(io::Error::other)
}

/// Where the configured storage is, for messages (never a credential).
pub fn describe(settings: &Settings) -> String {
    match &settings.s3 {
        Some(s3) => format!(
            "s3://{}/{} at {}",
            s3.bucket,
            s3.prefix.as_deref().unwrap_or(""),
            s3.endpoint.as_deref().unwrap_or("AWS")
        ),
        None => settings.storage_dir.display().to_string(),
    }
}

/// A validated object key: `/`-separated segments of `[A-Za-z0-9._-]`, none of them `.`/`..`,
/// none starting with a dot (so `.partial/` is never addressable).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

#[derive(Debug, thiserror::Error)]
#[error("invalid storage key {0:?}")]
pub struct InvalidKey(pub String);

impl ObjectKey {
    /// # Errors
    /// Empty keys, absolute keys, `..`, hidden segments or characters outside the safe set.
    pub fn parse(raw: &str) -> Result<Self, InvalidKey> {
        let ok = !raw.is_empty()
            && raw.len() <= 512
            && raw.split('/').all(|seg| {
                !seg.is_empty()
                    && !seg.starts_with('.')
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            });
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidKey(raw.to_owned()))
        }
    }

    /// `self/child`.
    ///
    /// # Errors
    /// `child` is not a valid key.
    pub fn join(&self, child: &str) -> Result<Self, InvalidKey> {
        Self::parse(&format!("{}/{child}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stream being written to storage; invisible until committed.
pub trait ObjectWriter: AsyncWrite + Send + Unpin {
    /// Makes the object durable and visible under its key; returns its size in bytes.
    fn commit(self: Box<Self>) -> BoxFuture<'static, io::Result<u64>>;
}

/// A readable object.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// Artifact storage. Implementations must make [`Storage::create`]d objects atomic.
pub trait Storage: Send + Sync + fmt::Debug {
    fn create<'a>(&'a self, key: &'a ObjectKey)
        -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>>;
    /// Like [`Storage::create`], but the commit fails with [`io::ErrorKind::AlreadyExists`]
    /// instead of replacing an existing object: for the manifest, which is written once. The
    /// default is [`Storage::create`], for stores that cannot refuse (wrappers forward it).
    fn create_new<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        self.create(key)
    }
    fn open<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, io::Result<ObjectReader>>;
    /// Size of a committed object, `None` if absent.
    fn size<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, io::Result<Option<u64>>>;
    /// Committed objects under `prefix/`, sorted.
    fn list<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, io::Result<Vec<ObjectKey>>>;
    /// Removes every object under `prefix/` (and `prefix` itself), the [`COMPLETION_MARKER`]s
    /// first. Absent is fine.
    fn delete_prefix<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, io::Result<()>>;
    /// A local file path for the object, when the store is a local directory. Tools that need
    /// a seekable file (`pg_restore -j`) use it; other stores return `None` and callers copy.
    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf>;
    /// The top-level prefixes (one per backup) with the time anything below them last changed,
    /// for the reaper's orphan sweep.
    fn prefixes(&self) -> BoxFuture<'_, io::Result<Vec<(ObjectKey, SystemTime)>>>;
    /// Removes uncommitted leftovers of writers that died without cleaning up (a killed
    /// worker): those of dead processes on this host at once, any older than `min_age`; live
    /// writers of other replicas are younger and stay.
    fn sweep_partials(&self, min_age: Duration) -> BoxFuture<'_, io::Result<usize>>;
}

/// Artifacts in a local directory (a mounted volume in Docker).
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

const PARTIAL_DIR: &str = ".partial";

impl LocalStorage {
    /// Opens (creating, 0700) the directory.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join(PARTIAL_DIR))?;
        let root = root.canonicalize()?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }
}

/// `<host>~<pid>~`: who writes a partial file, so the files of a process that died on this
/// host can go at once while other hosts' (a shared volume) wait for the age threshold.
fn writer_tag() -> String {
    format!("{}~{}~", host_name(), std::process::id())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['~', '/'], "_"))
        .unwrap_or_default()
}

/// Whether a partial file was written by a process of this host that no longer runs.
fn writer_is_dead(file_name: &str) -> bool {
    let mut parts = file_name.splitn(3, '~');
    let (Some(host), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    host == host_name()
        && pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
}

/// The newest modification time of `dir` and everything below it.
fn newest_mtime(dir: &Path) -> io::Result<SystemTime> {
    let mut newest = std::fs::metadata(dir)?.modified()?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            newest = newest.max(meta.modified()?);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(newest)
}

impl LocalStorage {
    fn writer<'a>(
        &'a self,
        key: &'a ObjectKey,
        exclusive: bool,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        Box::pin(async move {
            let final_path = self.path(key);
            let partial = self.root.join(PARTIAL_DIR).join(format!(
                "{}{}.{}",
                writer_tag(),
                key.as_str().replace('/', "__"),
                uuid::Uuid::new_v4().simple()
            ));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)?;
            Ok(Box::new(LocalWriter {
                file: Some(tokio::fs::File::from_std(file)),
                partial: Some(partial),
                final_path,
                root: self.root.clone(),
                written: 0,
                exclusive,
            }) as Box<dyn ObjectWriter>)
        })
    }
}

impl Storage for LocalStorage {
    fn create<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        self.writer(key, false)
    }

    fn create_new<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        self.writer(key, true)
    }

    fn open<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, io::Result<ObjectReader>> {
        Box::pin(async move {
            let file = tokio::fs::File::open(self.path(key)).await?;
            Ok(Box::new(tokio::io::BufReader::with_capacity(256 * 1024, file)) as ObjectReader)
        })
    }

    fn size<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, io::Result<Option<u64>>> {
        Box::pin(async move {
            match tokio::fs::metadata(self.path(key)).await {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, io::Result<Vec<ObjectKey>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut stack = vec![self.path(prefix)];
            while let Some(dir) = stack.pop() {
                let mut entries = match tokio::fs::read_dir(&dir).await {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                while let Some(entry) = entries.next_entry().await? {
                    let path = entry.path();
                    if entry.file_type().await?.is_dir() {
                        stack.push(path);
                    } else if let Some(rel) =
                        path.strip_prefix(&self.root).ok().and_then(Path::to_str)
                    {
                        if let Ok(key) = ObjectKey::parse(rel) {
                            out.push(key);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = self.path(prefix);
            match tokio::fs::remove_file(path.join(COMPLETION_MARKER)).await {
                Err(e)
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Err(e)
                }
                _ => {}
            }
            let result = match tokio::fs::metadata(&path).await {
                Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(&path).await,
                Ok(_) => tokio::fs::remove_file(&path).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        Some(self.path(key))
    }

    fn prefixes(&self) -> BoxFuture<'_, io::Result<Vec<(ObjectKey, SystemTime)>>> {
        let root = self.root.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                for entry in std::fs::read_dir(&root)? {
                    let entry = entry?;
                    let Some(key) = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| ObjectKey::parse(n).ok())
                    else {
                        continue; // `.partial` and anything that is not ours
                    };
                    match newest_mtime(&entry.path()) {
                        Ok(mtime) => out.push((key, mtime)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {} // deleted meanwhile
                        Err(e) => return Err(e),
                    }
                }
                out.sort();
                Ok(out)
            })
            .await
            .map_err(io::Error::other)?
        })
    }

    fn sweep_partials(&self, min_age: Duration) -> BoxFuture<'_, io::Result<usize>> {
        let partial = self.root.join(PARTIAL_DIR);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut removed = 0;
                for entry in std::fs::read_dir(partial)? {
                    let entry = entry?;
                    let old = entry
                        .metadata()?
                        .modified()?
                        .elapsed()
                        .is_ok_and(|age| age >= min_age);
                    let orphan = entry.file_name().to_str().is_some_and(writer_is_dead);
                    if (old || orphan) && std::fs::remove_file(entry.path()).is_ok() {
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .await
            .map_err(io::Error::other)?
        })
    }
}

struct LocalWriter {
    file: Option<tokio::fs::File>,
    /// `Some` until committed; the partial file is removed on drop otherwise.
    partial: Option<PathBuf>,
    final_path: PathBuf,
    root: PathBuf,
    written: u64,
    /// Publish with a hard link (fails if the name exists) instead of a replacing rename.
    exclusive: bool,
}

impl AsyncWrite for LocalWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let file = this
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already committed"))?;
        let n = futures::ready!(Pin::new(file).poll_write(cx, buf))?;
        this.written += n as u64;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => Pin::new(f).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl ObjectWriter for LocalWriter {
    fn commit(mut self: Box<Self>) -> BoxFuture<'static, io::Result<u64>> {
        Box::pin(async move {
            let mut file = self
                .file
                .take()
                .ok_or_else(|| io::Error::other("writer already committed"))?;
            tokio::io::AsyncWriteExt::flush(&mut file).await?;
            file.sync_all().await?;
            drop(file);
            let partial = self
                .partial
                .clone()
                .ok_or_else(|| io::Error::other("writer already committed"))?;
            let parent = self.final_path.parent().unwrap_or(&self.root).to_owned();
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&parent)?;
            if self.exclusive {
                tokio::fs::hard_link(&partial, &self.final_path).await?;
                let _ = tokio::fs::remove_file(&partial).await;
            } else {
                tokio::fs::rename(&partial, &self.final_path).await?;
            }
            self.partial = None;
            // The rename is durable only once the directory entry is.
            tokio::fs::File::open(&parent).await?.sync_all().await?;
            Ok(self.written)
        })
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if let Some(partial) = self.partial.take() {
            let _ = std::fs::remove_file(partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn keys_cannot_escape_the_root() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            ".partial/x",
            "a/.hidden",
            "a b",
            "a\\b",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ObjectKey::parse("3f2a/data/0001.copy.zst").is_ok());
    }

    #[tokio::test]
    async fn objects_appear_only_on_commit_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).unwrap();
        let key = ObjectKey::parse("b1/manifest.json").unwrap();
        let mut w = store.create(&key).await.unwrap();
        w.write_all(b"hello").await.unwrap();
        assert_eq!(
            store.size(&key).await.unwrap(),
            None,
            "invisible before commit"
        );
        assert_eq!(w.commit().await.unwrap(), 5);
        assert_eq!(store.size(&key).await.unwrap(), Some(5));
        let mode = std::fs::metadata(store.local_path(&key).unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut text = String::new();
        store
            .open(&key)
            .await
            .unwrap()
            .read_to_string(&mut text)
            .await
            .unwrap();
        assert_eq!(text, "hello");
        assert_eq!(
            store.list(&ObjectKey::parse("b1").unwrap()).await.unwrap(),
            vec![key]
        );
    }

    #[tokio::test]
    async fn a_dropped_writer_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).unwrap();
        let key = ObjectKey::parse("b2/data.zst").unwrap();
        let mut w = store.create(&key).await.unwrap();
        w.write_all(&[0u8; 4096]).await.unwrap();
        drop(w);
        assert_eq!(store.size(&key).await.unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join(PARTIAL_DIR))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn delete_prefix_removes_everything_below() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).unwrap();
        for k in ["b3/a", "b3/data/x"] {
            let key = ObjectKey::parse(k).unwrap();
            let mut w = store.create(&key).await.unwrap();
            w.write_all(b"x").await.unwrap();
            w.commit().await.unwrap();
        }
        let prefix = ObjectKey::parse("b3").unwrap();
        store.delete_prefix(&prefix).await.unwrap();
        assert!(store.list(&prefix).await.unwrap().is_empty());
        store.delete_prefix(&prefix).await.unwrap();
    }
}
