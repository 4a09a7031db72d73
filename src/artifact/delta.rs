//! The writer of an incremental's table: one scan of the table (of the scope) at the snapshot,
//! each COPY line prefixed with a `t`/`f` flag (possibly changed since the parent), is split
//! into the changed rows' data file, the sorted primary-key list, and the content hash of the
//! whole table as of the snapshot (docs/incremental.md).

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, Stream, TryStreamExt};

use super::hash::{RowDigest, RowHasher};
use super::writer::{write_table, Progress, WriteError, WrittenTable, BLOCK, IN_FLIGHT};
use crate::storage::{ObjectKey, Storage};

/// The two files of a table of an incremental and the table's state at the snapshot.
#[derive(Debug, Clone)]
pub struct WrittenDelta {
    pub changes: WrittenTable,
    pub keys: WrittenTable,
    pub state: RowDigest,
}

type Chunk = Result<Bytes, sqlx::Error>;

/// Splits `source` (COPY text of `flag, columns…`) into `changes_key` (the flagged rows without
/// the flag) and `keys_key` (the fields `key_fields` of every row), and hashes every row.
///
/// # Errors
/// The source or storage fails; neither object is committed then.
pub async fn write_delta<S>(
    storage: &dyn Storage,
    changes_key: &ObjectKey,
    keys_key: &ObjectKey,
    level: i32,
    source: S,
    key_fields: &[usize],
    progress: Option<std::sync::Arc<Progress>>,
) -> Result<WrittenDelta, WriteError>
where
    S: Stream<Item = Result<Bytes, sqlx::Error>> + Unpin,
{
    let (changes_tx, changes_rx) = mpsc::channel::<Chunk>(IN_FLIGHT);
    let (keys_tx, keys_rx) = mpsc::channel::<Chunk>(IN_FLIGHT);
    let split = split(source, changes_tx, keys_tx, key_fields);
    let (state, changes, keys) = tokio::join!(
        split,
        write_table(storage, changes_key, level, changes_rx, progress),
        write_table(storage, keys_key, level, keys_rx, None),
    );
    Ok(WrittenDelta {
        state: state?,
        changes: changes?,
        keys: keys?,
    })
}

/// Reads the flagged COPY lines, feeds both files and returns the state digest. On a source
/// error it sends the error down both channels so neither writer commits a prefix.
async fn split<S>(
    mut source: S,
    mut changes_tx: mpsc::Sender<Chunk>,
    mut keys_tx: mpsc::Sender<Chunk>,
    key_fields: &[usize],
) -> Result<RowDigest, WriteError>
where
    S: Stream<Item = Result<Bytes, sqlx::Error>> + Unpin,
{
    let mut splitter = Splitter::new(key_fields);
    loop {
        let chunk = match source.try_next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                let stop = || Err(sqlx::Error::Protocol("the table COPY failed".into()));
                let _ = changes_tx.send(stop()).await;
                let _ = keys_tx.send(stop()).await;
                return Err(e.into());
            }
        };
        splitter.update(&chunk);
        if splitter.changes.len() >= BLOCK || splitter.keys.len() >= BLOCK {
            let (c, k) = splitter.take();
            // A closed channel means that writer failed: its error is reported by the caller.
            if changes_tx.send(Ok(c)).await.is_err() || keys_tx.send(Ok(k)).await.is_err() {
                break;
            }
        }
    }
    let digest = splitter.finish();
    let (c, k) = (
        Bytes::from(std::mem::take(&mut splitter.changes)),
        Bytes::from(std::mem::take(&mut splitter.keys)),
    );
    let _ = changes_tx.send(Ok(c)).await;
    let _ = keys_tx.send(Ok(k)).await;
    Ok(digest)
}

/// The line-splitting state, separate from the I/O so it can be tested alone.
struct Splitter<'a> {
    key_fields: &'a [usize],
    partial: Vec<u8>,
    state: RowHasher,
    changes: Vec<u8>,
    keys: Vec<u8>,
}

impl<'a> Splitter<'a> {
    fn new(key_fields: &'a [usize]) -> Self {
        Self {
            key_fields,
            partial: Vec::new(),
            state: RowHasher::new(),
            changes: Vec::with_capacity(BLOCK),
            keys: Vec::with_capacity(BLOCK),
        }
    }

    fn update(&mut self, mut chunk: &[u8]) {
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            if self.partial.is_empty() {
                self.line(&chunk[..end]);
            } else {
                self.partial.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.partial);
                self.line(&line);
                self.partial = line;
                self.partial.clear();
            }
            chunk = &chunk[end + 1..];
        }
        self.partial.extend_from_slice(chunk);
    }

    /// `t\t<row>` or `f\t<row>`: COPY text escapes tabs inside values, so a raw tab always
    /// separates fields.
    fn line(&mut self, line: &[u8]) {
        let (flag, row) = (line.first().copied(), line.get(2..).unwrap_or_default());
        self.state.add_line(row);
        if flag == Some(b't') {
            self.changes.extend_from_slice(row);
            self.changes.push(b'\n');
        }
        let mut first = true;
        for (i, field) in row.split(|b| *b == b'\t').enumerate() {
            if self.key_fields.contains(&i) {
                if !first {
                    self.keys.push(b'\t');
                }
                self.keys.extend_from_slice(field);
                first = false;
            }
        }
        self.keys.push(b'\n');
    }

    fn take(&mut self) -> (Bytes, Bytes) {
        (
            Bytes::from(std::mem::replace(
                &mut self.changes,
                Vec::with_capacity(BLOCK),
            )),
            Bytes::from(std::mem::replace(&mut self.keys, Vec::with_capacity(BLOCK))),
        )
    }

    /// COPY ends every row with a newline; an unterminated rest still counts (as in
    /// [`RowHasher::finish`]).
    fn finish(&mut self) -> RowDigest {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
        std::mem::take(&mut self.state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagged_rows_go_to_changes_every_key_to_keys_and_every_row_into_the_state() {
        let mut s = Splitter::new(&[0, 2]);
        s.update(b"f\t1\ta\tx\nt\t2\tb");
        s.update(b"\\tc\ty\nt\t3\tc\tz\n");
        let state = s.finish();
        assert_eq!(s.changes, b"2\tb\\tc\ty\n3\tc\tz\n");
        assert_eq!(s.keys, b"1\tx\n2\ty\n3\tz\n");
        let mut whole = RowHasher::new();
        whole.update(b"1\ta\tx\n2\tb\\tc\ty\n3\tc\tz\n");
        assert_eq!(state, whole.finish());
    }
}
