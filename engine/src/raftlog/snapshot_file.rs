//! One snapshot file per group: `<shard_dir>/snapshots/group-<id>.snap`, replaced atomically.
//!
//! A new snapshot is written to `group-<id>.snap.tmp`, fsync'ed, renamed over the old file, and
//! the directory is fsync'ed (ext4 here runs without a journal, so a rename is durable only once
//! its directory is). A crash therefore leaves either the old or the new snapshot, never a mix.
//! The file ends with a CRC-32C of everything before it; a damaged file refuses to load. Layout
//! in docs/format.md, "Raft snapshot files".

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use starcite_raft::{NodeId, Snapshot, SnapshotMeta};

/// Leading bytes of a snapshot file.
pub const SNAPSHOT_FILE_MAGIC: [u8; 4] = *b"SCRS";
/// Format version following the magic.
pub const SNAPSHOT_FILE_VERSION: u8 = 1;
/// Largest number of voters a snapshot file may name (far above any replication factor).
const SNAPSHOT_VOTERS_MAX: u32 = 1024;
/// Fixed bytes before the voter list: magic, version, group, index, term, voter count.
const HEADER_BYTES: usize = 4 + 1 + 4 + 8 + 8 + 4;

/// Why a snapshot file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// An IO operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// Present-tense operation, e.g. "rename snapshot".
        op: &'static str,
        /// File or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged or not a snapshot of this group.
    #[error("corrupt snapshot file {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Directory of a shard's snapshot files.
pub fn snapshot_dir(shard_dir: &Path) -> PathBuf {
    shard_dir.join("snapshots")
}

/// Path of `group`'s snapshot file in `dir`.
pub fn snapshot_path(dir: &Path, group: u32) -> PathBuf {
    dir.join(format!("group-{group}.snap"))
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotFileError {
    let path = path.to_path_buf();
    move |source| SnapshotFileError::Io { op, path, source }
}

/// Encodes a snapshot file body (docs/format.md, "Raft snapshot files").
pub fn encode_snapshot_file(group: u32, snapshot: &Snapshot) -> Vec<u8> {
    let meta = &snapshot.meta;
    let mut out =
        Vec::with_capacity(HEADER_BYTES + meta.voters.len() * 8 + 12 + snapshot.data.len());
    out.extend_from_slice(&SNAPSHOT_FILE_MAGIC);
    out.push(SNAPSHOT_FILE_VERSION);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&meta.index.to_le_bytes());
    out.extend_from_slice(&meta.term.to_le_bytes());
    out.extend_from_slice(&(meta.voters.len() as u32).to_le_bytes());
    for voter in &meta.voters {
        out.extend_from_slice(&voter.to_le_bytes());
    }
    out.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    out.extend_from_slice(&snapshot.data);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a snapshot file of `group`. Never panics on arbitrary bytes.
pub fn decode_snapshot_file(group: u32, bytes: &[u8]) -> Result<Snapshot, String> {
    let Some((body, crc_bytes)) = bytes.split_last_chunk::<4>() else {
        return Err("file shorter than its checksum".into());
    };
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc_bytes) {
        return Err("crc mismatch".into());
    }
    let mut reader = Cursor { bytes: body, at: 0 };
    if reader.take(4)? != SNAPSHOT_FILE_MAGIC || reader.u8()? != SNAPSHOT_FILE_VERSION {
        return Err("not a snapshot file of format version 1".into());
    }
    let found = reader.u32()?;
    if found != group {
        return Err(format!("snapshot of group {found}, expected group {group}"));
    }
    let index = reader.u64()?;
    let term = reader.u64()?;
    let voter_count = reader.u32()?;
    if voter_count > SNAPSHOT_VOTERS_MAX {
        return Err(format!("{voter_count} voters exceed {SNAPSHOT_VOTERS_MAX}"));
    }
    let mut voters: Vec<NodeId> = Vec::with_capacity(voter_count as usize);
    for _ in 0..voter_count {
        voters.push(reader.u64()?);
    }
    let data_bytes = reader.u64()?;
    if data_bytes != (body.len() - reader.at) as u64 {
        return Err("data length disagrees with the file length".into());
    }
    // Straight into the snapshot's shared buffer: a state of a million events is hundreds of
    // megabytes, and every extra copy shows in the restart time.
    let data: std::sync::Arc<[u8]> = std::sync::Arc::from(reader.take(data_bytes as usize)?);
    Ok(Snapshot::new(
        SnapshotMeta {
            index,
            term,
            voters,
        },
        data,
    ))
}

/// Writes `snapshot` as `group`'s snapshot file in `dir` and makes it durable (temp file,
/// fsync, rename, fsync of the directory).
pub fn write_snapshot_file(
    dir: &Path,
    group: u32,
    snapshot: &Snapshot,
) -> Result<(), SnapshotFileError> {
    fs::create_dir_all(dir).map_err(io_error("create snapshot dir", dir))?;
    let path = snapshot_path(dir, group);
    let temp_path = dir.join(format!("group-{group}.snap.tmp"));
    let bytes = encode_snapshot_file(group, snapshot);
    let mut file = fs::File::create(&temp_path).map_err(io_error("create snapshot", &temp_path))?;
    file.write_all(&bytes)
        .map_err(io_error("write snapshot", &temp_path))?;
    file.sync_all()
        .map_err(io_error("fsync snapshot", &temp_path))?;
    drop(file);
    fs::rename(&temp_path, &path).map_err(io_error("rename snapshot", &path))?;
    let directory = fs::File::open(dir).map_err(io_error("open snapshot dir", dir))?;
    directory
        .sync_all()
        .map_err(io_error("fsync snapshot dir", dir))?;
    Ok(())
}

/// Reads `group`'s snapshot file from `dir`; `None` when the group has none.
pub fn read_snapshot_file(dir: &Path, group: u32) -> Result<Option<Snapshot>, SnapshotFileError> {
    let path = snapshot_path(dir, group);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotFileError::Io {
                op: "read snapshot",
                path,
                source,
            })
        }
    };
    decode_snapshot_file(group, &bytes)
        .map(Some)
        .map_err(|reason| SnapshotFileError::Corrupt { path, reason })
}

/// A bounds-checked little-endian reader.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(count).ok_or("length overflow")?;
        let slice = self.bytes.get(self.at..end).ok_or("file truncated")?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut word = [0u8; 4];
        word.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(word))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot::new(
            SnapshotMeta {
                index: 4096,
                term: 3,
                voters: vec![1, 2, 3],
            },
            b"group state".to_vec(),
        )
    }

    #[test]
    fn round_trip_and_reject_damage() {
        let bytes = encode_snapshot_file(7, &sample());
        assert_eq!(decode_snapshot_file(7, &bytes), Ok(sample()));
        assert!(decode_snapshot_file(8, &bytes).is_err());
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(decode_snapshot_file(7, &damaged).is_err(), "flip at {at}");
        }
        for len in 0..bytes.len() {
            assert!(
                decode_snapshot_file(7, &bytes[..len]).is_err(),
                "cut at {len}"
            );
        }
    }

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshots");
        assert!(read_snapshot_file(&path, 1).unwrap().is_none());
        write_snapshot_file(&path, 1, &sample()).unwrap();
        assert_eq!(read_snapshot_file(&path, 1).unwrap(), Some(sample()));
    }
}
