//! A bounded pool of synchronous Postgres connections.
//!
//! Connections are opened lazily up to the pool size and returned on drop of the [`PooledClient`]
//! guard; a closed (broken) connection is discarded instead. A checkout waits at most the checkout
//! timeout for a free connection.

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::ArchiveError;

struct PoolState {
    idle: Vec<Client>,
    /// Connections that exist: idle, checked out, or being opened.
    open_count: u32,
}

/// The pool.
pub(crate) struct Pool {
    config: postgres::Config,
    size_max: u32,
    checkout_timeout: Duration,
    state: Mutex<PoolState>,
    /// Signalled whenever a connection is returned or a slot frees up.
    released: Condvar,
}

impl Pool {
    pub(crate) fn new(config: postgres::Config, size_max: u32, checkout_timeout: Duration) -> Pool {
        Pool {
            config,
            size_max,
            checkout_timeout,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open_count: 0,
            }),
            released: Condvar::new(),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, PoolState> {
        // The state stays consistent across a panic: every change is a single field update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most connections the pool opens.
    pub(crate) fn size_max(&self) -> u32 {
        self.size_max
    }

    /// Opens a connection outside the pool (migrations run on their own connection).
    pub(crate) fn connect(&self) -> Result<Client, ArchiveError> {
        self.config
            .connect(NoTls)
            .map_err(|source| ArchiveError::Postgres {
                operation: "connect to Postgres",
                source,
            })
    }

    /// A free connection, waiting up to the checkout timeout.
    pub(crate) fn checkout(&self) -> Result<PooledClient<'_>, ArchiveError> {
        let started = Instant::now();
        let deadline = started + self.checkout_timeout;
        let mut state = self.lock_state();
        loop {
            while let Some(client) = state.idle.pop() {
                if client.is_closed() {
                    state.open_count -= 1;
                    continue;
                }
                return Ok(PooledClient {
                    pool: self,
                    client: Some(client),
                });
            }
            if state.open_count < self.size_max {
                state.open_count += 1;
                drop(state);
                return match self.connect() {
                    Ok(client) => Ok(PooledClient {
                        pool: self,
                        client: Some(client),
                    }),
                    Err(error) => {
                        self.lock_state().open_count -= 1;
                        self.released.notify_one();
                        Err(error)
                    }
                };
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ArchiveError::PoolTimeout {
                    waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    pool_size: self.size_max,
                });
            }
            state = self
                .released
                .wait_timeout(state, remaining)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn check_in(&self, client: Client) {
        let mut state = self.lock_state();
        if client.is_closed() {
            state.open_count -= 1;
        } else {
            state.idle.push(client);
        }
        drop(state);
        self.released.notify_one();
    }
}

/// A checked-out connection; returns to the pool when dropped.
pub(crate) struct PooledClient<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Deref for PooledClient<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        // `client` is `Some` from construction until drop.
        self.client
            .as_ref()
            .unwrap_or_else(|| unreachable!("client taken before drop"))
    }
}

impl DerefMut for PooledClient<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .unwrap_or_else(|| unreachable!("client taken before drop"))
    }
}

impl Drop for PooledClient<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.pool.check_in(client);
        }
    }
}
