//! What a connector must remember across restarts (cursors, rotated refresh tokens, which
//! alerts are raised), one JSON file per connector, replaced atomically so a crash mid-write
//! leaves the previous state, never a torn one.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path, name: &str) -> Self {
        Self { path: dir.join(format!("{name}.json")) }
    }

    /// The saved state, or the default on first run. A corrupt file is an error, not a reset:
    /// silently starting over would re-emit old orders.
    pub fn load<T: DeserializeOwned + Default>(&self) -> Result<T, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// Writes to a temporary file, fsyncs it, and renames it over the old one.
    pub fn save<T: Serialize>(&self, value: &T) -> Result<(), String> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// Orders already published as facts, with their creation times, kept for as long as a run
/// re-reads them (its periods): a run publishes a fact for every order not in here, whatever
/// order the platform lists them in and however late an order becomes visible.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeenOrders(BTreeMap<String, i64>);

impl SeenOrders {
    pub fn contains(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    pub fn insert(&mut self, id: &str, created: jiff::Timestamp) {
        self.0.insert(id.to_owned(), created.as_second());
    }

    /// Forgets orders created before `from`: no run reads them again.
    pub fn prune(&mut self, from: jiff::Timestamp) {
        self.0.retain(|_, created| *created >= from.as_second());
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Items currently under their threshold, so an alert fires once per crossing, not every run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Crossings(BTreeSet<String>);

impl Crossings {
    /// Replaces the set with `low_now` and returns the items that were not low before.
    pub fn update<T>(&mut self, low_now: Vec<(String, T)>) -> Vec<(String, T)> {
        let entered =
            low_now.iter().filter(|(k, _)| !self.0.contains(k)).map(|(k, _)| k.clone()).collect::<BTreeSet<_>>();
        self.0 = low_now.iter().map(|(k, _)| k.clone()).collect();
        low_now.into_iter().filter(|(k, _)| entered.contains(k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_orders_are_kept_while_a_run_can_read_them() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let mut seen = SeenOrders::default();
        seen.insert("2", t("2026-11-21T10:00:00Z"));
        seen.insert("1", t("2026-11-20T10:00:00Z"));
        assert!(seen.contains("1") && seen.contains("2") && !seen.contains("3"));
        seen.prune(t("2026-11-21T00:00:00Z"));
        assert_eq!((seen.contains("1"), seen.contains("2"), seen.len()), (false, true, 1));
        let mut low = Crossings::default();
        assert_eq!(low.update(vec![("a".to_owned(), 1), ("b".to_owned(), 2)]).len(), 2);
        assert_eq!(low.update(vec![("b".to_owned(), 2), ("c".to_owned(), 3)]), vec![("c".to_owned(), 3)]);
        assert_eq!(low.update(vec![("a".to_owned(), 0)]), vec![("a".to_owned(), 0)], "a crossed again");
    }

    #[test]
    fn round_trip_and_first_run_default() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), "shopify");
        let first: Vec<String> = f.load().unwrap();
        assert!(first.is_empty());
        f.save(&vec!["a".to_owned()]).unwrap();
        assert_eq!(f.load::<Vec<String>>().unwrap(), ["a"]);
        std::fs::write(dir.path().join("shopify.json"), b"{torn").unwrap();
        assert!(f.load::<Vec<String>>().is_err(), "corruption is reported, not reset");
    }
}
