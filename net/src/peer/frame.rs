//! Peer frames (cluster.md §5.3): `u32 body length (big-endian)` + `u32 crc32c of the body
//! (big-endian)` + body.
//!
//! A frame with an empty body is a keepalive: it proves the connection is alive and is never
//! handed to the receiver.

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncReadExt};

use super::error::PeerError;

/// Bytes of a frame header: body length and body checksum.
pub const PEER_FRAME_HEADER_BYTES: usize = 8;
/// Largest frame body the wire format allows (64 MiB). Larger frames close the connection.
pub const PEER_FRAME_BODY_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// Bytes asked of the socket per read while no large frame is pending.
pub const FRAME_READ_CHUNK_BYTES: usize = 64 * 1024;

const _: () = assert!(PEER_FRAME_BODY_BYTES_MAX as u64 <= u32::MAX as u64);
const _: () = assert!(FRAME_READ_CHUNK_BYTES >= PEER_FRAME_HEADER_BYTES);

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the body that follows the header.
    pub body_bytes: u32,
    /// crc32c (Castagnoli) of the body.
    pub body_crc32c: u32,
}

/// The header of a frame carrying `body`, or [`PeerError::FrameTooLarge`].
pub fn encode_header(body: &[u8]) -> Result<[u8; PEER_FRAME_HEADER_BYTES], PeerError> {
    let body_bytes = checked_body_bytes(body.len())?;
    let mut header = [0u8; PEER_FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&body_bytes.to_be_bytes());
    header[4..8].copy_from_slice(&crc32c::crc32c(body).to_be_bytes());
    Ok(header)
}

/// Append the whole frame carrying `body` (header, then body) to `out`.
pub fn encode_frame_into(body: &[u8], out: &mut Vec<u8>) -> Result<(), PeerError> {
    let header = encode_header(body)?;
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    Ok(())
}

/// The length of a body as the wire's `u32`, refusing bodies over the maximum.
pub fn checked_body_bytes(body_bytes: usize) -> Result<u32, PeerError> {
    match u32::try_from(body_bytes) {
        Ok(length) if length <= PEER_FRAME_BODY_BYTES_MAX => Ok(length),
        _ => Err(PeerError::FrameTooLarge {
            body_bytes: body_bytes as u64,
            body_bytes_max: PEER_FRAME_BODY_BYTES_MAX,
        }),
    }
}

/// Decode a header, refusing bodies longer than `body_bytes_max`.
pub fn decode_header(
    header: &[u8; PEER_FRAME_HEADER_BYTES],
    body_bytes_max: u32,
) -> Result<FrameHeader, PeerError> {
    let body_bytes = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let body_crc32c = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if body_bytes > body_bytes_max {
        return Err(PeerError::FrameTooLarge {
            body_bytes: u64::from(body_bytes),
            body_bytes_max,
        });
    }
    Ok(FrameHeader {
        body_bytes,
        body_crc32c,
    })
}

/// Check a body against the checksum of its header.
pub fn verify_body(header: &FrameHeader, body: &[u8]) -> Result<(), PeerError> {
    let actual = crc32c::crc32c(body);
    if actual != header.body_crc32c {
        return Err(PeerError::ChecksumMismatch {
            expected: header.body_crc32c,
            actual,
        });
    }
    Ok(())
}

/// Incremental frame decoding over a growing byte buffer. Bytes go in with [`Self::buffer`],
/// whole verified bodies come out of [`Self::next_frame`].
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    scratch: Box<[u8]>,
    body_bytes_max: u32,
}

impl FrameDecoder {
    /// A decoder that refuses bodies longer than `body_bytes_max`.
    pub fn new(body_bytes_max: u32) -> FrameDecoder {
        FrameDecoder {
            buffer: BytesMut::new(),
            scratch: vec![0u8; FRAME_READ_CHUNK_BYTES].into_boxed_slice(),
            body_bytes_max,
        }
    }

    /// Change the largest accepted body, e.g. from the handshake's limit to the frame limit once
    /// the peer is authenticated. Bytes already buffered are kept.
    pub fn set_body_bytes_max(&mut self, body_bytes_max: u32) {
        self.body_bytes_max = body_bytes_max;
    }

