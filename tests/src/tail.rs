//! A blocking WebSocket tail client (tungstenite) that checks contiguity as it reads.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// A connected tail.
pub struct TailClient {
    socket: WebSocket<TcpStream>,
    /// Last seq received (starts at the requested cursor).
    pub cursor: u64,
}

/// How a tail ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    /// Close code.
    pub code: u16,
    /// Close reason.
    pub reason: String,
}

impl TailClient {
    /// Open `/v1/sessions/<session>/tail?cursor=<cursor>`.
    pub fn connect(addr: SocketAddr, session: &str, cursor: u64) -> TailClient {
        TailClient::connect_query(addr, session, cursor, "")
    }

    /// Open a tail with extra query parameters (`&access_token=…`).
    pub fn connect_query(
        addr: SocketAddr,
        session: &str,
        cursor: u64,
        extra_query: &str,
    ) -> TailClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://{addr}/v1/sessions/{session}/tail?cursor={cursor}{extra_query}");
        let (socket, response) = tungstenite::client(url.as_str(), stream).unwrap();
        assert_eq!(response.status().as_u16(), 101);
        TailClient { socket, cursor }
    }

    /// Underlying socket (for read timeouts).
    pub fn stream(&self) -> &TcpStream {
        self.socket.get_ref()
    }

    /// Read the next event frame; asserts `seq == cursor + 1`. `None` on timeout.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<serde_json::Value>, Closed> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            self.stream().set_read_timeout(Some(remaining)).unwrap();
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    let event: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                    let seq = event["seq"].as_u64().unwrap();
                    assert_eq!(
                        seq,
                        self.cursor + 1,
                        "tail not contiguous: got {seq} after {}",
                        self.cursor
                    );
                    self.cursor = seq;
                    return Ok(Some(event));
                }
                Ok(Message::Close(frame)) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((u16::from(CloseCode::Status), String::new()));
                    return Err(Closed { code, reason });
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => {
                    return Err(Closed {
                        code: 0,
                        reason: format!("{e}"),
                    });
                }
            }
        }
    }

    /// Read events until `cursor == last_seq` or panic after `timeout`.
    pub fn read_until(&mut self, last_seq: u64, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        while self.cursor < last_seq {
            let remaining = deadline.saturating_duration_since(Instant::now());
            assert!(
                !remaining.is_zero(),
                "tail stuck at {} waiting for {last_seq}",
                self.cursor
            );
            match self.next_event(remaining) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {}
                Err(closed) => panic!("tail closed at {}: {closed:?}", self.cursor),
            }
        }
        events
    }

    /// Send a close frame.
    pub fn close(&mut self) {
        let _ = self.socket.close(None);
        let _ = self.socket.flush();
    }
}

/// Open a raw TCP connection to `addr` (for tails that never read).
pub fn raw_connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).unwrap()
}
