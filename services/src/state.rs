//! What a connector must remember across restarts (cursors, rotated refresh tokens, which
//! alerts are raised), one JSON file per connector, replaced atomically so a crash mid-write
//! leaves the previous state, never a torn one.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use std::collections::BTreeSet;

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

/// Where an incremental read of records by creation time stands: the newest creation time seen,
/// and the ids created exactly then. Reading again with `created >= since()` and skipping
/// [`CreationCursor::seen`] neither re-emits a record nor skips one created in the same instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreationCursor {
    created: String,
    at: BTreeSet<String>,
}

impl CreationCursor {
    /// The creation time to read from, or `None` on the first run.
    pub fn since(&self) -> Option<&str> {
        (!self.created.is_empty()).then_some(self.created.as_str())
    }

    /// Whether the record was already handled by an earlier run.
    pub fn seen(&self, created: &str, id: &str) -> bool {
        created == self.created && self.at.contains(id)
    }

    /// Records a handled record. Timestamps compare as strings: platforms send one fixed format.
    pub fn advance(&mut self, created: &str, id: &str) {
        match created.cmp(self.created.as_str()) {
            std::cmp::Ordering::Greater => {
                self.created = created.to_owned();
                self.at = BTreeSet::from([id.to_owned()]);
            }
            std::cmp::Ordering::Equal => {
                self.at.insert(id.to_owned());
            }
            std::cmp::Ordering::Less => {}
        }
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
    fn creation_cursor_skips_only_what_it_saw() {
        let mut c = CreationCursor::default();
        assert_eq!(c.since(), None);
        c.advance("2026-11-20T10:00:00Z", "1");
        c.advance("2026-11-21T10:00:00Z", "2");
        c.advance("2026-11-21T10:00:00Z", "3");
        c.advance("2026-11-19T10:00:00Z", "0");
        assert_eq!(c.since(), Some("2026-11-21T10:00:00Z"));
        assert!(c.seen("2026-11-21T10:00:00Z", "3") && !c.seen("2026-11-21T10:00:00Z", "4"));
        assert!(!c.seen("2026-11-20T10:00:00Z", "1"), "older records are not re-read, so not tracked");
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
