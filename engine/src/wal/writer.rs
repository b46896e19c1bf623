//! The write path: the shared in-memory state that `append` fills, and the flusher task that
//! turns it into one aligned write plus one fdatasync per batch (group commit).
//!
//! Positions (LSNs) always satisfy `durable_lsn <= written_lsn <= appended_lsn`: appended
//! means buffered here, written means a completed write handed the bytes to the kernel and
//! device, durable means a later fdatasync returned OK. Only durable releases `sync` waiters.

use std::cell::RefCell;
use std::future::poll_fn;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use glommio::io::DmaFile;
use glommio::Task;

use super::record::{decode_frames, encode_record, frame_bytes, RECORD_BYTES_MAX};
use super::recovery::Recovered;
use super::segment::{prepare_segment, PreparedSegment, SegmentHeader, SegmentInfo};
use super::{
    FaultPlan, Lsn, StorageFailure, WalError, WalOptions, WalRecord, WalStats, BLOCK_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::metrics;

/// Owner side of the log: dropping the last [`super::Wal`] clone drops this, which asks the
/// flusher to write what is buffered and stop.
pub(crate) struct Handle {
    pub shared: Rc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.begin_close();
    }
}

/// State shared between the `Wal` handles and the flusher (same executor, so a `RefCell`;
/// no borrow is ever held across an `.await`).
pub(crate) struct Shared {
    dir: PathBuf,
    pending_bytes_max: u64,
    /// Records one new segment can hold (its size minus the header).
    segment_record_bytes_max: u64,
    state: RefCell<State>,
}

struct State {
    appended_lsn: Lsn,
    written_lsn: Lsn,
    durable_lsn: Lsn,
    /// Frames appended and not yet taken by the flusher; `pending[0]` is at `pending_start_lsn`.
    pending: Vec<u8>,
    pending_start_lsn: Lsn,
    /// An emptied buffer kept for reuse, so steady state does not allocate per batch.
    spare: Vec<u8>,
    /// LSNs at which a record did not fit the segment being filled and starts a new one.
    segment_breaks: Vec<Lsn>,
    /// Bytes taken by the flusher and not yet durable.
    in_flight_bytes: u64,
    /// Record bytes used / available in the segment that `append` is filling.
    append_segment_used_bytes: u64,
    append_segment_record_bytes: u64,
    failure: Option<StorageFailure>,
    closing: bool,
    flusher_done: bool,
    flusher_waker: Option<Waker>,
    /// `sync`, `wait_for_space` and `close` callers; all are woken on every change of state
    /// and re-check their own condition.
    waiters: Vec<Waker>,
    /// Oldest first; the last one is being written (its `end_lsn` is `None`).
    segments: Vec<SegmentInfo>,
    write_count: u64,
    fdatasync_count: u64,
    write_bytes_total: u64,
}

impl State {
    fn outstanding_bytes(&self) -> u64 {
        self.pending.len() as u64 + self.in_flight_bytes
    }

    fn wake_waiters(&mut self) {
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }

    fn check_invariants(&self) {
        debug_assert!(self.durable_lsn <= self.written_lsn);
        debug_assert!(self.written_lsn <= self.appended_lsn);
        debug_assert_eq!(
            self.pending_start_lsn + self.pending.len() as u64,
            self.appended_lsn
        );
    }
}

