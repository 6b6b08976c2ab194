//! Retention, on the writer thread between groups and in slices of a bounded number of rows,
//! so a large backlog never holds appends up for long: trim each stream's index, drop the events
//! no stream (and no state slot) references any more, then expire idempotency keys.

use std::{
    ops::Bound::{Excluded, Unbounded},
    sync::atomic::Ordering,
};

use redb::ReadableTable;

use crate::log::{LogError, Record, Retention};
use crate::names::Channel;

use super::*;

/// One pass of retention, done a budget of rows at a time so no slice holds up appends for
/// long, whatever the backlog. Phases in order: trim each stream's index (by name, resuming
/// after `after`), then drop the events no stream references any more, then expired
/// idempotency keys.
pub(super) struct Round {
    pub(super) now_ms: u64,
    pub(super) phase: Phase,
    /// The lowest id a visited stream still references, or the head at the round's start + 1:
    /// streams that appear later reference only ids above that.
    pub(super) first_kept: u64,
}

pub(super) enum Phase {
    Streams { after: Option<String> },
    Events,
    Dedupe,
}

/// A stream's name in the `streams` table and what its retention is.
pub(super) fn limits_of(retention: &Retention, name: &str) -> crate::log::Limits {
    match name.split_once(':') {
        Some((_, ch)) => Channel::new(ch).map(|c| retention.for_channel(&c)).unwrap_or(retention.default),
        None => retention.default,
    }
}

impl Writer {
    pub(super) fn new_round(&self, now_ms: u64) -> Round {
        Round { now_ms, phase: Phase::Streams { after: None }, first_kept: self.head.load(Ordering::Acquire) + 1 }
    }

    /// A whole retention round now, as if the time were `now_ms` (operators, tests).
    pub(super) fn trim_all(&mut self, now_ms: u64) -> Result<(), LogError> {
        self.round = Some(self.new_round(now_ms));
        while self.round.is_some() {
            if let Err(e) = self.trim_slice() {
                self.round = None;
                return Err(e);
            }
        }
        Ok(())
    }

    /// One slice of the round in progress: at most `trim_budget` rows visited or removed, in
    /// one transaction. Clears `round` when the round is done.
    pub(super) fn trim_slice(&mut self) -> Result<(), LogError> {
        let Some(mut round) = self.round.take() else { return Ok(()) };
        let mut budget = self.config.trim_budget.max(1);
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(self.durability()).map_err(storage)?;
        let mut changed = false;
        let mut done = false;
        while budget > 0 && !done {
            changed |= match &mut round.phase {
                Phase::Streams { after } => {
                    let next = match after {
                        Some(a) => self.counts.range::<str, _>((Excluded(a.as_str()), Unbounded)).next(),
                        None => self.counts.iter().next(),
                    };
                    match next.map(|(name, count)| (name.clone(), *count)) {
                        Some((name, count)) => {
                            budget -= 1;
                            let (trimmed, finished) =
                                self.trim_stream(&txn, &name, count, &mut round.first_kept, round.now_ms, &mut budget)?;
                            if finished {
                                *after = Some(name);
                            }
                            trimmed
                        }
                        None => {
                            round.phase = Phase::Events;
                            false
                        }
                    }
                }
                Phase::Events => {
                    let (trimmed, finished) = self.trim_events(&txn, round.first_kept, round.now_ms, &mut budget)?;
                    if finished {
                        round.phase = Phase::Dedupe;
                    }
                    trimmed
                }
                Phase::Dedupe => {
                    let cutoff = round.now_ms.saturating_sub(self.config.retention.dedupe_window().as_millis() as u64);
                    let (trimmed, finished) = trim_dedupe(&txn, cutoff, &mut budget)?;
                    done = finished;
                    trimmed
                }
            };
        }
        if changed {
            txn.commit().map_err(storage)?;
        } else {
            txn.abort().map_err(storage)?;
        }
        if !done {
            self.round = Some(round);
        }
        Ok(())
    }

