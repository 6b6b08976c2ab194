//! When a failed delivery is tried again: a written ladder of waits, each with jitter so a
//! receiver that comes back is not hit by every endpoint's retries in the same second, and
//! stretched (never shortened) by the receiver's own `Retry-After`.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

/// The waits before each retry, after the first attempt. Svix's ladder: 5 s, 5 min, 30 min,
/// 2 h, 5 h, 10 h, 10 h: eight attempts over about 27 hours.
pub const DEFAULT_STEPS: &[u64] = &[5, 300, 1800, 7200, 18000, 36000, 36000];

/// The longest a `Retry-After` may push a retry out: a receiver cannot park an event for
/// longer than the ladder's own longest step.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(36_000);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ladder {
    /// Seconds to wait before each retry; the number of steps is the number of retries.
    pub steps_secs: Vec<u64>,
    /// Each wait is moved by up to this share of itself, either way (0.2: ±20 %).
    pub jitter: f64,
}

impl Default for Ladder {
    fn default() -> Self {
        Self { steps_secs: DEFAULT_STEPS.to_vec(), jitter: 0.2 }
    }
}

impl Ladder {
    /// Attempts in all, the first included.
    pub fn attempts(&self) -> u32 {
        self.steps_secs.len() as u32 + 1
    }

    /// How long to wait after `made` failed attempts (1 after the first), or `None` when the
    /// ladder is exhausted and the event goes to the dead letters.
    pub fn next(&self, made: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let step = *self.steps_secs.get(made.checked_sub(1)? as usize)?;
        let base = Duration::from_secs(step);
        let spread = base.as_secs_f64() * self.jitter.clamp(0.0, 1.0);
        let jittered = if spread > 0.0 {
            Duration::from_secs_f64((base.as_secs_f64() + rand::rng().random_range(-spread..=spread)).max(0.0))
        } else {
            base
        };
        Some(retry_after.map_or(jittered, |ra| jittered.max(ra.min(MAX_RETRY_AFTER))))
    }
}

/// A `Retry-After` value: seconds, or an HTTP date (relative to `now_ms`).
pub fn retry_after(value: &str, now_ms: u64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(Duration::from_millis(at_ms.saturating_sub(now_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_is_the_written_one_within_its_jitter_and_then_ends() {
        let ladder = Ladder::default();
        assert_eq!(ladder.attempts(), 8);
        for (made, step) in (1..).zip(DEFAULT_STEPS) {
            let wait = ladder.next(made, None).unwrap().as_secs_f64();
            let step = *step as f64;
            assert!(wait >= step * 0.8 - 1e-9 && wait <= step * 1.2 + 1e-9, "retry {made}: {wait} s for {step}");
        }
        assert_eq!(ladder.next(8, None), None, "after eight attempts the event is dead-lettered");
        assert_eq!(ladder.next(0, None), None);
    }

    #[test]
    fn retry_after_stretches_a_wait_but_never_shortens_it_or_parks_an_event_for_good() {
        let exact = Ladder { steps_secs: vec![5, 300], jitter: 0.0 };
        assert_eq!(exact.next(1, Some(Duration::from_secs(60))), Some(Duration::from_secs(60)));
        assert_eq!(exact.next(2, Some(Duration::from_secs(1))), Some(Duration::from_secs(300)));
        assert_eq!(exact.next(1, Some(Duration::from_secs(1 << 40))), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("120", 0), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40_000), Some(Duration::from_secs(60)));
        assert_eq!(retry_after("soon", 0), None);
    }
}
