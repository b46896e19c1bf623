//! The archive read cache (archive.md §8): archived events keyed by `(session, chunk_start)`,
//! least-recently-used eviction under a hard byte cap, optionally lz4-compressed.
//!
//! `C` counts what the cache holds: per chunk the stored bytes (each event's JSON plus its seq
//! and length header, or the compressed block) plus the session id of its key.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use starcite_archive::format::chunk_start;

/// Bytes of the per-event header in a chunk's stored form: seq (`u64`) and length (`u32`).
const EVENT_HEADER_BYTES: u64 = 12;

type ChunkKey = (String, u64);

/// A chunk's events as stored.
enum ChunkData {
    Plain(BTreeMap<u64, Bytes>),
    /// [`encode_events`] output, lz4-compressed with its length prepended.
    Compressed(Vec<u8>),
}

struct CacheEntry {
    data: ChunkData,
    bytes: u64,
    /// Position in [`ReadCache::recency`].
    last_used: u64,
}

/// The read cache of one node. Not synchronised itself; the node keeps it behind a mutex that
/// is held only for in-memory work.
pub(crate) struct ReadCache {
    entries: HashMap<ChunkKey, CacheEntry>,
    /// Keys by last use, oldest first: the eviction order.
    recency: BTreeMap<u64, ChunkKey>,
    next_use: u64,
    bytes: u64,
    bytes_max: u64,
    compressed: bool,
}

impl ReadCache {
    pub(crate) fn new(bytes_max: u64, compressed: bool) -> ReadCache {
        ReadCache {
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            next_use: 0,
            bytes: 0,
            bytes_max,
            compressed,
        }
    }

    /// `C`.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of cached chunks.
    #[cfg(test)]
    pub(crate) fn chunk_count(&self) -> usize {
        self.entries.len()
    }

    /// The cached events of `session_id` in `from_seq ..= to_seq`, marking their chunks used.
    pub(crate) fn lookup(
        &mut self,
        session_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> BTreeMap<u64, Bytes> {
        let mut found = BTreeMap::new();
        if from_seq > to_seq || from_seq == 0 {
            return found;
        }
        let mut chunk = chunk_start(from_seq);
        while chunk <= to_seq {
            let key = (session_id.to_string(), chunk);
            if let Some(events) = self.take_events(&key) {
                found.extend(
                    events
                        .range(from_seq..=to_seq)
                        .map(|(seq, json)| (*seq, json.clone())),
                );
                self.store(key, events);
            }
            chunk = chunk.saturating_add(starcite_archive::format::CHUNK_EVENTS_COUNT);
        }
        found
    }

    /// Add archived events of `session_id` (merged into their chunks; cached seqs keep their
    /// bytes), then evict least-recently-used chunks until `C ≤ max`.
    pub(crate) fn insert(&mut self, session_id: &str, events: &[(u64, Bytes)]) {
        let mut by_chunk: BTreeMap<u64, Vec<(u64, Bytes)>> = BTreeMap::new();
        for (seq, json) in events.iter().filter(|(seq, _)| *seq >= 1) {
            by_chunk
                .entry(chunk_start(*seq))
                .or_default()
                .push((*seq, json.clone()));
        }
        for (chunk, chunk_events) in by_chunk {
            let key = (session_id.to_string(), chunk);
            let mut merged = self.take_events(&key).unwrap_or_default();
            for (seq, json) in chunk_events {
                merged.entry(seq).or_insert(json);
            }
            self.store(key, merged);
        }
        self.evict_until(self.bytes_max);
    }

    /// Evict least-recently-used chunks until `C ≤ bytes_target` or the cache is empty.
    pub(crate) fn evict_until(&mut self, bytes_target: u64) {
        while self.bytes > bytes_target {
            let Some((_, key)) = self.recency.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&key) {
                self.bytes -= entry.bytes;
            }
        }
        debug_assert!(self.bytes <= bytes_target || self.entries.is_empty());
    }

    /// Remove a chunk and return its events (`None` when absent or undecodable).
    fn take_events(&mut self, key: &ChunkKey) -> Option<BTreeMap<u64, Bytes>> {
        let entry = self.entries.remove(key)?;
        self.recency.remove(&entry.last_used);
        self.bytes -= entry.bytes;
        match entry.data {
            ChunkData::Plain(events) => Some(events),
            // A block that does not decode is dropped: the adapter is the source of truth.
            ChunkData::Compressed(block) => decode_events(&block),
        }
    }

