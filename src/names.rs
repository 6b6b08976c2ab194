//! Validated names: [`Tenant`] (and [`TenantSel`], the tenant a request reads), [`Channel`], [`EventId`].
//!
//! Everything that crosses a trust boundary (gRPC, HTTP, tokens, config) is
//! parsed into these once; past that point code can rely on their shape. They
//! also keep the log's keys unambiguous: neither a tenant nor a channel can
//! contain the separator the log uses between them.

use std::{fmt, str::FromStr, sync::Arc};

/// Why a name was refused. The message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub &'static str);

/// A tenant (company): 1–63 of `a-z 0-9 _ -`, starting with a letter or digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(Arc<str>);

impl Tenant {
    pub fn new(s: &str) -> Result<Self, NameError> {
        const MSG: &str = "tenant must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit";
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok { Ok(Self(s.into())) } else { Err(NameError(MSG)) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which tenant a request reads: the token's own (none named), one by name, or every tenant
/// (`*`, system tokens only). Parsed at the edge, so `""` and `"*"` mean something only there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TenantSel {
    #[default]
    Own,
    One(Tenant),
    All,
}

impl TenantSel {
    /// What a request's `tenant` field names: empty is the token's own, `*` every tenant.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        match s {
            "" => Ok(Self::Own),
            "*" => Ok(Self::All),
            t => Tenant::new(t).map(Self::One),
        }
    }
}

/// A channel within a tenant: `dashboard`, `working-capital`, `jobs/42`.
///
/// A base name of 1–64 of `a-z 0-9 _ -`, optionally followed by `/` and a
/// sub-name of 1–128 of `A-Z a-z 0-9 _ - . :` (job ids, run ids).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(Arc<str>);

impl Channel {
    pub fn new(s: &str) -> Result<Self, NameError> {
        const MSG: &str = "channel must be a name of a-z, 0-9, '_' or '-' (e.g. 'dashboard'), optionally followed by '/' and an id of A-Z, a-z, 0-9, '_', '-', '.' or ':' (e.g. 'jobs/42')";
        let (base, sub) = match s.split_once('/') {
            Some((b, sub)) => (b, Some(sub)),
            None => (s, None),
        };
        let base_ok = !base.is_empty()
            && base.len() <= 64
            && base.as_bytes()[0].is_ascii_alphanumeric()
            && base.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        let sub_ok = sub.is_none_or(|sub| {
            !sub.is_empty()
                && sub.len() <= 128
                && sub.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        });
        if base_ok && sub_ok { Ok(Self(s.into())) } else { Err(NameError(MSG)) }
    }

    /// `jobs/{job}` for a job id.
    pub fn job(job_id: &str) -> Result<Self, NameError> {
        Self::new(&format!("jobs/{job_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `/`: `jobs` for `jobs/42`.
    pub fn base(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

/// An event's position in the one ordered history. Assigned by the log; 0 is "before everything".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EventId(pub u64);

impl EventId {
    pub const ZERO: EventId = EventId(0);

    pub fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for EventId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        s.trim().parse::<u64>().map(EventId).map_err(|_| NameError("event id must be a non-negative integer"))
    }
}

/// Where a subscriber resumes: after an id, and, when a coalescing subscriber was still
/// holding snapshots back, the point after which its *state* may be incomplete.
///
/// Written `N` or `N~W` (the SSE `id:` line, `Last-Event-ID`, `after=`): every event with an
/// id ≤ N was delivered or deliberately coalesced, but snapshots with ids in (W, N] may have
/// been held and never sent. Resuming from `N~W` sends the current state of those keys first,
/// then every event after N, so a disconnect inside a coalescing window loses no final state.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Cursor {
    pub after: EventId,
    /// `Some(W)` with W < N when state in (W, N] is owed.
    pub state_after: Option<EventId>,
}

impl Cursor {
    pub fn at(after: EventId) -> Self {
        Self { after, state_after: None }
    }

    /// `after`, owing state after `held_floor` when that is lower.
    pub fn owing(after: EventId, held_floor: Option<EventId>) -> Self {
        Self { after, state_after: held_floor.filter(|w| *w < after) }
    }
}

impl FromStr for Cursor {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        const MSG: &str = "event id must be a non-negative integer, or N~W as sent in an SSE id: line";
        let s = s.trim();
        let (n, w) = match s.split_once('~') {
            Some((n, w)) => (n, Some(w)),
            None => (s, None),
        };
        let after = n.parse::<u64>().map(EventId).map_err(|_| NameError(MSG))?;
        let floor = w.map(|w| w.parse::<u64>().map(EventId).map_err(|_| NameError(MSG))).transpose()?;
        Ok(Self::owing(after, floor))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state_after {
            Some(w) => write!(f, "{}~{}", self.after.0, w.0),
            None => write!(f, "{}", self.after.0),
        }
    }
}

/// An RFC 3339 time (`2026-11-30T09:00:00Z`) as Unix milliseconds, for `since=`.
pub fn parse_time_ms(s: &str) -> Result<u64, NameError> {
    const MSG: &str = "expected an RFC 3339 time such as 2026-11-30T09:00:00Z";
    let t: pbjson_types::Timestamp =
        serde_json::from_value(serde_json::Value::String(s.trim().to_owned())).map_err(|_| NameError(MSG))?;
    let secs = u64::try_from(t.seconds).map_err(|_| NameError("time must be after 1970-01-01"))?;
    Ok(secs.saturating_mul(1000) + u64::try_from(t.nanos).unwrap_or(0) / 1_000_000)
}

macro_rules! string_name {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
        impl FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}
string_name!(Tenant);
string_name!(Channel);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants() {
        assert!(Tenant::new("acme").is_ok());
        assert!(Tenant::new("acme-uk_2").is_ok());
        for bad in ["", "Acme", "-acme", "a/b", "a b", "*", &"a".repeat(64)] {
            assert!(Tenant::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn channels() {
        for good in ["dashboard", "working-capital", "jobs/42", "jobs/run-2026.11:a_B"] {
            assert_eq!(Channel::new(good).unwrap().as_str(), good);
        }
        assert_eq!(Channel::new("jobs/42").unwrap().base(), "jobs");
        for bad in ["", "Dashboard", "jobs/", "/x", "jobs/a/b", "a b", "jobs/a b", "x\u{1f}y"] {
            assert!(Channel::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn event_ids() {
        assert_eq!("42".parse::<EventId>().unwrap(), EventId(42));
        assert!("-1".parse::<EventId>().is_err());
        assert!("x".parse::<EventId>().is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:01.5Z").unwrap(), 1500);
        assert_eq!(parse_time_ms("2026-11-30T09:00:00+01:00").unwrap(), 1_796_025_600_000);
        assert!(parse_time_ms("yesterday").is_err());
        assert!(parse_time_ms("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn cursors_round_trip_and_drop_a_floor_that_owes_nothing() {
        let c: Cursor = "1234~1200".parse().unwrap();
        assert_eq!(c, Cursor { after: EventId(1234), state_after: Some(EventId(1200)) });
        assert_eq!(c.to_string(), "1234~1200");
        assert_eq!("77".parse::<Cursor>().unwrap(), Cursor::at(EventId(77)));
        assert_eq!("5~9".parse::<Cursor>().unwrap(), Cursor::at(EventId(5)), "a floor above the id owes nothing");
        for bad in ["", "~", "1~", "~1", "a~1", "1~b", "1~2~3"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} accepted");
        }
    }
}
