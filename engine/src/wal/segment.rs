//! Segment files: naming, the header, zero-filled preparation and directory syncs.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use super::{Lsn, WalError, BLOCK_BYTES};

/// Bytes of the segment header at file offset 0; records start right after it.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// First bytes of every segment.
const MAGIC: [u8; 8] = *b"STRCWAL\0";
/// Format version written by this code.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Offset of the header crc (it covers the bytes before it).
const HEADER_CRC_OFFSET: usize = 60;
/// File name suffix of segments.
const SEGMENT_SUFFIX: &str = ".wal";
/// Size of one zero-filling write when preparing a segment.
const ZERO_FILL_CHUNK_BYTES: u64 = 1 << 20;

const _: () = assert!(SEGMENT_HEADER_BYTES < BLOCK_BYTES);
const _: () = assert!(ZERO_FILL_CHUNK_BYTES.is_multiple_of(BLOCK_BYTES));

/// A segment as seen in the directory or by an open log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// Sequence number (from 1, consecutive).
    pub sequence: u64,
    /// LSN of the first record's first byte.
    pub first_lsn: Lsn,
    /// End LSN of its last record, when known (sealed segments of an open log, or any segment
    /// followed by another one on disk).
    pub end_lsn: Option<Lsn>,
    /// Current file size.
    pub file_bytes: u64,
}

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub sequence: u64,
    pub first_lsn: Lsn,
}

/// What the first [`SEGMENT_HEADER_BYTES`] of a file hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderDecode {
    Valid(SegmentHeader),
    /// All zeros: a prepared segment that never received its first batch.
    Zero,
    Invalid(&'static str),
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES as usize];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc = crc32c::crc32c(&out[..HEADER_CRC_OFFSET]);
        out[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a header from the start of `bytes`. Never panics.
    pub(crate) fn decode(bytes: &[u8]) -> HeaderDecode {
        let Some(header) = bytes.get(..SEGMENT_HEADER_BYTES as usize) else {
            return if bytes.iter().all(|&b| b == 0) {
                HeaderDecode::Zero
            } else {
                HeaderDecode::Invalid("file shorter than the segment header")
            };
        };
        if header.iter().all(|&b| b == 0) {
            return HeaderDecode::Zero;
        }
        let word = |range: std::ops::Range<usize>| -> u64 {
            let mut buf = [0u8; 8];
            buf[..range.len()].copy_from_slice(&header[range]);
            u64::from_le_bytes(buf)
        };
        if header[0..8] != MAGIC {
            return HeaderDecode::Invalid("bad magic");
        }
        if word(HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4)
            != u64::from(crc32c::crc32c(&header[..HEADER_CRC_OFFSET]))
        {
            return HeaderDecode::Invalid("header crc mismatch");
        }
        if word(8..12) != u64::from(FORMAT_VERSION) {
            return HeaderDecode::Invalid("unsupported format version");
        }
        if word(12..16) != SEGMENT_HEADER_BYTES {
            return HeaderDecode::Invalid("unexpected header length");
        }
        HeaderDecode::Valid(SegmentHeader {
            sequence: word(16..24),
            first_lsn: word(24..32),
        })
    }
}

/// File name of segment `sequence`.
pub(crate) fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}{SEGMENT_SUFFIX}"))
}

/// Segment files of `dir` as `(sequence, path)`, sorted by sequence. Other files are ignored.
pub(crate) fn list_segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| WalError::io("list directory", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(sequence) = stem.parse::<u64>() {
            files.push((sequence, entry.path()));
        }
    }
    files.sort_unstable_by_key(|(sequence, _)| *sequence);
    Ok(files)
}

/// The segments of `dir` with a valid header, oldest first (reads only the headers). For
/// inspection and tests; recovery does the full verification.
pub fn segment_infos(dir: &Path) -> Result<Vec<SegmentInfo>, WalError> {
    use std::io::Read;
    let mut infos: Vec<SegmentInfo> = Vec::new();
    for (_, path) in list_segment_files(dir)? {
        let mut file =
            std::fs::File::open(&path).map_err(|e| WalError::io("open segment", &path, e))?;
        let file_bytes = file
            .metadata()
            .map_err(|e| WalError::io("stat segment", &path, e))?
            .len();
        let mut header = Vec::new();
        (&mut file)
            .take(SEGMENT_HEADER_BYTES)
            .read_to_end(&mut header)
            .map_err(|e| WalError::io("read segment header", &path, e))?;
        if let HeaderDecode::Valid(header) = SegmentHeader::decode(&header) {
            if let Some(previous) = infos.last_mut() {
                previous.end_lsn = Some(header.first_lsn);
            }
            infos.push(SegmentInfo {
                path,
                sequence: header.sequence,
                first_lsn: header.first_lsn,
                end_lsn: None,
                file_bytes,
            });
        }
    }
    Ok(infos)
}