/// Starts the log after recovery: makes sure a segment with a durable header exists and spawns
/// the flusher on the current executor.
pub(crate) async fn start(options: WalOptions, recovered: Recovered) -> Result<Handle, WalError> {
    let segment_file_bytes = options.segment_file_bytes();
    let mut next_sequence = recovered.next_sequence;
    let lsn = recovered.report.last_lsn;
    let active = match recovered.tail {
        Some(tail) => ActiveSegment {
            file: tail.file,
            path: tail.path,
            sequence: tail.sequence,
            first_lsn: tail.first_lsn,
            file_bytes: tail.file_bytes,
            written_offset: SEGMENT_HEADER_BYTES + (tail.end_lsn - tail.first_lsn),
            tail_block: tail.tail_block,
        },
        None => {
            // An empty log: its first segment gets its header at once, so that the log's
            // starting LSN is on disk even before the first record.
            let prepared =
                prepare_segment(options.dir.clone(), next_sequence, segment_file_bytes).await?;
            next_sequence += 1;
            let mut active = ActiveSegment::begin(prepared, lsn);
            active.write(&[]).await.map_err(|failure| {
                WalError::io(
                    "write segment header",
                    &active.path,
                    std::io::Error::other(failure.error),
                )
            })?;
            active
                .file
                .fdatasync()
                .await
                .map_err(|e| WalError::io("sync segment header", &active.path, e))?;
            active
        }
    };
    let mut segments = recovered.sealed;
    segments.push(active.info());
    let state = State {
        appended_lsn: lsn,
        written_lsn: lsn,
        durable_lsn: lsn,
        pending: Vec::new(),
        pending_start_lsn: lsn,
        spare: Vec::new(),
        segment_breaks: Vec::new(),
        in_flight_bytes: 0,
        append_segment_used_bytes: active.written_offset - SEGMENT_HEADER_BYTES,
        append_segment_record_bytes: active.file_bytes - SEGMENT_HEADER_BYTES,
        failure: None,
        closing: false,
        flusher_done: false,
        flusher_waker: None,
        waiters: Vec::new(),
        segments,
        write_count: 0,
        fdatasync_count: 0,
        write_bytes_total: 0,
    };
    let shared = Rc::new(Shared {
        dir: options.dir.clone(),
        pending_bytes_max: options.pending_bytes_max,
        segment_record_bytes_max: segment_file_bytes - SEGMENT_HEADER_BYTES,
        state: RefCell::new(state),
    });
    let flusher = Flusher {
        shared: shared.clone(),
        active,
        next: None,
        next_sequence,
        segment_file_bytes,
        fault: options.fault,
        write_number: 0,
        fdatasync_number: 0,
    };
    glommio::spawn_local(flusher.run()).detach();
    Ok(Handle { shared })
}

impl Shared {
    pub(crate) fn append(&self, record: &WalRecord) -> Result<Lsn, WalError> {
        let mut state = self.state.borrow_mut();
        if let Some(failure) = &state.failure {
            return Err(WalError::Failed(failure.clone()));
        }
        if state.closing {
            return Err(WalError::Closed);
        }
        let record_bytes = frame_bytes(record);
        let record_bytes_max = RECORD_BYTES_MAX.min(self.segment_record_bytes_max);
        if record_bytes > record_bytes_max {
            return Err(WalError::RecordTooLarge {
                record_bytes,
                record_bytes_max,
            });
        }
        // A lone record is always accepted, so that a record near the bound cannot wait forever.
        let outstanding = state.outstanding_bytes();
        if outstanding > 0 && outstanding + record_bytes > self.pending_bytes_max {
            return Err(WalError::Full);
        }
        if state.append_segment_used_bytes + record_bytes > state.append_segment_record_bytes {
            let lsn = state.appended_lsn;
            state.segment_breaks.push(lsn);
            state.append_segment_used_bytes = 0;
            state.append_segment_record_bytes = self.segment_record_bytes_max;
        }
        encode_record(record, &mut state.pending);
        state.appended_lsn += record_bytes;
        state.append_segment_used_bytes += record_bytes;
        state.check_invariants();
        if let Some(waker) = state.flusher_waker.take() {
            waker.wake();
        }
        Ok(state.appended_lsn)
    }

