//! A small blocking HTTP/1.1 client for the S3 adapter: one endpoint, keep-alive connections, TLS
//! through rustls, responses parsed with httparse and bounded in size, one deadline per request.
//!
//! It supports exactly what S3 needs: a request with a complete body (always sent with
//! `Content-Length`) and a response delimited by `Content-Length`, chunked transfer coding or the end
//! of the connection.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ArchiveError;

/// Largest response head (status line and headers) accepted.
const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;

/// Most response headers accepted.
const RESPONSE_HEADERS_COUNT_MAX: usize = 64;

/// Largest event JSON a chunk line may hold: the HTTP API's 8,000,000-byte request body limit plus
/// room for the fields the server adds (seq, producer fields, principal metadata, timestamp).
const EVENT_JSON_BYTES_MAX: usize = 8_000_000 + 64 * 1024;

/// Largest response body accepted: a full chunk of the largest events. Anything larger is not a chunk
/// this archive wrote, and reading it would only exhaust memory.
pub(crate) const RESPONSE_BODY_BYTES_MAX: usize = 256 * (EVENT_JSON_BYTES_MAX + 1);

/// Longest line accepted inside a chunked body (chunk sizes and trailers).
const CHUNKED_LINE_BYTES_MAX: usize = 4 * 1024;

/// Bytes read from the socket per read call.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Most idle keep-alive connections kept for reuse.
const IDLE_CONNECTIONS_COUNT_MAX: usize = 16;

/// Idle connections older than this are closed instead of reused: servers close idle keep-alive
/// connections after a while (S3 after about 20 s), and a request sent into a connection the server is
/// closing fails.
const IDLE_CONNECTION_AGE_MAX: Duration = Duration::from_secs(15);

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub(crate) fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// One request. The caller supplies every header except `Content-Length`, including `Host`.
pub(crate) struct Request<'a> {
    pub method: &'static str,
    /// Path and query, already percent-encoded.
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// Names the request in errors (`S3 GET s3://bucket/key`).
    pub operation: &'a str,
}

/// A complete response.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A connection to the endpoint, plain or TLS.
enum Connection {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Connection {
    fn tcp(&self) -> &TcpStream {
        match self {
            Connection::Plain(stream) => stream,
            Connection::Tls(stream) => stream.get_ref(),
        }
    }

    /// Whether an idle connection can carry another request: the server has neither closed it nor sent
    /// anything unsolicited (both show up as readable bytes or end of stream).
    fn is_reusable(&self) -> bool {
        let tcp = self.tcp();
        if tcp.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0_u8; 1];
        let idle =
            matches!(tcp.peek(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock);
        tcp.set_nonblocking(false).is_ok() && idle
    }

    /// Asks the kernel to acknowledge received data at once. Servers that leave Nagle's algorithm on
    /// (s3s-fs does) hold back the last small segment of a response until the previous ones are
    /// acknowledged, and a delayed acknowledgement then stalls every such response by about 40 ms.
    /// Linux clears the flag again after a while, so it is set before every read.
    fn request_quick_acknowledgements(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let enabled: libc::c_int = 1;
            // SAFETY: a valid socket descriptor, and a pointer to a c_int of the size passed. A failure
            // only costs latency, so the result is ignored.
            unsafe {
                libc::setsockopt(
                    self.tcp().as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    (&enabled as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }

    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        let tcp = self.tcp();
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))
    }
}

impl Read for Connection {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Plain(stream) => stream.read(buffer),
            Connection::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Plain(stream) => stream.write(buffer),
            Connection::Tls(stream) => stream.write(buffer),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Connection::Plain(stream) => stream.flush(),
            Connection::Tls(stream) => stream.flush(),
        }
    }
}

struct IdleConnection {
    connection: Connection,
    idle_since: Instant,
}

/// A blocking client for one `scheme://host:port`, shared between threads.
pub(crate) struct HttpClient {
    scheme: Scheme,
    /// The DNS name or IP address to connect to (no brackets around IPv6), also the TLS server name.
    host: String,
    port: u16,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    request_timeout: Duration,
    idle_connections: Mutex<Vec<IdleConnection>>,
}

