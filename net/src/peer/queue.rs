//! The bounded send queue of one peer.
//!
//! Frames wait here while the connection is busy or down. The queue is bounded by bytes and by
//! frame count; a full queue refuses the frame, so a slow or dead peer costs at most the bound.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::frame::PEER_FRAME_HEADER_BYTES;

/// Fill level of a queue, reported when it refuses a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLevel {
    pub frames_queued: usize,
    pub bytes_queued: u64,
}

/// Frames waiting to be written to one peer.
#[derive(Debug)]
pub struct SendQueue {
    frames: VecDeque<Bytes>,
    bytes_queued: u64,
    bytes_max: u64,
    frames_max: usize,
    writer_waker: Option<Waker>,
}

impl SendQueue {
    /// An empty queue holding at most `bytes_max` bytes (headers included) and `frames_max`
    /// frames.
    pub fn new(bytes_max: u64, frames_max: usize) -> SendQueue {
        SendQueue {
            frames: VecDeque::new(),
            bytes_queued: 0,
            bytes_max,
            frames_max,
            writer_waker: None,
        }
    }

    /// Bytes a frame with `body` occupies in the queue.
    fn frame_bytes(body: &Bytes) -> u64 {
        (PEER_FRAME_HEADER_BYTES + body.len()) as u64
    }

    /// Queue `body`, or report the level that made it not fit.
    pub fn push(&mut self, body: Bytes) -> Result<(), QueueLevel> {
        let frame_bytes = Self::frame_bytes(&body);
        if self.frames.len() >= self.frames_max || self.bytes_queued + frame_bytes > self.bytes_max
        {
            return Err(self.level());
        }
        self.bytes_queued += frame_bytes;
        self.frames.push_back(body);
        if let Some(waker) = self.writer_waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Take the oldest frame.
    pub fn pop(&mut self) -> Option<Bytes> {
        let body = self.frames.pop_front()?;
        self.bytes_queued -= Self::frame_bytes(&body);
        Some(body)
    }

    /// The current fill level.
    pub fn level(&self) -> QueueLevel {
        QueueLevel {
            frames_queued: self.frames.len(),
            bytes_queued: self.bytes_queued,
        }
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Ready when a frame waits; otherwise remember the writer to wake on the next push.
    pub fn poll_non_empty(&mut self, context: &mut Context<'_>) -> Poll<()> {
        if self.frames.is_empty() {
            self.writer_waker = Some(context.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn byte_bound_counts_headers_and_refuses_without_growing() {
        let mut queue = SendQueue::new(100, 1000);
        // Each 42-byte body occupies 50 bytes.
        assert!(queue.push(Bytes::from(vec![0u8; 42])).is_ok());
        assert!(queue.push(Bytes::from(vec![0u8; 42])).is_ok());
        let refused = queue.push(Bytes::from(vec![0u8; 1])).unwrap_err();
        assert_eq!(
            refused,
            QueueLevel {
                frames_queued: 2,
                bytes_queued: 100
            }
        );
        assert!(queue.pop().is_some());
        assert_eq!(queue.level().bytes_queued, 50);
        assert!(queue.push(Bytes::from(vec![0u8; 42])).is_ok());
    }

    #[test]
    fn frame_bound_refuses_even_empty_bodies() {
        let mut queue = SendQueue::new(u64::MAX, 2);
        assert!(queue.push(Bytes::new()).is_ok());
        assert!(queue.push(Bytes::new()).is_ok());
        assert!(queue.push(Bytes::new()).is_err());
        assert_eq!(queue.level().frames_queued, 2);
    }
}
