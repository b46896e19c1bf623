//! Recovery at open: verify every segment in order, deliver the valid records, find the end of
//! the log and repair the tail so that no stale bytes can ever follow new records.
//!
//! Rules (also in `docs/format.md`):
//! - Segment sequences must be consecutive; each header must be valid and name its own
//!   sequence; each segment's first LSN must equal the end LSN of the previous one.
//! - The *tail* is the last file with a valid header. Files after it (zero or damaged header)
//!   are a prepared segment that was never used or a torn first batch of a rollover: they hold
//!   nothing acknowledged and are deleted. A file before it without a valid header is corrupt.
//! - A segment before the tail must decode cleanly up to its zero end marker: the log writes a
//!   segment's records and fdatasyncs them before it writes anything to the next segment, so
//!   damage there is lost acknowledged data and recovery refuses with [`WalError::Corrupt`].
//! - In the tail, decoding stops at the first zero frame header or invalid frame. Everything
//!   after that point up to the last non-zero byte is counted as discarded and overwritten with
//!   zeros (then fdatasync'ed) before new writes are accepted. Without this, a batch whose later
//!   blocks reached the disk while an earlier block did not could leave an intact old record
//!   right after where new records end, and a later recovery would read it as part of the log.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use super::record::decode_frames;
use super::segment::{
    list_segment_files, open_dma, sync_dir, zero_range, HeaderDecode, SegmentHeader, SegmentInfo,
    SEGMENT_HEADER_BYTES,
};
use super::{Lsn, RecoveryReport, WalError, WalOptions, WalRecord, BLOCK_BYTES};

/// Largest plausible first LSN (2^62 bytes of log); a larger value is damage, and rejecting it
/// keeps LSN arithmetic far from overflow.
const FIRST_LSN_MAX: Lsn = 1 << 62;

/// The segment the log continues in.
pub(crate) struct TailSegment {
    pub file: Rc<DmaFile>,
    pub path: PathBuf,
    pub sequence: u64,
    pub first_lsn: Lsn,
    /// End LSN of the last valid record.
    pub end_lsn: Lsn,
    /// File size after repair (the capacity new records may use).
    pub file_bytes: u64,
    /// Bytes of the partially filled block at the valid end (the next write re-writes them).
    pub tail_block: Vec<u8>,
}

/// The result of recovery, handed to the writer.
pub(crate) struct Recovered {
    pub report: RecoveryReport,
    /// Segments before the tail, with their end LSNs.
    pub sealed: Vec<SegmentInfo>,
    /// `None` for an empty log.
    pub tail: Option<TailSegment>,
    /// Sequence number for the next new segment.
    pub next_sequence: u64,
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, WalError> {
    std::fs::read(path).map_err(|e| WalError::io("read segment", path, e))
}

/// Bytes compared at once while skipping the zero end of a segment.
const ZERO_SCAN_CHUNK_BYTES: usize = 256;

/// Offset just past the last non-zero byte of `bytes` (0 if all zero).
fn nonzero_end(bytes: &[u8]) -> u64 {
    // Whole chunks first: a preallocated segment is mostly zeros, and a byte-by-byte scan of
    // 64 MiB shows in the restart time.
    const ZEROS: [u8; ZERO_SCAN_CHUNK_BYTES] = [0; ZERO_SCAN_CHUNK_BYTES];
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(ZERO_SCAN_CHUNK_BYTES);
        let chunk = bytes.get(start..end).unwrap_or_default();
        if chunk != ZEROS.get(..chunk.len()).unwrap_or_default() {
            break;
        }
        end = start;
    }
    bytes
        .get(..end)
        .unwrap_or_default()
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

/// Ensures `dir` exists, syncing its parent when it had to be created.
async fn ensure_dir(dir: &Path) -> Result<(), WalError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| WalError::io("create directory", dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent).await?;
    }
    Ok(())
}

