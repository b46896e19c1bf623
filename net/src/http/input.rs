//! The read side of a connection: a byte buffer in front of the stream, filled under a
//! deadline.

use std::io;
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes requested from the stream per read of a body.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes requested per buffered read (request heads, chunked framing). Small, because the buffer
/// keeps this capacity for the life of a keep-alive connection, and heads are at most
/// [`super::HEAD_BYTES_MAX`] anyway.
pub const FILL_CHUNK_BYTES: usize = 16 * 1024;

/// Why a read did not deliver bytes.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The deadline passed first.
    #[error("read timed out")]
    TimedOut,
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The stream failed.
    #[error("read: {0}")]
    Io(#[from] io::Error),
}

/// A stream with the bytes received but not yet consumed.
pub struct Input<T> {
    stream: T,
    buffer: Vec<u8>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Input<T> {
    /// Wrap a fresh stream.
    pub fn new(stream: T) -> Input<T> {
        Input {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Bytes received and not consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    /// Drop the first `count` buffered bytes.
    pub fn consume(&mut self, count: usize) {
        self.buffer.drain(..count.min(self.buffer.len()));
    }

    /// Move all buffered bytes out.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buffer)
    }

    /// Read more bytes into the buffer, waiting at most until `deadline`.
    pub async fn fill(&mut self, deadline: Instant) -> Result<usize, InputError> {
        let start = self.buffer.len();
        self.buffer.resize(start + FILL_CHUNK_BYTES, 0);
        let result = read_until(&mut self.stream, &mut self.buffer[start..], deadline).await;
        let read = match &result {
            Ok(read) => *read,
            Err(_) => 0,
        };
        self.buffer.truncate(start + read);
        result
    }

    /// Read straight into `target` (bypassing the buffer, which must be empty), waiting at most
    /// until `deadline`.
    pub async fn read_direct(
        &mut self,
        target: &mut [u8],
        deadline: Instant,
    ) -> Result<usize, InputError> {
        debug_assert!(self.buffer.is_empty());
        read_until(&mut self.stream, target, deadline).await
    }

    /// Write all of `bytes` and flush, failing with `TimedOut` after `deadline`.
    pub async fn write_all(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), InputError> {
        let stream = &mut self.stream;
        let write = async move {
            stream.write_all(bytes).await?;
            stream.flush().await?;
            Ok::<(), InputError>(())
        };
        let timeout = async {
            glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
            Err(InputError::TimedOut)
        };
        futures_lite::future::or(write, timeout).await
    }

    /// Shut down the write side and discard incoming bytes until the peer closes, `bytes_max`
    /// bytes were discarded or `deadline` passes.
    pub async fn linger(&mut self, bytes_max: u64, deadline: Instant) {
        if self.stream.close().await.is_err() {
            return;
        }
        self.buffer.clear();
        let mut discarded = 0_u64;
        let mut scratch = vec![0_u8; READ_CHUNK_BYTES];
        while discarded < bytes_max {
            match read_until(&mut self.stream, &mut scratch, deadline).await {
                Ok(read) => discarded += read as u64,
                Err(_) => return,
            }
        }
    }

    /// The stream, for writing.
    pub fn stream_mut(&mut self) -> &mut T {
        &mut self.stream
    }

    /// The stream and the unconsumed bytes. The bytes are returned without the buffer's spare
    /// capacity: after an upgrade they seed the WebSocket's read buffer, which lives as long as
    /// the tail, and idle tails must stay small (tail.md §5).
    pub fn into_parts(self) -> (T, Vec<u8>) {
        let mut leftover = self.buffer;
        leftover.shrink_to_fit();
        (self.stream, leftover)
    }
}

/// One read bounded by `deadline`; `Closed` at end of stream.
async fn read_until<T: AsyncRead + Unpin>(
    stream: &mut T,
    target: &mut [u8],
    deadline: Instant,
) -> Result<usize, InputError> {
    let read = async { Some(stream.read(target).await) };
    let timeout = async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        None
    };
    match futures_lite::future::or(read, timeout).await {
        None => Err(InputError::TimedOut),
        Some(Ok(0)) => Err(InputError::Closed),
        Some(Ok(read)) => Ok(read),
        Some(Err(error)) => Err(InputError::Io(error)),
    }
}
