//! Reading artifacts back, checked against the manifest.
//!
//! [`open_table`] yields the decompressed COPY text and turns any difference from the manifest
//! (stored sha256 or size, row count, content hash, a broken zstd frame) into an I/O error at
//! the end of the stream — before the consumer sees a clean end of file. A `COPY … FROM STDIN`
//! fed from it therefore fails, and its transaction rolls back.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::ZstdDecoder;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};
use tokio_util::io::StreamReader;

use super::hash::RowHasher;
use super::{
    is_readable_format, prefix, ArtifactError, Manifest, TableEntry, FORMAT, FORMAT_V1,
    MANIFEST_FILE,
};
use crate::storage::{ObjectKey, ObjectReader, Storage};

/// Decompressed chunks handed out per read; bounded, so memory stays flat.
const CHUNK: usize = 64 * 1024;

/// Hashes and counts everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        futures::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        self.hasher.update(new);
        self.size += new.len() as u64;
        Poll::Ready(Ok(()))
    }
}

type Decoder = ZstdDecoder<BufReader<HashingReader<ObjectReader>>>;

struct TableRead {
    decoder: Decoder,
    rows: Option<RowHasher>,
    expected: TableEntry,
}

impl TableRead {
    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        let rows = self.rows.as_mut()?;
        let mut buf = BytesMut::with_capacity(CHUNK);
        match self.decoder.read_buf(&mut buf).await {
            Ok(0) => self.finish().await.err().map(Err),
            Ok(_) => {
                rows.update(&buf);
                Some(Ok(buf.freeze()))
            }
            Err(e) => {
                self.rows = None;
                // A damaged file usually breaks the frame first; say what is damaged when we can.
                let stored = self.check_stored().await.err();
                let decode = ArtifactError::Decode {
                    key: self.expected.key.clone(),
                    detail: e.to_string(),
                };
                Some(Err(stored.unwrap_or(decode).into_io()))
            }
        }
    }

    /// Reads whatever is left of the stored object, then compares its size and sha256.
    async fn check_stored(&mut self) -> Result<(), ArtifactError> {
        let key = self.expected.key.clone();
        tokio::io::copy(self.decoder.get_mut(), &mut tokio::io::sink())
            .await
            .map_err(|e| ArtifactError::from_io(&key, e))?;
        let raw = self.decoder.get_ref().get_ref();
        let actual_sha = hex::encode(raw.hasher.clone().finalize());
        let e = &self.expected;
        if raw.size != e.size {
            Err(ArtifactError::SizeMismatch {
                key,
                expected: e.size,
                actual: raw.size,
            })
        } else if actual_sha != e.sha256 {
            Err(ArtifactError::Sha256Mismatch {
                key,
                expected: e.sha256.clone(),
                actual: actual_sha,
                source_of_truth: "manifest",
            })
        } else {
            Ok(())
        }
    }

    /// End of the zstd frame: the stored bytes, then the rows, must match the manifest.
    async fn finish(&mut self) -> Result<(), io::Error> {
        let rows = self
            .rows
            .take()
            .map(RowHasher::finish)
            .unwrap_or(super::RowDigest { rows: 0, sum: 0 });
        self.check_stored().await.map_err(ArtifactError::into_io)?;
        let (key, e) = (self.expected.key.clone(), &self.expected);
        if rows.rows != e.rows {
            Err(ArtifactError::RowsMismatch {
                key,
                expected: e.rows,
                actual: rows.rows,
            }
            .into_io())
        } else if rows.content_hash() != e.content_hash {
            Err(ArtifactError::ContentHashMismatch {
                key,
                expected: e.content_hash.clone(),
                actual: rows.content_hash(),
            }
            .into_io())
        } else {
            Ok(())
        }
    }
}

/// The decompressed COPY text of one table, verified against `entry` as it is read.
///
/// # Errors
/// The object cannot be opened (missing: [`ArtifactError::Missing`]). Later mismatches are I/O
/// errors of the reader that carry an [`ArtifactError`] (see [`ArtifactError::from_io`]).
pub async fn open_table(
    storage: &dyn Storage,
    entry: &TableEntry,
) -> Result<impl AsyncRead + Send + Unpin, ArtifactError> {
    let key = ObjectKey::parse(&entry.key)?;
    let object = storage
        .open(&key)
        .await
        .map_err(|e| ArtifactError::from_io(&entry.key, e))?;
    let hashing = HashingReader {
        inner: object,
        hasher: Sha256::new(),
        size: 0,
    };
    let state = TableRead {
        decoder: ZstdDecoder::new(BufReader::with_capacity(CHUNK, hashing)),
        rows: Some(RowHasher::new()),
        expected: entry.clone(),
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        st.next_chunk().await.map(|item| (item, st))
    });
    Ok(StreamReader::new(stream.boxed()))
}

/// Reads and parses a backup's manifest; with `expected_sha256` (the row's `checksum`), also
/// checks that the manifest is the one the row recorded.
///
/// # Errors
/// Missing manifest, checksum mismatch, invalid JSON or format, keys outside the backup.
pub async fn read_manifest(
    storage: &dyn Storage,
    uuid: &str,
    expected_sha256: Option<&str>,
) -> Result<(Manifest, String), ArtifactError> {
    let key = prefix(uuid)?.join(MANIFEST_FILE)?;
    let name = key.to_string();
    let mut body = Vec::new();
    let mut object =
        storage
            .open(&key)
            .await
            .map_err(|e| match ArtifactError::from_io(&name, e) {
                ArtifactError::Missing { key } => ArtifactError::MissingManifest {
                    uuid: uuid.to_owned(),
                    key,
                },
                other => other,
            })?;
    object
        .read_to_end(&mut body)
        .await
        .map_err(|e| ArtifactError::from_io(&name, e))?;
    let actual = hex::encode(Sha256::digest(&body));
    if let Some(expected) = expected_sha256 {
        if expected != actual {
            return Err(ArtifactError::Sha256Mismatch {
                key: name,
                expected: expected.to_owned(),
                actual,
                source_of_truth: "backup record",
            });
        }
    }
    let manifest: Manifest =
        serde_json::from_slice(&body).map_err(|e| ArtifactError::InvalidManifest {
            key: name.clone(),
            detail: e.to_string(),
        })?;
    if !is_readable_format(&manifest.format) || manifest.backup_uuid != uuid {
        return Err(ArtifactError::InvalidManifest {
            key: name,
            detail: format!(
                "format {:?} for backup {}, expected {FORMAT} (or {FORMAT_V1}) for {uuid}",
                manifest.format, manifest.backup_uuid
            ),
        });
    }
    let own = format!("{uuid}/");
    let keys = std::iter::once(&manifest.schema.key)
        .chain(manifest.tables.iter().map(|t| &t.key))
        .chain(manifest.key_lists().map(|k| &k.key));
    if let Some(foreign) = keys.into_iter().find(|k| !k.starts_with(&own)) {
        return Err(ArtifactError::ForeignKey {
            key: name,
            listed: foreign.clone(),
            uuid: uuid.to_owned(),
        });
    }
    Ok((manifest, actual))
}
