//! The periods figures cover, in the tenant's timezone: `today` (since local midnight) and the
//! rolling 24 hours before the run. Written down once here so every connector counts the same
//! days (docs/connectors.md#figures), and carried in each snapshot (`Period`).

use jiff::{Timestamp, tz::TimeZone};
use switchyard::proto::v1::{OrderFigures, Period};

use crate::money::Totals;

/// The tenant's timezone, checked when the configuration is read.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// An IANA name (`Europe/London`) or `UTC`.
    pub fn new(name: &str) -> Result<Self, String> {
        let tz = TimeZone::get(name).map_err(|e| format!("timezone '{name}': {e}"))?;
        Ok(Self { name: name.to_owned(), tz })
    }

    pub fn utc() -> Self {
        Self { name: "UTC".into(), tz: TimeZone::UTC }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The periods of a run at `now`.
    pub fn periods(&self, now: Timestamp) -> Periods {
        let midnight = now.to_zoned(self.tz.clone()).start_of_day().map(|z| z.timestamp()).unwrap_or(now);
        let day_ago = now.checked_sub(jiff::SignedDuration::from_hours(24)).unwrap_or(now);
        let month_start = now
            .to_zoned(self.tz.clone())
            .first_of_month()
            .and_then(|z| z.start_of_day())
            .map(|z| z.timestamp())
            .unwrap_or(midnight);
        Periods {
            today: Span { name: "today", from: midnight, to: now },
            last_24h: Span { name: "rolling_24h", from: day_ago, to: now },
            month_to_date: Span { name: "month_to_date", from: month_start, to: now },
            zone: self.clone(),
        }
    }

    /// The local calendar date of `t`, `YYYY-MM-DD` (report dates such as Xero's).
    pub fn date(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone()).date().to_string()
    }
}

/// `[from, to]` with a name.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub name: &'static str,
    pub from: Timestamp,
    pub to: Timestamp,
}

impl Span {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from <= t && t <= self.to
    }
}

#[derive(Debug, Clone)]
pub struct Periods {
    pub today: Span,
    pub last_24h: Span,
    pub month_to_date: Span,
    pub zone: Zone,
}

impl Periods {
    /// Where a read that covers both `today` and `last_24h` has to start.
    pub fn orders_from(&self) -> Timestamp {
        self.today.from.min(self.last_24h.from)
    }

    pub fn proto(&self, span: &Span) -> Period {
        Period {
            from: Some(timestamp(span.from)),
            to: Some(timestamp(span.to)),
            timezone: self.zone.name.clone(),
            name: span.name.into(),
        }
    }
}

pub fn timestamp(t: Timestamp) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() }
}

/// RFC 3339 in UTC, for platform query parameters.
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Orders counted into one period.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub orders: u32,
    pub revenue: Totals,
    pub refunded: Totals,
}

impl Tally {
    pub fn merge(&mut self, other: &Tally) {
        self.orders += other.orders;
        self.revenue.merge(&other.revenue);
        self.refunded.merge(&other.refunded);
    }

    pub fn figures(&self, periods: &Periods, span: &Span) -> OrderFigures {
        OrderFigures {
            period: Some(periods.proto(span)),
            orders: self.orders,
            revenue: self.revenue.all(),
            net_revenue: self.revenue.minus(&self.refunded).all(),
        }
    }
}

/// One order's contribution to the periods it falls in.
#[derive(Debug, Default, Clone)]
pub struct Tallies {
    pub today: Tally,
    pub last_24h: Tally,
}

impl Tallies {
    /// Counts an order created at `created` with `total` and `refunded` (each `(amount, currency)`).
    pub fn add(
        &mut self,
        periods: &Periods,
        created: Timestamp,
        total: Option<(&str, &str)>,
        refunded: Option<(&str, &str)>,
    ) -> Result<(), String> {
        for (span, tally) in [(&periods.today, &mut self.today), (&periods.last_24h, &mut self.last_24h)] {
            if !span.contains(created) {
                continue;
            }
            tally.orders += 1;
            if let Some((a, c)) = total {
                tally.revenue.add(a, c)?;
            }
            if let Some((a, c)) = refunded {
                tally.refunded.add(a, c)?;
            }
        }
        Ok(())
    }

    pub fn merge(&mut self, other: &Tallies) {
        self.today.merge(&other.today);
        self.last_24h.merge(&other.last_24h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_starts_at_local_midnight_and_24h_is_rolling() {
        let now: Timestamp = "2026-11-30T08:30:00Z".parse().unwrap();
        let p = Zone::new("Australia/Sydney").unwrap().periods(now); // UTC+11 in November
        assert_eq!(p.today.from.to_string(), "2026-11-29T13:00:00Z");
        assert_eq!(p.last_24h.from.to_string(), "2026-11-29T08:30:00Z");
        assert_eq!(p.month_to_date.from.to_string(), "2026-10-31T13:00:00Z");
        assert_eq!(p.orders_from(), p.last_24h.from);
        let p = Zone::utc().periods(now);
        assert_eq!(p.today.from.to_string(), "2026-11-30T00:00:00Z");
        assert_eq!(p.month_to_date.from.to_string(), "2026-11-01T00:00:00Z");
        assert!(Zone::new("Mars/Olympus").is_err());
        assert_eq!(Zone::new("Europe/London").unwrap().date(now), "2026-11-30");
    }
}
