//! The snapshot file: the state machine at one index, in one self-checking
//! file (§7).
//!
//! ```text
//! magic     8 bytes   "KRSNAP\r\n"
//! version   u32       1
//! meta_len  u32
//! meta      meta_len bytes: raft.v1.SnapshotMeta (index, term, membership)
//! count     u64       number of records
//! records   count × (key_len u32, key, mod_index u64, value_len u32, value),
//!           keys strictly ascending
//! crc32     u32       CRC-32 (IEEE) of every byte before it
//! ```
//!
//! Integers are big-endian. The trailing CRC is also the `crc32` announced in
//! the first InstallSnapshot chunk, with the file's size as `total_size`.
//!
//! A file is written under a temporary name, fsynced, renamed to
//! `<index>-<term>.snap` and its directory fsynced: a `.snap` name always
//! denotes a complete, durable file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kuberaft_proto::raft as pb;
use prost::Message as _;

use super::{KvMap, SnapshotImage, Versioned};
use crate::raft::SnapshotMeta;
use crate::rate::RateLimit;
use crate::storage::StorageError;
use crate::storage::snapshot_files::{WRITING_SUFFIX, snapshot_path, temporary_path};
use crate::storage::sync::{PacedFile, sync_dir};

const MAGIC: &[u8; 8] = b"KRSNAP\r\n";
const VERSION: u32 = 1;
/// The size of the trailing checksum.
const TRAILER_LEN: u64 = 4;

/// A complete snapshot file on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub meta: SnapshotMeta,
    /// Size in bytes (InstallSnapshotChunk.total_size).
    pub size: u64,
    /// The file's trailing checksum (InstallSnapshotChunk.crc32).
    pub crc32: u32,
}

/// A writer that checksums what passes through it.
struct CrcWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the snapshot `image`, described by `meta`, into the snapshot
/// directory `dir` and makes it durable, as fast as the disk goes.
pub fn write(
    dir: &Path,
    meta: &SnapshotMeta,
    image: &SnapshotImage,
) -> Result<SnapshotFile, StorageError> {
    write_at_rate(dir, meta, image, 0)
}

/// Like [`write`], at most `bytes_per_second` (0: no limit). Meant for a
/// background thread: it reads only the image (a cheap clone of the state
/// machine's map), so the event loop goes on applying meanwhile.
pub fn write_at_rate(
    dir: &Path,
    meta: &SnapshotMeta,
    image: &SnapshotImage,
    bytes_per_second: u64,
) -> Result<SnapshotFile, StorageError> {
    if meta.last_included_index != image.applied_index {
        return Err(StorageError::misuse(
            dir,
            format!(
                "snapshot metadata says index {} but the image is at applied index {}",
                meta.last_included_index, image.applied_index
            ),
        ));
    }
    let tmp = temporary_path(dir, meta, WRITING_SUFFIX);
    let path = snapshot_path(dir, meta);
    let io = |what: &str, e| StorageError::io(dir, format!("{what} {}", tmp.display()), e);
    let file = File::create(&tmp).map_err(|e| io("create", e))?;
    let mut w = CrcWriter {
        inner: BufWriter::with_capacity(
            1 << 20,
            PacedFile::new(file, RateLimit::new(bytes_per_second)),
        ),
        hasher: crc32fast::Hasher::new(),
        written: 0,
    };
    write_body(&mut w, meta, &image.data).map_err(|e| io("write", e))?;
    let crc32 = w.hasher.clone().finalize();
    let size = w.written + TRAILER_LEN;
    let mut inner = w.inner;
    inner
        .write_all(&crc32.to_be_bytes())
        .map_err(|e| io("write", e))?;
    let file = inner
        .into_inner()
        .map_err(|e| io("write", e.into_error()))?
        .into_inner();
    file.sync_all().map_err(|e| io("fsync", e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
    sync_dir(dir).map_err(|e| StorageError::io(dir, "fsync the snapshots directory", e))?;
    tracing::info!(
        path = %path.display(),
        index = meta.last_included_index,
        keys = image.data.len(),
        bytes = size,
        "wrote snapshot"
    );
    Ok(SnapshotFile {
        path,
        meta: meta.clone(),
        size,
        crc32,
    })
}

fn write_body(w: &mut impl Write, meta: &SnapshotMeta, data: &KvMap) -> std::io::Result<()> {
    let meta = pb::SnapshotMeta::from(meta).encode_to_vec();
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_be_bytes())?;
    w.write_all(&len_u32(meta.len())?.to_be_bytes())?;
    w.write_all(&meta)?;
    w.write_all(&(data.len() as u64).to_be_bytes())?;
    for (key, v) in data {
        w.write_all(&len_u32(key.len())?.to_be_bytes())?;
        w.write_all(key)?;
        w.write_all(&v.mod_index.to_be_bytes())?;
        w.write_all(&len_u32(v.value.len())?.to_be_bytes())?;
        w.write_all(&v.value)?;
    }
    Ok(())
}

fn len_u32(n: usize) -> std::io::Result<u32> {
    u32::try_from(n).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a field of {n} bytes does not fit a snapshot record"),
        )
    })
}

/// Reads and fully checks a snapshot file, returning the state machine it
/// holds.
pub fn read(path: &Path) -> Result<(SnapshotFile, SnapshotImage), StorageError> {
    let mut data = KvMap::new();
    let file = visit(path, |key, v| {
        data.insert(key, v);
    })?;
    let image = SnapshotImage {
        applied_index: file.meta.last_included_index,
        data,
    };
    Ok((file, image))
}

