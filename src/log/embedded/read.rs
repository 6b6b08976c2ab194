//! Reads: history pages, the state view and its pages, bounds and `since=` lookups, on the
//! caller's blocking thread from a read transaction (they never wait for the writer).

use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::log::{Bounds, LogError, Record, StatePage, StateView, Stream};
use crate::names::EventId;

use super::*;

impl EmbeddedLog {
    pub(super) fn read_blocking(
        db: &Database,
        stream: &Stream,
        after: EventId,
        limit: usize,
    ) -> Result<Vec<Arc<Record>>, LogError> {
        let txn = db.begin_read().map_err(storage)?;
        let events = txn.open_table(EVENTS).map_err(storage)?;
        let start = after.0.saturating_add(1);
        let mut out = Vec::with_capacity(limit.min(4096));
        match stream_name(stream) {
            None => {
                for row in events.range(start..).map_err(storage)?.take(limit) {
                    let (_, v) = row.map_err(storage)?;
                    out.push(Arc::new(Record::decode(v.value())?));
                }
            }
            Some(name) => {
                let streams = txn.open_table(STREAMS).map_err(storage)?;
                for row in
                    streams.range((name.as_str(), start)..=(name.as_str(), u64::MAX)).map_err(storage)?.take(limit)
                {
                    let (k, _) = row.map_err(storage)?;
                    let id = k.value().1;
                    // An index entry whose event is gone was trimmed between the two reads: skip it.
                    if let Some(v) = events.get(id).map_err(storage)? {
                        out.push(Arc::new(Record::decode(v.value())?));
                    }
                }
            }
        }
        Ok(out)
    }

