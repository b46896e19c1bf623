//! The handshake: the first frame each way on every peer connection (cluster.md §5.3).
//!
//! Body layout (all integers big-endian):
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `SCPR` (`0x53 0x43 0x50 0x52`) |
//! | 4 | 2 | protocol version (`u16`), currently [`PEER_PROTOCOL_VERSION`] |
//! | 6 | 2 | node id length `n` (`u16`, 1..=[`NODE_ID_BYTES_MAX`]) |
//! | 8 | n | sender node id, `name@host`, printable ASCII |
//! | 8 + n | 32 | topology fingerprint (SHA-256, see [`super::fingerprint`]) |
//!
//! Nothing follows the fingerprint. Magic and version stay at these offsets in every future
//! version, so a node can always tell "another version" from "not a Starcite peer".

use super::fingerprint::TopologyFingerprint;

/// Magic that starts every handshake body.
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"SCPR";
/// The protocol version this build speaks.
pub const PEER_PROTOCOL_VERSION: u16 = 1;
/// Longest node id accepted in a handshake.
pub const NODE_ID_BYTES_MAX: usize = 255;
/// Largest handshake body: anything longer is refused before it is buffered, so an
/// unauthenticated connection cannot make the node allocate a full frame.
pub const HANDSHAKE_BODY_BYTES_MAX: u32 = 1024;

const HANDSHAKE_FIXED_BYTES: usize = 4 + 2 + 2 + 32;
const _: () =
    assert!(HANDSHAKE_FIXED_BYTES + NODE_ID_BYTES_MAX <= HANDSHAKE_BODY_BYTES_MAX as usize);

/// Why a handshake body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("body of {0} bytes is too short")]
    Truncated(usize),
    #[error("magic {0:02x?} is not SCPR")]
    BadMagic([u8; 4]),
    #[error("node id length {0} is outside 1..=255")]
    NodeIdLength(usize),
    #[error("node id is not printable ASCII")]
    NodeIdNotAscii,
    #[error("{0} unexpected bytes after the fingerprint")]
    TrailingBytes(usize),
}

/// A decoded handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// A handshake of the version this build speaks.
    Current {
        node_id: String,
        fingerprint: TopologyFingerprint,
    },
    /// A well-formed prefix announcing another protocol version; the rest is not interpreted.
    OtherVersion(u16),
}

/// Encode the handshake body of `node_id` with `fingerprint`.
///
/// The node id must be 1..=[`NODE_ID_BYTES_MAX`] bytes of printable ASCII (config validation
/// guarantees it); otherwise the peer would refuse the handshake, so this checks it too.
pub fn encode_handshake(
    node_id: &str,
    fingerprint: &TopologyFingerprint,
) -> Result<Vec<u8>, HandshakeError> {
    validate_node_id(node_id.as_bytes())?;
    let node_id_bytes = node_id.len() as u16;
    let mut body = Vec::with_capacity(HANDSHAKE_FIXED_BYTES + node_id.len());
    body.extend_from_slice(&HANDSHAKE_MAGIC);
    body.extend_from_slice(&PEER_PROTOCOL_VERSION.to_be_bytes());
    body.extend_from_slice(&node_id_bytes.to_be_bytes());
    body.extend_from_slice(node_id.as_bytes());
    body.extend_from_slice(fingerprint.as_bytes());
    Ok(body)
}

/// Decode a handshake body. Never panics, whatever the bytes.
pub fn decode_handshake(body: &[u8]) -> Result<Handshake, HandshakeError> {
    let (magic, rest) = split(body, 4, body.len())?;
    if magic != HANDSHAKE_MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(magic);
        return Err(HandshakeError::BadMagic(found));
    }
    let (version, rest) = split(rest, 2, body.len())?;
    let version = u16::from_be_bytes([version[0], version[1]]);
    if version != PEER_PROTOCOL_VERSION {
        return Ok(Handshake::OtherVersion(version));
    }
    let (length, rest) = split(rest, 2, body.len())?;
    let node_id_bytes = usize::from(u16::from_be_bytes([length[0], length[1]]));
    if node_id_bytes == 0 || node_id_bytes > NODE_ID_BYTES_MAX {
        return Err(HandshakeError::NodeIdLength(node_id_bytes));
    }
    let (node_id, rest) = split(rest, node_id_bytes, body.len())?;
    validate_node_id(node_id)?;
    let (fingerprint, rest) = split(rest, 32, body.len())?;
    if !rest.is_empty() {
        return Err(HandshakeError::TrailingBytes(rest.len()));
    }
    let mut fingerprint_bytes = [0u8; 32];
    fingerprint_bytes.copy_from_slice(fingerprint);
    let node_id = String::from_utf8_lossy(node_id).into_owned();
    Ok(Handshake::Current {
        node_id,
        fingerprint: TopologyFingerprint::from_bytes(fingerprint_bytes),
    })
}