    /// Store a chunk as most recently used, unless it alone exceeds the cap.
    fn store(&mut self, key: ChunkKey, events: BTreeMap<u64, Bytes>) {
        if events.is_empty() {
            return;
        }
        let key_bytes = key.0.len() as u64;
        let (data, data_bytes) = if self.compressed {
            let block = lz4_flex::compress_prepend_size(&encode_events(&events));
            let block_bytes = block.len() as u64;
            (ChunkData::Compressed(block), block_bytes)
        } else {
            let plain_bytes = events
                .values()
                .map(|json| json.len() as u64 + EVENT_HEADER_BYTES)
                .sum();
            (ChunkData::Plain(events), plain_bytes)
        };
        let bytes = data_bytes + key_bytes;
        if bytes > self.bytes_max {
            return;
        }
        let last_used = self.next_use;
        self.next_use += 1;
        self.recency.insert(last_used, key.clone());
        self.bytes += bytes;
        self.entries.insert(
            key,
            CacheEntry {
                data,
                bytes,
                last_used,
            },
        );
    }
}

/// `seq u64 LE, length u32 LE, JSON` per event, ascending.
fn encode_events(events: &BTreeMap<u64, Bytes>) -> Vec<u8> {
    let capacity: usize = events.values().map(|json| json.len() + 12).sum();
    let mut out = Vec::with_capacity(capacity);
    for (seq, json) in events {
        out.extend_from_slice(&seq.to_le_bytes());
        // Event frames are far below 4 GiB (entries are bounded by the log's payload maximum).
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json);
    }
    out
}

fn decode_events(block: &[u8]) -> Option<BTreeMap<u64, Bytes>> {
    let plain = lz4_flex::decompress_size_prepended(block).ok()?;
    let plain = Bytes::from(plain);
    let mut events = BTreeMap::new();
    let mut offset = 0;
    while offset < plain.len() {
        let seq = u64::from_le_bytes(plain.get(offset..offset + 8)?.try_into().ok()?);
        let length = u32::from_le_bytes(plain.get(offset + 8..offset + 12)?.try_into().ok()?);
        let start = offset + 12;
        let end = start.checked_add(length as usize)?;
        if end > plain.len() {
            return None;
        }
        events.insert(seq, plain.slice(start..end));
        offset = end;
    }
    Some(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> (u64, Bytes) {
        (
            seq,
            Bytes::from(format!(
                "{{\"seq\":{seq},\"payload\":\"{}\"}}",
                "x".repeat(40)
            )),
        )
    }

    #[test]
    fn lookup_returns_what_was_inserted_in_both_forms() {
        for compressed in [false, true] {
            let mut cache = ReadCache::new(1 << 20, compressed);
            let events: Vec<_> = (250..=260).map(event).collect();
            cache.insert("s", &events);
            let found = cache.lookup("s", 255, 258);
            let expected: BTreeMap<u64, Bytes> = (255..=258).map(event).collect();
            assert_eq!(found, expected);
            assert_eq!(cache.chunk_count(), 2);
        }
    }

    #[test]
    fn cap_is_never_exceeded_and_eviction_is_least_recently_used() {
        let mut cache = ReadCache::new(2_000, false);
        for session in ["a", "b", "c", "d", "e"] {
            let events: Vec<_> = (1..=6).map(event).collect();
            cache.insert(session, &events);
            assert!(cache.bytes() <= 2_000);
        }
        // Each chunk of 6 events is about 400 bytes: the oldest sessions went first.
        assert!(cache.lookup("a", 1, 6).is_empty());
        assert_eq!(cache.lookup("e", 1, 6).len(), 6);
    }

    #[test]
    fn existing_seqs_keep_their_bytes() {
        let mut cache = ReadCache::new(1 << 20, true);
        cache.insert("s", &[(1, Bytes::from_static(b"first"))]);
        cache.insert("s", &[(1, Bytes::from_static(b"second"))]);
        assert_eq!(cache.lookup("s", 1, 1)[&1], Bytes::from_static(b"first"));
    }
}
