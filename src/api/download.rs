//! `GET /{uuid}/download`: the whole artifact as one zip; `GET /{uuid}/files/{path}`: one file.
//!
//! The zip is STORED (the data files are zstd already; deflating them again costs CPU and gains
//! nothing) and built on the fly, never on disk. Its layout is computed before the first byte
//! from each file's size and CRC-32 alone ([`ZipPlan`]), so:
//! - `Content-Length` is exact, and every `Range` maps to the same bytes every time (a resumed
//!   download stitches together correctly);
//! - memory is bounded by design: the plan holds headers only (about 150 bytes per file) and the
//!   body is streamed from storage in [`CHUNK`]-sized pieces through a channel of
//!   [`CHANNEL_DEPTH`] — whatever the artifact's size.
//!
//! A stored zip needs the CRC-32 of every file in its headers. The manifest records sha256, not
//! CRC-32, so the first download reads the artifact once to compute them and caches the result
//! in `root_data_backups.download_index`, keyed by the manifest checksum.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::auth::Caller;
use super::error::{ApiError, Result};
use super::{parse_uuid, ApiState};
use crate::db::api as q;
use crate::db::backups::BackupRow;
use crate::storage::{ObjectKey, Storage};

/// Bytes read from storage per chunk of the response body.
pub const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the storage reader and the socket; with [`CHUNK`] this bounds a
/// download's body buffer to 256 KiB, however large the artifact.
pub const CHANNEL_DEPTH: usize = 4;
// The body buffer is fixed at compile time, whatever the artifact's size.
const _: () = assert!(CHUNK * CHANNEL_DEPTH <= 256 * 1024);
/// Sizes and offsets at or above this need zip64 fields.
const ZIP64_AT: u64 = 0xFFFF_FFFF;

/// A file of the artifact as the zip lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedFile {
    /// Path inside the zip (the storage key without the `<uuid>/` prefix).
    pub name: String,
    pub size: u64,
    pub crc32: u32,
}

/// What `download_index` stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DownloadIndex {
    /// The manifest checksum the index was computed for.
    checksum: String,
    files: Vec<IndexedFile>,
}

/// One part of the response body.
#[derive(Debug, Clone)]
enum Segment {
    /// Headers, generated up front.
    Bytes(Bytes),
    /// A whole stored file, read when streamed.
    File { key: ObjectKey, size: u64 },
}

impl Segment {
    fn len(&self) -> u64 {
        match self {
            Self::Bytes(b) => b.len() as u64,
            Self::File { size, .. } => *size,
        }
    }
}

/// The byte layout of a body: segments in order and the total length.
#[derive(Debug, Clone)]
pub struct ZipPlan {
    segments: Vec<Segment>,
    pub total: u64,
}

impl ZipPlan {
    /// The zip of `files` (each under `prefix/<name>`), with `modified` as every entry's time.
    ///
    /// # Errors
    /// A name that is not a valid storage key under `prefix`.
    pub fn zip(prefix: &ObjectKey, files: &[IndexedFile], modified: DateTime<Utc>) -> Result<Self> {
        Self::zip_with_threshold(prefix, files, modified, ZIP64_AT)
    }

