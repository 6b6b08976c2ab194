//! What every node must agree on about credentials: which tickets have been redeemed (a ticket
//! works once, whichever node it is shown to) and which tokens are revoked (refused by every
//! node). A single node keeps both itself; nodes on a JetStream backplane share them through two
//! key-value buckets, so a ticket issued by one node is redeemed once by any, and a revocation
//! made on one node reaches every node's [`Revocations`] within a round trip.
//!
//! Both sets are bounded by what is alive: a redeemed ticket is remembered only while it could
//! still be shown, a revocation only until its token would have expired anyway.

use std::{collections::HashMap, path::PathBuf, sync::Mutex, time::Duration};

use async_nats::jetstream::{self, kv};
use futures::{StreamExt, future::BoxFuture};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::{Revocations, now_secs};

/// Redeemed tickets remembered at most by one node; past it, redemptions wait for room.
pub const MAX_REDEEMED: usize = 100_000;
/// Revocations outstanding at most (tokens revoked and not yet expired).
pub const MAX_REVOKED: usize = 100_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("the credentials ledger is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Full(String),
}

/// One revocation, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revoked {
    pub tenant: String,
    pub jti: String,
    /// When the token expires anyway (Unix seconds): the revocation is forgotten then.
    pub exp: u64,
}

pub trait Ledger: Send + Sync {
    /// Records ticket `nonce` as redeemed until `until` (Unix seconds). False when it already was.
    fn first_use<'a>(&'a self, nonce: &'a str, until: u64) -> BoxFuture<'a, Result<bool, LedgerError>>;
    /// Stores a revocation; every node's [`Revocations`] gets it.
    fn revoke(&self, revoked: Revoked) -> BoxFuture<'_, Result<(), LedgerError>>;
}

/// Remembers redeemed tickets until `until`, at most [`MAX_REDEEMED`].
#[derive(Default)]
struct Redeemed(Mutex<HashMap<String, u64>>);

impl Redeemed {
    fn first_use(&self, nonce: &str, until: u64) -> Result<bool, LedgerError> {
        let mut used = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if used.len() >= MAX_REDEEMED {
            let now = now_secs();
            used.retain(|_, t| *t >= now);
            if used.len() >= MAX_REDEEMED {
                return Err(LedgerError::Full("too many tickets redeemed in the last 30 s; retry shortly".into()));
            }
        }
        Ok(used.insert(nonce.to_owned(), until).is_none())
    }
}

/// One node's ledger: revocations in memory and in a JSON file in the data dir (they survive
/// restarts); redeemed tickets in memory only, so a ticket redeemed in the 30 s before a
/// restart could be shown once more after it.
pub struct LocalLedger {
    redeemed: Redeemed,
    revocations: Revocations,
    file: PathBuf,
    // Serialises writers of the file.
    write: Mutex<()>,
}

impl LocalLedger {
    /// Loads the revocations stored in `file` (if any) into `revocations`.
    pub fn open(file: PathBuf, revocations: Revocations) -> Result<Self, LedgerError> {
        match std::fs::read(&file) {
            Ok(bytes) => {
                let stored: Vec<Revoked> = serde_json::from_slice(&bytes)
                    .map_err(|e| LedgerError::Unavailable(format!("{}: {e}", file.display())))?;
                let now = now_secs();
                for r in stored.into_iter().filter(|r| r.exp > now) {
                    revocations.insert(&r.tenant, &r.jti, r.exp);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LedgerError::Unavailable(format!("{}: {e}", file.display()))),
        }
        Ok(Self { redeemed: Redeemed::default(), revocations, file, write: Mutex::new(()) })
    }

    fn store(&self, r: Revoked) -> Result<(), LedgerError> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        self.revocations.prune(now_secs());
        if self.revocations.len() >= MAX_REVOKED {
            return Err(LedgerError::Full(format!(
                "{MAX_REVOKED} revocations are outstanding; rotate the signing secret instead"
            )));
        }
        self.revocations.insert(&r.tenant, &r.jti, r.exp);
        let all: Vec<Revoked> =
            self.revocations.entries().into_iter().map(|(tenant, jti, exp)| Revoked { tenant, jti, exp }).collect();
        let json = serde_json::to_vec(&all).map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        // Write then rename: a crash leaves the old list or the new one, never half of one.
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &self.file))
            .map_err(|e| LedgerError::Unavailable(format!("{}: {e}", self.file.display())))
    }
}

impl Ledger for LocalLedger {
    fn first_use<'a>(&'a self, nonce: &'a str, until: u64) -> BoxFuture<'a, Result<bool, LedgerError>> {
        Box::pin(async move { self.redeemed.first_use(nonce, until) })
    }

    fn revoke(&self, revoked: Revoked) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async move { self.store(revoked) })
    }
}