/// Fully checks a snapshot file (every byte against its checksum, the record
/// structure and key order) without keeping its data.
pub fn verify(path: &Path) -> Result<SnapshotFile, StorageError> {
    visit(path, |_, _| {})
}

/// Reads the metadata at the head of a snapshot file and the checksum at its
/// tail, without checking the body (for a sender: the receiver checks).
pub fn read_head(path: &Path) -> Result<SnapshotFile, StorageError> {
    let bad = |what: String| StorageError::bad_snapshot(path, what);
    let mut f = File::open(path).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let size = f
        .metadata()
        .map_err(|e| bad(format!("cannot stat it: {e}")))?
        .len();
    let meta = Reader::new(BufReader::new(&mut f), size, path).header()?;
    f.seek(SeekFrom::Start(size.saturating_sub(TRAILER_LEN)))
        .map_err(|e| bad(format!("cannot read its checksum: {e}")))?;
    let mut crc = [0u8; 4];
    f.read_exact(&mut crc)
        .map_err(|e| bad(format!("cannot read its checksum: {e}")))?;
    Ok(SnapshotFile {
        path: path.to_owned(),
        meta,
        size,
        crc32: u32::from_be_bytes(crc),
    })
}

fn visit(path: &Path, mut f: impl FnMut(Bytes, Versioned)) -> Result<SnapshotFile, StorageError> {
    let bad = |what: String| StorageError::bad_snapshot(path, what);
    let file = File::open(path).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| bad(format!("cannot stat it: {e}")))?
        .len();
    let mut r = Reader::new(BufReader::with_capacity(1 << 20, file), size, path);
    let meta = r.header()?;
    let count = r.u64("the record count")?;
    let mut prev: Option<Bytes> = None;
    for n in 0..count {
        let key_len = r.u32("a key length")?;
        let key = r.bytes(key_len, "a key")?;
        let mod_index = r.u64("a mod_index")?;
        let value_len = r.u32("a value length")?;
        let value = r.bytes(value_len, "a value")?;
        if prev.as_ref().is_some_and(|p| *p >= key) {
            return Err(bad(format!(
                "record {n} is out of order (keys must be strictly ascending)"
            )));
        }
        prev = Some(key.clone());
        f(key, Versioned { value, mod_index });
    }
    let computed = r.hasher.clone().finalize();
    let mut stored = [0u8; 4];
    r.inner
        .read_exact(&mut stored)
        .map_err(|e| bad(format!("it ends before its checksum: {e}")))?;
    let stored = u32::from_be_bytes(stored);
    if stored != computed {
        return Err(bad(format!(
            "its checksum does not match (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    let mut rest = [0u8; 1];
    if r.inner.read(&mut rest).map_err(|e| bad(e.to_string()))? != 0 {
        return Err(bad("it has bytes after its checksum".into()));
    }
    Ok(SnapshotFile {
        path: path.to_owned(),
        meta,
        size,
        crc32: stored,
    })
}

/// Reads the file's structure, checksumming as it goes and never trusting a
/// length beyond the bytes the file has left (a damaged length must not
/// make us allocate gigabytes).
struct Reader<'a, R> {
    inner: R,
    hasher: crc32fast::Hasher,
    remaining: u64,
    path: &'a Path,
}

impl<'a, R: Read> Reader<'a, R> {
    fn new(inner: R, size: u64, path: &'a Path) -> Self {
        Reader {
            inner,
            hasher: crc32fast::Hasher::new(),
            remaining: size.saturating_sub(TRAILER_LEN),
            path,
        }
    }

    fn bad(&self, what: String) -> StorageError {
        StorageError::bad_snapshot(self.path, what)
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), StorageError> {
        if (buf.len() as u64) > self.remaining {
            return Err(self.bad(format!("it is truncated: {what} runs past its end")));
        }
        self.inner
            .read_exact(buf)
            .map_err(|e| self.bad(format!("cannot read {what}: {e}")))?;
        self.hasher.update(buf);
        self.remaining -= buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Result<u32, StorageError> {
        let mut b = [0u8; 4];
        self.fill(&mut b, what)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self, what: &str) -> Result<u64, StorageError> {
        let mut b = [0u8; 8];
        self.fill(&mut b, what)?;
        Ok(u64::from_be_bytes(b))
    }

    fn bytes(&mut self, len: u32, what: &str) -> Result<Bytes, StorageError> {
        if u64::from(len) > self.remaining {
            return Err(self.bad(format!(
                "it is truncated or damaged: {what} of {len} bytes runs past its end"
            )));
        }
        let mut b = vec![0u8; len as usize];
        self.fill(&mut b, what)?;
        Ok(Bytes::from(b))
    }

    fn header(&mut self) -> Result<SnapshotMeta, StorageError> {
        let mut magic = [0u8; 8];
        self.fill(&mut magic, "the magic number")?;
        if &magic != MAGIC {
            return Err(self.bad("it is not a kuberaft snapshot (wrong magic number)".into()));
        }
        let version = self.u32("the format version")?;
        if version != VERSION {
            return Err(self.bad(format!(
                "it has snapshot format {version}; this kuberaft reads format {VERSION}"
            )));
        }
        let meta_len = self.u32("the metadata length")?;
        let meta = self.bytes(meta_len, "the metadata")?;
        let meta = pb::SnapshotMeta::decode(meta)
            .map_err(|e| self.bad(format!("its metadata cannot be decoded: {e}")))?;
        SnapshotMeta::try_from(meta).map_err(|e| self.bad(format!("its metadata: {e}")))
    }
}
