//! Request bodies: `Content-Length` and chunked transfer coding, bounded by the body limit.

use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};

use super::input::{Input, InputError, READ_CHUNK_BYTES};
use super::parse::BodyFraming;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;
/// Largest trailer section after the last chunk.
pub const TRAILER_BYTES_MAX: usize = 16 * 1024;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is over the limit; it was not (completely) read.
    #[error("request body over the limit")]
    TooLarge,
    /// The chunked coding is malformed.
    #[error("malformed chunked body")]
    Malformed,
    /// Reading failed (timeout, reset, early close).
    #[error(transparent)]
    Input(#[from] InputError),
}

/// Read the body described by `framing`, at most `bytes_max` bytes, before `deadline`.
pub async fn read_body<T: AsyncRead + AsyncWrite + Unpin>(
    input: &mut Input<T>,
    framing: BodyFraming,
    bytes_max: u64,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    match framing {
        BodyFraming::Empty => Ok(Vec::new()),
        BodyFraming::Length(length) if length > bytes_max => Err(BodyError::TooLarge),
        BodyFraming::Length(length) => read_exact_length(input, length, deadline).await,
        BodyFraming::Chunked => read_chunked(input, bytes_max, deadline).await,
    }
}

async fn read_exact_length<T: AsyncRead + AsyncWrite + Unpin>(
    input: &mut Input<T>,
    length: u64,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    let length = usize::try_from(length).map_err(|_| BodyError::TooLarge)?;
    let already = input.buffered().len().min(length);
    // Grow with the bytes that actually arrive instead of trusting `Content-Length` up front, so
    // that many connections announcing large bodies cannot reserve memory they never send.
    let mut body = Vec::with_capacity(already.max(READ_CHUNK_BYTES).min(length));
    body.extend_from_slice(&input.buffered()[..already]);
    input.consume(already);
    // The buffer is now empty (or the body is complete), so the rest is read straight into the
    // body instead of going through the buffer.
    while body.len() < length {
        let filled = body.len();
        let wanted = (length - filled).min(READ_CHUNK_BYTES);
        body.resize(filled + wanted, 0);
        let read = input.read_direct(&mut body[filled..], deadline).await;
        body.truncate(filled + *read.as_ref().unwrap_or(&0));
        read?;
    }
    Ok(body)
}

/// Where the chunked decoder is.
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data with this many bytes left.
    Data(usize),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty line.
    Trailers,
}

async fn read_chunked<T: AsyncRead + AsyncWrite + Unpin>(
    input: &mut Input<T>,
    bytes_max: u64,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    let mut state = ChunkState::Size;
    let mut trailer_bytes = 0_usize;
    loop {
        let progressed = match state {
            ChunkState::Size => match take_line(input, CHUNK_LINE_BYTES_MAX)? {
                Some(line) => {
                    let size = parse_chunk_size(&line).ok_or(BodyError::Malformed)?;
                    if body.len() as u64 + size > bytes_max {
                        return Err(BodyError::TooLarge);
                    }
                    let size = usize::try_from(size).map_err(|_| BodyError::TooLarge)?;
                    state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                    true
                }
                None => false,
            },
            ChunkState::Data(remaining) => {
                let available = input.buffered().len().min(remaining);
                if available > 0 {
                    body.extend_from_slice(&input.buffered()[..available]);
                    input.consume(available);
                    state = if available == remaining {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(remaining - available)
                    };
                }
                available > 0
            }
            ChunkState::DataEnd => match input.buffered() {
                [b'\r', b'\n', ..] => {
                    input.consume(2);
                    state = ChunkState::Size;
                    true
                }
                [] | [b'\r'] => false,
                _ => return Err(BodyError::Malformed),
            },
            ChunkState::Trailers => match take_line(input, TRAILER_BYTES_MAX)? {
                Some(line) if line.is_empty() => return Ok(body),
                Some(line) => {
                    trailer_bytes += line.len() + 2;
                    if trailer_bytes > TRAILER_BYTES_MAX {
                        return Err(BodyError::Malformed);
                    }
                    true
                }
                None => false,
            },
        };
        if !progressed {
            input.fill(deadline).await?;
        }
    }
}

/// Take one CRLF-terminated line (without the CRLF) from the buffer; `None` if incomplete.
fn take_line<T: AsyncRead + AsyncWrite + Unpin>(
    input: &mut Input<T>,
    bytes_max: usize,
) -> Result<Option<Vec<u8>>, BodyError> {
    let buffered = input.buffered();
    match buffered.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) if end <= bytes_max => {
            let line = buffered[..end].to_vec();
            input.consume(end + 2);
            Ok(Some(line))
        }
        Some(_) => Err(BodyError::Malformed),
        None if buffered.len() > bytes_max => Err(BodyError::Malformed),
        None => Ok(None),
    }
}

/// Hex size before any `;extension`; whitespace around it is tolerated.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|byte| *byte == b';').next()?.trim_ascii();
    if size.is_empty() || size.len() > 15 {
        return None;
    }
    size.iter().try_fold(0_u64, |total, digit| {
        let value = (*digit as char).to_digit(16)?;
        Some(total * 16 + u64::from(value))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"A;name=value"), Some(10));
        assert_eq!(parse_chunk_size(b"0"), Some(0));
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"xyz"), None);
        assert_eq!(parse_chunk_size(b"-1"), None);
        assert_eq!(parse_chunk_size(b"ffffffffffffffffffff"), None);
    }
}
