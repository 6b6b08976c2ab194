//! Which events an endpoint gets: event-type and channel globs (as on SSE), and an optional
//! expression on the event's typed fields, in [evalexpr](https://docs.rs/evalexpr)'s small
//! language: `total.amount >= 1000 && currency == "GBP"`, `count > 3 || critical_items > 0`.
//!
//! Names are the payload's fields as the JSON shows them (lowerCamel, nested with `.`), plus
//! `type`, `key`, `source` and `tenant` of the envelope. Money amounts (decimal strings in the
//! contract) compare as numbers; other strings as strings. An event missing a field the
//! expression names does not match. Expressions are pure: no assignment, no chaining.

use std::collections::HashMap;

use evalexpr::{ContextWithMutableVariables, DefaultNumericTypes, HashMapContext, Node, Operator, Value};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::Value as Json;
use switchyard::log::Record;

use crate::resolution::Pair;

/// Longest expression accepted: enough for any sensible condition, and it bounds the parse.
pub const MAX_FILTER_LEN: usize = 1024;
/// Deepest nesting of parentheses accepted.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SelectError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> SelectError {
    SelectError { field, message: message.into() }
}

/// A compiled payload condition.
#[derive(Debug, Clone)]
pub struct Filter {
    node: Node<DefaultNumericTypes>,
    names: Vec<String>,
}

impl Filter {
    pub fn parse(source: &str) -> Result<Self, SelectError> {
        if source.len() > MAX_FILTER_LEN {
            return Err(bad("filter", format!("at most {MAX_FILTER_LEN} characters")));
        }
        let mut depth = 0usize;
        for c in source.chars() {
            depth = match c {
                '(' => depth + 1,
                ')' => depth.saturating_sub(1),
                _ => depth,
            };
            if depth > MAX_DEPTH {
                return Err(bad("filter", format!("nested more than {MAX_DEPTH} deep")));
            }
        }
        let node =
            evalexpr::build_operator_tree::<DefaultNumericTypes>(source).map_err(|e| bad("filter", e.to_string()))?;
        let impure = node.iter().any(|n| {
            matches!(
                n.operator(),
                Operator::Assign
                    | Operator::AddAssign
                    | Operator::SubAssign
                    | Operator::MulAssign
                    | Operator::DivAssign
                    | Operator::ModAssign
                    | Operator::ExpAssign
                    | Operator::AndAssign
                    | Operator::OrAssign
                    | Operator::Chain
            )
        });
        if impure {
            return Err(bad("filter", "assignments and `;` are not allowed: a filter is one condition"));
        }
        let mut names: Vec<String> = node.iter_read_variable_identifiers().map(str::to_owned).collect();
        names.sort();
        names.dedup();
        // A trial run with every name 0 finds what parsing lets through: an operator short
        // of operands, an expression that is not a condition.
        let mut zeros = HashMapContext::<DefaultNumericTypes>::new();
        for n in &names {
            let _ = zeros.set_value(n.clone(), Value::Int(0));
        }
        match node.eval_with_context(&zeros) {
            Err(e @ evalexpr::EvalexprError::WrongOperatorArgumentAmount { .. }) => Err(bad("filter", e.to_string())),
            Ok(v) if !v.is_boolean() => {
                Err(bad("filter", "must be a condition (true or false), such as total.amount >= 1000"))
            }
            _ => Ok(Self { node, names }),
        }
    }

    /// Whether the event's fields satisfy the condition; a missing field or a type mismatch
    /// is no match.
    pub fn matches(&self, envelope: &[(&str, &str)], data: &Json) -> bool {
        let mut context = HashMapContext::<DefaultNumericTypes>::new();
        for name in &self.names {
            let value = envelope
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Value::String((*v).to_owned()))
                .or_else(|| lookup(data, name));
            if let Some(v) = value {
                let _ = context.set_value(name.clone(), v);
            }
        }
        self.node.eval_boolean_with_context(&context).unwrap_or(false)
    }
}