    /// Drops the entries of stream `name` past its retention, oldest first, within `budget`.
    /// Returns (removed any, reached the first kept entry or the end).
    pub(super) fn trim_stream(
        &mut self,
        txn: &redb::WriteTransaction,
        name: &str,
        count: u64,
        first_kept: &mut u64,
        now_ms: u64,
        budget: &mut usize,
    ) -> Result<(bool, bool), LogError> {
        let limits = limits_of(&self.config.retention, name);
        let over = count.saturating_sub(limits.max_events);
        let cutoff = now_ms.saturating_sub(limits.max_age_secs.saturating_mul(1000));
        let mut streams = txn.open_table(STREAMS).map_err(storage)?;
        let mut drop_through: Option<u64> = None;
        let mut dropped = 0u64;
        let mut finished = true;
        for row in streams.range((name, 0)..=(name, u64::MAX)).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            if *budget == 0 {
                finished = false;
                break;
            }
            if dropped < over || v.value() < cutoff {
                drop_through = Some(k.value().1);
                dropped += 1;
                *budget -= 1;
            } else {
                *first_kept = (*first_kept).min(k.value().1);
                break;
            }
        }
        let Some(through) = drop_through else { return Ok((false, finished)) };
        streams.retain_in((name, 0)..=(name, through), |_, _| false).map_err(storage)?;
        txn.open_table(META).map_err(storage)?.insert(format!("trim:{name}").as_str(), through).map_err(storage)?;
        if count == dropped {
            self.forget(name);
        } else {
            self.counts.insert(name.to_owned(), count - dropped);
        }
        Ok((true, finished))
    }

    /// Drops events below `keep_from` (no stream references them), within `budget`. An event
    /// that is its slot's current state stays, unless it belongs to a keyed channel
    /// (`jobs/<id>`): a job's state lives as long as its history. Then the `times` rows
    /// before the first kept event. Returns (removed any, finished).
    pub(super) fn trim_events(
        &mut self,
        txn: &redb::WriteTransaction,
        keep_from: u64,
        now_ms: u64,
        budget: &mut usize,
    ) -> Result<(bool, bool), LogError> {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let trimmed = meta.get("trim:*").map_err(storage)?.map_or(0, |v| v.value());
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut state = txn.open_table(STATE).map_err(storage)?;
        let mut through = trimmed;
        let mut gone = Vec::new();
        let mut expired_slots = Vec::new();
        for row in events.range(trimmed.saturating_add(1)..keep_from.max(trimmed.saturating_add(1))).map_err(storage)? {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let (k, v) = row.map_err(storage)?;
            let id = k.value();
            through = id;
            // Undecodable bytes can pin nothing.
            if let Ok(r) = Record::decode(v.value())
                && let Some(slot) = &r.routing.state
            {
                let key = state_key(&r.tenant, slot, &r.event.key);
                if state.get(key.as_slice()).map_err(storage)?.map(|v| v.value()) == Some(id) {
                    if !r.routing.channels.iter().any(|c| c.as_str().contains('/')) {
                        continue; // pinned
                    }
                    expired_slots.push((r.tenant.to_string(), key));
                }
            }
            gone.push(id);
        }
        let finished = *budget > 0;
        let through = if finished { keep_from.saturating_sub(1).max(trimmed) } else { through };
        for id in &gone {
            events.remove(id).map_err(storage)?;
        }
        for (tenant, key) in &expired_slots {
            state.remove(key.as_slice()).map_err(storage)?;
            if let Some(u) = self.usage.get_mut(tenant) {
                u.keys = u.keys.saturating_sub(1);
            }
        }
        let mut changed = !gone.is_empty();
        if through > trimmed {
            meta.insert("trim:*", through).map_err(storage)?;
            changed = true;
        }
        if !finished {
            return Ok((changed, false));
        }
        // Time rows before the first kept event point at nothing.
        let kept_ms = match events.range(keep_from..).map_err(storage)?.next().transpose().map_err(storage)? {
            Some((_, v)) => published_ms(v.value())?,
            None => now_ms,
        };
        let mut times = txn.open_table(TIMES).map_err(storage)?;
        let old: Vec<u64> = times
            .range(..kept_ms)
            .map_err(storage)?
            .take(*budget)
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(storage)?;
        *budget -= old.len();
        for ms in &old {
            times.remove(ms).map_err(storage)?;
        }
        Ok((changed || !old.is_empty(), *budget > 0))
    }
}

/// Forgets idempotency keys older than `cutoff`, oldest first, within `budget`, through the
/// time index (the work is the keys expired, never a scan). Returns (removed any, finished).
pub(super) fn trim_dedupe(
    txn: &redb::WriteTransaction,
    cutoff: u64,
    budget: &mut usize,
) -> Result<(bool, bool), LogError> {
    let mut dedupe = txn.open_table(DEDUPE).map_err(storage)?;
    let mut times = txn.open_table(DEDUPE_TIMES).map_err(storage)?;
    let mut old = Vec::new();
    for row in times.range(..(cutoff, 0)).map_err(storage)? {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let (k, v) = row.map_err(storage)?;
        let (tenant, key) = v.value();
        old.push((k.value(), tenant.to_owned(), key.to_owned()));
    }
    for ((ms, id), tenant, key) in &old {
        times.remove((*ms, *id)).map_err(storage)?;
        let current = dedupe.get((tenant.as_str(), key.as_str())).map_err(storage)?.map(|v| v.value().0);
        if current == Some(*id) {
            dedupe.remove((tenant.as_str(), key.as_str())).map_err(storage)?;
        }
    }
    Ok((!old.is_empty(), *budget > 0))
}