    /// [`ZipPlan::zip`] with a configurable zip64 threshold, so tests can exercise the zip64
    /// layout without writing 4 GiB.
    fn zip_with_threshold(
        prefix: &ObjectKey,
        files: &[IndexedFile],
        modified: DateTime<Utc>,
        zip64_at: u64,
    ) -> Result<Self> {
        let (time, date) = dos_datetime(modified);
        let mut segments = Vec::with_capacity(files.len() * 2 + 1);
        let mut central = Vec::new();
        let mut offset: u64 = 0;
        for file in files {
            let key = prefix
                .join(&file.name)
                .map_err(|e| anyhow::anyhow!("download index: {e}"))?;
            let name = file.name.as_bytes();
            let name_len = u16::try_from(name.len())
                .map_err(|_| anyhow::anyhow!("file name too long: {}", file.name))?;
            let big = file.size >= zip64_at;
            let far = offset >= zip64_at;
            let needed: u16 = if big || far { 45 } else { 20 };
            let size32 = if big { u32::MAX } else { file.size as u32 };

            let mut local = Vec::with_capacity(30 + name.len() + 20);
            put32(&mut local, 0x0403_4b50);
            put16(&mut local, needed);
            put16(&mut local, 0x0800); // names are UTF-8
            put16(&mut local, 0); // stored
            put16(&mut local, time);
            put16(&mut local, date);
            put32(&mut local, file.crc32);
            put32(&mut local, size32);
            put32(&mut local, size32);
            put16(&mut local, name_len);
            put16(&mut local, if big { 20 } else { 0 });
            local.extend_from_slice(name);
            if big {
                put16(&mut local, 0x0001);
                put16(&mut local, 16);
                put64(&mut local, file.size);
                put64(&mut local, file.size);
            }

            let mut extra = Vec::new();
            if big {
                put64(&mut extra, file.size);
                put64(&mut extra, file.size);
            }
            if far {
                put64(&mut extra, offset);
            }
            put32(&mut central, 0x0201_4b50);
            put16(&mut central, (3 << 8) | 45); // made by: unix, zip 4.5
            put16(&mut central, needed);
            put16(&mut central, 0x0800);
            put16(&mut central, 0);
            put16(&mut central, time);
            put16(&mut central, date);
            put32(&mut central, file.crc32);
            put32(&mut central, size32);
            put32(&mut central, size32);
            put16(&mut central, name_len);
            put16(
                &mut central,
                if extra.is_empty() {
                    0
                } else {
                    extra.len() as u16 + 4
                },
            );
            put16(&mut central, 0); // comment
            put16(&mut central, 0); // disk
            put16(&mut central, 0); // internal attributes
            put32(&mut central, 0o100_644 << 16); // -rw-r--r--
            put32(&mut central, if far { u32::MAX } else { offset as u32 });
            central.extend_from_slice(name);
            if !extra.is_empty() {
                put16(&mut central, 0x0001);
                put16(&mut central, extra.len() as u16);
                central.extend_from_slice(&extra);
            }

            offset += local.len() as u64 + file.size;
            segments.push(Segment::Bytes(Bytes::from(local)));
            segments.push(Segment::File {
                key,
                size: file.size,
            });
        }
        let count = files.len() as u64;
        let cd_size = central.len() as u64;
        let cd_offset = offset;
        let mut tail = central;
        let zip64 = count >= 0xFFFF || cd_size >= zip64_at || cd_offset >= zip64_at;
        if zip64 {
            let record_at = cd_offset + cd_size;
            put32(&mut tail, 0x0606_4b50);
            put64(&mut tail, 44);
            put16(&mut tail, 45);
            put16(&mut tail, 45);
            put32(&mut tail, 0);
            put32(&mut tail, 0);
            put64(&mut tail, count);
            put64(&mut tail, count);
            put64(&mut tail, cd_size);
            put64(&mut tail, cd_offset);
            put32(&mut tail, 0x0706_4b50);
            put32(&mut tail, 0);
            put64(&mut tail, record_at);
            put32(&mut tail, 1);
        }
        put32(&mut tail, 0x0605_4b50);
        put16(&mut tail, 0);
        put16(&mut tail, 0);
        let count16 = if zip64 { u16::MAX } else { count as u16 };
        put16(&mut tail, count16);
        put16(&mut tail, count16);
        put32(&mut tail, if zip64 { u32::MAX } else { cd_size as u32 });
        put32(&mut tail, if zip64 { u32::MAX } else { cd_offset as u32 });
        put16(&mut tail, 0);
        segments.push(Segment::Bytes(Bytes::from(tail)));
        let total = segments.iter().map(Segment::len).sum();
        Ok(Self { segments, total })
    }

    /// One stored file as the whole body.
    fn single(key: ObjectKey, size: u64) -> Self {
        Self {
            segments: vec![Segment::File { key, size }],
            total: size,
        }
    }

