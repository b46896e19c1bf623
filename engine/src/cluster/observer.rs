//! The observer of ops.md §3: this node's view of every other node (`ready`, `suspect`, `lost`,
//! `draining`, each with a change time), built from the peer transport's connects and
//! disconnects and from the node-status messages every node sends (peer message kind 5), plus
//! this node's own status that goes into those messages.
//!
//! Every method that depends on time takes a [`Clock`] reading, so that the transitions can be
//! tested without waiting.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use starcite_raft::NodeId;

use super::message::{DrainMark, NodeStatusReport};

/// A disconnected node turns from `suspect` into `lost` after this long.
pub const SUSPECT_TO_LOST: Duration = Duration::from_secs(120);

/// A peer's Raft readiness counts only while its last status report is at most this old.
pub const RAFT_READY_REPORT_MAX_AGE: Duration = Duration::from_secs(1);

/// Observer status of another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerStatus {
    /// Connected and not draining.
    Ready,
    /// Disconnected for less than [`SUSPECT_TO_LOST`].
    Suspect,
    /// Disconnected for [`SUSPECT_TO_LOST`] or more.
    Lost,
    /// Reports a drain mark.
    Draining,
}

/// A reading of both clocks the observer needs.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Monotonic time, for ages.
    pub now: Instant,
    /// Milliseconds since the Unix epoch, for the change times operators read.
    pub unix_ms: u64,
}

