//! Exact sums of the decimal strings platforms send: revenue is never a float.

use std::{collections::BTreeMap, str::FromStr};

use rust_decimal::Decimal;
use switchyard::proto::v1::Money;

/// Amounts summed per currency.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals(BTreeMap<String, Decimal>);

impl Totals {
    /// Adds `amount` (a decimal string) in `currency`; an unparsable amount is an error.
    pub fn add(&mut self, amount: &str, currency: &str) -> Result<(), String> {
        let value = Decimal::from_str(amount.trim()).map_err(|e| format!("amount '{amount}': {e}"))?;
        *self.0.entry(currency.to_owned()).or_default() += value;
        Ok(())
    }

    pub fn merge(&mut self, other: &Totals) {
        for (c, v) in &other.0 {
            *self.0.entry(c.clone()).or_default() += *v;
        }
    }

    pub fn minus(&self, other: &Totals) -> Totals {
        let mut out = self.clone();
        for (c, v) in &other.0 {
            *out.0.entry(c.clone()).or_default() -= *v;
        }
        out
    }

    /// Every currency's total, in currency order (money is never summed across currencies).
    pub fn all(&self) -> Vec<Money> {
        self.0.iter().map(|(c, v)| money(*v, c)).collect()
    }

    /// The total as one `Money`, when every amount shares a currency (or there were none, in
    /// `fallback_currency`). Mixed currencies have no single total: `None`.
    pub fn money(&self, fallback_currency: &str) -> Option<Money> {
        match self.0.len() {
            0 => Some(Money { amount: "0.00".into(), currency: fallback_currency.to_owned() }),
            1 => self.0.iter().next().map(|(c, v)| money(*v, c)),
            _ => None,
        }
    }
}

/// A decimal as `Money`, with at least two decimal places.
pub fn money(value: Decimal, currency: &str) -> Money {
    let mut v = value.normalize();
    if v.scale() < 2 {
        v.rescale(2);
    }
    Money { amount: v.to_string(), currency: currency.to_owned() }
}

/// Parses a decimal string or JSON number into a `Decimal`.
pub fn decimal(v: &serde_json::Value) -> Option<Decimal> {
    match v {
        serde_json::Value::String(s) => Decimal::from_str(s.trim()).ok(),
        serde_json::Value::Number(n) => Decimal::from_str(&n.to_string()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_exact_and_per_currency() {
        let mut t = Totals::default();
        for a in ["0.10", "0.20", "1249.99"] {
            t.add(a, "GBP").unwrap();
        }
        assert_eq!(t.money("GBP").unwrap().amount, "1250.29");
        let mut refunds = Totals::default();
        refunds.add("0.29", "GBP").unwrap();
        assert_eq!(t.minus(&refunds).money("GBP").unwrap().amount, "1250.00");
        t.add("5", "EUR").unwrap();
        assert_eq!(t.money("GBP"), None, "no single total across currencies");
        assert!(t.add("12,50", "GBP").is_err());
        assert_eq!(Totals::default().money("USD").unwrap().amount, "0.00");
    }
}
