//! SIGTERM / SIGINT handling on a dedicated thread with `sigwait`, so no code runs in a signal
//! handler. The signals are blocked in the calling thread before any other thread exists; every
//! thread spawned afterwards (the shard executors) inherits the mask, so only `sigwait` sees them.

use std::time::Duration;

/// Blocks SIGTERM and SIGINT in the calling thread (and so in threads it spawns later).
pub fn block_termination_signals() -> std::io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is a valid, initialised signal set; a null old-set pointer is allowed.
    let result = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if result != 0 {
        return Err(std::io::Error::from_raw_os_error(result));
    }
    Ok(())
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: `sigemptyset` initialises the zeroed set; adding valid signal numbers cannot fail.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}

/// Waits for one blocked termination signal; `None` when `timeout` passes first (or on error).
fn wait_for_signal(timeout: Option<Duration>) -> Option<libc::c_int> {
    let set = termination_set();
    loop {
        let signal = match timeout {
            None => {
                let mut signal: libc::c_int = 0;
                // SAFETY: `set` is initialised and `signal` is a valid out pointer.
                let result = unsafe { libc::sigwait(&set, &mut signal) };
                if result == 0 {
                    signal
                } else {
                    -1
                }
            }
            Some(timeout) => {
                let limit = libc::timespec {
                    tv_sec: timeout.as_secs() as libc::time_t,
                    tv_nsec: timeout.subsec_nanos() as libc::c_long,
                };
                // SAFETY: `set` and `limit` are initialised; a null info pointer is allowed.
                unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &limit) }
            }
        };
        if signal > 0 {
            return Some(signal);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// Starts the watcher thread. On the first SIGTERM/SIGINT it sends on `stop`; a second signal
/// exits at once with code 1 (ops.md §6); when the shutdown budget expires first, it logs a
/// warning and exits 0 (acknowledged writes are already durable).
pub fn spawn_watcher(stop: flume::Sender<()>, shutdown_timeout: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("starcite-signals".to_string())
        .spawn(move || {
            let Some(first) = wait_for_signal(None) else {
                tracing::error!("waiting for termination signals failed; signals are ignored");
                return;
            };
            tracing::info!("received {}, shutting down", signal_name(first));
            let _ = stop.send(());
            match wait_for_signal(Some(shutdown_timeout)) {
                Some(second) => {
                    tracing::warn!(
                        "received {} during shutdown, exiting at once",
                        signal_name(second)
                    );
                    std::process::exit(1);
                }
                None => {
                    tracing::warn!(
                        "shutdown did not finish within {} ms, exiting",
                        shutdown_timeout.as_millis()
                    );
                    std::process::exit(0);
                }
            }
        })
        .map(|_| ())
}
