//! What the bus has heard from connectors: each `<source>:sync-status` committed, kept as the
//! latest per tenant and source, with run counts and a duration histogram per source.
//!
//! It watches committed records (wired into the log's feed beside the hub), not the connectors
//! themselves, so it sees every connector wherever it runs: inside `serve`, as a separate
//! `switchyard-ingest`, or against another node of the cluster. `/metrics` and the operator
//! console read it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use switchyard::{
    catalog::Catalog,
    log::Record,
    metrics::{Buckets, Histogram, SYNC_BUCKETS},
    proto::v1::SyncStatus,
};

/// One tenant's connector for one source, as its latest status says.
#[derive(Debug, Clone)]
pub struct Latest {
    pub status: SyncStatus,
    /// The status event's id.
    pub id: u64,
}

/// Per source: runs that succeeded or failed, failures by code, and run durations.
#[derive(Debug)]
pub struct Runs {
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub durations: Histogram,
}

impl Default for Runs {
    fn default() -> Self {
        Self { ok: 0, failed: 0, errors: BTreeMap::new(), durations: Histogram::new(SYNC_BUCKETS) }
    }
}

/// [`Runs`] read at one moment.
#[derive(Debug, Clone)]
pub struct RunsRead {
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub durations: Buckets,
}

#[derive(Debug, Default)]
pub struct Connectors {
    latest: Mutex<BTreeMap<(String, String), Latest>>,
    runs: Mutex<BTreeMap<String, Runs>>,
}

/// Error codes are the connectors' fixed classes; anything else is counted as `other`, so a
/// publisher cannot grow the label space.
const CODES: &[&str] =
    &["unauthorized", "rate_limited", "upstream_error", "timeout", "malformed_response", "network", "missing_field"];

impl Connectors {
    /// Looks at committed records for sync statuses (cheap for every other record: one
    /// catalog lookup).
    pub fn observe(&self, records: &[Arc<Record>]) {
        for r in records {
            let Some(payload) = &r.event.payload else { continue };
            let is_status =
                Catalog::global().by_field(payload.field_number()).is_some_and(|s| s.message.ends_with(".SyncStatus"));
            if !is_status {
                continue;
            }
            let Some(status) = switchyard::proto::payload_as::<SyncStatus>(payload) else { continue };
            let source = r.type_name().split(':').next().unwrap_or_default().to_owned();
            self.runs.lock().map(|mut runs| count(runs.entry(source.clone()).or_default(), &status)).ok();
            if let Ok(mut latest) = self.latest.lock() {
                latest.insert((r.tenant.to_string(), source), Latest { status, id: r.id.get() });
            }
        }
    }

    /// The latest status per (tenant, source).
    pub fn latest(&self) -> BTreeMap<(String, String), Latest> {
        self.latest.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Per source, read now.
    pub fn runs(&self) -> BTreeMap<String, RunsRead> {
        let read =
            |r: &Runs| RunsRead { ok: r.ok, failed: r.failed, errors: r.errors.clone(), durations: r.durations.read() };
        self.runs.lock().map(|m| m.iter().map(|(s, r)| (s.clone(), read(r))).collect()).unwrap_or_default()
    }
}

fn count(runs: &mut Runs, status: &SyncStatus) {
    if status.ok {
        runs.ok += 1;
    } else {
        runs.failed += 1;
        let code = CODES.iter().find(|c| **c == status.code).copied().unwrap_or("other");
        *runs.errors.entry(code.to_owned()).or_default() += 1;
    }
    if let Some(d) = &status.duration {
        runs.durations.observe(d.seconds.max(0) as f64 + f64::from(d.nanos.max(0)) / 1e9);
    }
}