/// Recovers the log in `options.dir`, calling `on_record(end_lsn, record)` for each valid
/// record in order.
pub(crate) async fn recover(
    options: &WalOptions,
    mut on_record: impl FnMut(Lsn, WalRecord),
) -> Result<Recovered, WalError> {
    ensure_dir(&options.dir).await?;
    let files = list_segment_files(&options.dir)?;
    // Pass 1: headers only, to find the tail (the last file with a valid header).
    let mut headers = Vec::with_capacity(files.len());
    for (_, path) in &files {
        let bytes = read_prefix(path, SEGMENT_HEADER_BYTES)?;
        headers.push(SegmentHeader::decode(&bytes));
    }
    let tail_index = headers
        .iter()
        .rposition(|h| matches!(h, HeaderDecode::Valid(_)));

    let mut report = RecoveryReport::default();
    let first_discarded = tail_index.map_or(0, |i| i + 1);
    // Sequences up to the tail must be consecutive (release deletes oldest first).
    for pair in files[..first_discarded].windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(corrupt(
                &pair[1].1,
                0,
                format!("segment {} is missing", pair[0].0 + 1),
            ));
        }
    }
    // Files after the tail carry nothing acknowledged: count and delete them, newest first,
    // so that an interrupted deletion never leaves a gap before a remaining file.
    for (_, path) in files[first_discarded..].iter().rev() {
        report.discarded_bytes += nonzero_end(&read_file(path)?);
        std::fs::remove_file(path).map_err(|e| WalError::io("delete segment", path, e))?;
    }
    if first_discarded < files.len() {
        sync_dir(&options.dir).await?;
    }
    // Discarded files are gone, so numbering continues right after the tail.
    let next_sequence = tail_index.map_or(1, |i| files[i].0 + 1);
    let Some(tail_index) = tail_index else {
        return Ok(Recovered {
            report,
            sealed: Vec::new(),
            tail: None,
            next_sequence,
        });
    };

    // Pass 2: every record of every segment up to the tail.
    let mut sealed = Vec::new();
    let mut expected_first_lsn: Option<Lsn> = None;
    for (position, ((sequence, path), header)) in files.iter().zip(&headers).enumerate() {
        if position > tail_index {
            break;
        }
        let header = match header {
            HeaderDecode::Valid(header) => *header,
            HeaderDecode::Zero => {
                return Err(corrupt(path, 0, "zero segment header before the tail"))
            }
            HeaderDecode::Invalid(reason) => return Err(corrupt(path, 0, *reason)),
        };
        if header.first_lsn > FIRST_LSN_MAX {
            return Err(corrupt(path, 24, "first LSN out of range"));
        }
        if header.sequence != *sequence {
            return Err(corrupt(
                path,
                16,
                "header sequence disagrees with the file name",
            ));
        }
        if let Some(expected) = expected_first_lsn {
            if header.first_lsn != expected {
                return Err(corrupt(
                    path,
                    24,
                    format!(
                        "first LSN {} does not continue the previous segment's end {expected}",
                        header.first_lsn
                    ),
                ));
            }
        }
        let data = read_file(path)?;
        let records_area = data.get(SEGMENT_HEADER_BYTES as usize..).unwrap_or(&[]);
        let (end_lsn, invalid) =
            decode_frames(records_area, header.first_lsn, Lsn::MAX, |lsn, record| {
                report.records += 1;
                on_record(lsn, record);
            });
        let valid_end_offset = SEGMENT_HEADER_BYTES + (end_lsn - header.first_lsn);
        report.segments += 1;
        report.last_lsn = end_lsn;
        expected_first_lsn = Some(end_lsn);
        if position < tail_index {
            if let Some(reason) = invalid {
                return Err(corrupt(
                    path,
                    valid_end_offset,
                    format!("{reason} in a sealed segment"),
                ));
            }
            sealed.push(SegmentInfo {
                path: path.clone(),
                sequence: *sequence,
                first_lsn: header.first_lsn,
                end_lsn: Some(end_lsn),
                file_bytes: data.len() as u64,
            });
            continue;
        }
        let tail = repair_tail(options, path, header, end_lsn, &data, &mut report).await?;
        return Ok(Recovered {
            report,
            sealed,
            tail: Some(tail),
            next_sequence,
        });
    }
    // Unreachable: the loop returns at `tail_index`. Report it as corruption rather than panic.
    Err(corrupt(&options.dir, 0, "tail segment not found"))
}

/// Reads up to `bytes` from the start of `path`.
fn read_prefix(path: &Path, bytes: u64) -> Result<Vec<u8>, WalError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| WalError::io("open segment", path, e))?;
    let mut out = Vec::new();
    file.take(bytes)
        .read_to_end(&mut out)
        .map_err(|e| WalError::io("read segment header", path, e))?;
    Ok(out)
}

/// Zeroes the tail segment from the valid end to the last non-zero byte (and up to its full
/// size if it is shorter than a segment), fdatasyncs it, and returns it ready for appends.
async fn repair_tail(
    options: &WalOptions,
    path: &Path,
    header: SegmentHeader,
    end_lsn: Lsn,
    data: &[u8],
    report: &mut RecoveryReport,
) -> Result<TailSegment, WalError> {
    let valid_end_offset = SEGMENT_HEADER_BYTES + (end_lsn - header.first_lsn);
    let data_bytes = data.len() as u64;
    let written_end = nonzero_end(data).max(valid_end_offset);
    report.discarded_bytes += written_end - valid_end_offset;
    let file_bytes = data_bytes
        .div_ceil(BLOCK_BYTES)
        .saturating_mul(BLOCK_BYTES)
        .max(options.segment_file_bytes());
    let block_start = valid_end_offset / BLOCK_BYTES * BLOCK_BYTES;
    let tail_block = data
        .get(block_start as usize..valid_end_offset as usize)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let file = open_dma(path).await?;
    let zero_end = if data_bytes < file_bytes {
        file_bytes
    } else {
        written_end.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
    };
    if written_end > valid_end_offset || data_bytes < file_bytes {
        zero_range(&file, path, block_start, zero_end, &tail_block).await?;
        file.fdatasync()
            .await
            .map_err(|e| WalError::io("sync repaired segment", path, e))?;
        if written_end > valid_end_offset {
            tracing::warn!(
                path = %path.display(),
                valid_end_offset,
                discarded_bytes = written_end - valid_end_offset,
                "discarded a torn write-ahead log tail"
            );
        }
    }
    Ok(TailSegment {
        file: Rc::new(file),
        path: path.to_path_buf(),
        sequence: header.sequence,
        first_lsn: header.first_lsn,
        end_lsn,
        file_bytes,
        tail_block,
    })
}

#[cfg(test)]
mod tests {
    use super::nonzero_end;

    #[test]
    fn nonzero_end_finds_the_last_written_byte() {
        assert_eq!(nonzero_end(&[]), 0);
        assert_eq!(nonzero_end(&[0; 1000]), 0);
        for (length, at) in [
            (1, 0),
            (1000, 0),
            (1000, 255),
            (1000, 256),
            (1000, 999),
            (70_000, 69_123),
        ] {
            let mut bytes = vec![0u8; length];
            bytes[at] = 7;
            assert_eq!(
                nonzero_end(&bytes),
                at as u64 + 1,
                "length {length} at {at}"
            );
            bytes[0] = 1;
            assert_eq!(
                nonzero_end(&bytes),
                at as u64 + 1,
                "length {length} at {at}"
            );
        }
    }
}
