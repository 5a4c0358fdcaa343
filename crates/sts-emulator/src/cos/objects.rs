//! Object and multipart-upload storage: in memory, or under a data directory that survives
//! restarts.
//!
//! On disk (`--data-dir DIR`):
//! ```text
//! DIR/objects/<bucket>/<sha256(key)>.json            metadata sidecar (the key included)
//! DIR/objects/<bucket>/<sha256(key)>.<nonce>.data    the bytes
//! DIR/uploads/<upload id>/upload.json                an in-progress multipart upload
//! DIR/uploads/<upload id>/part-<n>.json, part-<n>.<nonce>.data
//! ```
//! Every file is written to a temporary name and renamed into place; data goes first and the
//! sidecar last, so a crash leaves either the old object or the new one. The index lives in
//! memory and is rebuilt from the sidecars at start.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What COS keeps about an object besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Without quotes: the MD5 hex, or `<md5 of part md5s>-<parts>` after a multipart upload.
    pub etag: String,
    pub content_type: String,
    pub last_modified: i64,
    /// `x-cos-meta-*` headers, names lower-cased.
    pub meta: BTreeMap<String, String>,
    /// Stored standard headers (cache-control, content-disposition, content-encoding, expires…).
    pub headers: BTreeMap<String, String>,
    /// The data file's name in the bucket's directory (disk mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_file: Option<String>,
}

/// Where an object's (or part's) bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Memory(Bytes),
    File(PathBuf),
}

impl Body {
    /// `len` bytes from `start`.
    pub(crate) fn read_range(&self, start: u64, len: u64) -> io::Result<Bytes> {
        match self {
            Body::Memory(b) => Ok(b.slice(start as usize..(start + len) as usize)),
            Body::File(path) => {
                let mut file = fs::File::open(path)?;
                file.seek(SeekFrom::Start(start))?;
                let mut buf = Vec::with_capacity(len as usize);
                file.take(len).read_to_end(&mut buf)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct StoredObject {
    pub meta: ObjectMeta,
    pub body: Body,
}

/// An in-progress multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UploadMeta {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated: i64,
    pub content_type: String,
    pub meta: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    /// Who initiated it (the SecretId), shown as Initiator.
    pub initiator: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartMeta {
    pub number: u32,
    /// MD5 hex, no quotes.
    pub etag: String,
    pub size: u64,
    pub last_modified: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_file: Option<String>,
}

struct Upload {
    meta: UploadMeta,
    parts: BTreeMap<u32, (PartMeta, Body)>,
}

#[derive(Default)]
struct Inner {
    buckets: HashMap<String, BTreeMap<String, StoredObject>>,
    uploads: BTreeMap<String, Upload>,
}

/// Why a Complete Multipart Upload was refused.
#[derive(Debug)]
pub(crate) enum CompleteError {
    NoSuchUpload,
    InvalidPart(u32),
    InvalidPartOrder,
    EntityTooSmall(u32),
    Io(io::Error),
}

impl From<io::Error> for CompleteError {
    fn from(e: io::Error) -> Self {
        CompleteError::Io(e)
    }
}

pub(crate) struct ObjectStore {
    dir: Option<PathBuf>,
    inner: Mutex<Inner>,
}

fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Writes `data` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", nonce()));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_data()?;
    drop(file);
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &json)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    serde_json::from_slice(&fs::read(path)?).map_err(io::Error::other)
}

fn is_tmp(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.starts_with("tmp-"))
}

impl ObjectStore {
    /// An empty in-memory store, or the store kept under `dir` (created if missing).
    pub(crate) fn open(dir: Option<&Path>) -> io::Result<Self> {
        let mut inner = Inner::default();
        if let Some(dir) = dir {
            fs::create_dir_all(dir.join("objects"))?;
            fs::create_dir_all(dir.join("uploads"))?;
            load_objects(&dir.join("objects"), &mut inner)?;
            load_uploads(&dir.join("uploads"), &mut inner)?;
        }
        Ok(Self {
            dir: dir.map(Path::to_path_buf),
            inner: Mutex::new(inner),
        })
    }