impl Clock {
    /// The current time.
    pub fn now() -> Clock {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            });
        Clock {
            now: Instant::now(),
            unix_ms,
        }
    }

    /// This reading moved forward by `elapsed`.
    pub fn after(self, elapsed: Duration) -> Clock {
        Clock {
            now: self.now + elapsed,
            unix_ms: self
                .unix_ms
                .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// What the observer knows about one other node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPeer {
    /// The node.
    pub node_id: NodeId,
    /// Its status.
    pub status: PeerStatus,
    /// When the status last changed (ms since the Unix epoch).
    pub changed_at_ms: u64,
    /// Connected and its last report (at most [`RAFT_READY_REPORT_MAX_AGE`] old) says Raft-ready.
    pub raft_ready: bool,
    /// Its observer reports this node `draining` (true when it is not connected: a node that
    /// cannot reach this one does not route to it).
    pub reports_local_draining: bool,
    /// Groups it leads, per its last report (0 without one).
    pub led_groups: u32,
}

#[derive(Clone, Debug)]
struct PeerEntry {
    connected: bool,
    status: PeerStatus,
    changed_at_ms: u64,
    drain: DrainMark,
    /// The last report and when it arrived.
    report: Option<(NodeStatusReport, Instant)>,
}

/// This node's own status, as it goes into its reports.
#[derive(Clone, Copy, Debug)]
struct LocalStatus {
    drain: DrainMark,
    raft_ready: bool,
}

/// The observer (see the module documentation). `Send + Sync`.
#[derive(Debug)]
pub struct Observer {
    self_id: NodeId,
    /// Per node (index `id - 1`); `None` until the node was first connected.
    peers: Mutex<Vec<Option<PeerEntry>>>,
    local: Mutex<LocalStatus>,
}

impl Observer {
    /// An observer for node `self_id` of a cluster of `node_count` nodes.
    pub fn new(self_id: NodeId, node_count: usize) -> Observer {
        Observer {
            self_id,
            peers: Mutex::new(vec![None; node_count]),
            local: Mutex::new(LocalStatus {
                drain: DrainMark::None,
                raft_ready: false,
            }),
        }
    }

    fn slot(node_id: NodeId) -> Option<usize> {
        usize::try_from(node_id).ok()?.checked_sub(1)
    }

    /// The transport connected to (`connected`) or lost `node_id`.
    pub fn set_connected(&self, node_id: NodeId, connected: bool, clock: Clock) {
        if node_id == self.self_id {
            return;
        }
        let mut peers = lock(&self.peers);
        let Some(slot) = Self::slot(node_id).and_then(|slot| peers.get_mut(slot)) else {
            return;
        };
        let entry = slot.get_or_insert(PeerEntry {
            connected: false,
            status: PeerStatus::Suspect,
            changed_at_ms: clock.unix_ms,
            drain: DrainMark::None,
            report: None,
        });
        entry.connected = connected;
        if !connected {
            // The last report says nothing about a node that cannot be reached.
            entry.report = None;
        }
        let status = entry.derived_status();
        entry.change(status, clock);
    }

    /// A status report arrived from `node_id`.
    pub fn receive_report(&self, node_id: NodeId, report: NodeStatusReport, clock: Clock) {
        if node_id == self.self_id {
            return;
        }
        let mut peers = lock(&self.peers);
        let Some(Some(entry)) = Self::slot(node_id).and_then(|slot| peers.get_mut(slot)) else {
            // A report before the connect event: the connect follows at once and the node sends
            // its status again on every period.
            return;
        };
        entry.drain = report.drain;
        entry.report = Some((report, clock.now));
        let status = entry.derived_status();
        entry.change(status, clock);
    }

    /// Periodic maintenance (every second): `suspect` for [`SUSPECT_TO_LOST`] → `lost`.
    pub fn maintain(&self, clock: Clock) {
        let mut peers = lock(&self.peers);
        for entry in peers.iter_mut().flatten() {
            let suspect_ms = clock.unix_ms.saturating_sub(entry.changed_at_ms);
            if entry.status == PeerStatus::Suspect
                && suspect_ms >= u64::try_from(SUSPECT_TO_LOST.as_millis()).unwrap_or(u64::MAX)
            {
                entry.change(PeerStatus::Lost, clock);
            }
        }
    }

    /// Every node the observer has seen, ascending by id.
    pub fn view(&self, clock: Clock) -> Vec<ObservedPeer> {
        let peers = lock(&self.peers);
        peers
            .iter()
            .enumerate()
            .filter_map(|(slot, entry)| {
                let entry = entry.as_ref()?;
                let node_id = slot as NodeId + 1;
                let fresh = entry.report.as_ref().filter(|(_, at)| {
                    clock.now.saturating_duration_since(*at) <= RAFT_READY_REPORT_MAX_AGE
                });
                Some(ObservedPeer {
                    node_id,
                    status: entry.status,
                    changed_at_ms: entry.changed_at_ms,
                    raft_ready: entry.connected
                        && fresh.is_some_and(|(report, _)| report.raft_ready),
                    reports_local_draining: !entry.connected
                        || entry.report.as_ref().is_some_and(|(report, _)| {
                            report.draining_nodes.contains(&self.self_id)
                        }),
                    led_groups: entry
                        .report
                        .as_ref()
                        .map_or(0, |(report, _)| report.led_groups),
                })
            })
            .collect()
    }

    /// `node_id` (another node) is `ready` and Raft-ready; for this node, its own readiness.
    pub fn is_ready(&self, node_id: NodeId, clock: Clock) -> bool {
        if node_id == self.self_id {
            let local = *lock(&self.local);
            return local.raft_ready && local.drain == DrainMark::None;
        }
        // One entry only: the router asks this for every candidate of every request.
        let peers = lock(&self.peers);
        Self::slot(node_id)
            .and_then(|slot| peers.get(slot))
            .and_then(Option::as_ref)
            .is_some_and(|entry| {
                entry.connected
                    && entry.status == PeerStatus::Ready
                    && entry.report.as_ref().is_some_and(|(report, at)| {
                        report.raft_ready
                            && clock.now.saturating_duration_since(*at) <= RAFT_READY_REPORT_MAX_AGE
                    })
            })
    }

    /// `node_id` is marked draining (as far as this node knows).
    pub fn is_draining(&self, node_id: NodeId) -> bool {
        if node_id == self.self_id {
            return lock(&self.local).drain != DrainMark::None;
        }
        let peers = lock(&self.peers);
        Self::slot(node_id)
            .and_then(|slot| peers.get(slot))
            .and_then(Option::as_ref)
            .is_some_and(|entry| entry.drain != DrainMark::None)
    }

    /// Other nodes this node sees as draining, ascending.
    pub fn draining_nodes(&self) -> Vec<NodeId> {
        let peers = lock(&self.peers);
        peers
            .iter()
            .enumerate()
            .filter(|(_, entry)| {
                entry
                    .as_ref()
                    .is_some_and(|entry| entry.status == PeerStatus::Draining)
            })
            .map(|(slot, _)| slot as NodeId + 1)
            .collect()
    }

    /// Sets this node's own drain mark.
    pub fn set_local_drain(&self, drain: DrainMark) {
        lock(&self.local).drain = drain;
    }

    /// This node's own drain mark.
    pub fn local_drain(&self) -> DrainMark {
        lock(&self.local).drain
    }

    /// Sets this node's own Raft readiness (as readiness last computed it).
    pub fn set_local_raft_ready(&self, raft_ready: bool) {
        lock(&self.local).raft_ready = raft_ready;
    }

    /// This node's own Raft readiness.
    pub fn local_raft_ready(&self) -> bool {
        lock(&self.local).raft_ready
    }
}

impl PeerEntry {
    fn derived_status(&self) -> PeerStatus {
        if self.drain != DrainMark::None {
            PeerStatus::Draining
        } else if self.connected {
            PeerStatus::Ready
        } else if self.status == PeerStatus::Lost {
            PeerStatus::Lost
        } else {
            PeerStatus::Suspect
        }
    }

    fn change(&mut self, status: PeerStatus, clock: Clock) {
        if self.status != status {
            self.status = status;
            self.changed_at_ms = clock.unix_ms;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a thread panicked while holding it; the table stays valid.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(drain: DrainMark, raft_ready: bool, draining: &[NodeId]) -> NodeStatusReport {
        NodeStatusReport {
            drain,
            raft_ready,
            led_groups: 3,
            draining_nodes: draining.to_vec(),
        }
    }

    fn status_of(observer: &Observer, node_id: NodeId, clock: Clock) -> ObservedPeer {
        observer
            .view(clock)
            .into_iter()
            .find(|peer| peer.node_id == node_id)
            .expect("visible")
    }

    #[test]
    fn connect_disconnect_suspect_lost() {
        let observer = Observer::new(1, 3);
        let start = Clock::now();
        assert!(
            observer.view(start).is_empty(),
            "nothing visible before a connect"
        );
        observer.set_connected(2, true, start);
        let peer = status_of(&observer, 2, start);
        assert_eq!(peer.status, PeerStatus::Ready);
        assert!(!peer.raft_ready, "no report yet");
        observer.receive_report(2, report(DrainMark::None, true, &[]), start);
        assert!(status_of(&observer, 2, start).raft_ready);
        assert!(observer.is_ready(2, start));
        // The report goes stale after a second.
        let later = start.after(Duration::from_millis(1500));
        assert!(!status_of(&observer, 2, later).raft_ready);

        observer.set_connected(2, false, later);
        let peer = status_of(&observer, 2, later);
        assert_eq!(peer.status, PeerStatus::Suspect);
        assert_eq!(peer.changed_at_ms, later.unix_ms);
        assert!(
            peer.reports_local_draining,
            "an unreachable node does not hold a drain up"
        );
        observer.maintain(later.after(Duration::from_secs(119)));
        assert_eq!(status_of(&observer, 2, later).status, PeerStatus::Suspect);
        let lost_at = later.after(SUSPECT_TO_LOST);
        observer.maintain(lost_at);
        let peer = status_of(&observer, 2, lost_at);
        assert_eq!(peer.status, PeerStatus::Lost);
        assert_eq!(peer.changed_at_ms, lost_at.unix_ms);
        observer.set_connected(2, true, lost_at);
        assert_eq!(status_of(&observer, 2, lost_at).status, PeerStatus::Ready);
    }

    #[test]
    fn drain_marks_win_over_connection_state() {
        let observer = Observer::new(1, 3);
        let clock = Clock::now();
        observer.set_connected(3, true, clock);
        observer.receive_report(3, report(DrainMark::Operator, true, &[1]), clock);
        let peer = status_of(&observer, 3, clock);
        assert_eq!(peer.status, PeerStatus::Draining);
        assert!(peer.reports_local_draining);
        assert!(!observer.is_ready(3, clock), "draining is not ready");
        assert!(observer.is_draining(3));
        assert_eq!(observer.draining_nodes(), [3]);
        // A draining node stays draining while away, and the mark is kept.
        observer.set_connected(3, false, clock);
        assert_eq!(status_of(&observer, 3, clock).status, PeerStatus::Draining);
        observer.set_connected(3, true, clock);
        assert_eq!(status_of(&observer, 3, clock).status, PeerStatus::Draining);
        // Undrain: the next report clears it.
        observer.receive_report(3, report(DrainMark::None, true, &[]), clock);
        let peer = status_of(&observer, 3, clock);
        assert_eq!(peer.status, PeerStatus::Ready);
        assert!(!peer.reports_local_draining);
        assert!(observer.draining_nodes().is_empty());
    }

    #[test]
    fn local_status() {
        let observer = Observer::new(1, 2);
        let clock = Clock::now();
        assert!(!observer.is_ready(1, clock));
        observer.set_local_raft_ready(true);
        assert!(observer.is_ready(1, clock));
        observer.set_local_drain(DrainMark::Shutdown);
        assert!(!observer.is_ready(1, clock));
        assert!(observer.is_draining(1));
        assert_eq!(observer.local_drain(), DrainMark::Shutdown);
    }
}
