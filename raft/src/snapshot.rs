//! Snapshot transfer to lagging followers.
//!
//! Design: when a follower needs entries the leader has compacted, the leader asks its
//! [`Storage::snapshot`] for the latest snapshot (metadata + bytes; the application keeps it
//! there with [`crate::RawNode::snapshot_created`]) and streams it in chunks of at most
//! `snapshot_chunk_bytes_max`, one chunk in flight at a time. Each chunk is acknowledged with
//! the offset the follower expects next, so a lost or duplicated chunk is corrected by the
//! next acknowledgement; a chunk unacknowledged for an election timeout is resent. The
//! follower buffers the chunks and, after the last one, replaces its log with the snapshot
//! and hands it to the application in `Ready::snapshot`; the final acknowledgement is sent
//! only after that ready is persisted.

use crate::error::RaftError;
use crate::message::MessageBody;
use crate::progress::{OutgoingSnapshot, ProgressState};
use crate::raw_node::RawNode;
use crate::storage::Storage;
use crate::types::{Index, NodeId, Role, Snapshot, SnapshotMeta};

/// Largest snapshot a follower buffers; a larger one is refused chunk by chunk.
pub const INCOMING_SNAPSHOT_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;

/// Chunks received so far from the leader.
#[derive(Debug)]
pub(crate) struct IncomingSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl<S: Storage> RawNode<S> {
    pub(crate) fn start_snapshot_transfer(&mut self, peer: NodeId) {
        let snapshot = match self.log.storage.snapshot() {
            Ok(snapshot) if snapshot.meta.index + 1 >= self.log.first_index() => snapshot,
            // Not available (or older than the log start): retry on the next heartbeat
            // response, which clears `probe_sent`.
            _ => {
                if let Some(progress) = self.progress.get_mut(&peer) {
                    progress.probe_sent = true;
                }
                return;
            }
        };
        let Some(progress) = self.progress.get_mut(&peer) else {
            return;
        };
        progress.become_snapshot(OutgoingSnapshot {
            meta: snapshot.meta,
            data: snapshot.data,
            next_offset: 0,
            stalled_ticks: 0,
        });
        self.send_snapshot_chunk(peer);
    }

    fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let Some(outgoing) = self.progress.get(&peer).and_then(|p| p.snapshot.as_ref()) else {
            return;
        };
        let total_bytes = outgoing.data.len() as u64;
        let offset = outgoing.next_offset.min(total_bytes);
        let end = (offset + self.config.snapshot_chunk_bytes_max).min(total_bytes);
        let data = outgoing.data[offset as usize..end as usize].to_vec();
        let meta = outgoing.meta.clone();
        self.send(
            peer,
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done: end == total_bytes,
            },
        );
    }

    /// Resends a chunk that stayed unacknowledged for an election timeout.
    pub(crate) fn tick_outgoing_snapshots(&mut self) {
        let election_ticks = self.config.election_ticks;
        let mut stalled = Vec::new();
        for (&peer, progress) in self.progress.iter_mut() {
            if let Some(outgoing) = progress.snapshot.as_mut() {
                outgoing.stalled_ticks += 1;
                if outgoing.stalled_ticks >= election_ticks {
                    outgoing.stalled_ticks = 0;
                    stalled.push(peer);
                }
            }
        }
        for peer in stalled {
            self.send_snapshot_chunk(peer);
        }
    }

    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        let snapshot_index = meta.index;
        if snapshot_index <= self.log.committed || self.log.match_term(meta.index, meta.term) {
            // Nothing to install: the log already holds (or committed past) this point.
            self.incoming_snapshot = None;
            self.log
                .commit_to(snapshot_index.min(self.log.last_index()));
            let index = self
                .log
                .committed
                .max(snapshot_index.min(self.log.last_index()));
            self.send_after_persist(
                leader,
                MessageBody::AppendResponse {
                    index,
                    reject: None,
                },
            );
            return;
        }
        if offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                data: Vec::new(),
            });
        }
        let accepted = match self.incoming_snapshot.as_mut() {
            Some(incoming)
                if incoming.meta == meta
                    && incoming.data.len() as u64 == offset
                    && offset + data.len() as u64 <= INCOMING_SNAPSHOT_BYTES_MAX =>
            {
                incoming.data.extend_from_slice(&data);
                true
            }
            _ => false,
        };
        let next_offset = match &self.incoming_snapshot {
            Some(incoming) if incoming.meta == meta => incoming.data.len() as u64,
            _ => 0,
        };
        if !(accepted && done) {
            self.send(
                leader,
                MessageBody::InstallSnapshotResponse {
                    snapshot_index,
                    next_offset,
                    done: false,
                },
            );
            return;
        }
        let Some(incoming) = self.incoming_snapshot.take() else {
            return;
        };
        self.log
            .restore(Snapshot::new(incoming.meta, incoming.data));
        self.send_after_persist(
            leader,
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done: true,
            },
        );
    }

    pub(crate) fn handle_snapshot_response(
        &mut self,
        peer: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
    ) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let Some(progress) = self.progress.get_mut(&peer) else {
            return Ok(());
        };
        progress.recent_active = true;
        let in_transfer = progress.state == ProgressState::Snapshot
            && progress.snapshot.as_ref().map(|s| s.meta.index) == Some(snapshot_index);
        if done {
            progress.maybe_update(snapshot_index);
            if progress.state == ProgressState::Snapshot {
                progress.become_probe();
            }
            self.maybe_commit();
            self.maybe_finish_transfer(peer);
            self.send_appends(peer, false);
            return Ok(());
        }
        if in_transfer {
            if let Some(outgoing) = progress.snapshot.as_mut() {
                outgoing.next_offset = next_offset;
                outgoing.stalled_ticks = 0;
            }
            self.send_snapshot_chunk(peer);
        }
        Ok(())
    }
}