/// The cluster's ledger: `<stream>_TICKETS` (a key per redeemed ticket, created only if absent,
/// so exactly one node wins; entries expire after a minute) and `<stream>_REVOKED` (a key per
/// revocation, watched by every node).
pub struct JetStreamLedger {
    tickets: kv::Store,
    revoked: kv::Store,
    revocations: Revocations,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for JetStreamLedger {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

/// KV keys allow few characters and a `jti` can hold any: the key is a digest.
fn revocation_key(tenant: &str, jti: &str) -> String {
    let d = Sha256::new().chain_update(tenant).chain_update([0]).chain_update(jti).finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl JetStreamLedger {
    /// Opens (or creates) the buckets, loads every revocation into `revocations` and keeps
    /// following them.
    pub async fn open(
        js: &jetstream::Context,
        stream: &str,
        replicas: usize,
        revocations: Revocations,
    ) -> Result<Self, LedgerError> {
        let bucket = |name: String, max_age: Duration| kv::Config {
            bucket: name,
            history: 1,
            max_age,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        let tickets = js
            .create_key_value(bucket(format!("{stream}_TICKETS"), Duration::from_secs(120)))
            .await
            .map_err(unavailable)?;
        let revoked =
            js.create_key_value(bucket(format!("{stream}_REVOKED"), Duration::ZERO)).await.map_err(unavailable)?;
        // Watch first, then load: a revocation made in between arrives through the watch.
        let mut watch = revoked.watch_all().await.map_err(unavailable)?;
        let mut keys = revoked.keys().await.map_err(unavailable)?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            if let Some(bytes) = revoked.get(&key).await.map_err(unavailable)? {
                apply(&revocations, &bytes);
            }
        }
        let (store, local) = (revoked.clone(), revocations.clone());
        let watcher = tokio::spawn(async move {
            let mut prune = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    entry = watch.next() => match entry {
                        Some(Ok(e)) if e.operation == kv::Operation::Put => apply(&revocations, &e.value),
                        Some(Ok(_)) => {}
                        Some(Err(error)) => {
                            tracing::warn!(%error, "revocation watch failed; re-watching");
                            // From every key's latest value, not from now: a revocation made while
                            // the watch was down (a leader election, say) must not be missed.
                            match store.watch_with_history(">").await {
                                Ok(w) => watch = w,
                                Err(error) => {
                                    tracing::error!(%error, "cannot watch revocations");
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            }
                        }
                        None => match store.watch_with_history(">").await {
                            Ok(w) => watch = w,
                            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                        },
                    },
                    _ = prune.tick() => {
                        // Every node forgets expired revocations; purging their keys is idempotent.
                        let now = now_secs();
                        for (tenant, jti, exp) in revocations.entries() {
                            if exp <= now {
                                let _ = store.purge(revocation_key(&tenant, &jti)).await;
                            }
                        }
                        revocations.prune(now);
                    }
                }
            }
        });
        Ok(Self { tickets, revoked, revocations: local, watcher })
    }
}

fn apply(revocations: &Revocations, bytes: &[u8]) {
    match serde_json::from_slice::<Revoked>(bytes) {
        Ok(r) if r.exp > now_secs() => revocations.insert(&r.tenant, &r.jti, r.exp),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "unreadable revocation ignored"),
    }
}

impl Ledger for JetStreamLedger {
    fn first_use<'a>(&'a self, nonce: &'a str, _until: u64) -> BoxFuture<'a, Result<bool, LedgerError>> {
        Box::pin(async move {
            match self.tickets.create(nonce, bytes::Bytes::new()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn revoke(&self, revoked: Revoked) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async move {
            self.revocations.prune(now_secs());
            if self.revocations.len() >= MAX_REVOKED {
                return Err(LedgerError::Full(format!(
                    "{MAX_REVOKED} revocations are outstanding; rotate the signing secret instead"
                )));
            }
            let json = serde_json::to_vec(&revoked).map_err(unavailable)?;
            self.revoked.put(revocation_key(&revoked.tenant, &revoked.jti), json.into()).await.map_err(unavailable)?;
            // This node refuses the token at once; the others when the watch brings it.
            self.revocations.insert(&revoked.tenant, &revoked.jti, revoked.exp);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Claims, Principal, Role};

    fn principal(jti: &str) -> Principal {
        let claims = Claims {
            sub: None,
            tenant: "acme".into(),
            channels: vec![],
            role: Role::Subscribe,
            exp: now_secs() + 60,
            nbf: None,
            jti: Some(jti.into()),
        };
        Principal::from_claims(&claims).unwrap()
    }

    #[tokio::test]
    async fn local_revocations_survive_a_reopen_and_expire_with_their_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revoked.json");
        let ledger = LocalLedger::open(file.clone(), Revocations::default()).unwrap();
        let soon = now_secs() + 60;
        ledger.revoke(Revoked { tenant: "acme".into(), jti: "t1".into(), exp: soon }).await.unwrap();
        ledger.revoke(Revoked { tenant: "acme".into(), jti: "gone".into(), exp: now_secs() + 1 }).await.unwrap();
        let reopened = Revocations::default();
        LocalLedger::open(file, reopened.clone()).unwrap();
        assert!(reopened.is_revoked(&principal("t1")));
        assert!(!reopened.is_revoked(&principal("t2")));
        reopened.prune(now_secs() + 2);
        assert_eq!(reopened.entries(), vec![("acme".to_owned(), "t1".to_owned(), soon)]);
    }

    #[tokio::test]
    async fn a_ticket_nonce_is_used_once_and_the_set_is_bounded() {
        let ledger = LocalLedger::open(std::env::temp_dir().join("unused.json"), Revocations::default()).unwrap();
        let until = now_secs() + 30;
        assert!(ledger.first_use("n1", until).await.unwrap());
        assert!(!ledger.first_use("n1", until).await.unwrap());
        // Full of live nonces: refused (retry), not grown.
        let r = Redeemed::default();
        r.0.lock().unwrap().extend((0..MAX_REDEEMED).map(|i| (i.to_string(), until)));
        assert!(matches!(r.first_use("x", until), Err(LedgerError::Full(_))));
        // Full of expired ones: they make room.
        r.0.lock().unwrap().values_mut().for_each(|t| *t = 0);
        assert!(r.first_use("x", until).unwrap());
        assert_eq!(r.0.lock().unwrap().len(), 1);
    }
}
