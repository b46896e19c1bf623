//! Graceful shutdown of the listeners (ops.md §6), as seen from the network layer.
//!
//! The process drives the sequence; this module gives the listeners what they need to follow
//! it:
//! - [`Latch`]: a one-way, node-wide flag that any executor can wait on.
//! - [`ConnectionCounts`]: how many HTTP connections and tails are open on the whole node, so
//!   that the process can wait for in-flight requests and tails to end.
//! - [`ShutdownHooks`]: the latch and counters one listener observes, plus the engine's
//!   shutdown signal that closes tails with 1001 `server_shutdown`.
//!
//! Step 3 of the sequence fires [`ShutdownHooks::stop_accepting`]: listeners stop accepting,
//! idle keep-alive connections close, and every response written from then on carries
//! `Connection: close` so that a request in flight finishes and its connection ends. Open tails
//! are not in-flight requests: they keep delivering until the engine's shutdown signal fires
//! (step 4).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use starcite_engine::ShutdownSignal;

/// A flag that is set once and never cleared. Cheap to clone, `Send + Sync`; waiting works on
/// any executor.
#[derive(Clone)]
pub struct Latch {
    /// Never carries a message: dropping the only sender wakes every receiver at once.
    receiver: flume::Receiver<()>,
    sender: Arc<Mutex<Option<flume::Sender<()>>>>,
    fired: Arc<AtomicBool>,
}

impl Default for Latch {
    fn default() -> Latch {
        Latch::new()
    }
}

impl Latch {
    /// A latch that has not fired.
    pub fn new() -> Latch {
        let (sender, receiver) = flume::bounded(1);
        Latch {
            receiver,
            sender: Arc::new(Mutex::new(Some(sender))),
            fired: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set the flag and wake every waiter (idempotent).
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        let mut sender = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sender.take();
    }

    /// True once [`Latch::fire`] was called.
    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Wait until the latch fires (returns at once if it already did).
    pub async fn wait(&self) {
        // The channel never carries a message; `recv` returns when the sender is dropped.
        let _ = self.receiver.recv_async().await;
    }
}

/// Open connections of every listener of the node.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    connections: AtomicUsize,
    tails: AtomicUsize,
}

impl ConnectionCounts {
    /// Count an accepted connection until the returned guard is dropped.
    pub fn connection(self: &Arc<Self>) -> CountGuard {
        CountGuard::new(self.clone(), Counter::Connection)
    }

    /// Count an open tail until the returned guard is dropped.
    pub fn tail(self: &Arc<Self>) -> CountGuard {
        CountGuard::new(self.clone(), Counter::Tail)
    }

    /// Connections that are not tails: requests in flight or idle keep-alive connections.
    pub fn http_connections(&self) -> usize {
        let connections = self.connections.load(Ordering::Acquire);
        connections.saturating_sub(self.tails())
    }

    /// Open tails.
    pub fn tails(&self) -> usize {
        self.tails.load(Ordering::Acquire)
    }
}

#[derive(Clone, Copy, Debug)]
enum Counter {
    Connection,
    Tail,
}

/// Decrements its counter when dropped, so that a panicking connection task is uncounted too.
pub struct CountGuard {
    counts: Arc<ConnectionCounts>,
    counter: Counter,
}

impl CountGuard {
    fn new(counts: Arc<ConnectionCounts>, counter: Counter) -> CountGuard {
        counts.slot(counter).fetch_add(1, Ordering::AcqRel);
        CountGuard { counts, counter }
    }
}

impl ConnectionCounts {
    fn slot(&self, counter: Counter) -> &AtomicUsize {
        match counter {
            Counter::Connection => &self.connections,
            Counter::Tail => &self.tails,
        }
    }
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.counts
            .slot(self.counter)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one listener observes of the shutdown sequence.
#[derive(Clone, Default)]
pub struct ShutdownHooks {
    /// Step 3: stop accepting, close idle connections, answer with `Connection: close`.
    pub stop_accepting: Latch,
    /// Step 4: close every tail with 1001 `server_shutdown`. `None` leaves tails open until the
    /// client or the token ends them (tests of the HTTP layer alone).
    pub close_tails: Option<ShutdownSignal>,
    /// Node-wide open connections and tails.
    pub counts: Arc<ConnectionCounts>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn latch_fires_once_for_every_clone() {
        let latch = Latch::new();
        let clone = latch.clone();
        assert!(!clone.is_fired());
        latch.fire();
        latch.fire();
        assert!(clone.is_fired());
        futures_lite::future::block_on(clone.wait());
    }

    #[test]
    fn counts_follow_guards() {
        let counts = Arc::new(ConnectionCounts::default());
        let first = counts.connection();
        let second = counts.connection();
        let tail = counts.tail();
        assert_eq!(counts.http_connections(), 1);
        assert_eq!(counts.tails(), 1);
        drop(tail);
        drop(second);
        assert_eq!(counts.http_connections(), 1);
        drop(first);
        assert_eq!(counts.http_connections(), 0);
    }
}
