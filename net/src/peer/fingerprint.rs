//! The topology fingerprint compared at every peer handshake (cluster.md §5.3, §8).
//!
//! SHA-256 over this canonical encoding (integers big-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 20 | domain tag, ASCII `starcite-topology-v1` |
//! | 4 | number `c` of distinct `CLUSTER_NODES` entries (`u32`) |
//! | c × (2 + len) | each entry rendered `name@host:port` (port in decimal, no leading zeros), sorted ascending by bytes; each as `u16` length + bytes |
//! | 4 | number `w` of distinct `STARCITE_WRITE_NODE_IDS` (`u32`) |
//! | w × (2 + len) | each write node id, sorted ascending by bytes; each as `u16` length + bytes |
//! | 4 | `STARCITE_WRITE_REPLICATION_FACTOR` (`u32`) |
//! | 4 | `STARCITE_NUM_GROUPS` (`u32`) |
//!
//! Lists are sorted because their order carries no meaning: placement orders write nodes by
//! score (cluster.md §3), so two nodes that list the same set in different orders agree on
//! every group and must be allowed to talk. Every other difference changes the fingerprint.

use std::fmt;

use sha2::{Digest, Sha256};

use super::config::PeerNode;

/// The domain tag that starts the hashed encoding; a new encoding gets a new tag.
pub const TOPOLOGY_FINGERPRINT_TAG: &[u8; 20] = b"starcite-topology-v1";

/// SHA-256 identifying a cluster configuration.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopologyFingerprint([u8; 32]);

