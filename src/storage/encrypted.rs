//! Encryption at rest: a [`Storage`] wrapper that stores every object as an age file
//! (<https://age-encryption.org/v1>) and hands the plaintext back on read.
//!
//! age gives each object a random file key, wraps it for every recipient in the header
//! (X25519 public keys, or one scrypt passphrase), and encrypts the payload in 64 KiB
//! ChaCha20-Poly1305 chunks whose nonces count up and mark the last chunk: a changed byte, a
//! reordered chunk or a cut-off end fails authentication. The worker that takes backups needs
//! only public keys; reading needs an identity.
//!
//! The wrapper sits below the artifact layer, so the manifest, the schema dump and every data
//! file are encrypted alike (table names and row counts do not leak), and every reader —
//! verify, restore, drill, download, retention — works unchanged. The artifact layer's sha256
//! and sizes are those of the compressed plaintext; tampering with the stored bytes is caught
//! by age's authentication first, and a swapped (validly encrypted) file by the sha256.
//!
//! Objects written before encryption was turned on (no age header) are read as they are, so
//! old backups stay readable; the manifest's sha256 recorded in the backup row still guards
//! them.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::AsyncWrite as FuturesWrite;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, BufReader};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use super::{ObjectKey, ObjectReader, ObjectWriter, Storage};

/// The first bytes of every age file.
const MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// age's plaintext chunk and its Poly1305 tag.
const CHUNK: u64 = 64 * 1024;
const TAG: u64 = 16;
/// The payload nonce after the header.
const NONCE: u64 = 16;

/// Which keys new objects are encrypted to, and which can read them.
pub struct Keys {
    recipients: Vec<Box<dyn age::Recipient + Send + Sync>>,
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// `x25519:<first 16 chars of each recipient>` or `scrypt`: for messages and `check`.
    pub key_id: String,
    /// No identity was configured: the only one is this process's session key.
    write_only: bool,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("key_id", &self.key_id)
            .field("recipients", &self.recipients.len())
            .field("identities", &self.identities.len())
            .finish()
    }
}

/// Why the keys cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
}

impl Keys {
    /// X25519 recipients (`age1…`) for writing and identities (`AGE-SECRET-KEY-1…` lines, the
    /// age identity-file format) for reading. Without recipients, new objects go to the
    /// first identity's public key (keep the newest key first after a rotation).
    ///
    /// Without identities (a write-only worker) every object is also encrypted to a session
    /// key that lives only in this process's memory, so the worker can verify what it has
    /// just written; once the process ends, only the configured identities can read it.
    ///
    /// # Errors
    /// A malformed key, or neither recipients nor identities.
    pub fn x25519(recipients: &[String], identities: Option<&str>) -> Result<Self, KeyError> {
        let mut ids: Vec<age::x25519::Identity> = Vec::new();
        if let Some(text) = identities {
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                ids.push(line.parse().map_err(|_| {
                    KeyError::Invalid(
                        "the identity file holds a line that is not an AGE-SECRET-KEY-1… key"
                            .to_owned(),
                    )
                })?);
            }
        }
        let mut to: Vec<age::x25519::Recipient> = Vec::new();
        for r in recipients {
            to.push(r.parse().map_err(|e| {
                KeyError::Invalid(format!("recipient {r:?} is not an age1… public key: {e}"))
            })?);
        }
        if to.is_empty() {
            match ids.first() {
                Some(first) => to.push(first.to_public()),
                None => {
                    return Err(KeyError::Invalid(
                        "encryption needs recipients or an identity file".to_owned(),
                    ))
                }
            }
        }
        let write_only = ids.is_empty();
        let mut session = Vec::new();
        if write_only {
            let key = age::x25519::Identity::generate();
            session.push(key.to_public());
            ids.push(key);
        }
        let key_id = format!(
            "x25519:{}",
            to.iter()
                .map(|r| r.to_string()[..16].to_owned())
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(Self {
            recipients: to
                .into_iter()
                .chain(session)
                .map(|r| Box::new(r) as Box<dyn age::Recipient + Send + Sync>)
                .collect(),
            identities: ids
                .into_iter()
                .map(|i| Box::new(i) as Box<dyn age::Identity + Send + Sync>)
                .collect(),
            key_id,
            write_only,
        })
    }

