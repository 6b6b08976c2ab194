//! Per-tenant quotas ([`Quotas`]): what each tenant holds (state keys, keyed channels) and the
//! admission check a batch passes before it is written; a batch over a quota is refused whole.

use std::collections::{BTreeMap, HashMap, HashSet};

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::log::LogError;
use crate::validate::Accepted;

use super::*;

/// What a tenant holds against its [`Quotas`].
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Usage {
    pub(super) keys: u64,
    pub(super) jobs: u64,
}

/// Rebuilds what each tenant holds against its quotas at open.
pub(super) fn count_usage(db: &Database, counts: &BTreeMap<String, u64>) -> Result<HashMap<String, Usage>, LogError> {
    let mut usage: HashMap<String, Usage> = HashMap::new();
    for tenant in counts.keys().filter_map(|n| keyed_owner(n)) {
        usage.entry(tenant.to_owned()).or_default().jobs += 1;
    }
    let txn = db.begin_read().map_err(storage)?;
    for row in txn.open_table(STATE).map_err(storage)?.iter().map_err(storage)? {
        let (k, _) = row.map_err(storage)?;
        let tenant = k.value().split(|b| *b == 0).next().unwrap_or_default();
        usage.entry(String::from_utf8_lossy(tenant).into_owned()).or_default().keys += 1;
    }
    Ok(usage)
}

/// `tenant:jobs/42` → `tenant`, for keyed channels only: each one is a job a tenant holds.
pub(super) fn keyed_owner(name: &str) -> Option<&str> {
    name.split_once(':').filter(|(_, ch)| ch.contains('/')).map(|(t, _)| t)
}

impl Writer {
    /// Whether `batch` fits its tenant's quotas, counting only what it would add: new state
    /// keys and new keyed channels. A batch over a quota is refused whole; one that fits gets
    /// back the state keys it adds.
    pub(super) fn admit(
        &self,
        batch: &[Accepted],
        state: &impl ReadableTable<&'static [u8], u64>,
        slots: &BTreeMap<Vec<u8>, u64>,
    ) -> Result<HashSet<Vec<u8>>, LogError> {
        let quotas = self.config.quotas;
        let mut added: HashMap<&str, Usage> = HashMap::new();
        let mut seen_keys = HashSet::new();
        let mut seen_jobs = HashSet::new();
        for acc in batch {
            let tenant = acc.tenant.as_str();
            if let Some(slot) = &acc.routing.state {
                let key = state_key(&acc.tenant, slot, &acc.event.key);
                if !slots.contains_key(&key)
                    && state.get(key.as_slice()).map_err(storage)?.is_none()
                    && seen_keys.insert(key)
                {
                    added.entry(tenant).or_default().keys += 1;
                }
            }
            for ch in acc.routing.keyed_channels() {
                let name = format!("{tenant}:{ch}");
                if !self.counts.contains_key(&name) && seen_jobs.insert(name) {
                    added.entry(tenant).or_default().jobs += 1;
                }
            }
        }
        for (tenant, add) in added {
            let held = self.usage.get(tenant).copied().unwrap_or_default();
            let over = |what: &str, held: u64, add: u64, max: u64, key: &str, hint: &str| {
                (add > 0 && held + add > max).then(|| LogError::Quota {
                    field: "key",
                    message: format!(
                        "tenant {tenant} holds {held} {what}, its quota is {max} (log.quotas.{key}): {hint}"
                    ),
                })
            };
            let keys = over(
                "state keys",
                held.keys,
                add.keys,
                quotas.max_keys_per_tenant,
                "max_keys_per_tenant",
                "reuse keys, or ask for a larger quota",
            );
            let jobs = over(
                "jobs with history",
                held.jobs,
                add.jobs,
                quotas.max_jobs_per_tenant,
                "max_jobs_per_tenant",
                "jobs free up as retention removes their history",
            );
            if let Some(e) = keys.or(jobs) {
                return Err(e);
            }
        }
        Ok(seen_keys)
    }
}
