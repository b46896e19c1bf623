//! Commit-notification fan-out to live tails (semantics.md §7).
//!
//! One [`NotifyHub`] is shared by every shard of the node: tails subscribe on whichever executor
//! accepted their connection, while the notification is published by the shard that applied the
//! append. Subscribers are kept in a fixed number of mutex-protected stripes keyed by a hash of
//! the session id, so that shards publishing for different sessions rarely contend. Publishing
//! never blocks: a full subscriber buffer sets its overflow flag instead (see
//! [`SubscriptionSender::publish`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use crate::api::{
    subscription_channel, Notification, PublishOutcome, Subscription, SubscriptionSender,
};

/// Number of independently locked subscriber maps. A power of two well above the shard count
/// keeps contention negligible without a per-session lock.
pub const NOTIFY_STRIPES: usize = 64;

type SubscriberMap = HashMap<String, Vec<SubscriptionSender>>;

/// The node-wide registry of tail subscriptions. `Send + Sync`; share it behind an `Arc`.
pub struct NotifyHub {
    stripes: Vec<Mutex<SubscriberMap>>,
}

impl Default for NotifyHub {
    fn default() -> Self {
        NotifyHub::new()
    }
}

impl NotifyHub {
    /// An empty hub.
    pub fn new() -> Self {
        NotifyHub {
            stripes: (0..NOTIFY_STRIPES)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn stripe(&self, session_id: &str) -> MutexGuard<'_, SubscriberMap> {
        let mut hasher = DefaultHasher::new();
        session_id.hash(&mut hasher);
        let slot = (hasher.finish() % NOTIFY_STRIPES as u64) as usize;
        // A poisoned stripe only means a thread panicked while holding it; the map is still a
        // valid map of senders, so keep using it rather than taking tails down with it.
        self.stripes[slot]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Register a subscriber for `session_id` whose buffer holds at most `capacity` notifications.
    /// The subscription ends when the returned [`Subscription`] is dropped; the hub notices on the
    /// next publish for that session.
    pub fn subscribe(&self, session_id: &str, capacity: usize) -> Subscription {
        let (sender, subscription) = subscription_channel(capacity);
        let mut stripe = self.stripe(session_id);
        let senders = stripe.entry(session_id.to_string()).or_default();
        // Subscribers that went away without a publish in between would otherwise accumulate
        // for a quiet session; subscribing is the other moment we touch the list.
        senders.retain(|existing| !existing.is_closed());
        senders.push(sender);
        subscription
    }

    /// Deliver `notification` to every live subscriber of `session_id` without blocking, and
    /// forget subscribers that have gone away.
    pub fn publish(&self, session_id: &str, notification: Notification) {
        let mut stripe = self.stripe(session_id);
        let Some(senders) = stripe.get_mut(session_id) else {
            return;
        };
        senders.retain(|sender| sender.publish(notification) != PublishOutcome::Closed);
        if senders.is_empty() {
            stripe.remove(session_id);
        }
    }

    /// Number of live-or-not-yet-pruned subscribers of `session_id` (for tests and status).
    pub fn subscriber_count(&self, session_id: &str) -> usize {
        self.stripe(session_id).get(session_id).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_reaches_subscribers_and_prunes_closed() {
        let hub = NotifyHub::new();
        let first = hub.subscribe("s1", 4);
        let second = hub.subscribe("s1", 4);
        hub.publish(
            "s1",
            Notification {
                seq: 1,
                last_seq: 1,
            },
        );
        assert_eq!(
            first.try_recv(),
            Some(Notification {
                seq: 1,
                last_seq: 1
            })
        );
        assert_eq!(
            second.try_recv(),
            Some(Notification {
                seq: 1,
                last_seq: 1
            })
        );
        drop(first);
        hub.publish(
            "s1",
            Notification {
                seq: 2,
                last_seq: 2,
            },
        );
        assert_eq!(hub.subscriber_count("s1"), 1);
        drop(second);
        hub.publish(
            "s1",
            Notification {
                seq: 3,
                last_seq: 3,
            },
        );
        assert_eq!(hub.subscriber_count("s1"), 0);
        // Publishing to a session nobody watches is a no-op.
        hub.publish(
            "other",
            Notification {
                seq: 1,
                last_seq: 1,
            },
        );
    }

    #[test]
    fn full_buffer_overflows_without_blocking() {
        let hub = NotifyHub::new();
        let subscription = hub.subscribe("s", 1);
        hub.publish(
            "s",
            Notification {
                seq: 1,
                last_seq: 1,
            },
        );
        hub.publish(
            "s",
            Notification {
                seq: 2,
                last_seq: 2,
            },
        );
        assert!(subscription.take_overflow());
        assert_eq!(subscription.try_recv(), None);
        assert_eq!(hub.subscriber_count("s"), 1);
    }
}
