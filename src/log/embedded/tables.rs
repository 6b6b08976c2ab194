//! The tables of the one redb file, their keys, and what is rebuilt from them at open.

use std::collections::BTreeMap;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::log::{LogError, Record};
use crate::names::Tenant;

use super::*;

pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
pub(super) const STREAMS: TableDefinition<(&str, u64), u64> = TableDefinition::new("streams");
pub(super) const DEDUPE: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("dedupe");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Keyed `tenant \0 slot \0 key` (tenants and type names hold no NUL): one memcmp per comparison.
pub(super) const STATE: TableDefinition<&[u8], u64> = TableDefinition::new("state");
pub(super) const TIMES: TableDefinition<u64, u64> = TableDefinition::new("times");
/// (published-at ms, id) → (tenant, idempotency key): keys in the order they expire.
pub(super) const DEDUPE_TIMES: TableDefinition<(u64, u64), (&str, &str)> = TableDefinition::new("dedupe_times");

pub(super) fn state_key(tenant: &Tenant, slot: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.as_str().len() + slot.len() + key.len() + 2);
    k.extend_from_slice(tenant.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(slot.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// When a stored event was published, Unix ms.
pub(super) fn published_ms(bytes: &[u8]) -> Result<u64, LogError> {
    Ok(Record::decode(bytes)?.published_ms())
}

/// Rebuilds per-stream entry counts (for count-based retention) at open.
pub(super) fn count_streams(db: &Database) -> Result<BTreeMap<String, u64>, LogError> {
    let txn = db.begin_read().map_err(storage)?;
    let streams = txn.open_table(STREAMS).map_err(storage)?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for row in streams.iter().map_err(storage)? {
        let (k, _) = row.map_err(storage)?;
        let name = k.value().0;
        match counts.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                counts.insert(name.to_owned(), 1);
            }
        }
    }
    Ok(counts)
}

/// Logs written before the `dedupe_times` index existed get it built once, at open.
pub(super) fn index_dedupe_times(txn: &redb::WriteTransaction) -> Result<(), LogError> {
    let dedupe = txn.open_table(DEDUPE).map_err(storage)?;
    let mut times = txn.open_table(DEDUPE_TIMES).map_err(storage)?;
    if !times.is_empty().map_err(storage)? {
        return Ok(());
    }
    for row in dedupe.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let ((tenant, key), (id, ms)) = (k.value(), v.value());
        times.insert((ms, id), (tenant, key)).map_err(storage)?;
    }
    Ok(())
}