impl HttpClient {
    pub(crate) fn new(
        scheme: Scheme,
        host: String,
        port: u16,
        request_timeout: Duration,
    ) -> Result<HttpClient, ArchiveError> {
        let tls_config = match scheme {
            Scheme::Http => None,
            Scheme::Https => Some(tls_client_config()?),
        };
        Ok(HttpClient {
            scheme,
            host,
            port,
            tls_config,
            request_timeout,
            idle_connections: Mutex::new(Vec::new()),
        })
    }

    /// Sends one request and reads its whole response within the request timeout.
    pub(crate) fn send(&self, request: &Request<'_>) -> Result<Response, ArchiveError> {
        let deadline = Instant::now() + self.request_timeout;
        let mut connection = match self.take_idle_connection() {
            Some(connection) => connection,
            None => self.connect(deadline, request.operation)?,
        };
        let (response, reusable) = self.exchange(&mut connection, request, deadline)?;
        if reusable {
            self.return_idle_connection(connection);
        }
        Ok(response)
    }

    fn take_idle_connection(&self) -> Option<Connection> {
        let mut idle = self
            .idle_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while let Some(candidate) = idle.pop() {
            if candidate.idle_since.elapsed() < IDLE_CONNECTION_AGE_MAX
                && candidate.connection.is_reusable()
            {
                return Some(candidate.connection);
            }
        }
        None
    }

    fn return_idle_connection(&self, connection: Connection) {
        let mut idle = self
            .idle_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_CONNECTIONS_COUNT_MAX {
            idle.push(IdleConnection {
                connection,
                idle_since: Instant::now(),
            });
        }
    }

    fn endpoint(&self) -> String {
        format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }

    fn connect(&self, deadline: Instant, operation: &str) -> Result<Connection, ArchiveError> {
        let connect_error = |source| ArchiveError::Connect {
            endpoint: self.endpoint(),
            source,
        };
        let addresses = resolve(&self.host, self.port).map_err(connect_error)?;
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        let mut connected = None;
        for address in addresses {
            let timeout = self.remaining(deadline, operation)?;
            match TcpStream::connect_timeout(&address, timeout) {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(error) => last_error = error,
            }
        }
        let stream = connected.ok_or_else(|| connect_error(last_error))?;
        // Requests are written as a head and a body; without this, Nagle's algorithm and delayed
        // acknowledgements add tens of milliseconds to every PUT.
        stream.set_nodelay(true).map_err(connect_error)?;
        match &self.tls_config {
            None => Ok(Connection::Plain(stream)),
            Some(config) => {
                let server_name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|error| {
                        connect_error(io::Error::new(io::ErrorKind::InvalidInput, error))
                    })?;
                let session = rustls::ClientConnection::new(Arc::clone(config), server_name)
                    .map_err(|error| connect_error(io::Error::other(error)))?;
                Ok(Connection::Tls(Box::new(rustls::StreamOwned::new(
                    session, stream,
                ))))
            }
        }
    }

    fn remaining(&self, deadline: Instant, operation: &str) -> Result<Duration, ArchiveError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.timeout_error(operation));
        }
        Ok(remaining)
    }

    fn timeout_error(&self, operation: &str) -> ArchiveError {
        ArchiveError::Timeout {
            operation: operation.to_owned(),
            timeout_ms: u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn io_error(&self, operation: &str, source: io::Error) -> ArchiveError {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timeout_error(operation),
            _ => ArchiveError::Transport {
                operation: operation.to_owned(),
                source,
            },
        }
    }

    /// Writes the request and reads the response; the flag says whether the connection may be reused.
    fn exchange(
        &self,
        connection: &mut Connection,
        request: &Request<'_>,
        deadline: Instant,
    ) -> Result<(Response, bool), ArchiveError> {
        let operation = request.operation;
        let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
        for (name, value) in request.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if !request.body.is_empty() || request.method == "PUT" || request.method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
        }
        head.push_str("\r\n");

        for part in [head.as_bytes(), request.body] {
            let mut written = 0;
            while written < part.len() {
                connection
                    .set_timeouts(self.remaining(deadline, operation)?)
                    .map_err(|error| self.io_error(operation, error))?;
                match connection.write(&part[written..]) {
                    Ok(0) => {
                        return Err(self.io_error(
                            operation,
                            io::Error::new(
                                io::ErrorKind::WriteZero,
                                "the connection accepted no bytes",
                            ),
                        ))
                    }
                    Ok(count) => written += count,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(self.io_error(operation, error)),
                }
            }
        }
        connection
            .flush()
            .map_err(|error| self.io_error(operation, error))?;

        let mut reader = ResponseReader {
            client: self,
            connection,
            buffer: Vec::with_capacity(READ_BUFFER_BYTES),
            start: 0,
            deadline,
            operation,
        };
        reader.read_response(request.method == "HEAD")
    }
}

