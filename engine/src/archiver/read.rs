//! `read(session, cursor, limit)` over both tiers (archive.md §6): seqs above `archived_seq`
//! from this replica's hot store, seqs at or below it through the read cache and the adapter.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::Archive;
use crate::api::{EventBatch, ServiceError};
use crate::state::GroupState;

/// What the applied state says about one read, taken in one synchronous step so that hot
/// events and `archived_seq` belong to the same moment.
pub(crate) struct HotView {
    last_seq: u64,
    archived_seq: u64,
    high_seq: u64,
    hot: Vec<(u64, Bytes)>,
}

/// Take the [`HotView`] of a read from `group`'s applied state.
pub(crate) fn hot_view(
    group: &GroupState,
    session_id: &str,
    cursor: u64,
    limit: u32,
) -> Result<HotView, ServiceError> {
    let record = group
        .session(session_id)
        .ok_or(ServiceError::SessionNotFound)?;
    debug_assert!(record.archived_seq <= record.last_seq);
    let high_seq = record.last_seq.min(cursor.saturating_add(u64::from(limit)));
    let hot_from = cursor.max(record.archived_seq).saturating_add(1);
    let hot = if hot_from <= high_seq {
        group.hot_events(session_id, hot_from, high_seq)
    } else {
        Vec::new()
    };
    Ok(HotView {
        last_seq: record.last_seq,
        archived_seq: record.archived_seq,
        high_seq,
        hot,
    })
}

/// Read up to `limit` events after `cursor`, merging the archive in when the range reaches
/// at or below `archived_seq`; `view` is the applied state's [`hot_view`] of the same read.
pub(crate) async fn read_merged(
    archive: &Archive,
    session_id: &str,
    cursor: u64,
    view: HotView,
) -> Result<EventBatch, ServiceError> {
    let first_seq = cursor.saturating_add(1);
    if view.high_seq <= cursor {
        return Ok(EventBatch {
            first_seq,
            events: Vec::new(),
            last_seq: view.last_seq,
        });
    }
    let mut events: BTreeMap<u64, Bytes> = view.hot.into_iter().collect();
    let cold_to = view.archived_seq.min(view.high_seq);
    if view.archived_seq > cursor {
        events.extend(archive.cold_read(session_id, first_seq, cold_to).await?);
    }
    // Hot seqs that a concurrent ack evicted before the view was taken are archived by now:
    // fetch them cold once more.
    let hot_missing_from = (first_seq..=view.high_seq).find(|seq| !events.contains_key(seq));
    if let Some(missing_from) = hot_missing_from.filter(|seq| *seq > cold_to) {
        let missing_to = view.high_seq;
        for (seq, json) in archive
            .cold_read(session_id, missing_from, missing_to)
            .await?
        {
            events.entry(seq).or_insert(json);
        }
    }
    let events: Vec<Bytes> = events
        .range(first_seq..=view.high_seq)
        .map(|(_, json)| json.clone())
        .collect();
    if events.len() as u64 != view.high_seq - cursor {
        return Err(ServiceError::EventGapDetected);
    }
    Ok(EventBatch {
        first_seq,
        events,
        last_seq: view.last_seq,
    })
}