    /// Append received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The bytes received but not yet decoded.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame body, `Ok(None)` when more bytes are needed, or the error that must
    /// close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, PeerError> {
        let Some(header) = self.peek_header()? else {
            return Ok(None);
        };
        let frame_bytes = PEER_FRAME_HEADER_BYTES + header.body_bytes as usize;
        if self.buffer.len() < frame_bytes {
            return Ok(None);
        }
        let mut frame = self.buffer.split_to(frame_bytes);
        let body = frame.split_off(PEER_FRAME_HEADER_BYTES).freeze();
        verify_body(&header, &body)?;
        Ok(Some(body))
    }

    /// Bytes still missing before the frame at the head of the buffer is complete (at least one
    /// header while the header itself is incomplete).
    fn missing_bytes(&self) -> Result<usize, PeerError> {
        match self.peek_header()? {
            None => Ok(PEER_FRAME_HEADER_BYTES - self.buffer.len()),
            Some(header) => {
                let frame_bytes = PEER_FRAME_HEADER_BYTES + header.body_bytes as usize;
                Ok(frame_bytes.saturating_sub(self.buffer.len()))
            }
        }
    }

    fn peek_header(&self) -> Result<Option<FrameHeader>, PeerError> {
        let Some(header) = self.buffer.get(..PEER_FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let mut header_bytes = [0u8; PEER_FRAME_HEADER_BYTES];
        header_bytes.copy_from_slice(header);
        decode_header(&header_bytes, self.body_bytes_max).map(Some)
    }

    /// Read from `reader` until a whole frame is buffered and return its body; `Ok(None)` on a
    /// clean end of stream between frames.
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Option<Bytes>, PeerError> {
        loop {
            if let Some(body) = self.next_frame()? {
                return Ok(Some(body));
            }
            // Reserve the whole pending frame at once, so that a large body lands in one
            // allocation; read in chunks through a scratch buffer so that small frames arrive
            // in batches and nothing is zero-filled twice.
            self.buffer.reserve(self.missing_bytes()?);
            let received = reader
                .read(&mut self.scratch[..])
                .await
                .map_err(PeerError::io("read peer frame"))?;
            self.buffer.extend_from_slice(&self.scratch[..received]);
            if received == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(PeerError::TruncatedFrame)
                };
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame_into(body, &mut out).unwrap();
        out
    }

    #[test]
    fn header_layout_is_length_then_crc_big_endian() {
        let bytes = frame(b"hello");
        assert_eq!(&bytes[0..4], &[0, 0, 0, 5]);
        assert_eq!(&bytes[4..8], &crc32c::crc32c(b"hello").to_be_bytes());
        assert_eq!(&bytes[8..], b"hello");
    }

    #[test]
    fn keepalive_frame_is_eight_zero_bytes() {
        // crc32c of the empty string is 0.
        assert_eq!(frame(b""), vec![0u8; 8]);
    }

    #[test]
    fn decoder_returns_frames_split_across_arbitrary_boundaries() {
        let mut wire = frame(b"first");
        wire.extend(frame(b""));
        wire.extend(frame(&[7u8; 1000]));
        let mut decoder = FrameDecoder::new(PEER_FRAME_BODY_BYTES_MAX);
        let mut bodies = Vec::new();
        for byte in &wire {
            decoder.extend(std::slice::from_ref(byte));
            while let Some(body) = decoder.next_frame().unwrap() {
                bodies.push(body);
            }
        }
        assert_eq!(bodies.len(), 3);
        assert_eq!(&bodies[0][..], b"first");
        assert!(bodies[1].is_empty());
        assert_eq!(&bodies[2][..], &[7u8; 1000][..]);
        assert_eq!(decoder.buffered_bytes(), 0);
    }

    #[test]
    fn checksum_mismatch_is_rejected() {
        let mut wire = frame(b"payload");
        let last = wire.len() - 1;
        wire[last] ^= 0x01;
        let mut decoder = FrameDecoder::new(PEER_FRAME_BODY_BYTES_MAX);
        decoder.extend(&wire);
        assert!(matches!(
            decoder.next_frame(),
            Err(PeerError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn oversize_header_is_rejected_before_the_body_arrives() {
        let mut header = [0u8; 8];
        header[0..4].copy_from_slice(&(PEER_FRAME_BODY_BYTES_MAX + 1).to_be_bytes());
        let mut decoder = FrameDecoder::new(PEER_FRAME_BODY_BYTES_MAX);
        decoder.extend(&header);
        assert!(matches!(
            decoder.next_frame(),
            Err(PeerError::FrameTooLarge { .. })
        ));
        // A smaller limit (the handshake's) applies in the same way.
        let mut small = FrameDecoder::new(16);
        small.extend(&frame(&[0u8; 17]));
        assert!(matches!(
            small.next_frame(),
            Err(PeerError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn encoding_refuses_bodies_over_the_maximum() {
        assert!(checked_body_bytes(PEER_FRAME_BODY_BYTES_MAX as usize).is_ok());
        assert!(matches!(
            checked_body_bytes(PEER_FRAME_BODY_BYTES_MAX as usize + 1),
            Err(PeerError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn read_frame_reports_truncation_and_clean_end() {
        futures_lite::future::block_on(async {
            let wire = frame(b"abc");
            let mut reader = futures_lite::io::Cursor::new(wire.clone());
            let mut decoder = FrameDecoder::new(PEER_FRAME_BODY_BYTES_MAX);
            let body = decoder.read_frame(&mut reader).await.unwrap();
            assert_eq!(body.as_deref(), Some(&b"abc"[..]));
            assert!(decoder.read_frame(&mut reader).await.unwrap().is_none());

            let mut truncated = futures_lite::io::Cursor::new(wire[..wire.len() - 1].to_vec());
            let mut decoder = FrameDecoder::new(PEER_FRAME_BODY_BYTES_MAX);
            assert!(matches!(
                decoder.read_frame(&mut truncated).await,
                Err(PeerError::TruncatedFrame)
            ));
        });
    }

    proptest! {
        #[test]
        fn round_trip_of_any_bodies(bodies in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let mut wire = Vec::new();
            for body in &bodies {
                encode_frame_into(body, &mut wire).unwrap();
            }
            let mut decoder = FrameDecoder::new(PEER_FRAME_BODY_BYTES_MAX);
            decoder.extend(&wire);
            for body in &bodies {
                let decoded = decoder.next_frame().unwrap().unwrap();
                prop_assert_eq!(&decoded[..], &body[..]);
            }
            prop_assert!(decoder.next_frame().unwrap().is_none());
        }

        #[test]
        fn decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut decoder = FrameDecoder::new(1024);
            decoder.extend(&bytes);
            for _ in 0..bytes.len() + 1 {
                match decoder.next_frame() {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
