//! Which leaderships to hand over, and to whom: on drain (cluster.md §7) and for the leader
//! balance (§7.1). Pure functions of the leader's views and the observer's verdicts, so that
//! the decisions are tested without a cluster.

use std::collections::BTreeMap;

use starcite_engine::shard::LeaderView;
use starcite_raft::NodeId;

/// Leadership transfers started at once (cluster.md §7).
pub const TRANSFERS_IN_FLIGHT_MAX: usize = 32;

/// One planned transfer: the group and its new leader.
pub type Transfer = (u32, NodeId);

/// Drain: every led group goes to the first replica in placement order (other than this node)
/// that is ready and up to date; a group without one stays.
pub fn plan_drain(
    self_id: NodeId,
    views: &[LeaderView],
    replicas: &[Vec<NodeId>],
    is_ready: impl Fn(NodeId) -> bool,
) -> Vec<Transfer> {
    views
        .iter()
        .filter_map(|view| {
            let placement = replicas.get(view.group_id as usize)?;
            let target = placement
                .iter()
                .copied()
                .find(|&node| node != self_id && is_ready(node) && view.is_up_to_date(node))?;
            Some((view.group_id, target))
        })
        .collect()
}

/// ⌈G/W⌉: the most groups a node should lead when `ready_writers` write nodes share them.
pub fn fair_share(groups: usize, ready_writers: usize) -> usize {
    groups.div_ceil(ready_writers.max(1))
}

/// Leader balance: when this node leads more than its fair share, its excess groups go to
/// ready, up-to-date replicas that lead fewer than the fair share, the one leading the fewest
/// first (ties in placement order). `ready_writers` are the write nodes that are ready and not
/// draining (this node included when it is); `led` the led-group count of each of them.
pub fn plan_balance(
    self_id: NodeId,
    groups: usize,
    ready_writers: &[NodeId],
    led: &BTreeMap<NodeId, usize>,
    views: &[LeaderView],
    replicas: &[Vec<NodeId>],
) -> Vec<Transfer> {
    if !ready_writers.contains(&self_id) {
        return Vec::new();
    }
    let share = fair_share(groups, ready_writers.len());
    let mut counts: BTreeMap<NodeId, usize> = ready_writers
        .iter()
        .map(|node| (*node, led.get(node).copied().unwrap_or(0)))
        .collect();
    let mut mine = views.len();
    let mut plan = Vec::new();
    for view in views {
        if mine <= share || plan.len() >= TRANSFERS_IN_FLIGHT_MAX {
            break;
        }
        if view.transfer_target.is_some() {
            continue;
        }
        let Some(placement) = replicas.get(view.group_id as usize) else {
            continue;
        };
        let target = placement
            .iter()
            .enumerate()
            .filter(|(_, node)| **node != self_id && view.is_up_to_date(**node))
            .filter_map(|(position, node)| {
                let count = *counts.get(node)?;
                (count < share).then_some((count, position, *node))
            })
            .min();
        if let Some((_, _, node)) = target {
            plan.push((view.group_id, node));
            *counts.entry(node).or_default() += 1;
            mine -= 1;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(group_id: u32, followers: &[(NodeId, u64)]) -> LeaderView {
        LeaderView {
            group_id,
            commit_index: 10,
            last_index: 12,
            followers: followers.to_vec(),
            transfer_target: None,
        }
    }

    #[test]
    fn drain_picks_the_first_ready_up_to_date_replica() {
        let replicas = vec![vec![2, 1, 3], vec![1, 3, 2], vec![3, 2, 1]];
        let views = vec![
            view(0, &[(2, 10), (3, 10)]),
            view(1, &[(3, 4), (2, 11)]),
            view(2, &[(3, 10), (2, 10)]),
        ];
        // Node 3 is not ready: group 2 goes to 2; group 1's node 3 lags, so 2 as well.
        let plan = plan_drain(1, &views, &replicas, |node| node == 2);
        assert_eq!(plan, [(0, 2), (1, 2), (2, 2)]);
        let plan = plan_drain(1, &views, &replicas, |node| node == 3);
        assert_eq!(
            plan,
            [(0, 3), (2, 3)],
            "group 1 has no qualifying replica and stays"
        );
        assert!(plan_drain(1, &views, &replicas, |_| false).is_empty());
    }

    #[test]
    fn fair_share_rounds_up() {
        assert_eq!(fair_share(16, 3), 6);
        assert_eq!(fair_share(256, 3), 86);
        assert_eq!(fair_share(16, 0), 16);
    }

    #[test]
    fn balance_moves_only_the_excess_to_the_least_loaded() {
        // 16 groups, node 1 leads 8, node 2 leads 8, node 3 (just undrained) leads 0.
        let replicas: Vec<Vec<NodeId>> = (0..16).map(|g| vec![1 + g % 3, 2, 3]).collect();
        let views: Vec<LeaderView> = (0..8).map(|g| view(g, &[(2, 10), (3, 10)])).collect();
        let led = BTreeMap::from([(1, 8), (2, 8), (3, 0)]);
        let plan = plan_balance(1, 16, &[1, 2, 3], &led, &views, &replicas);
        assert_eq!(plan.len(), 2, "8 - ⌈16/3⌉ = 2");
        assert!(plan.iter().all(|(_, target)| *target == 3));
        // A node at or under its share keeps everything.
        let led = BTreeMap::from([(1, 6), (2, 6), (3, 4)]);
        assert!(plan_balance(1, 16, &[1, 2, 3], &led, &views[..6], &replicas).is_empty());
        // Not ready (or draining): no balance.
        assert!(plan_balance(1, 16, &[2, 3], &led, &views, &replicas).is_empty());
    }

    #[test]
    fn balance_skips_lagging_replicas_and_breaks_ties_in_placement_order() {
        let replicas = vec![vec![1, 3, 2]; 4];
        let views: Vec<LeaderView> = vec![
            view(0, &[(2, 10), (3, 10)]),
            view(1, &[(2, 10), (3, 2)]),
            view(2, &[(2, 10), (3, 10)]),
            view(3, &[(2, 10), (3, 10)]),
        ];
        let led = BTreeMap::from([(1, 4), (2, 0), (3, 0)]);
        let plan = plan_balance(1, 4, &[1, 2, 3], &led, &views, &replicas);
        // Share ⌈4/3⌉ = 2: two groups leave. Group 0: tie 0/0 → 3 (placement before 2);
        // group 1: node 3 lags → 2.
        assert_eq!(plan, [(0, 3), (1, 2)]);
    }
}