/// Opens `path` for direct reads and writes, creating it if missing.
pub(crate) async fn open_dma(path: &Path) -> Result<DmaFile, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .map_err(|e| WalError::io("open segment", path, e))
}

/// fsyncs directory `dir`, so that creates, renames and deletes in it survive a crash (ext4
/// without a journal needs this).
pub(crate) async fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let directory = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| WalError::io("open directory", dir, e))?;
    directory
        .sync()
        .await
        .map_err(|e| WalError::io("sync directory", dir, e))?;
    directory
        .close()
        .await
        .map_err(|e| WalError::io("close directory", dir, e))
}

/// Writes zeros over `[start, end)` of `file` (both multiples of [`BLOCK_BYTES`]), keeping the
/// first `keep.len()` bytes of the first block equal to `keep`. Does not sync.
pub(crate) async fn zero_range(
    file: &DmaFile,
    path: &Path,
    start: u64,
    end: u64,
    keep: &[u8],
) -> Result<(), WalError> {
    debug_assert!(start.is_multiple_of(BLOCK_BYTES) && end.is_multiple_of(BLOCK_BYTES));
    debug_assert!((keep.len() as u64) < BLOCK_BYTES);
    let mut offset = start;
    while offset < end {
        let chunk_bytes = (end - offset).min(ZERO_FILL_CHUNK_BYTES);
        let mut buffer = file.alloc_dma_buffer(chunk_bytes as usize);
        let bytes = buffer.as_bytes_mut();
        bytes.fill(0);
        if offset == start {
            bytes[..keep.len()].copy_from_slice(keep);
        }
        let written = file
            .write_at(buffer, offset)
            .await
            .map_err(|e| WalError::io("zero-fill segment", path, e))?;
        if written as u64 != chunk_bytes {
            return Err(WalError::io(
                "zero-fill segment",
                path,
                std::io::Error::other(format!("short write of {written} bytes")),
            ));
        }
        offset += chunk_bytes;
    }
    Ok(())
}

/// A zero-filled, synced segment file whose header is not written yet (its first LSN is only
/// known when the log rolls over into it).
pub(crate) struct PreparedSegment {
    pub file: Rc<DmaFile>,
    pub path: PathBuf,
    pub sequence: u64,
    pub file_bytes: u64,
}

/// Creates segment `sequence` of `file_bytes` zeros, fdatasyncs it and syncs the directory.
/// Writing zeros (rather than fallocate) makes later batch writes overwrites of allocated
/// blocks, which ext4 does not serialise.
pub(crate) async fn prepare_segment(
    dir: PathBuf,
    sequence: u64,
    file_bytes: u64,
) -> Result<PreparedSegment, WalError> {
    let path = segment_path(&dir, sequence);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&path)
        .await
        .map_err(|e| WalError::io("create segment", &path, e))?;
    if !BLOCK_BYTES.is_multiple_of(file.alignment()) {
        return Err(WalError::io(
            "create segment",
            &path,
            std::io::Error::other(format!(
                "direct IO alignment {} does not divide {BLOCK_BYTES}",
                file.alignment()
            )),
        ));
    }
    zero_range(&file, &path, 0, file_bytes, &[]).await?;
    file.fdatasync()
        .await
        .map_err(|e| WalError::io("sync segment", &path, e))?;
    sync_dir(&dir).await?;
    Ok(PreparedSegment {
        file: Rc::new(file),
        path,
        sequence,
        file_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let header = SegmentHeader {
            sequence: 12,
            first_lsn: 987_654,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), HeaderDecode::Valid(header));
        assert_eq!(SegmentHeader::decode(&[0; 64]), HeaderDecode::Zero);
        assert_eq!(SegmentHeader::decode(&[]), HeaderDecode::Zero);
        for byte in 0..bytes.len() {
            let mut damaged = bytes;
            damaged[byte] ^= 0x10;
            assert!(
                matches!(SegmentHeader::decode(&damaged), HeaderDecode::Invalid(_)),
                "damage at {byte} accepted"
            );
        }
        assert!(matches!(
            SegmentHeader::decode(&bytes[..10]),
            HeaderDecode::Invalid(_)
        ));
    }

    #[test]
    fn segment_names_sort_by_sequence() {
        let dir = Path::new("/x");
        assert_eq!(
            segment_path(dir, 3),
            PathBuf::from("/x/00000000000000000003.wal")
        );
    }
}