    fn bucket_dir(&self, bucket: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("objects").join(bucket))
    }

    fn upload_dir(&self, upload_id: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("uploads").join(upload_id))
    }

    /// Stores (or replaces) an object.
    pub(crate) fn put(&self, bucket: &str, mut meta: ObjectMeta, data: Bytes) -> io::Result<()> {
        let body = match self.bucket_dir(bucket) {
            None => Body::Memory(data),
            Some(dir) => {
                fs::create_dir_all(&dir)?;
                let name = format!("{}.{}.data", key_hash(&meta.key), nonce());
                let path = dir.join(&name);
                write_atomic(&path, &data)?;
                meta.data_file = Some(name);
                Body::File(path)
            }
        };
        self.insert(bucket, meta, body)
    }

    /// Puts an object whose body is already in place, replacing (and cleaning up) any old one.
    fn insert(&self, bucket: &str, meta: ObjectMeta, body: Body) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(dir) = self.bucket_dir(bucket) {
            write_json(&dir.join(format!("{}.json", key_hash(&meta.key))), &meta)?;
        }
        let old = inner
            .buckets
            .entry(bucket.to_owned())
            .or_default()
            .insert(meta.key.clone(), StoredObject { meta, body });
        if let Some(StoredObject {
            body: Body::File(path),
            ..
        }) = old
        {
            let _ = fs::remove_file(path);
        }
        Ok(())
    }

    pub(crate) fn get(&self, bucket: &str, key: &str) -> Option<StoredObject> {
        self.inner
            .lock()
            .unwrap()
            .buckets
            .get(bucket)?
            .get(key)
            .cloned()
    }

    /// Deletes an object; false when there was none.
    pub(crate) fn delete(&self, bucket: &str, key: &str) -> io::Result<bool> {
        let mut inner = self.inner.lock().unwrap();
        let Some(old) = inner.buckets.get_mut(bucket).and_then(|b| b.remove(key)) else {
            return Ok(false);
        };
        if let Some(dir) = self.bucket_dir(bucket) {
            fs::remove_file(dir.join(format!("{}.json", key_hash(key))))?;
        }
        if let Body::File(path) = old.body {
            let _ = fs::remove_file(path);
        }
        Ok(true)
    }

    /// Runs `f` over the bucket's objects in key order.
    pub(crate) fn with_bucket<R>(
        &self,
        bucket: &str,
        f: impl FnOnce(&BTreeMap<String, StoredObject>) -> R,
    ) -> R {
        let inner = self.inner.lock().unwrap();
        match inner.buckets.get(bucket) {
            Some(objects) => f(objects),
            None => f(&BTreeMap::new()),
        }
    }

    pub(crate) fn create_upload(&self, meta: UploadMeta) -> io::Result<()> {
        if let Some(dir) = self.upload_dir(&meta.upload_id) {
            fs::create_dir_all(&dir)?;
            write_json(&dir.join("upload.json"), &meta)?;
        }
        self.inner.lock().unwrap().uploads.insert(
            meta.upload_id.clone(),
            Upload {
                meta,
                parts: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// The upload and its parts, if it exists in this bucket for this key.
    pub(crate) fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Option<(UploadMeta, Vec<PartMeta>)> {
        let inner = self.inner.lock().unwrap();
        let upload = inner
            .uploads
            .get(upload_id)
            .filter(|u| u.meta.bucket == bucket && u.meta.key == key)?;
        Some((
            upload.meta.clone(),
            upload.parts.values().map(|(m, _)| m.clone()).collect(),
        ))
    }

    /// The bucket's in-progress uploads, by key then initiation time.
    pub(crate) fn uploads(&self, bucket: &str) -> Vec<UploadMeta> {
        let inner = self.inner.lock().unwrap();
        let mut out: Vec<UploadMeta> = inner
            .uploads
            .values()
            .filter(|u| u.meta.bucket == bucket)
            .map(|u| u.meta.clone())
            .collect();
        out.sort_by(|a, b| {
            (&a.key, a.initiated, &a.upload_id).cmp(&(&b.key, b.initiated, &b.upload_id))
        });
        out
    }

    /// Stores a part; false when the upload does not exist (for this bucket and key).
    pub(crate) fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        mut part: PartMeta,
        data: Bytes,
    ) -> io::Result<bool> {
        if self.upload(bucket, key, upload_id).is_none() {
            return Ok(false);
        }
        let body = match self.upload_dir(upload_id) {
            None => Body::Memory(data),
            Some(dir) => {
                let name = format!("part-{}.{}.data", part.number, nonce());
                let path = dir.join(&name);
                write_atomic(&path, &data)?;
                part.data_file = Some(name);
                Body::File(path)
            }
        };
        let mut inner = self.inner.lock().unwrap();
        let Some(upload) = inner.uploads.get_mut(upload_id) else {
            // Aborted or completed meanwhile.
            if let Body::File(path) = body {
                let _ = fs::remove_file(path);
            }
            return Ok(false);
        };
        if let Some(dir) = self.upload_dir(upload_id) {
            write_json(&dir.join(format!("part-{}.json", part.number)), &part)?;
        }
        if let Some((_, Body::File(old))) = upload.parts.insert(part.number, (part, body)) {
            let _ = fs::remove_file(old);
        }
        Ok(true)
    }

    /// Removes an upload and its parts; false when there was none.
    pub(crate) fn abort(&self, bucket: &str, key: &str, upload_id: &str) -> io::Result<bool> {
        let mut inner = self.inner.lock().unwrap();
        let exists = inner
            .uploads
            .get(upload_id)
            .is_some_and(|u| u.meta.bucket == bucket && u.meta.key == key);
        if !exists {
            return Ok(false);
        }
        inner.uploads.remove(upload_id);
        if let Some(dir) = self.upload_dir(upload_id) {
            fs::remove_dir_all(dir)?;
        }
        Ok(true)
    }

    /// Assembles the listed parts into the object. `parts` are `(number, etag)` as the client
    /// sent them; every part but the last must be at least `min_part_size` bytes.
    pub(crate) fn complete(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        min_part_size: u64,
        now: i64,
    ) -> Result<ObjectMeta, CompleteError> {
        // Validate and take a snapshot of the chosen parts under the lock.
        let (upload, chosen) = {
            let inner = self.inner.lock().unwrap();
            let upload = inner
                .uploads
                .get(upload_id)
                .filter(|u| u.meta.bucket == bucket && u.meta.key == key)
                .ok_or(CompleteError::NoSuchUpload)?;
            if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(CompleteError::InvalidPartOrder);
            }
            let mut chosen = Vec::with_capacity(parts.len());
            for (i, (number, etag)) in parts.iter().enumerate() {
                let (meta, body) = upload
                    .parts
                    .get(number)
                    .filter(|(m, _)| m.etag.eq_ignore_ascii_case(etag.trim_matches('"')))
                    .ok_or(CompleteError::InvalidPart(*number))?;
                if i + 1 < parts.len() && meta.size < min_part_size {
                    return Err(CompleteError::EntityTooSmall(*number));
                }
                chosen.push((meta.clone(), body.clone()));
            }
            (upload.meta.clone(), chosen)
        };
        if chosen.is_empty() {
            return Err(CompleteError::InvalidPart(0));
        }

        let mut md5s = Vec::with_capacity(chosen.len() * 16);
        for (meta, _) in &chosen {
            md5s.extend(hex::decode(&meta.etag).map_err(io::Error::other)?);
        }
        let etag = format!("{}-{}", hex::encode(md5::Md5::digest(&md5s)), chosen.len());
        let size = chosen.iter().map(|(m, _)| m.size).sum();
        let mut meta = ObjectMeta {
            key: key.to_owned(),
            size,
            etag,
            content_type: upload.content_type.clone(),
            last_modified: now,
            meta: upload.meta.clone(),
            headers: upload.headers.clone(),
            data_file: None,
        };
        let body = match self.bucket_dir(bucket) {
            None => {
                let mut buf = BytesMut::with_capacity(size as usize);
                for (_, body) in &chosen {
                    if let Body::Memory(b) = body {
                        buf.extend_from_slice(b);
                    }
                }
                Body::Memory(buf.freeze())
            }
            Some(dir) => {
                fs::create_dir_all(&dir)?;
                let name = format!("{}.{}.data", key_hash(key), nonce());
                let path = dir.join(&name);
                let tmp = path.with_extension(format!("tmp-{}", nonce()));
                let mut out = fs::File::create(&tmp)?;
                for (_, body) in &chosen {
                    if let Body::File(part) = body {
                        io::copy(&mut fs::File::open(part)?, &mut out)?;
                    }
                }
                out.sync_data()?;
                drop(out);
                fs::rename(&tmp, &path)?;
                meta.data_file = Some(name);
                Body::File(path)
            }
        };
        {
            let mut inner = self.inner.lock().unwrap();
            if inner.uploads.remove(upload_id).is_none() {
                if let Body::File(path) = body {
                    let _ = fs::remove_file(path);
                }
                return Err(CompleteError::NoSuchUpload);
            }
        }
        self.insert(bucket, meta.clone(), body)?;
        if let Some(dir) = self.upload_dir(upload_id) {
            let _ = fs::remove_dir_all(dir);
        }
        Ok(meta)
    }
}