impl TopologyFingerprint {
    /// Wrap 32 raw bytes (as received in a handshake).
    pub fn from_bytes(bytes: [u8; 32]) -> TopologyFingerprint {
        TopologyFingerprint(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Fingerprint of a topology: every `CLUSTER_NODES` entry, the write node ids, the
    /// replication factor and the number of groups, as validated by the configuration.
    pub fn compute(
        cluster_nodes: &[PeerNode],
        write_node_ids: &[String],
        replication_factor: u32,
        num_groups: u32,
    ) -> TopologyFingerprint {
        let mut entries: Vec<String> = cluster_nodes
            .iter()
            .map(|node| format!("{}:{}", node.node_id, node.port))
            .collect();
        let mut write_nodes: Vec<String> = write_node_ids.to_vec();
        let mut hasher = Sha256::new();
        hasher.update(TOPOLOGY_FINGERPRINT_TAG);
        hash_sorted_list(&mut hasher, &mut entries);
        hash_sorted_list(&mut hasher, &mut write_nodes);
        hasher.update(replication_factor.to_be_bytes());
        hasher.update(num_groups.to_be_bytes());
        TopologyFingerprint(hasher.finalize().into())
    }
}

/// Hash a list as a set: sorted, duplicates removed, count first, each item length-prefixed so
/// that no two different lists share an encoding. Items are node ids (at most 255 bytes after
/// config validation) plus a port; anything longer is cut at `u16::MAX` bytes, which would
/// only make two absurd configurations collide.
fn hash_sorted_list(hasher: &mut Sha256, items: &mut Vec<String>) {
    items.sort_unstable();
    items.dedup();
    hasher.update((items.len() as u32).to_be_bytes());
    for item in items.iter() {
        let bytes = &item.as_bytes()[..item.len().min(usize::from(u16::MAX))];
        hasher.update((bytes.len() as u16).to_be_bytes());
        hasher.update(bytes);
    }
}

impl fmt::Debug for TopologyFingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(formatter, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for TopologyFingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, formatter)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nodes(entries: &[(&str, u16)]) -> Vec<PeerNode> {
        entries
            .iter()
            .map(|(node_id, port)| PeerNode::new(*node_id, *port))
            .collect()
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    fn base() -> TopologyFingerprint {
        TopologyFingerprint::compute(
            &nodes(&[
                ("node1@node1", 4100),
                ("node2@node2", 4100),
                ("node3@node3", 4100),
            ]),
            &ids(&["node1@node1", "node2@node2", "node3@node3"]),
            3,
            256,
        )
    }

    /// Pins the encoding: a change here breaks handshakes with nodes of older builds.
    #[test]
    fn fingerprint_is_stable() {
        let mut encoding = TOPOLOGY_FINGERPRINT_TAG.to_vec();
        encoding.extend_from_slice(&3u32.to_be_bytes());
        for entry in ["node1@node1:4100", "node2@node2:4100", "node3@node3:4100"] {
            encoding.extend_from_slice(&(entry.len() as u16).to_be_bytes());
            encoding.extend_from_slice(entry.as_bytes());
        }
        encoding.extend_from_slice(&3u32.to_be_bytes());
        for entry in ["node1@node1", "node2@node2", "node3@node3"] {
            encoding.extend_from_slice(&(entry.len() as u16).to_be_bytes());
            encoding.extend_from_slice(entry.as_bytes());
        }
        encoding.extend_from_slice(&3u32.to_be_bytes());
        encoding.extend_from_slice(&256u32.to_be_bytes());
        let expected: [u8; 32] = Sha256::digest(&encoding).into();
        assert_eq!(base().as_bytes(), &expected);
        assert_eq!(base(), base());
    }

    #[test]
    fn listing_order_does_not_matter() {
        let reordered = TopologyFingerprint::compute(
            &nodes(&[
                ("node3@node3", 4100),
                ("node1@node1", 4100),
                ("node2@node2", 4100),
            ]),
            &ids(&["node2@node2", "node3@node3", "node1@node1"]),
            3,
            256,
        );
        assert_eq!(reordered, base());
    }

    #[test]
    fn every_topology_change_changes_the_fingerprint() {
        let all = ["node1@node1", "node2@node2", "node3@node3"];
        let cluster = [
            ("node1@node1", 4100),
            ("node2@node2", 4100),
            ("node3@node3", 4100),
        ];
        let variants = [
            // A peer port differs.
            TopologyFingerprint::compute(
                &nodes(&[
                    ("node1@node1", 4100),
                    ("node2@node2", 4101),
                    ("node3@node3", 4100),
                ]),
                &ids(&all),
                3,
                256,
            ),
            // A router node is added.
            TopologyFingerprint::compute(
                &nodes(&[
                    ("node1@node1", 4100),
                    ("node2@node2", 4100),
                    ("node3@node3", 4100),
                    ("api1@api1", 4100),
                ]),
                &ids(&all),
                3,
                256,
            ),
            // A node is renamed.
            TopologyFingerprint::compute(
                &nodes(&[
                    ("node1@node1", 4100),
                    ("node2@node2", 4100),
                    ("node4@node3", 4100),
                ]),
                &ids(&["node1@node1", "node2@node2", "node4@node3"]),
                3,
                256,
            ),
            // The write node set shrinks.
            TopologyFingerprint::compute(&nodes(&cluster), &ids(&all[..2]), 2, 256),
            // Replication factor differs.
            TopologyFingerprint::compute(&nodes(&cluster), &ids(&all), 2, 256),
            // Number of groups differs.
            TopologyFingerprint::compute(&nodes(&cluster), &ids(&all), 3, 255),
        ];
        for (index, variant) in variants.iter().enumerate() {
            assert_ne!(*variant, base(), "variant {index}");
            for other in &variants[index + 1..] {
                assert_ne!(variant, other);
            }
        }
    }

    #[test]
    fn list_boundaries_are_unambiguous() {
        // Moving a node from the write list into the cluster list must not collide.
        let first =
            TopologyFingerprint::compute(&nodes(&[("a@a", 1)]), &ids(&["a@a", "b@b"]), 1, 1);
        let second =
            TopologyFingerprint::compute(&nodes(&[("a@a", 1), ("b@b", 1)]), &ids(&["a@a"]), 1, 1);
        assert_ne!(first, second);
    }
}
