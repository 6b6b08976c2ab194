//! What a connector must remember across restarts (cursors, rotated refresh tokens, which
//! alerts are raised), one JSON file per connector, replaced atomically so a crash mid-write
//! leaves the previous state, never a torn one.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};

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

#[cfg(test)]
mod tests {
    use super::*;

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