/// The value at a dotted path, as the expression language sees it.
fn lookup(data: &Json, path: &str) -> Option<Value<DefaultNumericTypes>> {
    let mut at = data;
    let mut last = "";
    for part in path.split('.') {
        at = match at {
            Json::Object(m) => m.get(part)?,
            Json::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
        last = part;
    }
    Some(match at {
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        // Money: `{amount: "1234.50"}` is a number to compare; ids and names stay strings.
        Json::String(s) if last == "amount" => Value::Float(s.parse().ok()?),
        // proto3 JSON writes 64-bit integers as strings.
        Json::String(s) => s
            .parse::<i64>()
            .ok()
            .filter(|_| !s.starts_with('0') || s == "0")
            .map_or_else(|| Value::String(s.clone()), Value::Int),
        Json::Array(a) => Value::Int(a.len() as i64),
        Json::Null | Json::Object(_) => return None,
    })
}

/// Globs over names, compiled once; an empty list matches everything.
#[derive(Debug, Clone)]
struct Globs(Option<GlobSet>);

impl Globs {
    fn new(field: &'static str, patterns: &[String]) -> Result<Self, SelectError> {
        if patterns.is_empty() {
            return Ok(Self(None));
        }
        let mut set = GlobSetBuilder::new();
        for p in patterns {
            set.add(Glob::new(p).map_err(|e| bad(field, format!("{p:?}: {e}")))?);
        }
        Ok(Self(Some(set.build().map_err(|e| bad(field, e.to_string()))?)))
    }

    fn matches(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|s| s.is_match(name))
    }
}

/// What an endpoint selects: types, channels, condition.
#[derive(Debug, Clone)]
pub struct Selector {
    types: Globs,
    channels: Globs,
    filter: Option<Filter>,
    /// Type verdicts by name: one glob match per type, not per event.
    by_type: std::sync::Arc<std::sync::RwLock<HashMap<String, bool>>>,
    /// For people: the events that may say a selected alert's condition cleared, by their
    /// type, selected whatever the types, channels and filter say.
    resolvers: std::sync::Arc<HashMap<String, Vec<Pair>>>,
}

impl Selector {
    pub fn new(types: &[String], channels: &[String], filter: Option<&str>) -> Result<Self, SelectError> {
        Ok(Self {
            types: Globs::new("types", types)?,
            channels: Globs::new("channels", channels)?,
            filter: filter.filter(|f| !f.trim().is_empty()).map(Filter::parse).transpose()?,
            by_type: Default::default(),
            resolvers: Default::default(),
        })
    }

    /// Also selects what resolves each selected alert, where the catalog knows the pair
    /// ([`crate::resolution`]).
    pub fn with_resolutions(mut self) -> Self {
        let mut resolvers: HashMap<String, Vec<Pair>> = HashMap::new();
        for pair in crate::resolution::pairs().into_iter().filter(|p| self.types.matches(&p.alert)) {
            resolvers.entry(pair.by.clone()).or_default().push(pair);
        }
        self.resolvers = std::sync::Arc::new(resolvers);
        self
    }

    /// Whether an event of `alert` type can be resolved by one this selector follows.
    pub(crate) fn clears(&self, alert: &str) -> bool {
        self.resolvers.values().flatten().any(|p| p.alert == alert)
    }

    /// The alerts an event of `type_name` may clear (none for most types).
    pub(crate) fn resolutions(&self, type_name: &str) -> &[Pair] {
        self.resolvers.get(type_name).map_or(&[], Vec::as_slice)
    }

    /// Whether events of type `name` may be delivered (the dispatch index asks once per type).
    pub(crate) fn type_matches(&self, name: &str) -> bool {
        self.resolvers.contains_key(name) || self.type_chosen(name)
    }