    /// One passphrase (scrypt) for writing and reading.
    pub fn passphrase(passphrase: secrecy::SecretString) -> Self {
        Self {
            recipients: vec![Box::new(age::scrypt::Recipient::new(passphrase.clone()))],
            identities: vec![Box::new(age::scrypt::Identity::new(passphrase))],
            key_id: "scrypt".to_owned(),
            write_only: false,
        }
    }

    /// Whether backups written by other processes can be read (an identity or passphrase).
    pub fn can_read(&self) -> bool {
        !self.write_only
    }

    fn encryptor(&self) -> io::Result<age::Encryptor> {
        age::Encryptor::with_recipients(self.recipients.iter().map(|r| r.as_ref() as _))
            .map_err(io::Error::other)
    }
}

/// Objects of `inner`, encrypted with `keys`.
pub struct EncryptedStorage {
    inner: Arc<dyn Storage>,
    keys: Arc<Keys>,
}

impl fmt::Debug for EncryptedStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedStorage")
            .field("inner", &self.inner)
            .field("keys", &self.keys)
            .finish()
    }
}

impl EncryptedStorage {
    pub fn new(inner: Arc<dyn Storage>, keys: Keys) -> Self {
        Self {
            inner,
            keys: Arc::new(keys),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn wrap<'a>(
        &'a self,
        object: BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>>,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        Box::pin(async move {
            let encryptor = self.keys.encryptor()?;
            let slot = Slot(Arc::new(Mutex::new(Some(object.await?))));
            let stream = encryptor.wrap_async_output(slot.clone()).await?;
            Ok(Box::new(EncryptingWriter {
                stream: Some(stream),
                slot,
                written: 0,
            }) as Box<dyn ObjectWriter>)
        })
    }
}

/// What a failed decryption means, in words an operator can act on.
fn decrypt_error(e: age::DecryptError) -> io::Error {
    use age::DecryptError as D;
    let detail = match e {
        D::NoMatchingKeys => {
            "encrypted for other keys: none of the configured identities can read it (wrong or missing BACKUP_ENCRYPTION_IDENTITY_FILE / passphrase; a write-only worker reads only what it wrote itself)".to_owned()
        }
        D::DecryptionFailed | D::InvalidMac => {
            "the encrypted header fails authentication: the object was tampered with".to_owned()
        }
        D::KeyDecryptionFailed => "the passphrase is wrong".to_owned(),
        D::Io(e) => return e,
        other => format!("not a readable age file: {other}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, DecryptFailed(detail))
}

/// The error of an encrypted object that cannot be read (wrong key, tampered, truncated).
#[derive(Debug, thiserror::Error)]
#[error("decryption failed: {0}")]
pub struct DecryptFailed(pub String);

/// Errors inside the age payload stream carry no type; name what they mean.
struct PayloadErrors<R>(R);

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for PayloadErrors<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    DecryptFailed(format!(
                        "a chunk fails authentication or the file is cut short ({e}): the object was tampered with or truncated"
                    )),
                )
            } else {
                e
            }
        })
    }
}

