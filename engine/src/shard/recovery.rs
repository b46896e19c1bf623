//! Opening one shard: read its groups' snapshot files, open its WAL and replay the records into
//! each group's Raft log store, restore each state machine from its snapshot, start a Raft
//! member per hosted group, and bring the single-voter groups up to date.
//!
//! Committed entries after a snapshot are applied through the normal driving loop: a Raft member
//! restarts with `applied = snapshot index` and hands out every entry up to its known commit
//! index. A single-voter group elects itself at once and commits its whole log with its no-op,
//! so a single node serves exactly the state it acknowledged before the restart. Every recovered
//! command is decoded before anything starts, so an undecodable log refuses to start. The
//! shard's clock floor is set to the largest recovered stamp so that stamps stay monotonic
//! across restarts even if the wall clock stepped back.

use std::sync::Arc;

use starcite_raft::multi::{MultiConfig, MultiRaft};
use starcite_raft::Config;

use super::driver::record_group;
use super::error::EngineError;
use super::local::{GroupSlot, Shard, SHARD_PENDING_ENTRIES_MAX};
use super::node::NodeShared;
use crate::raftlog::snapshot_file::{read_snapshot_file, snapshot_dir};
use crate::raftlog::GroupReplay;
use crate::state::{Command, GroupState};
use crate::wal::{Wal, WalOptions};

/// Open and recover shard `shard_index`; returns the shard and its driver's doorbell.
pub(crate) async fn open_shard(
    shard_index: u32,
    node: Arc<NodeShared>,
) -> Result<(Shard, flume::Receiver<()>), EngineError> {
    let recovery_error = |reason: String| EngineError::Recovery {
        shard: shard_index,
        reason,
    };
    let shard_count = node.shard_count();
    let num_groups = node.config.num_groups;
    let shard_dir = node.shard_dir(shard_index);
    let snapshots_dir = snapshot_dir(&shard_dir);
    let group_ids: Vec<u32> = (shard_index..num_groups)
        .step_by(shard_count as usize)
        .collect();
    let mut snapshots = Vec::with_capacity(group_ids.len());
    for &group_id in &group_ids {
        let snapshot = read_snapshot_file(&snapshots_dir, group_id)
            .map_err(|error| recovery_error(error.to_string()))?;
        snapshots.push(snapshot);
    }
    let mut replays: Vec<GroupReplay> = group_ids
        .iter()
        .zip(&snapshots)
        .map(|(&group_id, snapshot)| {
            GroupReplay::new(group_id, snapshot.as_ref().map(|s| s.meta.clone()))
        })
        .collect();

    let mut options = WalOptions::new(shard_dir);
    options.fault = node.config.wal_fault.clone();
    options.segment_bytes_max = node.config.wal_segment_bytes_max;
    let mut replay_error: Option<String> = None;
    let opened = Wal::open_with_lsns(options, |lsn, record| {
        if replay_error.is_some() {
            return;
        }
        let group_id = record_group(&record);
        if group_id >= num_groups || group_id % shard_count != shard_index {
            replay_error = Some(format!(
                "record of group {group_id}, which shard {shard_index} does not own with \
                 {shard_count} shards and {num_groups} groups"
            ));
            return;
        }
        let slot = (group_id / shard_count) as usize;
        if let Err(error) = replays[slot].on_record(lsn, record) {
            replay_error = Some(error.to_string());
        }
    })
    .await;
    let (wal, report) = opened.map_err(|source| EngineError::Wal {
        shard: shard_index,
        source,
    })?;
    let fail = |reason: String| {
        let wal = wal.clone();
        async move {
            // Stop the flusher the open started; the error that matters is the recovery one.
            let _ = wal.close().await;
            recovery_error(reason)
        }
    };
    if let Some(reason) = replay_error {
        return Err(fail(reason).await);
    }

    let mut last_stamp_us = i64::MIN;
    for replay in &replays {
        for (index, payload) in replay.entry_payloads() {
            if payload.is_empty() {
                continue;
            }
            match Command::decode(payload) {
                Ok(
                    Command::CreateSession { stamp_us, .. }
                    | Command::AppendEvents { stamp_us, .. },
                ) => last_stamp_us = last_stamp_us.max(stamp_us),
                Ok(Command::AckArchived { .. }) => {}
                Err(error) => {
                    let reason = format!("entry {index} of a group: {error}");
                    return Err(fail(reason).await);
                }
            }
        }
    }

    let config = &node.config;
    let node_id = config.node_id();
    let mut raft = MultiRaft::new(MultiConfig {
        node_id,
        coalesce_heartbeats: true,
        heartbeat_flush_ticks: 1,
    });
    let mut groups = Vec::with_capacity(group_ids.len());
    for ((group_id, replay), snapshot) in group_ids.iter().copied().zip(replays).zip(snapshots) {
        let voters = config.group_voters(group_id);
        let member = voters.contains(&node_id);
        let single_voter = member && voters.len() == 1;
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.meta.index);
        let state = match &snapshot {
            Some(snapshot) if member => {
                match GroupState::decode_snapshot(
                    group_id,
                    &snapshot.data,
                    node.unarchived_bytes.clone(),
                ) {
                    Ok(state) => state,
                    Err(error) => {
                        return Err(fail(format!("snapshot of group {group_id}: {error}")).await)
                    }
                }
            }
            _ => GroupState::new(group_id, node.unarchived_bytes.clone()),
        };
        if member {
            let store = match replay.finish(wal.clone(), snapshots_dir.clone()) {
                Ok(store) => store,
                Err(error) => return Err(fail(error.to_string()).await),
            };
            let raft_config = Config {
                election_ticks: config.election_ticks(),
                heartbeat_ticks: 1,
                pre_vote: true,
                check_quorum: true,
                seed: (u64::from(group_id) << 32) ^ node_id,
                uncommitted_entries_max: SHARD_PENDING_ENTRIES_MAX,
                ..Config::new(node_id, voters)
            };
            if let Err(error) = raft.add_group(group_id, raft_config, store) {
                return Err(fail(error.to_string()).await);
            }
        }
        groups.push(GroupSlot {
            group_id,
            state,
            member,
            single_voter,
            waiters: Default::default(),
            reads: Vec::new(),
            snapshot_index,
        });
    }
    tracing::info!(
        shard = shard_index,
        records = report.records,
        discarded_bytes = report.discarded_bytes,
        segments = report.segments,
        "recovered write-ahead log"
    );
    let (shard, doorbell) = Shard::new(shard_index, node, wal.clone(), raft, groups, last_stamp_us);
    if let Err(reason) = shard.catch_up_single_voters().await {
        return Err(fail(reason).await);
    }
    Ok((shard, doorbell))
}