    fn type_chosen(&self, name: &str) -> bool {
        if let Some(v) = self.by_type.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return *v;
        }
        let v = self.types.matches(name);
        let mut cache = self.by_type.write().unwrap_or_else(|p| p.into_inner());
        // Custom type names are tenant-chosen: the cache stays small whatever they publish.
        if cache.len() < 1024 {
            cache.insert(name.to_owned(), v);
        }
        v
    }

    pub(crate) fn channels_match(&self, r: &Record) -> bool {
        self.resolvers.contains_key(r.type_name()) || self.channels_chosen(r)
    }

    fn channels_chosen(&self, r: &Record) -> bool {
        r.routing.channels.iter().any(|c| self.channels.matches(c.as_str()))
    }

    /// Whether `r` is delivered: chosen, or one that may resolve an alert.
    pub fn matches(&self, r: &Record) -> bool {
        self.resolvers.contains_key(r.type_name()) || self.chosen(r)
    }

    /// Whether `r` is chosen by the types, channels and filter themselves.
    pub(crate) fn chosen(&self, r: &Record) -> bool {
        if !self.type_chosen(r.type_name()) || !self.channels_chosen(r) {
            return false;
        }
        match &self.filter {
            None => true,
            Some(f) => {
                let e = &r.event;
                let envelope = [("type", r.type_name()), ("key", &e.key), ("source", &e.source), ("tenant", &e.tenant)];
                f.matches(&envelope, &crate::render::data(r))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(amount: &str) -> Json {
        json!({"orderId": "820982911946154508", "total": {"amount": amount, "currency": "GBP"}, "lineItems": [1, 2]})
    }

    #[test]
    fn conditions_read_typed_fields_money_as_numbers_and_ids_as_written() {
        let large = Filter::parse("total.amount >= 1000").unwrap();
        assert!(large.matches(&[], &order("1000.00")));
        assert!(large.matches(&[], &order("2500.5")));
        assert!(!large.matches(&[], &order("999.99")));
        let both = Filter::parse(r#"total.amount >= 10 && total.currency == "GBP" && lineItems == 2"#).unwrap();
        assert!(both.matches(&[], &order("10")));
        let by_id = Filter::parse(r#"orderId == 820982911946154508"#).unwrap();
        assert!(by_id.matches(&[], &order("1")), "64-bit ids compare exactly");
        let typed = Filter::parse(r#"type == "shopify:order-created""#).unwrap();
        assert!(typed.matches(&[("type", "shopify:order-created")], &json!({})));
        assert!(!large.matches(&[], &json!({"other": 1})), "a missing field is no match");
        assert!(!Filter::parse("total.currency > 3").unwrap().matches(&[], &order("1")), "a type mismatch is no match");
    }

    #[test]
    fn bad_and_impure_expressions_are_refused_with_the_field() {
        for bad in [
            "total.amount >=",
            "total.amount",
            "a = 1",
            "a > 1; b > 2",
            &"(".repeat(40),
            &"a".repeat(MAX_FILTER_LEN + 1),
        ] {
            let e = Filter::parse(bad).unwrap_err();
            assert_eq!(e.field, "filter", "{bad}");
        }
        assert_eq!(Selector::new(&["[".into()], &[], None).unwrap_err().field, "types");
    }

    #[test]
    fn an_alerts_clearing_type_is_delivered_to_people_but_only_chosen_when_selected() {
        use switchyard::proto::v1::{AmazonSyncCompleted, Event, event::Payload};
        let event = Event {
            id: 7,
            tenant: "acme".into(),
            key: "eu".into(),
            payload: Some(Payload::AmazonSyncCompleted(AmazonSyncCompleted::default())),
            ..Default::default()
        };
        let routing = switchyard::validate::route(&event, None).unwrap();
        let completed = Record::new(event, switchyard::names::Tenant::new("acme").unwrap(), routing);
        let alerts = Selector::new(&["amazon:low-stock-alert".into()], &[], None).unwrap().with_resolutions();
        assert!(alerts.matches(&completed), "it may resolve the alert");
        assert!(!alerts.chosen(&completed), "but is not sent for its own sake");
        let everything = Selector::new(&["amazon:*".into()], &[], None).unwrap().with_resolutions();
        assert!(everything.matches(&completed) && everything.chosen(&completed));
        let machines = Selector::new(&["amazon:low-stock-alert".into()], &[], None).unwrap();
        assert!(!machines.matches(&completed), "only people get resolved messages");
    }
}