/// Resolves the endpoint host. Names under `localhost` are loopback by definition (RFC 6761 §6.3), which
/// virtual-host addressing against a local endpoint (`bucket.localhost`) relies on, and which not every
/// system resolver implements.
fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let lowercase = host.to_ascii_lowercase();
    if lowercase == "localhost" || lowercase.ends_with(".localhost") {
        return Ok(vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ]);
    }
    Ok((host, port).to_socket_addrs()?.collect())
}

/// TLS with the ring provider and the Mozilla root certificates.
fn tls_client_config() -> Result<Arc<rustls::ClientConfig>, ArchiveError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| ArchiveError::Config {
        message: format!("cannot set up TLS for the S3 endpoint: {error}"),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads one response from a connection, with every read bounded by the request deadline.
struct ResponseReader<'a> {
    client: &'a HttpClient,
    connection: &'a mut Connection,
    /// Received bytes; `buffer[start..]` are not consumed yet.
    buffer: Vec<u8>,
    start: usize,
    deadline: Instant,
    operation: &'a str,
}

/// A parsed status line and headers.
struct ResponseHead {
    status: u16,
    headers: Vec<(String, String)>,
    /// Whether the server allows another request on this connection.
    reusable: bool,
}

/// How the response body is delimited.
enum BodyLength {
    None,
    Exact(usize),
    Chunked,
    UntilClose,
}

