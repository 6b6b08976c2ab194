//! Validated names: [`Tenant`], [`Channel`], [`EventId`].
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
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
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
}