fn load_objects(root: &Path, inner: &mut Inner) -> io::Result<()> {
    for bucket_entry in fs::read_dir(root)? {
        let bucket_dir = bucket_entry?.path();
        let Some(bucket) = bucket_dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let bucket = bucket.to_owned();
        if !bucket_dir.is_dir() {
            continue;
        }
        let mut referenced = Vec::new();
        for entry in fs::read_dir(&bucket_dir)? {
            let path = entry?.path();
            if is_tmp(&path) {
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let meta: ObjectMeta = match read_json(&path) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable object sidecar");
                    continue;
                }
            };
            let Some(data) = meta.data_file.clone().map(|n| bucket_dir.join(n)) else {
                continue;
            };
            if !data.is_file() {
                tracing::warn!(path = %path.display(), "object sidecar without its data file");
                continue;
            }
            referenced.push(data.clone());
            inner.buckets.entry(bucket.clone()).or_default().insert(
                meta.key.clone(),
                StoredObject {
                    meta,
                    body: Body::File(data),
                },
            );
        }
        // Data files no sidecar points at (a crash between the two writes).
        for entry in fs::read_dir(&bucket_dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("data")
                && !referenced.contains(&path)
            {
                let _ = fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

fn load_uploads(root: &Path, inner: &mut Inner) -> io::Result<()> {
    for entry in fs::read_dir(root)? {
        let dir = entry?.path();
        if !dir.is_dir() {
            continue;
        }
        let meta: UploadMeta = match read_json(&dir.join("upload.json")) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "skipping unreadable upload");
                continue;
            }
        };
        let mut parts = BTreeMap::new();
        for part_entry in fs::read_dir(&dir)? {
            let path = part_entry?.path();
            let is_part_json = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-") && n.ends_with(".json"));
            if !is_part_json {
                continue;
            }
            let Ok(part) = read_json::<PartMeta>(&path) else {
                continue;
            };
            let Some(data) = part.data_file.clone().map(|n| dir.join(n)) else {
                continue;
            };
            if data.is_file() {
                parts.insert(part.number, (part, Body::File(data)));
            }
        }
        inner
            .uploads
            .insert(meta.upload_id.clone(), Upload { meta, parts });
    }
    Ok(())
}
