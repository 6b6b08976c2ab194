//! The HS256 signing secret: read from the configured file, or generated on
//! first run into the data dir (mode 0600), so `serve` needs no configuration
//! and auth is still on. Its bytes are never logged.

use std::{io::Write, path::Path};
pub use switchyard::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("secret file {path} is shorter than 32 bytes")]
    TooShort { path: String },
}

pub fn load_or_create(path: &Path) -> Result<Vec<u8>, SecretError> {
    let io = |source| SecretError::Io { path: path.display().to_string(), source };
    match std::fs::read(path) {
        Ok(bytes) => {
            let trimmed = bytes.trim_ascii().to_vec();
            if trimmed.len() < 32 {
                return Err(SecretError::TooShort { path: path.display().to_string() });
            }
            Ok(trimmed)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let secret = format!("{}{}", switchyard::auth::random_id(), switchyard::auth::random_id());
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            match opts.open(path) {
                Ok(mut f) => {
                    f.write_all(secret.as_bytes()).map_err(io)?;
                    f.sync_all().map_err(io)?;
                    tracing::info!(path = %path.display(), "generated a new token signing secret");
                    Ok(secret.into_bytes())
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(path),
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.key");
        let a = super::load_or_create(&path).unwrap();
        let b = super::load_or_create(&path).unwrap();
        assert_eq!(a, b);
        assert!(a.len() >= 32);
        std::fs::write(&path, "short").unwrap();
        assert!(super::load_or_create(&path).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = super::Secret::from("shpss_super_secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", vec![s.clone()]), "[Secret(***)]");
        assert_eq!(s.as_bytes(), b"shpss_super_secret");
    }
}