    pub(crate) async fn sync(&self, lsn: Lsn) -> Result<(), WalError> {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            debug_assert!(lsn <= state.appended_lsn, "sync beyond the appended end");
            let target = lsn.min(state.appended_lsn);
            if state.durable_lsn >= target {
                return Poll::Ready(Ok(()));
            }
            if let Some(failure) = &state.failure {
                return Poll::Ready(Err(WalError::Failed(failure.clone())));
            }
            if state.flusher_done {
                return Poll::Ready(Err(WalError::Closed));
            }
            state.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    pub(crate) fn failure(&self) -> Option<StorageFailure> {
        self.state.borrow().failure.clone()
    }

    pub(crate) async fn wait_for_space(&self) {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.outstanding_bytes() <= self.pending_bytes_max / 2
                || state.failure.is_some()
                || state.closing
            {
                return Poll::Ready(());
            }
            state.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn begin_close(&self) {
        let mut state = self.state.borrow_mut();
        state.closing = true;
        if let Some(waker) = state.flusher_waker.take() {
            waker.wake();
        }
        state.wake_waiters();
    }

    pub(crate) async fn close(&self) -> Result<(), WalError> {
        self.begin_close();
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if !state.flusher_done {
                state.waiters.push(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(match &state.failure {
                Some(failure) => Err(WalError::Failed(failure.clone())),
                None => Ok(()),
            })
        })
        .await
    }

    pub(crate) fn stats(&self) -> WalStats {
        let state = self.state.borrow();
        WalStats {
            appended_lsn: state.appended_lsn,
            written_lsn: state.written_lsn,
            durable_lsn: state.durable_lsn,
            write_count: state.write_count,
            fdatasync_count: state.fdatasync_count,
            write_bytes_total: state.write_bytes_total,
        }
    }

    pub(crate) fn segments(&self) -> Vec<SegmentInfo> {
        self.state.borrow().segments.clone()
    }

    pub(crate) async fn release_segments_before(&self, lsn: Lsn) -> Result<u32, WalError> {
        // Decide and update the in-memory list first, so that concurrent calls never try to
        // delete the same file. A segment may go only when its successor holds a durable
        // record: otherwise a crash could leave a log without any valid header, and recovery
        // would restart LSNs at 0.
        let released: Vec<SegmentInfo> = {
            let mut state = self.state.borrow_mut();
            let limit = lsn.min(state.durable_lsn);
            let durable = state.durable_lsn;
            let count = state
                .segments
                .windows(2)
                .take_while(|pair| {
                    pair[0].end_lsn.is_some_and(|end| end <= limit) && durable > pair[1].first_lsn
                })
                .count();
            state.segments.drain(..count).collect()
        };
        if released.is_empty() {
            return Ok(0);
        }
        for segment in &released {
            std::fs::remove_file(&segment.path)
                .map_err(|e| WalError::io("delete segment", &segment.path, e))?;
        }
        super::segment::sync_dir(&self.dir).await?;
        Ok(released.len() as u32)
    }

    pub(crate) fn read_records(
        &self,
        from: Lsn,
        to: Lsn,
    ) -> Result<Vec<(Lsn, WalRecord)>, WalError> {
        let (segments, durable) = {
            let state = self.state.borrow();
            (state.segments.clone(), state.durable_lsn)
        };
        let to = to.min(durable);
        let mut out = Vec::new();
        let mut lsn = from;
        for segment in &segments {
            let end = segment.end_lsn.unwrap_or(durable).min(to);
            if lsn >= end || end <= segment.first_lsn {
                continue;
            }
            if lsn < segment.first_lsn {
                return Err(WalError::Corrupt {
                    path: segment.path.clone(),
                    offset: 0,
                    reason: format!("LSN {lsn} is in a released segment"),
                });
            }
            let start_offset = SEGMENT_HEADER_BYTES + (lsn - segment.first_lsn);
            let mut bytes = vec![0u8; (end - lsn) as usize];
            let file = std::fs::File::open(&segment.path)
                .map_err(|e| WalError::io("open segment", &segment.path, e))?;
            file.read_exact_at(&mut bytes, start_offset)
                .map_err(|e| WalError::io("read segment", &segment.path, e))?;
            let (stopped, invalid) = decode_frames(&bytes, lsn, end, |end_lsn, record| {
                out.push((end_lsn, record))
            });
            if stopped != end || invalid.is_some() {
                return Err(WalError::Corrupt {
                    path: segment.path.clone(),
                    offset: SEGMENT_HEADER_BYTES + (stopped - segment.first_lsn),
                    reason: invalid.unwrap_or("record boundary mismatch").to_string(),
                });
            }
            lsn = end;
        }
        Ok(out)
    }

    /// Marks the log failed (first failure wins) and wakes everyone.
    fn poison(&self, failure: StorageFailure) {
        let mut state = self.state.borrow_mut();
        if state.failure.is_none() {
            tracing::error!(
                path = %failure.path.display(),
                error = %failure.error,
                "write-ahead log failed; refusing further writes"
            );
            metrics::global().storage_failure();
            state.failure = Some(failure);
        }
        state.wake_waiters();
    }
}

/// Everything taken from the buffer for one round of writes.
struct Batch {
    start_lsn: Lsn,
    bytes: Vec<u8>,
    segment_breaks: Vec<Lsn>,
}

/// The segment the flusher is writing.
struct ActiveSegment {
    file: Rc<DmaFile>,
    path: PathBuf,
    sequence: u64,
    first_lsn: Lsn,
    file_bytes: u64,
    /// File offset just past the last written record byte.
    written_offset: u64,
    /// The bytes of the partially filled block ending at `written_offset`; the next write
    /// starts at that block and carries them again, so writes stay block-aligned.
    tail_block: Vec<u8>,
}

impl ActiveSegment {
    /// A prepared segment becoming active at `first_lsn`: its header goes out with the first
    /// write, as the start of the re-written first block.
    fn begin(prepared: PreparedSegment, first_lsn: Lsn) -> Self {
        let header = SegmentHeader {
            sequence: prepared.sequence,
            first_lsn,
        };
        ActiveSegment {
            file: prepared.file,
            path: prepared.path,
            sequence: prepared.sequence,
            first_lsn,
            file_bytes: prepared.file_bytes,
            written_offset: SEGMENT_HEADER_BYTES,
            tail_block: header.encode().to_vec(),
        }
    }

    fn info(&self) -> SegmentInfo {
        SegmentInfo {
            path: self.path.clone(),
            sequence: self.sequence,
            first_lsn: self.first_lsn,
            end_lsn: None,
            file_bytes: self.file_bytes,
        }
    }

    /// Writes `bytes` after `written_offset` as one aligned direct write that starts with the
    /// partially filled block. Returns the number of bytes passed to the write.
    async fn write(&mut self, bytes: &[u8]) -> Result<u64, StorageFailure> {
        let block_start = self.written_offset / BLOCK_BYTES * BLOCK_BYTES;
        let end_offset = self.written_offset + bytes.len() as u64;
        debug_assert!(end_offset <= self.file_bytes);
        debug_assert_eq!(
            self.tail_block.len() as u64,
            self.written_offset - block_start
        );
        let write_bytes = end_offset.div_ceil(BLOCK_BYTES) * BLOCK_BYTES - block_start;
        let mut buffer = self.file.alloc_dma_buffer(write_bytes as usize);
        let target = buffer.as_bytes_mut();
        let (carried, rest) = target.split_at_mut(self.tail_block.len());
        carried.copy_from_slice(&self.tail_block);
        let (new, padding) = rest.split_at_mut(bytes.len());
        new.copy_from_slice(bytes);
        padding.fill(0);
        let new_tail_start = (end_offset / BLOCK_BYTES * BLOCK_BYTES - block_start) as usize;
        let new_tail = target[new_tail_start..(end_offset - block_start) as usize].to_vec();
        let written = self
            .file
            .write_at(buffer, block_start)
            .await
            .map_err(|e| self.failure("write", e.into()))?;
        if written as u64 != write_bytes {
            return Err(self.failure(
                "write",
                std::io::Error::other(format!("short write: {written} of {write_bytes} bytes")),
            ));
        }
        self.written_offset = end_offset;
        self.tail_block = new_tail;
        Ok(write_bytes)
    }

    fn failure(&self, op: &str, error: std::io::Error) -> StorageFailure {
        StorageFailure {
            path: self.path.clone(),
            error: format!("{op}: {error}"),
        }
    }
}

/// The task that writes batches. Owns the open segment files.
struct Flusher {
    shared: Rc<Shared>,
    active: ActiveSegment,
    /// The next segment, being prepared in the background.
    next: Option<Task<Result<PreparedSegment, WalError>>>,
    next_sequence: u64,
    segment_file_bytes: u64,
    fault: Option<FaultPlan>,
    write_number: u64,
    fdatasync_number: u64,
}

impl Flusher {
    async fn run(mut self) {
        while let Some(batch) = self.next_batch().await {
            let result = self.write_batch(&batch).await;
            let mut state = self.shared.state.borrow_mut();
            state.in_flight_bytes = 0;
            if state.spare.capacity() < batch.bytes.capacity() {
                state.spare = batch.bytes;
                state.spare.clear();
            }
            state.wake_waiters();
            drop(state);
            if let Err(failure) = result {
                self.shared.poison(failure);
                break;
            }
            self.prepare_next_if_half_full();
        }
        let mut state = self.shared.state.borrow_mut();
        state.flusher_done = true;
        state.wake_waiters();
    }

    /// Waits for buffered records; `None` when the log failed or is closing with nothing left.
    async fn next_batch(&self) -> Option<Batch> {
        poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            if state.failure.is_some() {
                return Poll::Ready(None);
            }
            if !state.pending.is_empty() {
                let spare = std::mem::take(&mut state.spare);
                let bytes = std::mem::replace(&mut state.pending, spare);
                let batch = Batch {
                    start_lsn: state.pending_start_lsn,
                    segment_breaks: std::mem::take(&mut state.segment_breaks),
                    bytes,
                };
                state.pending_start_lsn = state.appended_lsn;
                state.in_flight_bytes = batch.bytes.len() as u64;
                return Poll::Ready(Some(batch));
            }
            if state.closing {
                return Poll::Ready(None);
            }
            state.flusher_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Writes the batch, rolling over to a new segment at each break; each part is one write
    /// and one fdatasync, and a segment is synced before anything goes to the next one.
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), StorageFailure> {
        let end_lsn = batch.start_lsn + batch.bytes.len() as u64;
        let mut lsn = batch.start_lsn;
        for &cut in &batch.segment_breaks {
            debug_assert!(lsn <= cut && cut < end_lsn);
            if cut > lsn {
                self.write_slice(batch, lsn, cut).await?;
                lsn = cut;
            }
            self.roll_over(cut).await?;
        }
        if end_lsn > lsn {
            self.write_slice(batch, lsn, end_lsn).await?;
        }
        Ok(())
    }

    async fn write_slice(
        &mut self,
        batch: &Batch,
        from: Lsn,
        to: Lsn,
    ) -> Result<(), StorageFailure> {
        let start = (from - batch.start_lsn) as usize;
        let end = (to - batch.start_lsn) as usize;
        self.write_part(&batch.bytes[start..end], to).await
    }

    async fn write_part(&mut self, bytes: &[u8], end_lsn: Lsn) -> Result<(), StorageFailure> {
        self.write_number += 1;
        if self.fault.as_ref().and_then(|f| f.fail_write_number) == Some(self.write_number) {
            return Err(self.active.failure("write", injected()));
        }
        let write_bytes = self.active.write(bytes).await?;
        {
            let mut state = self.shared.state.borrow_mut();
            state.written_lsn = end_lsn;
            state.write_count += 1;
            state.write_bytes_total += write_bytes;
            state.check_invariants();
        }
        self.fdatasync_number += 1;
        if self.fault.as_ref().and_then(|f| f.fail_fdatasync_number) == Some(self.fdatasync_number)
        {
            return Err(self.active.failure("fdatasync", injected()));
        }
        let started = Instant::now();
        self.active
            .file
            .fdatasync()
            .await
            .map_err(|e| self.active.failure("fdatasync", e.into()))?;
        metrics::global().wal_fsync(started.elapsed());
        metrics::global().wal_bytes_written(bytes.len() as u64);
        let mut state = self.shared.state.borrow_mut();
        state.durable_lsn = end_lsn;
        state.fdatasync_count += 1;
        state.check_invariants();
        state.wake_waiters();
        Ok(())
    }

    /// Seals the active segment at `lsn` and continues in the prepared next one.
    async fn roll_over(&mut self, lsn: Lsn) -> Result<(), StorageFailure> {
        let task = match self.next.take() {
            Some(task) => task,
            None => self.spawn_prepare(),
        };
        let prepared = task.await.map_err(|e| StorageFailure {
            path: self.shared.dir.clone(),
            error: format!("prepare segment: {e}"),
        })?;
        self.active = ActiveSegment::begin(prepared, lsn);
        let mut state = self.shared.state.borrow_mut();
        if let Some(sealed) = state.segments.last_mut() {
            sealed.end_lsn = Some(lsn);
        }
        state.segments.push(self.active.info());
        Ok(())
    }

    fn spawn_prepare(&mut self) -> Task<Result<PreparedSegment, WalError>> {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        glommio::spawn_local(prepare_segment(
            self.shared.dir.clone(),
            sequence,
            self.segment_file_bytes,
        ))
    }

    /// Starts preparing the next segment once the active one is half full, so that rolling
    /// over rarely waits for the zero fill.
    fn prepare_next_if_half_full(&mut self) {
        if self.next.is_none() && self.active.written_offset > self.active.file_bytes / 2 {
            self.next = Some(self.spawn_prepare());
        }
    }
}

fn injected() -> std::io::Error {
    std::io::Error::other("injected failure (fault plan)")
}