fn split(bytes: &[u8], count: usize, body_bytes: usize) -> Result<(&[u8], &[u8]), HandshakeError> {
    if bytes.len() < count {
        return Err(HandshakeError::Truncated(body_bytes));
    }
    Ok(bytes.split_at(count))
}

fn validate_node_id(node_id: &[u8]) -> Result<(), HandshakeError> {
    if node_id.is_empty() || node_id.len() > NODE_ID_BYTES_MAX {
        return Err(HandshakeError::NodeIdLength(node_id.len()));
    }
    if !node_id.iter().all(u8::is_ascii_graphic) {
        return Err(HandshakeError::NodeIdNotAscii);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fingerprint() -> TopologyFingerprint {
        TopologyFingerprint::from_bytes([0xab; 32])
    }

    #[test]
    fn layout_is_byte_exact() {
        let body = encode_handshake("n1@h", &fingerprint()).unwrap();
        let mut expected = b"SCPR".to_vec();
        expected.extend_from_slice(&[0x00, 0x01, 0x00, 0x04]);
        expected.extend_from_slice(b"n1@h");
        expected.extend_from_slice(&[0xab; 32]);
        assert_eq!(body, expected);
        assert_eq!(body.len(), 44);
    }

    #[test]
    fn round_trip() {
        let body = encode_handshake("node1@10.0.0.1", &fingerprint()).unwrap();
        assert_eq!(
            decode_handshake(&body).unwrap(),
            Handshake::Current {
                node_id: "node1@10.0.0.1".to_string(),
                fingerprint: fingerprint(),
            }
        );
    }

    #[test]
    fn other_versions_are_recognised_without_parsing_the_rest() {
        let mut body = b"SCPR".to_vec();
        body.extend_from_slice(&7u16.to_be_bytes());
        body.extend_from_slice(b"anything at all");
        assert_eq!(decode_handshake(&body).unwrap(), Handshake::OtherVersion(7));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let good = encode_handshake("a@b", &fingerprint()).unwrap();
        assert_eq!(
            decode_handshake(&good[..10]),
            Err(HandshakeError::Truncated(10))
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            decode_handshake(&trailing),
            Err(HandshakeError::TrailingBytes(1))
        );
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(matches!(
            decode_handshake(&magic),
            Err(HandshakeError::BadMagic(_))
        ));
        let mut zero_length = good.clone();
        zero_length[6] = 0;
        zero_length[7] = 0;
        assert_eq!(
            decode_handshake(&zero_length),
            Err(HandshakeError::NodeIdLength(0))
        );
        let mut control = good;
        control[8] = b'\n';
        assert_eq!(
            decode_handshake(&control),
            Err(HandshakeError::NodeIdNotAscii)
        );
        assert!(encode_handshake("", &fingerprint()).is_err());
        assert!(encode_handshake(&"x".repeat(256), &fingerprint()).is_err());
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_handshake(&bytes);
        }

        #[test]
        fn decoding_mutated_handshakes_never_panics(
            node_id in "[a-z0-9]{1,20}@[a-z0-9.]{1,30}",
            position in 0usize..100,
            value in any::<u8>(),
        ) {
            let mut body = encode_handshake(&node_id, &fingerprint()).unwrap();
            let position = position % body.len();
            body[position] = value;
            let _ = decode_handshake(&body);
        }

        #[test]
        fn any_valid_node_id_round_trips(node_id in "[!-~]{1,255}") {
            let body = encode_handshake(&node_id, &fingerprint()).unwrap();
            let decoded = decode_handshake(&body).unwrap();
            prop_assert_eq!(decoded, Handshake::Current { node_id, fingerprint: fingerprint() });
        }
    }
}
