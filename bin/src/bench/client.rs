//! A minimal HTTP/1.1 keep-alive client: one request in flight, `Content-Length` or chunked
//! responses. Enough for the load generator; not a general client.

use std::io;
use std::net::SocketAddr;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

/// Largest response head accepted.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Largest response body accepted.
const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most response headers parsed.
const HEADERS_COUNT_MAX: usize = 64;
/// Initial read buffer.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// A parsed response.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server asked to close the connection after this response.
    pub close: bool,
}

/// One persistent connection.
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    filled: usize,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl Connection {
    pub async fn connect(address: SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        // Requests are written whole; waiting for more data would only add latency.
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buffer: vec![0; READ_BUFFER_BYTES],
            filled: 0,
        })
    }

    /// Writes `request` (a complete HTTP/1.1 request) and reads the whole response.
    pub async fn round_trip(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request).await?;
        self.stream.flush().await?;
        self.read_response().await
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.filled == self.buffer.len() {
            let grown = (self.buffer.len() * 2).min(HEAD_BYTES_MAX + BODY_BYTES_MAX);
            if grown == self.buffer.len() {
                return Err(invalid("response too large"));
            }
            self.buffer.resize(grown, 0);
        }
        let read = self.stream.read(&mut self.buffer[self.filled..]).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            ));
        }
        self.filled += read;
        Ok(())
    }

    async fn read_response(&mut self) -> io::Result<Response> {
        let (status, head_bytes, framing, close) = loop {
            if let Some(head) = parse_head(&self.buffer[..self.filled])? {
                break head;
            }
            if self.filled >= HEAD_BYTES_MAX {
                return Err(invalid("response head too large"));
            }
            self.fill().await?;
        };
        let (body, consumed) = loop {
            let available = &self.buffer[head_bytes..self.filled];
            let decoded = match framing {
                Framing::Length(length) if length > BODY_BYTES_MAX => {
                    return Err(invalid("response body too large"))
                }
                Framing::Length(length) => {
                    (available.len() >= length).then(|| (available[..length].to_vec(), length))
                }
                Framing::Chunked => decode_chunked(available)?,
            };
            if let Some(done) = decoded {
                break done;
            }
            self.fill().await?;
        };
        // Keep whatever follows this response (nothing, with one request in flight).
        let used = head_bytes + consumed;
        self.buffer.copy_within(used..self.filled, 0);
        self.filled -= used;
        Ok(Response {
            status,
            body,
            close,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

/// `(status, head length, framing, close)` once the head is complete.
fn parse_head(data: &[u8]) -> io::Result<Option<(u16, usize, Framing, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head_bytes = match response.parse(data) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(invalid(format!("malformed response: {error}"))),
    };
    let status = response.code.unwrap_or(0);
    let mut framing = Framing::Length(0);
    let mut close = response.version == Some(0);
    for header in response.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = value
                .trim()
                .parse()
                .map_err(|_| invalid("bad content-length"))?;
            framing = Framing::Length(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if header.name.eq_ignore_ascii_case("connection") {
            close = value.trim().eq_ignore_ascii_case("close");
        }
    }
    Ok(Some((status, head_bytes, framing, close)))
}

/// Decodes a complete chunked body: `(body, bytes consumed)`, or `None` when more is needed.
fn decode_chunked(data: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut position = 0;
    loop {
        let (size_line_bytes, chunk_bytes) = match httparse::parse_chunk_size(&data[position..]) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(invalid("malformed chunk size")),
        };
        let chunk_bytes = usize::try_from(chunk_bytes).map_err(|_| invalid("chunk too large"))?;
        if body.len() + chunk_bytes > BODY_BYTES_MAX {
            return Err(invalid("response body too large"));
        }
        let start = position + size_line_bytes;
        if chunk_bytes == 0 {
            // Trailers are not used by the server; expect the final CRLF.
            return Ok((data.len() >= start + 2).then(|| (body, start + 2)));
        }
        let end = start + chunk_bytes;
        if data.len() < end + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[start..end]);
        position = end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_framing() {
        let response = b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello";
        let (status, head, framing, close) =
            parse_head(response).expect("valid").expect("complete");
        assert_eq!((status, framing, close), (201, Framing::Length(5), false));
        assert_eq!(&response[head..], b"hello");
        assert!(parse_head(b"HTTP/1.1 201 Cre").expect("valid").is_none());
        let closing = b"HTTP/1.1 503 x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (_, _, framing, close) = parse_head(closing).expect("valid").expect("complete");
        assert_eq!((framing, close), (Framing::Chunked, true));
    }

    #[test]
    fn chunked_bodies() {
        let data = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nNEXT";
        let (body, used) = decode_chunked(data).expect("valid").expect("complete");
        assert_eq!(body, b"abcde");
        assert_eq!(&data[used..], b"NEXT");
        assert!(decode_chunked(b"3\r\nab").expect("valid").is_none());
        assert!(decode_chunked(b"3\r\nabc\r\n0\r\n")
            .expect("valid")
            .is_none());
    }
}
