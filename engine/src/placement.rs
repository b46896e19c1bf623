//! The exact session → group hash and group → replica placement of cluster.md §2–§3.
//!
//! Every node computes placement on its own from the configuration, so these functions must give
//! bit-identical results everywhere: all arithmetic is on `u32` with wrap-around, and the test
//! vectors of the contract are pinned below.

/// The 32-bit golden-ratio constant that seeds the hash.
pub const GOLDEN: u32 = 0x9E37_79B9;

/// Bits of the rendezvous score kept by [`score`].
const SCORE_MASK: u32 = 0x07FF_FFFF;

/// Bytes consumed per full round of [`session_hash`].
const BLOCK_BYTES: usize = 12;

/// The mixing step of cluster.md §2: returns the updated triple.
fn scramble(mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 13);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 8);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 13);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 12);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 16);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 5);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 3);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 10);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 15);
    (a, b, c)
}

/// Little-endian `u32` of up to four bytes, missing high bytes read as zero.
fn little_endian_u32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .enumerate()
        .fold(0, |value, (position, &byte)| {
            value | (u32::from(byte) << (8 * position))
        })
}

/// Hash of a session id's UTF-8 bytes (cluster.md §2).
pub fn session_hash(bytes: &[u8]) -> u32 {
    let initial_c = GOLDEN.wrapping_mul(13);
    if bytes.is_empty() {
        return initial_c;
    }
    let (mut a, mut b, mut c) = (GOLDEN, GOLDEN, initial_c);
    let mut blocks = bytes.chunks_exact(BLOCK_BYTES);
    for block in &mut blocks {
        a = a.wrapping_add(little_endian_u32(&block[0..4]));
        b = b.wrapping_add(little_endian_u32(&block[4..8]));
        c = c.wrapping_add(little_endian_u32(&block[8..12]));
        (a, b, c) = scramble(a, b, c);
    }
    // The length is added modulo 2^32, as every other step.
    c = c.wrapping_add(bytes.len() as u32);
    let mut rest = [0u8; BLOCK_BYTES];
    let remainder = blocks.remainder();
    rest[..remainder.len()].copy_from_slice(remainder);
    a = a.wrapping_add(little_endian_u32(&rest[0..4]));
    b = b.wrapping_add(little_endian_u32(&rest[4..8]));
    // The last word skips its lowest byte: r[8] << 8 | r[9] << 16 | r[10] << 24.
    c = c.wrapping_add(little_endian_u32(&rest[8..11]) << 8);
    let (_, _, c) = scramble(a, b, c);
    c
}

/// The group of a session: `session_hash(id) mod num_groups`. `num_groups` is validated to be at
/// least 1 by the configuration; 0 is treated as 1 so that the function stays total.
pub fn group_of(session_id: &str, num_groups: u32) -> u32 {
    session_hash(session_id.as_bytes()) % num_groups.max(1)
}

/// Hash of a node id's ASCII bytes (cluster.md §3).
pub fn name_hash(node_id: &str) -> u32 {
    node_id.bytes().fold(0_u32, |hash, byte| {
        let mut hash = (hash << 4).wrapping_add(u32::from(byte));
        let top = hash & 0xF000_0000;
        if top != 0 {
            hash ^= top >> 24;
            hash ^= top;
        }
        hash
    })
}

fn absorb(value: u32, key: u32, hash: u32) -> u32 {
    let (_, _, c) = scramble(key.wrapping_add(value), key, hash);
    c
}

/// Rendezvous score of a node for a group (27 bits).
pub fn score(group_id: u32, node_id: &str) -> u32 {
    let mut score = absorb(2, GOLDEN.wrapping_mul(9), 0);
    score = absorb(group_id, GOLDEN, score);
    score = absorb(name_hash(node_id), GOLDEN.wrapping_mul(3), score);
    score & SCORE_MASK
}

/// All write nodes in the group's placement order: ascending by `(score, node id bytes)`. This is
/// the routing order of cluster.md §5; its first `RF` entries are the group's voters.
pub fn placement_order<S: AsRef<str>>(group_id: u32, write_nodes: &[S]) -> Vec<String> {
    let mut scored: Vec<(u32, &str)> = write_nodes
        .iter()
        .map(|node| (score(group_id, node.as_ref()), node.as_ref()))
        .collect();
    scored.sort_by(|left, right| {
        left.0
            .cmp(&right.0)
            .then_with(|| left.1.as_bytes().cmp(right.1.as_bytes()))
    });
    scored
        .into_iter()
        .map(|(_, node)| node.to_owned())
        .collect()
}