    pub(super) fn state_blocking(db: &Database, stream: &Stream, after: EventId) -> Result<StateView, LogError> {
        let txn = db.begin_read().map_err(storage)?;
        // The head in the same read transaction as the state: exactly what it is consistent with.
        let as_of = txn.open_table(META).map_err(storage)?.get("head").map_err(storage)?.map_or(0, |v| v.value());
        let ids = Self::slot_ids(&txn, stream, after.0, as_of)?;
        let events = txn.open_table(EVENTS).map_err(storage)?;
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            let r = Self::slot_record(&events, id)?;
            if StateView::keeps(stream, &r) {
                records.push(Arc::new(r));
            }
        }
        Ok(StateView { records, as_of: EventId(as_of) })
    }

    /// A page of the state view in slot order, after the slot `after` (hex): the rows of the
    /// page are read, and their events, never the tenant's other slots.
    pub(super) fn state_page_blocking(
        db: &Database,
        stream: &Stream,
        after: Option<&str>,
        as_of: Option<EventId>,
        limit: usize,
    ) -> Result<StatePage, LogError> {
        use std::ops::Bound;
        let txn = db.begin_read().map_err(storage)?;
        let head = txn.open_table(META).map_err(storage)?.get("head").map_err(storage)?.map_or(0, |v| v.value());
        let as_of = as_of.map_or(head, |a| a.0.min(head));
        let table = txn.open_table(STATE).map_err(storage)?;
        let events = txn.open_table(EVENTS).map_err(storage)?;
        let (from, to) = match stream {
            Stream::All => (Vec::new(), None),
            Stream::Tenant(t) | Stream::Channel(t, _) => (format!("{t}\0").into_bytes(), Some(format!("{t}\u{1}"))),
        };
        // A cursor is the client's: one outside this tenant's slots starts at their beginning, so
        // a range with its ends inverted is never asked for.
        let after = after.and_then(unhex).filter(|a| a.starts_with(&from));
        let lower = after.as_deref().map_or(Bound::Included(from.as_slice()), Bound::Excluded);
        let upper = to.as_deref().map_or(Bound::Unbounded, |t| Bound::Excluded(t.as_bytes()));
        let (mut records, mut last) = (Vec::new(), None);
        for row in table.range::<&[u8]>((lower, upper)).map_err(storage)? {
            let (slot, id) = row.map_err(storage)?;
            if records.len() == limit {
                // More slots follow: the next page starts after the last one this page looked at.
                records.sort_unstable_by_key(|r: &Arc<Record>| r.id);
                return Ok(StatePage { records, as_of: EventId(as_of), next: last.map(|s: Vec<u8>| hex(&s)) });
            }
            last = Some(slot.value().to_vec());
            let id = id.value();
            if id > as_of {
                continue;
            }
            let r = Self::slot_record(&events, id)?;
            if StateView::keeps(stream, &r) {
                records.push(Arc::new(r));
            }
        }
        records.sort_unstable_by_key(|r| r.id);
        Ok(StatePage { records, as_of: EventId(as_of), next: None })
    }

    /// The ids the state slots of `stream`'s tenant (or every tenant) point at, in `(after, as_of]`,
    /// ascending.
    pub(super) fn slot_ids(
        txn: &redb::ReadTransaction,
        stream: &Stream,
        after: u64,
        as_of: u64,
    ) -> Result<Vec<u64>, LogError> {
        let table = txn.open_table(STATE).map_err(storage)?;
        let tenant = match stream {
            Stream::All => None,
            Stream::Tenant(t) | Stream::Channel(t, _) => Some(t.as_str()),
        };
        let rows = match tenant {
            Some(t) => {
                let (from, to) = (format!("{t}\0"), format!("{t}\u{1}"));
                table.range(from.as_bytes()..to.as_bytes()).map_err(storage)?
            }
            None => table.range::<&[u8]>(..).map_err(storage)?,
        };
        let mut ids = Vec::new();
        for row in rows {
            let id = row.map_err(storage)?.1.value();
            if id > after && id <= as_of {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    pub(super) fn slot_record(events: &redb::ReadOnlyTable<u64, &[u8]>, id: u64) -> Result<Record, LogError> {
        let Some(bytes) = events.get(id).map_err(storage)? else {
            return Err(LogError::Corrupt(format!("state points at event {id}, which is gone")));
        };
        Record::decode(bytes.value())
    }

    pub(super) fn id_before_blocking(db: &Database, ms: u64) -> Result<EventId, LogError> {
        let txn = db.begin_read().map_err(storage)?;
        let times = txn.open_table(TIMES).map_err(storage)?;
        match times.range(ms..).map_err(storage)?.next().transpose().map_err(storage)? {
            Some((_, first)) => Ok(EventId(first.value().saturating_sub(1))),
            None => Ok(EventId(
                txn.open_table(META).map_err(storage)?.get("head").map_err(storage)?.map_or(0, |v| v.value()),
            )),
        }
    }

    pub(super) fn bounds_blocking(db: &Database, stream: &Stream, head: u64) -> Result<Bounds, LogError> {
        let txn = db.begin_read().map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        let (oldest, trim_key) = match stream_name(stream) {
            None => {
                let trimmed = meta.get("trim:*").map_err(storage)?.map_or(0, |v| v.value());
                (first_unpinned(&txn.open_table(EVENTS).map_err(storage)?, trimmed)?, "trim:*".to_owned())
            }
            Some(name) => {
                let streams = txn.open_table(STREAMS).map_err(storage)?;
                let first = streams
                    .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))
                    .map_err(storage)?
                    .next()
                    .transpose()
                    .map_err(storage)?
                    .map(|(k, _)| k.value().1)
                    .unwrap_or(0);
                (first, format!("trim:{name}"))
            }
        };
        let get = |k: &str| -> Result<u64, LogError> { Ok(meta.get(k).map_err(storage)?.map_or(0, |v| v.value())) };
        Ok(Bounds {
            oldest: EventId(oldest),
            trimmed_through: EventId(get(&trim_key)?),
            head: EventId(head),
            lost: (EventId(get("lost_from")?), EventId(get("lost_through")?)),
        })
    }
}

/// The first event of the history proper: older ones still stored are pinned by the state view.
pub(super) fn first_unpinned(events: &impl ReadableTable<u64, &'static [u8]>, trimmed: u64) -> Result<u64, LogError> {
    Ok(events
        .range(trimmed.saturating_add(1)..)
        .map_err(storage)?
        .next()
        .transpose()
        .map_err(storage)?
        .map_or(0, |(k, _)| k.value()))
}

/// A slot key as a page cursor: lowercase hex (slot keys hold `\0` and any UTF-8).
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}
