//! Opening one shard: open its WAL and rebuild the state of its groups by applying every
//! recovered entry in log order.
//!
//! In single-voter mode every durable entry is committed, so recovery applies them all. The
//! shard's clock floor is set to the largest recovered stamp so that stamps stay monotonic
//! across restarts even if the wall clock stepped back.

use std::sync::Arc;

use super::error::EngineError;
use super::group_log::GroupLog;
use super::local::{GroupSlot, Shard};
use super::node::NodeShared;
use crate::state::{Command, GroupState};
use crate::wal::{Wal, WalOptions, WalRecord};

/// The groups of one shard being rebuilt from its log.
struct Rebuild {
    shard_index: u32,
    shard_count: u32,
    num_groups: u32,
    groups: Vec<GroupSlot>,
    last_stamp_us: i64,
    /// The first problem; later records are ignored once set.
    error: Option<String>,
}

impl Rebuild {
    fn slot(&self, group_id: u32) -> Result<usize, String> {
        if group_id >= self.num_groups || group_id % self.shard_count != self.shard_index {
            return Err(format!(
                "record of group {group_id}, which shard {} does not own with {} shards and {} \
                 groups",
                self.shard_index, self.shard_count, self.num_groups
            ));
        }
        Ok((group_id / self.shard_count) as usize)
    }

    fn on_record(&mut self, record: WalRecord) {
        if self.error.is_some() {
            return;
        }
        if let Err(reason) = self.apply_record(record) {
            self.error = Some(reason);
        }
    }

    fn apply_record(&mut self, record: WalRecord) -> Result<(), String> {
        match record {
            WalRecord::HardState { group, term, .. } => {
                let slot = self.slot(group)?;
                self.groups[slot].log.recovered_hard_state(term);
            }
            WalRecord::Entry {
                group,
                term,
                index,
                payload,
            } => {
                let slot = self.slot(group)?;
                // Check the position first: a gap means lost entries whatever the payload says.
                self.groups[slot]
                    .log
                    .recovered_entry(term, index)
                    .map_err(|gap| gap.to_string())?;
                let command = Command::decode(&payload)
                    .map_err(|error| format!("group {group} entry {index}: {error}"))?;
                if let Command::CreateSession { stamp_us, .. }
                | Command::AppendEvents { stamp_us, .. } = &command
                {
                    self.last_stamp_us = self.last_stamp_us.max(*stamp_us);
                }
                let group_slot = &mut self.groups[slot];
                group_slot.state.apply(index, &command);
                group_slot.log.entry_applied(index);
            }
        }
        Ok(())
    }
}

/// Open and recover shard `shard_index`; returns the shard and its applier's doorbell.
pub(crate) async fn open_shard(
    shard_index: u32,
    node: Arc<NodeShared>,
) -> Result<(Shard, flume::Receiver<()>), EngineError> {
    let shard_count = node.shard_count();
    let num_groups = node.config.num_groups;
    let groups = (shard_index..num_groups)
        .step_by(shard_count as usize)
        .map(|group_id| GroupSlot {
            state: GroupState::new(group_id, node.unarchived_bytes.clone()),
            log: GroupLog::new(group_id),
        })
        .collect();
    let mut rebuild = Rebuild {
        shard_index,
        shard_count,
        num_groups,
        groups,
        last_stamp_us: i64::MIN,
        error: None,
    };
    let mut options = WalOptions::new(node.shard_dir(shard_index));
    options.fault = node.config.wal_fault.clone();
    options.segment_bytes_max = node.config.wal_segment_bytes_max;
    let (wal, report) = Wal::open(options, |record| rebuild.on_record(record))
        .await
        .map_err(|source| EngineError::Wal {
            shard: shard_index,
            source,
        })?;
    if let Some(reason) = rebuild.error {
        // Stop the flusher the open started; the error that matters is the recovery one.
        let _ = wal.close().await;
        return Err(EngineError::Recovery {
            shard: shard_index,
            reason,
        });
    }
    tracing::info!(
        shard = shard_index,
        records = report.records,
        discarded_bytes = report.discarded_bytes,
        segments = report.segments,
        "recovered write-ahead log"
    );
    Ok(Shard::new(
        shard_index,
        node,
        wal,
        rebuild.groups,
        rebuild.last_stamp_us,
    ))
}