    /// Bytes of the plan that are held in memory (headers and directory): independent of file
    /// sizes.
    pub fn buffered_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Bytes(b) => Some(b.len() as u64),
                Segment::File { .. } => None,
            })
            .sum()
    }

    /// Streams bytes `start..=end` through a bounded channel.
    fn stream(self, storage: std::sync::Arc<dyn Storage>, start: u64, end: u64) -> Body {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_DEPTH);
        tokio::spawn(async move {
            if let Err(e) = self.send_range(storage.as_ref(), start, end, &tx).await {
                tracing::warn!(error = %e, "download stopped");
                let _ = tx.send(Err(e)).await;
            }
        });
        Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    async fn send_range(
        &self,
        storage: &dyn Storage,
        start: u64,
        end: u64,
        tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    ) -> std::io::Result<()> {
        let closed = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away");
        let mut at: u64 = 0;
        for segment in &self.segments {
            let (seg_start, seg_end) = (at, at + segment.len());
            at = seg_end;
            if seg_end <= start || seg_start > end {
                continue;
            }
            let from = start.saturating_sub(seg_start);
            let to = (end + 1).min(seg_end) - seg_start;
            match segment {
                Segment::Bytes(b) => {
                    tx.send(Ok(b.slice(from as usize..to as usize)))
                        .await
                        .map_err(|_| closed())?;
                }
                Segment::File { key, .. } => {
                    let mut reader = open_at(storage, key, from).await?;
                    let mut left = to - from;
                    while left > 0 {
                        let mut buf = vec![0u8; CHUNK.min(left as usize)];
                        let n = reader.read(&mut buf).await?;
                        if n == 0 {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!("{key} is shorter than recorded"),
                            ));
                        }
                        buf.truncate(n);
                        left -= n as u64;
                        tx.send(Ok(Bytes::from(buf))).await.map_err(|_| closed())?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A reader positioned at `offset` of an object: a seek on local files, a skip otherwise.
async fn open_at(
    storage: &dyn Storage,
    key: &ObjectKey,
    offset: u64,
) -> std::io::Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>> {
    if let Some(path) = storage.local_path(key) {
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        return Ok(Box::new(file));
    }
    let mut reader = storage.open(key).await?;
    tokio::io::copy(&mut (&mut reader).take(offset), &mut tokio::io::sink()).await?;
    Ok(reader)
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// MS-DOS time and date (2-second resolution, years 1980..=2107).
fn dos_datetime(t: DateTime<Utc>) -> (u16, u16) {
    let year = t.year().clamp(1980, 2107) as u16;
    let time = ((t.hour() as u16) << 11) | ((t.minute() as u16) << 5) | (t.second() as u16 / 2);
    let date = ((year - 1980) << 9) | ((t.month() as u16) << 5) | t.day() as u16;
    (time, date)
}

/// What a `Range` header asks for, given the resource length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    /// Inclusive byte positions.
    Partial(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`). Multiple ranges and other units are answered with the
/// whole resource, which RFC 9110 allows; malformed or out-of-bounds byte ranges are a 416.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Unsatisfiable;
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => match num(b) {
            Some(n) if n > 0 && len > 0 => RangeRequest::Partial(len - n.min(len), len - 1),
            _ => RangeRequest::Unsatisfiable,
        },
        (false, true) => match num(a) {
            Some(start) if start < len => RangeRequest::Partial(start, len - 1),
            _ => RangeRequest::Unsatisfiable,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end && start < len => {
                RangeRequest::Partial(start, end.min(len - 1))
            }
            _ => RangeRequest::Unsatisfiable,
        },
        (true, true) => RangeRequest::Unsatisfiable,
    }
}

/// A successful backup the caller may see, with its storage prefix.
async fn downloadable(
    state: &ApiState,
    caller: &Caller,
    uuid: &str,
) -> Result<(BackupRow, ObjectKey)> {
    let uuid = parse_uuid(uuid)?.to_string();
    let row = q::get_backup(&state.app.pool, caller.scope(), &uuid)
        .await?
        .ok_or(ApiError::NotFound("backup not found"))?;
    if row.status != "success" || row.checksum.is_none() {
        return Err(ApiError::BadRequest {
            code: "backup_not_downloadable",
            detail: format!(
                "only successful backups can be downloaded; this one is {}",
                row.status
            ),
        });
    }
    let prefix = ObjectKey::parse(&uuid).map_err(|e| anyhow::anyhow!(e))?;
    Ok((row, prefix))
}

/// The files of the artifact with their CRCs: the cached index when it is for this manifest
/// and still matches storage, otherwise computed (one read of every file) and cached.
///
/// Public so that a job (e.g. the backup's verify step, which reads every file anyway) can
/// prime the cache and spare the first download its extra pass.
///
/// # Errors
/// Storage or database errors; 404 when the artifact's manifest is missing.
pub async fn index(
    state: &crate::startup::AppState,
    row: &BackupRow,
    prefix: &ObjectKey,
) -> Result<Vec<IndexedFile>> {
    let storage = state.storage.as_ref();
    let checksum = row.checksum.clone().unwrap_or_default();
    let keys = storage.list(prefix).await?;
    let strip = |k: &ObjectKey| k.as_str()[prefix.as_str().len() + 1..].to_owned();
    if !keys
        .iter()
        .any(|k| strip(k) == crate::artifact::MANIFEST_FILE)
    {
        return Err(ApiError::NotFound("the backup's files are missing"));
    }
    let mut current = Vec::with_capacity(keys.len());
    for key in &keys {
        let size = storage.size(key).await?.unwrap_or(0);
        current.push((strip(key), size));
    }
    if let Some(cached) = q::download_index(&state.pool, &row.uuid)
        .await?
        .and_then(|v| serde_json::from_value::<DownloadIndex>(v).ok())
    {
        let same = cached.checksum == checksum
            && cached.files.len() == current.len()
            && cached
                .files
                .iter()
                .zip(&current)
                .all(|(f, (name, size))| f.name == *name && f.size == *size);
        if same {
            return Ok(cached.files);
        }
    }
    let mut files = Vec::with_capacity(current.len());
    for (key, (name, size)) in keys.iter().zip(current) {
        let mut reader = storage.open(key).await?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        files.push(IndexedFile {
            name,
            size,
            crc32: hasher.finalize(),
        });
    }
    let index = DownloadIndex {
        checksum,
        files: files.clone(),
    };
    q::set_download_index(
        &state.pool,
        &row.uuid,
        &serde_json::to_value(&index).map_err(|e| anyhow::anyhow!(e))?,
    )
    .await?;
    Ok(files)
}

/// `name` made safe for a quoted `filename=` (ASCII letters, digits, `.`, `_`, `-`).
fn ascii_file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.trim_matches('_').is_empty() {
        "backup".to_owned()
    } else {
        safe
    }
}

/// `attachment` with an ASCII `filename` and the exact UTF-8 name in `filename*` (RFC 6266).
fn content_disposition(file_name: &str) -> HeaderValue {
    let encoded: String = url::form_urlencoded::byte_serialize(file_name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"; filename*=UTF-8''{encoded}",
        ascii_file_name(file_name)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Answers `plan` as 200 or 206 (or 416) according to `Range`/`If-Range`.
fn respond(
    state: &ApiState,
    plan: ZipPlan,
    headers: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    disposition: HeaderValue,
) -> Result<Response> {
    let total = plan.total;
    let mut range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        total,
    );
    // A resumed download of a different artifact must start over, not splice.
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if if_range.trim() != etag {
            range = RangeRequest::Full;
        }
    }
    let (status, start, end) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, total.saturating_sub(1)),
        RangeRequest::Partial(a, b) => (StatusCode::PARTIAL_CONTENT, a, b),
        RangeRequest::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { len: total }),
    };
    let length = if total == 0 { 0 } else { end - start + 1 };
    let body = if length == 0 {
        Body::empty()
    } else {
        plan.stream(state.app.storage.clone(), start, end)
    };
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_DISPOSITION, disposition);
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// The whole backup as one zip (stored, resumable).
#[utoipa::path(get, path = "/api/v1/core/data-backups/{uuid}/download", tag = "files",
    params(("uuid" = String, Path), ("Range" = Option<String>, Header, description = "bytes=a-b, bytes=a- or bytes=-n")),
    responses((status = 200, description = "application/zip, saved as <name>_<uuid8>.zip"),
              (status = 206, description = "the requested range"), (status = 400, description = "not a successful backup"),
              (status = 404), (status = 416)))]
pub async fn download(
    State(state): State<ApiState>,
    caller: Caller,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let (row, prefix) = downloadable(&state, &caller, &uuid).await?;
    let files = index(&state.app, &row, &prefix).await?;
    let modified = row.completed_at.unwrap_or(row.created_at);
    let plan = ZipPlan::zip(&prefix, &files, modified)?;
    let etag = format!("\"{}-zip\"", row.checksum.as_deref().unwrap_or_default());
    let file_name = format!("{}_{}.zip", row.name, &row.uuid[..8]);
    respond(
        &state,
        plan,
        &headers,
        &etag,
        "application/zip",
        content_disposition(&file_name),
    )
}

/// One file of the backup (`manifest.json`, `schema.dump`, a table's data file).
#[utoipa::path(get, path = "/api/v1/core/data-backups/{uuid}/files/{path}", tag = "files",
    params(("uuid" = String, Path), ("path" = String, Path, description = "a path inside the backup, as listed in its manifest")),
    responses((status = 200), (status = 206), (status = 400), (status = 404), (status = 416), (status = 422)))]
pub async fn file(
    State(state): State<ApiState>,
    caller: Caller,
    Path((uuid, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let (row, prefix) = downloadable(&state, &caller, &uuid).await?;
    // Storage keys admit no `..`, no hidden or empty segments and no odd characters, so a
    // validated key cannot leave the backup's prefix.
    let key = prefix
        .join(path.trim_start_matches('/'))
        .map_err(|_| ApiError::validation(&["path", "path"], "not a valid file path"))?;
    let size = state
        .app
        .storage
        .size(&key)
        .await?
        .ok_or(ApiError::NotFound("no such file in this backup"))?;
    // The manifest checksum pins every file's content; the key says which file.
    let etag = format!(
        "\"{}/{}\"",
        row.checksum.as_deref().unwrap_or_default(),
        key.as_str()
    );
    let content_type = if key.as_str().ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let base = key.as_str().rsplit('/').next().unwrap_or("file").to_owned();
    respond(
        &state,
        ZipPlan::single(key, size),
        &headers,
        &etag,
        content_type,
        content_disposition(&base),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Partial(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Partial(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Partial(90, 99));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Partial(0, 99));
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), Partial(50, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=abc"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), Full);
    }

    fn files(dir: &std::path::Path, contents: &[(&str, Vec<u8>)]) -> Vec<IndexedFile> {
        contents
            .iter()
            .map(|(name, data)| {
                let path = dir.join("b").join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, data).unwrap();
                IndexedFile {
                    name: (*name).to_owned(),
                    size: data.len() as u64,
                    crc32: crc32fast::hash(data),
                }
            })
            .collect()
    }

    async fn body_of(
        plan: ZipPlan,
        storage: std::sync::Arc<dyn Storage>,
        start: u64,
        end: u64,
    ) -> Vec<u8> {
        let body = plan.stream(storage, start, end);
        axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    async fn check_zip(zip64_at: u64) {
        let dir = tempfile::tempdir().unwrap();
        let storage: std::sync::Arc<dyn Storage> =
            std::sync::Arc::new(crate::storage::LocalStorage::open(dir.path()).unwrap());
        let data: Vec<(&str, Vec<u8>)> = vec![
            ("manifest.json", b"{\"a\":1}".to_vec()),
            (
                "data/t.zst",
                (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect(),
            ),
            ("empty", Vec::new()),
        ];
        let index = files(dir.path(), &data);
        let prefix = ObjectKey::parse("b").unwrap();
        let plan = ZipPlan::zip_with_threshold(&prefix, &index, Utc::now(), zip64_at).unwrap();
        let total = plan.total;
        let whole = body_of(plan.clone(), storage.clone(), 0, total - 1).await;
        assert_eq!(whole.len() as u64, total, "Content-Length is exact");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(whole.clone())).unwrap();
        assert_eq!(archive.len(), data.len());
        for (name, content) in &data {
            let mut entry = archive.by_name(name).unwrap();
            let mut out = Vec::new();
            entry.read_to_end(&mut out).unwrap();
            assert_eq!(&out, content, "{name}");
        }
        // Any range is the same bytes as the slice of the whole.
        for (a, b) in [(0, 10), (25, 40), (1000, 150_000), (total - 30, total - 1)] {
            let part = body_of(plan.clone(), storage.clone(), a, b).await;
            assert_eq!(part, whole[a as usize..=b as usize], "range {a}-{b}");
        }
    }

    #[tokio::test]
    async fn the_stored_zip_unpacks_and_ranges_are_slices_of_it() {
        check_zip(ZIP64_AT).await;
    }

    #[tokio::test]
    async fn the_zip64_layout_unpacks_too() {
        // Every size and offset past 1 byte takes the zip64 path.
        check_zip(1).await;
    }

    #[test]
    fn memory_held_by_a_plan_does_not_grow_with_file_sizes() {
        let prefix = ObjectKey::parse("b").unwrap();
        let index = |size| {
            (0..100)
                .map(|i| IndexedFile {
                    name: format!("data/t{i}.zst"),
                    size,
                    crc32: 0,
                })
                .collect::<Vec<_>>()
        };
        let small = ZipPlan::zip(&prefix, &index(10), Utc::now()).unwrap();
        // 100 files of 8 GiB: zip64 everywhere, 800 GiB of body.
        let huge = ZipPlan::zip(&prefix, &index(8 << 30), Utc::now()).unwrap();
        assert!(huge.total > 800 << 30);
        assert!(
            huge.buffered_bytes() < 100 * 200,
            "{}",
            huge.buffered_bytes()
        );
        assert!(huge.buffered_bytes() < small.buffered_bytes() * 2);
    }
}
