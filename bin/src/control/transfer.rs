//! Running planned leadership transfers on the shards, at most
//! [`TRANSFERS_IN_FLIGHT_MAX`] at a time, each given up after the plane's transfer timeout.
//! Only channels are awaited here (the shards keep the time), so these futures run on any
//! executor and can be blocked on from the shutdown thread.

use std::sync::Arc;
use std::time::Duration;

use starcite_engine::cluster::{Clock, ClusterLink};
use starcite_engine::shard::TransferOutcome;

use super::balance::{self, Transfer, TRANSFERS_IN_FLIGHT_MAX};

/// Drain (cluster.md §7): hand every led group to its first ready, up-to-date replica.
pub async fn drain(link: Arc<ClusterLink>, timeout: Duration) {
    let views = link.leader_views().await;
    if views.is_empty() {
        return;
    }
    let clock = Clock::now();
    let plan = balance::plan_drain(
        link.node_id(),
        &views,
        &link.topology().group_replicas,
        |node| link.observer().is_ready(node, clock),
    );
    let kept = views.len() - plan.len();
    let moved = run(&link, &plan, timeout).await;
    if moved < views.len() {
        tracing::info!(
            "drain: handed over {moved} of {} led groups ({kept} without a ready, up-to-date replica)",
            views.len()
        );
    }
}

/// Runs `plan`; returns how many groups changed leader.
pub async fn run(link: &ClusterLink, plan: &[Transfer], timeout: Duration) -> usize {
    let mut transferred = 0;
    for batch in plan.chunks(TRANSFERS_IN_FLIGHT_MAX) {
        let mut waiting = Vec::with_capacity(batch.len());
        for &(group_id, target) in batch {
            if let Some(outcome) = link.start_transfer(group_id, target, timeout).await {
                waiting.push((group_id, target, outcome));
            }
        }
        for (group_id, target, outcome) in waiting {
            match outcome.recv_async().await {
                Ok(TransferOutcome::Transferred) => transferred += 1,
                Ok(TransferOutcome::GaveUp) => tracing::debug!(
                    group = group_id,
                    target,
                    "leadership transfer given up after {} ms",
                    timeout.as_millis()
                ),
                Ok(TransferOutcome::Refused(reason)) => tracing::debug!(
                    group = group_id,
                    target,
                    "leadership transfer refused: {reason}"
                ),
                Err(_) => {}
            }
        }
    }
    transferred
}