/// The group's replicas: the first `replication_factor` nodes of [`placement_order`].
pub fn replicas<S: AsRef<str>>(
    group_id: u32,
    write_nodes: &[S],
    replication_factor: usize,
) -> Vec<String> {
    let mut order = placement_order(group_id, write_nodes);
    order.truncate(replication_factor);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cluster.md §2: hash, mod 256 and mod 100 of every listed id.
    #[test]
    fn session_hash_vectors() {
        let vectors: [(&str, u32, u32, u32); 9] = [
            ("ses_demo", 0x8D62_2DB4, 180, 84),
            ("ses-1", 0xBB8D_869D, 157, 29),
            ("session-a", 0x4256_075B, 91, 35),
            ("a", 0x5EB9_3A8F, 143, 55),
            ("hot-path-1-1", 0xFA37_F923, 35, 59),
            ("ses_AAAAAAAAAAAAAAAA", 0x62AC_99D9, 217, 45),
            ("üñí", 0x42B1_9EC2, 194, 70),
            (
                "a-session-id-longer-than-twelve-bytes-0123456789",
                0xF76E_E942,
                66,
                26,
            ),
            ("", 0x08D1_2E65, 101, 29),
        ];
        for (id, hash, mod_256, mod_100) in vectors {
            assert_eq!(session_hash(id.as_bytes()), hash, "hash of {id:?}");
            assert_eq!(group_of(id, 256), mod_256, "{id:?} mod 256");
            assert_eq!(group_of(id, 100), mod_100, "{id:?} mod 100");
        }
        assert_eq!(GOLDEN.wrapping_mul(13), 0x08D1_2E65);
    }

    /// cluster.md §3: constants and intermediate values.
    #[test]
    fn score_intermediate_vectors() {
        assert_eq!(GOLDEN.wrapping_mul(9), 0x8FF3_4781);
        assert_eq!(GOLDEN.wrapping_mul(3), 0xDAA6_6D2B);
        assert_eq!(name_hash("node1@node1"), 0x0522_0001);
        assert_eq!(name_hash("node2@node2"), 0x0622_0002);
        let seed = absorb(2, GOLDEN.wrapping_mul(9), 0);
        assert_eq!(seed, 0x56ED_F38E);
        assert_eq!(absorb(0, GOLDEN, seed), 0x507E_0476);
        assert_eq!(absorb(42, GOLDEN, seed), 0xC119_1DDC);
        let unmasked = absorb(
            name_hash("node1@node1"),
            GOLDEN.wrapping_mul(3),
            0x507E_0476,
        );
        assert_eq!(unmasked, 0x1BC9_5D4C);
        assert_eq!(score(0, "node1@node1"), 63_528_268);
    }

    fn five_nodes() -> Vec<String> {
        (1..=5).map(|k| format!("node{k}@node{k}")).collect()
    }

    /// cluster.md §3: every placement row with five write nodes.
    #[test]
    fn placement_rows() {
        let rows: [(u32, [(u32, u32); 5]); 6] = [
            (
                0,
                [
                    (29_156_796, 2),
                    (41_852_100, 4),
                    (63_528_268, 1),
                    (93_106_213, 3),
                    (130_537_670, 5),
                ],
            ),
            (
                1,
                [
                    (6_235_629, 2),
                    (38_459_000, 4),
                    (54_470_035, 5),
                    (65_059_484, 1),
                    (123_717_002, 3),
                ],
            ),
            (
                2,
                [
                    (6_608_698, 1),
                    (34_237_718, 3),
                    (88_520_082, 5),
                    (111_160_553, 2),
                    (128_073_154, 4),
                ],
            ),
            (
                3,
                [
                    (46_615_640, 1),
                    (108_556_256, 3),
                    (110_205_108, 5),
                    (120_335_126, 2),
                    (130_877_943, 4),
                ],
            ),
            (
                42,
                [
                    (2_354_251, 4),
                    (35_484_568, 3),
                    (77_449_889, 5),
                    (105_987_409, 1),
                    (106_928_363, 2),
                ],
            ),
            (
                255,
                [
                    (112_456_965, 5),
                    (117_982_312, 2),
                    (123_946_396, 3),
                    (127_081_561, 1),
                    (132_854_446, 4),
                ],
            ),
        ];
        let nodes = five_nodes();
        for (group, expected) in rows {
            let expected_order: Vec<String> = expected
                .iter()
                .map(|(_, k)| format!("node{k}@node{k}"))
                .collect();
            for ((expected_score, _), node) in expected.iter().zip(&expected_order) {
                assert_eq!(
                    score(group, node),
                    *expected_score,
                    "score of {node} for group {group}"
                );
            }
            assert_eq!(
                placement_order(group, &nodes),
                expected_order,
                "order of group {group}"
            );
            assert_eq!(
                replicas(group, &nodes, 3),
                expected_order[..3],
                "replicas of group {group}"
            );
        }
    }

    /// cluster.md §3: with three write nodes and RF 3 only the order differs between groups.
    #[test]
    fn three_node_orders() {
        let nodes = ["node1@node1", "node2@node2", "node3@node3"];
        assert_eq!(
            replicas(0, &nodes, 3),
            ["node2@node2", "node1@node1", "node3@node3"]
        );
        assert_eq!(
            replicas(180, &nodes, 3),
            ["node2@node2", "node3@node3", "node1@node1"]
        );
    }

    #[test]
    fn order_ignores_input_order_and_ties_break_by_bytes() {
        let mut reversed = five_nodes();
        reversed.reverse();
        for group in 0..64 {
            assert_eq!(
                placement_order(group, &reversed),
                placement_order(group, &five_nodes())
            );
        }
        // The same node listed twice ties on score and sorts next to itself.
        assert_eq!(replicas(0, &["b@b", "b@b"], 1), ["b@b"]);
        assert_eq!(replicas(0, &["node1@node1"], 3), ["node1@node1"]);
    }
}