impl ResponseReader<'_> {
    fn invalid(&self, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::InvalidResponse {
            operation: self.operation.to_owned(),
            reason: reason.into(),
        }
    }

    /// Reads more bytes into the buffer; returns 0 at the end of the stream.
    fn fill(&mut self) -> Result<usize, ArchiveError> {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        let old_length = self.buffer.len();
        self.buffer.resize(old_length + READ_BUFFER_BYTES, 0);
        loop {
            let timeout = self.client.remaining(self.deadline, self.operation)?;
            self.connection
                .set_timeouts(timeout)
                .map_err(|error| self.client.io_error(self.operation, error))?;
            self.connection.request_quick_acknowledgements();
            match self.connection.read(&mut self.buffer[old_length..]) {
                Ok(count) => {
                    self.buffer.truncate(old_length + count);
                    return Ok(count);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.buffer.truncate(old_length);
                    return Err(self.client.io_error(self.operation, error));
                }
            }
        }
    }

    fn read_response(&mut self, is_head_request: bool) -> Result<(Response, bool), ArchiveError> {
        let ResponseHead {
            status,
            headers,
            mut reusable,
        } = loop {
            let head = self.read_head()?;
            // Interim responses (100 Continue and the like) precede the real one.
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            break head;
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        let body_length = if is_head_request || status == 204 || status == 304 {
            BodyLength::None
        } else if header("transfer-encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"))
        {
            BodyLength::Chunked
        } else if let Some(value) = header("content-length") {
            let length = value
                .trim()
                .parse::<usize>()
                .map_err(|_| self.invalid(format!("invalid Content-Length {value:?}")))?;
            BodyLength::Exact(length)
        } else {
            BodyLength::UntilClose
        };
        let body = match body_length {
            BodyLength::None => Vec::new(),
            BodyLength::Exact(length) => {
                self.check_body_bytes(length)?;
                let mut body = Vec::with_capacity(length);
                self.read_exact_into(&mut body, length)?;
                body
            }
            BodyLength::Chunked => self.read_chunked_body()?,
            BodyLength::UntilClose => {
                reusable = false;
                self.read_until_close()?
            }
        };
        // Bytes after the response mean the connection is out of step; never reuse it.
        if self.start != self.buffer.len() {
            reusable = false;
        }
        Ok((
            Response {
                status,
                headers,
                body,
            },
            reusable,
        ))
    }

    /// Reads a status line and headers.
    fn read_head(&mut self) -> Result<ResponseHead, ArchiveError> {
        loop {
            let mut header_slots = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_COUNT_MAX];
            let mut parsed = httparse::Response::new(&mut header_slots);
            match parsed.parse(&self.buffer[self.start..]) {
                Ok(httparse::Status::Complete(head_length)) => {
                    let status = parsed.code.unwrap_or(0);
                    let headers: Vec<(String, String)> = parsed
                        .headers
                        .iter()
                        .map(|header| {
                            (
                                header.name.to_owned(),
                                String::from_utf8_lossy(header.value).trim().to_owned(),
                            )
                        })
                        .collect();
                    let closes = headers.iter().any(|(name, value)| {
                        name.eq_ignore_ascii_case("connection")
                            && value.to_ascii_lowercase().contains("close")
                    });
                    let reusable = parsed.version == Some(1) && !closes;
                    self.start += head_length;
                    return Ok(ResponseHead {
                        status,
                        headers,
                        reusable,
                    });
                }
                Ok(httparse::Status::Partial) => {
                    if self.buffer.len() - self.start > RESPONSE_HEAD_BYTES_MAX {
                        return Err(self.invalid(format!(
                            "response head larger than {RESPONSE_HEAD_BYTES_MAX} bytes"
                        )));
                    }
                }
                Err(error) => return Err(self.invalid(format!("malformed response head: {error}"))),
            }
            if self.fill()? == 0 {
                return Err(self.invalid("the connection closed before a complete response head"));
            }
        }
    }

    fn check_body_bytes(&self, length: usize) -> Result<(), ArchiveError> {
        if length > RESPONSE_BODY_BYTES_MAX {
            return Err(self.invalid(format!(
                "response body of {length} bytes exceeds the maximum of {RESPONSE_BODY_BYTES_MAX} bytes"
            )));
        }
        Ok(())
    }

    /// Moves exactly `length` bytes from the connection into `out`.
    fn read_exact_into(&mut self, out: &mut Vec<u8>, length: usize) -> Result<(), ArchiveError> {
        let mut missing = length;
        while missing > 0 {
            if self.start == self.buffer.len() && self.fill()? == 0 {
                return Err(self.invalid("the connection closed inside the response body"));
            }
            let available = (self.buffer.len() - self.start).min(missing);
            out.extend_from_slice(&self.buffer[self.start..self.start + available]);
            self.start += available;
            missing -= available;
        }
        Ok(())
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    fn read_line(&mut self) -> Result<String, ArchiveError> {
        loop {
            let pending = &self.buffer[self.start..];
            if let Some(position) = pending.windows(2).position(|pair| pair == b"\r\n") {
                let line = String::from_utf8_lossy(&pending[..position]).into_owned();
                self.start += position + 2;
                return Ok(line);
            }
            if pending.len() > CHUNKED_LINE_BYTES_MAX {
                return Err(self.invalid(format!(
                    "chunked body line longer than {CHUNKED_LINE_BYTES_MAX} bytes"
                )));
            }
            if self.fill()? == 0 {
                return Err(self.invalid("the connection closed inside a chunked body"));
            }
        }
    }

    fn read_chunked_body(&mut self) -> Result<Vec<u8>, ArchiveError> {
        let mut body = Vec::new();
        loop {
            let size_line = self.read_line()?;
            let size_text = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| self.invalid(format!("invalid chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers end with an empty line; their content is not needed.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            self.check_body_bytes(body.len().saturating_add(size))?;
            self.read_exact_into(&mut body, size)?;
            if !self.read_line()?.is_empty() {
                return Err(self.invalid("chunk data not followed by CRLF"));
            }
        }
    }

    fn read_until_close(&mut self) -> Result<Vec<u8>, ArchiveError> {
        loop {
            self.check_body_bytes(self.buffer.len() - self.start)?;
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                // A TLS peer that closes without close_notify ends the body all the same.
                Err(ArchiveError::Transport { source, .. })
                    if source.kind() == io::ErrorKind::UnexpectedEof =>
                {
                    break
                }
                Err(error) => return Err(error),
            }
        }
        let body = self.buffer[self.start..].to_vec();
        self.start = self.buffer.len();
        Ok(body)
    }
}
