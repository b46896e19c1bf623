//! A small blocking HTTP/1.1 client for the ops API: one request per connection
//! (`Connection: close`), `Content-Length`, chunked or read-to-end bodies.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Time allowed to establish the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response (head and body) accepted; the ops API's answers are far smaller.
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most response headers parsed.
const HEADERS_COUNT_MAX: usize = 64;
/// Bytes read per call.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Where the ops API is: the parsed `--node` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsTarget {
    /// The URL as the user wrote it, for messages.
    pub url: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path prefix before `/ops/…` (empty, or starting with `/` and without a trailing one).
    pub base_path: String,
}

/// `--node` that is not an `http://host[:port][/path]` URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid --node \"{0}\" (expected http://host:port)")]
pub struct InvalidUrl(pub String);

impl OpsTarget {
    /// Parse `http://host[:port][/path]`; the scheme may be left out. `https` is refused because
    /// the ops listener speaks plain HTTP.
    pub fn parse(url: &str) -> Result<OpsTarget, InvalidUrl> {
        let invalid = || InvalidUrl(url.to_owned());
        let trimmed = url.trim();
        let rest = match trimmed.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(invalid()),
            None => trimmed,
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(invalid)?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(invalid)?),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => 80,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(invalid)?,
        };
        let host_is_valid = !host.is_empty()
            && host
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b".-_:".contains(&byte));
        if !host_is_valid || path.contains(['?', '#']) {
            return Err(invalid());
        }
        Ok(OpsTarget {
            url: trimmed.trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            port,
            base_path: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// A response of the ops API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// Sending a request or reading its response failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        source: io::Error,
    },
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The answer is not HTTP or is too large.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
}

/// One request: `method` on `path_and_query` (starting with `/`), with an optional JSON body and
/// bearer token, waiting at most `timeout` for the whole exchange after connecting.
pub fn request(
    target: &OpsTarget,
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
    token: Option<&str>,
    timeout: Duration,
) -> Result<ApiResponse, ClientError> {
    let mut stream = connect(target)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let host = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let mut head = format!(
        "{method} {}{path_and_query} HTTP/1.1\r\nhost: {host}\r\nuser-agent: starcite-ops/{}\r\naccept: application/json\r\nconnection: close\r\n",
        target.base_path,
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(token) = token {
        head.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if method != "GET" {
        head.push_str("content-type: application/json\r\n");
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    read_response(&mut stream, Instant::now() + timeout)
}

fn connect(target: &OpsTarget) -> Result<TcpStream, ClientError> {
    let addresses = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|source| ClientError::Resolve {
            host: target.host.clone(),
            source,
        })?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for address in addresses {
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = error,
        }
    }
    Err(ClientError::Io(last_error))
}

/// How the body of a response is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn read_response(stream: &mut TcpStream, deadline: Instant) -> Result<ApiResponse, ClientError> {
    let mut buffer = Vec::new();
    let mut closed = false;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response
            .parse(&buffer)
            .map_err(|error| ClientError::InvalidResponse(error.to_string()))?;
        if let httparse::Status::Complete(head_length) = parsed {
            let status = response.code.unwrap_or(0);
            let framing = framing(response.headers)?;
            if status == 100 {
                buffer.drain(..head_length);
                continue;
            }
            if let Some(body) = complete_body(&buffer[head_length..], &framing, closed)? {
                return Ok(ApiResponse { status, body });
            }
        }
        if closed {
            return Err(ClientError::InvalidResponse(
                "connection closed before the response was complete".into(),
            ));
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out waiting for the response",
            )));
        }
        closed = fill(stream, &mut buffer)?;
    }
}

/// Read more bytes; true at end of stream.
fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<bool, ClientError> {
    if buffer.len() >= RESPONSE_BYTES_MAX {
        return Err(ClientError::InvalidResponse(format!(
            "response larger than {RESPONSE_BYTES_MAX} bytes"
        )));
    }
    let start = buffer.len();
    buffer.resize(start + READ_CHUNK_BYTES, 0);
    let read = loop {
        match stream.read(&mut buffer[start..]) {
            Ok(read) => break read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                buffer.truncate(start);
                return Err(ClientError::Io(error));
            }
        }
    };
    buffer.truncate(start + read);
    Ok(read == 0)
}

fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, ClientError> {
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(header.value)
                .to_ascii_lowercase()
                .contains("chunked")
        {
            return Ok(Framing::Chunked);
        }
    }
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|value| value.trim().parse::<usize>().ok())
                .filter(|length| *length <= RESPONSE_BYTES_MAX)
                .ok_or_else(|| ClientError::InvalidResponse("invalid content-length".into()))?;
            return Ok(Framing::Length(length));
        }
    }
    Ok(Framing::UntilClose)
}

/// The body once `bytes` hold all of it; `None` while more is needed.
fn complete_body(
    bytes: &[u8],
    framing: &Framing,
    closed: bool,
) -> Result<Option<Vec<u8>>, ClientError> {
    match framing {
        Framing::Length(length) => Ok((bytes.len() >= *length).then(|| bytes[..*length].to_vec())),
        Framing::UntilClose => Ok(closed.then(|| bytes.to_vec())),
        Framing::Chunked => dechunk(bytes),
    }
}

/// Decode a complete chunked body, or `None` if it has not all arrived.
fn dechunk(mut bytes: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = bytes.windows(2).position(|pair| pair == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&bytes[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ClientError::InvalidResponse("invalid chunk size".into()))?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if bytes.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let target = OpsTarget::parse("http://127.0.0.1:4001").expect("valid");
        assert_eq!(
            (target.host.as_str(), target.port, target.base_path.as_str()),
            ("127.0.0.1", 4001, "")
        );
        let target = OpsTarget::parse("node1.internal:4101/").expect("valid");
        assert_eq!(
            (target.host.as_str(), target.port),
            ("node1.internal", 4101)
        );
        assert_eq!(target.url, "node1.internal:4101");
        let target = OpsTarget::parse("HTTP://[::1]:4001/prefix/").expect("valid");
        assert_eq!(
            (target.host.as_str(), target.port, target.base_path.as_str()),
            ("::1", 4001, "/prefix")
        );
        assert_eq!(OpsTarget::parse("http://host").expect("valid").port, 80);
        for invalid in [
            "https://h:1",
            "http://:1",
            "http://h:0",
            "http://h:99999",
            "http://h:x",
            "http://h h:1",
            "http://h:1/?q",
            "",
        ] {
            assert!(OpsTarget::parse(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").expect("valid"),
            Some(b"abcde".to_vec())
        );
        assert_eq!(dechunk(b"3\r\nab").expect("valid"), None);
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