impl Storage for EncryptedStorage {
    fn create<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        self.wrap(self.inner.create(key))
    }

    fn create_new<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        self.wrap(self.inner.create_new(key))
    }

    fn open<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, io::Result<ObjectReader>> {
        Box::pin(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, self.inner.open(key).await?);
            let head = reader.fill_buf().await?;
            if !head.starts_with(MAGIC) {
                // Written before encryption was turned on.
                return Ok(Box::new(reader) as ObjectReader);
            }
            let decryptor = age::Decryptor::new_async_buffered(reader.compat())
                .await
                .map_err(decrypt_error)?;
            let plain = decryptor
                .decrypt_async(self.keys.identities.iter().map(|i| i.as_ref() as _))
                .map_err(decrypt_error)?;
            Ok(Box::new(PayloadErrors(plain.compat())) as ObjectReader)
        })
    }

    /// The plaintext size, from the stored size: header, nonce, then 64 KiB chunks each with
    /// a 16-byte tag (the last one possibly short, never absent).
    fn size<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, io::Result<Option<u64>>> {
        Box::pin(async move {
            let Some(stored) = self.inner.size(key).await? else {
                return Ok(None);
            };
            let mut head = Vec::with_capacity(4096);
            self.inner
                .open(key)
                .await?
                .take(16 * 1024)
                .read_to_end(&mut head)
                .await?;
            if !head.starts_with(MAGIC) {
                return Ok(Some(stored));
            }
            let header = head
                .windows(5)
                .position(|w| w == b"\n--- ")
                .and_then(|at| {
                    head[at + 1..]
                        .iter()
                        .position(|b| *b == b'\n')
                        .map(|nl| (at + 1 + nl + 1) as u64)
                })
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "age header without its end")
                })?;
            let payload = stored.saturating_sub(header + NONCE);
            let chunks = payload.div_ceil(CHUNK + TAG).max(1);
            Ok(Some(payload.saturating_sub(chunks * TAG)))
        })
    }

    fn list<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, io::Result<Vec<ObjectKey>>> {
        self.inner.list(prefix)
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a ObjectKey) -> BoxFuture<'a, io::Result<()>> {
        self.inner.delete_prefix(prefix)
    }

    /// Never: the stored file is ciphertext, tools must read through [`Storage::open`].
    fn local_path(&self, _key: &ObjectKey) -> Option<std::path::PathBuf> {
        None
    }

    fn prefixes(&self) -> BoxFuture<'_, io::Result<Vec<(ObjectKey, SystemTime)>>> {
        self.inner.prefixes()
    }

    fn sweep_partials(&self, min_age: Duration) -> BoxFuture<'_, io::Result<usize>> {
        self.inner.sweep_partials(min_age)
    }
}

/// The object writer, shared between age's stream (which owns its output and cannot give it
/// back) and the commit that needs it afterwards.
#[derive(Clone)]
struct Slot(Arc<Mutex<Option<Box<dyn ObjectWriter>>>>);

impl Slot {
    fn with<T>(
        &self,
        f: impl FnOnce(Pin<&mut Box<dyn ObjectWriter>>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| io::Error::other("writer lock poisoned"))?;
        match guard.as_mut() {
            Some(w) => f(Pin::new(w)),
            None => Poll::Ready(Err(io::Error::other("writer already committed"))),
        }
    }
}

impl FuturesWrite for Slot {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|w| w.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|w| w.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Not the inner writer's shutdown (which may publish): commit does that.
        self.with(|w| w.poll_flush(cx))
    }
}

struct EncryptingWriter {
    stream: Option<age::stream::StreamWriter<Slot>>,
    slot: Slot,
    /// Plaintext bytes, the size callers see.
    written: u64,
}

impl AsyncWrite for EncryptingWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already finished"))?;
        let n = futures::ready!(Pin::new(stream).poll_write(cx, buf))?;
        self.written += n as u64;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Writes age's final chunk; the object is published only by `commit`.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream.as_mut() {
            Some(s) => Pin::new(s).poll_close(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl ObjectWriter for EncryptingWriter {
    fn commit(mut self: Box<Self>) -> BoxFuture<'static, io::Result<u64>> {
        Box::pin(async move {
            if let Some(mut stream) = self.stream.take() {
                // Idempotent when the caller already shut down.
                futures::AsyncWriteExt::close(&mut stream).await?;
            }
            let inner = self
                .slot
                .0
                .lock()
                .map_err(|_| io::Error::other("writer lock poisoned"))?
                .take()
                .ok_or_else(|| io::Error::other("writer already committed"))?;
            inner.commit().await?;
            Ok(self.written)
        })
    }
}
