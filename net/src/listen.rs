//! Listening sockets that every shard can bind on the same port, and that a restarted node can
//! bind again at once.
//!
//! `SO_REUSEPORT` lets each shard executor own a listener on the same port (the kernel spreads
//! connections across them). `SO_REUSEADDR` lets a node that was killed bind its port again while
//! the previous process's connections are still in `TIME_WAIT`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Backlog of not-yet-accepted connections per listener.
pub const LISTEN_BACKLOG_MAX: i32 = 4096;

/// Bind a TCP listener on `address` with `SO_REUSEADDR` and `SO_REUSEPORT`.
pub fn bind_reusable(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG_MAX)?;
    // SAFETY: the descriptor is a freshly created listening socket that we own and hand over.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Fail when another socket listens on `address`. Binding with `SO_REUSEADDR` (and without
/// `SO_REUSEPORT`) succeeds over connections of an earlier run that linger in `TIME_WAIT` — a
/// node that closed connections itself during a graceful shutdown leaves those — but not over a
/// live listener, which the shards' `SO_REUSEPORT` listeners would otherwise share silently.
pub fn ensure_free(address: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(1)
}
