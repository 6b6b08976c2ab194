//! What every node must agree on about credentials: which tickets have been redeemed (a ticket
//! works once, whichever node it is shown to) and which tokens are revoked (refused by every
//! node). A single node keeps both itself; nodes on a JetStream backplane share them through two
//! key-value buckets, so a ticket issued by one node is redeemed once by any, and a revocation
//! made on one node reaches every node's [`Revocations`] within a round trip.
//!
//! Both sets are bounded by what is alive: a redeemed ticket is remembered only while it could
//! still be shown, a revocation only until its token would have expired anyway.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, kv};
use futures::{StreamExt, future::BoxFuture};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::{MAX_TOKEN_LIFETIME_SECS, Revocations, now_secs};

/// Redeemed tickets remembered at most by one node, all tenants together...
pub const MAX_REDEEMED: usize = 100_000;
/// ...and per tenant, so one tenant redeeming tickets as fast as it can never fills the set for
/// the others. Past either, redemptions wait for room (tickets live 30 s).
pub const MAX_REDEEMED_PER_TENANT: usize = 10_000;
/// Revocations outstanding at most (tokens revoked and not yet expired), all tenants together...
pub const MAX_REVOKED: usize = 100_000;
/// ...and per tenant.
pub const MAX_REVOKED_PER_TENANT: usize = 10_000;

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

impl Revoked {
    /// A revocation kept no longer than any token can live: `exp` past the longest token
    /// lifetime is brought back to it, so a revocation cannot be made to outlive every token.
    pub fn new(tenant: String, jti: String, exp: u64) -> Self {
        Self { tenant, jti, exp: exp.min(now_secs() + MAX_TOKEN_LIFETIME_SECS) }
    }
}

pub trait Ledger: Send + Sync {
    /// Records `tenant`'s ticket `nonce` as redeemed until `until` (Unix seconds). False when it
    /// already was.
    fn first_use<'a>(&'a self, tenant: &'a str, nonce: &'a str, until: u64)
    -> BoxFuture<'a, Result<bool, LedgerError>>;
    /// Stores a revocation; every node's [`Revocations`] gets it.
    fn revoke(&self, revoked: Revoked) -> BoxFuture<'_, Result<(), LedgerError>>;
}

/// Redeemed tickets, per tenant, each until its `until`: at most [`MAX_REDEEMED_PER_TENANT`] a
/// tenant and [`MAX_REDEEMED`] in all. Expired ones are forgotten from the front of each
/// tenant's queue (tickets expire in about the order they were redeemed), so a redemption costs
/// what it forgets, never a scan.
#[derive(Default)]
struct Redeemed(Mutex<RedeemedSets>);

#[derive(Default)]
struct RedeemedSets {
    total: usize,
    tenants: HashMap<String, Used>,
}

#[derive(Default)]
struct Used {
    nonces: HashSet<String>,
    order: VecDeque<(u64, String)>,
}

impl Used {
    /// Forgets what expired before `now`; how many.
    fn forget(&mut self, now: u64) -> usize {
        let mut n = 0;
        while self.order.front().is_some_and(|(until, _)| *until < now) {
            if let Some((_, nonce)) = self.order.pop_front() {
                self.nonces.remove(&nonce);
                n += 1;
            }
        }
        n
    }
}

impl Redeemed {
    fn first_use(&self, tenant: &str, nonce: &str, until: u64) -> Result<bool, LedgerError> {
        let mut sets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_secs();
        let sets = &mut *sets;
        let used = sets.tenants.entry(tenant.to_owned()).or_default();
        sets.total -= used.forget(now);
        if used.nonces.contains(nonce) {
            return Ok(false);
        }
        if used.nonces.len() >= MAX_REDEEMED_PER_TENANT {
            return Err(LedgerError::Full(format!(
                "this tenant redeemed {MAX_REDEEMED_PER_TENANT} tickets in the last 30 s; retry shortly"
            )));
        }
        if sets.total >= MAX_REDEEMED {
            let mut forgotten = 0;
            sets.tenants.retain(|_, u| {
                forgotten += u.forget(now);
                !u.nonces.is_empty()
            });
            sets.total -= forgotten;
            if sets.total >= MAX_REDEEMED {
                return Err(LedgerError::Full("too many tickets redeemed in the last 30 s; retry shortly".into()));
            }
        }
        let used = sets.tenants.entry(tenant.to_owned()).or_default();
        used.nonces.insert(nonce.to_owned());
        used.order.push_back((until, nonce.to_owned()));
        sets.total += 1;
        Ok(true)
    }
}

/// Whether `r` fits: prunes what expired, then checks the per-tenant and total caps.
/// Expired revocations are pruned only when a cap is reached: a revocation costs a few lookups,
/// not a pass over every one outstanding.
fn room_for(revocations: &Revocations, r: &Revoked) -> Result<(), LedgerError> {
    let full = || revocations.count(&r.tenant) >= MAX_REVOKED_PER_TENANT || revocations.len() >= MAX_REVOKED;
    if full() {
        revocations.prune(now_secs());
    }
    if revocations.count(&r.tenant) >= MAX_REVOKED_PER_TENANT {
        return Err(LedgerError::Full(format!(
            "{MAX_REVOKED_PER_TENANT} revocations are outstanding for this tenant; they end as their tokens expire"
        )));
    }
    if revocations.len() >= MAX_REVOKED {
        return Err(LedgerError::Full(format!(
            "{MAX_REVOKED} revocations are outstanding; rotate the signing secret instead"
        )));
    }
    Ok(())
}

/// One node's ledger: revocations in memory and in a file in the data dir (they survive
/// restarts); redeemed tickets in memory only, so a ticket redeemed in the 30 s before a
/// restart could be shown once more after it.
///
/// The file is one JSON revocation a line, appended (and synced) per revocation on a blocking
/// thread, never rewritten whole on the async runtime; it is compacted to the live entries on
/// open and when it holds more than twice as many lines as are live.
pub struct LocalLedger {
    redeemed: Redeemed,
    revocations: Revocations,
    /// An async lock, taken before the blocking write is started: a flood of revocations waits
    /// here, not in a blocking thread each.
    file: Arc<tokio::sync::Mutex<RevocationFile>>,
}

struct RevocationFile {
    path: PathBuf,
    /// Lines in the file now.
    lines: usize,
}

impl RevocationFile {
    /// Rewrites the file with `live` only: write then rename, so a crash leaves the old file or
    /// the new one, never half of one.
    fn compact(&mut self, live: &[Revoked]) -> std::io::Result<()> {
        let mut text = Vec::new();
        for r in live {
            serde_json::to_writer(&mut text, r)?;
            text.push(b'\n');
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path))?;
        self.lines = live.len();
        Ok(())
    }

    fn append(&mut self, r: &Revoked) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(&line)?;
        f.sync_data()?;
        self.lines += 1;
        Ok(())
    }
}

fn live(revocations: &Revocations) -> Vec<Revoked> {
    revocations.entries().into_iter().map(|(tenant, jti, exp)| Revoked { tenant, jti, exp }).collect()
}

impl LocalLedger {
    /// Loads the revocations stored in `file` (if any: a line each, or the JSON array earlier
    /// versions wrote) into `revocations`, and compacts the file to those still live.
    pub fn open(file: PathBuf, revocations: Revocations) -> Result<Self, LedgerError> {
        let unreadable = |e: &dyn std::fmt::Display| LedgerError::Unavailable(format!("{}: {e}", file.display()));
        let stored: Vec<Revoked> = match std::fs::read(&file) {
            Ok(bytes) if bytes.trim_ascii_start().starts_with(b"[") => {
                serde_json::from_slice(&bytes).map_err(|e| unreadable(&e))?
            }
            Ok(bytes) => serde_json::Deserializer::from_slice(&bytes)
                .into_iter::<Revoked>()
                .collect::<Result<_, _>>()
                .map_err(|e| unreadable(&e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(unreadable(&e)),
        };
        let now = now_secs();
        for r in stored.into_iter().filter(|r| r.exp > now) {
            revocations.insert(&r.tenant, &r.jti, r.exp.min(now + MAX_TOKEN_LIFETIME_SECS));
        }
        let mut f = RevocationFile { path: file.clone(), lines: 0 };
        if file.exists() {
            f.compact(&live(&revocations)).map_err(|e| unreadable(&e))?;
        }
        Ok(Self { redeemed: Redeemed::default(), revocations, file: Arc::new(tokio::sync::Mutex::new(f)) })
    }

    async fn store(&self, r: Revoked) -> Result<(), LedgerError> {
        // One writer at a time: the caps are checked and the line appended under the lock.
        let mut f = self.file.clone().lock_owned().await;
        let revocations = self.revocations.clone();
        tokio::task::spawn_blocking(move || {
            room_for(&revocations, &r)?;
            let path = f.path.display().to_string();
            let failed = |e: std::io::Error| LedgerError::Unavailable(format!("{path}: {e}"));
            f.append(&r).map_err(failed)?;
            revocations.insert(&r.tenant, &r.jti, r.exp);
            if f.lines > 2 * revocations.len() + 1_000 {
                f.compact(&live(&revocations)).map_err(failed)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| LedgerError::Unavailable(e.to_string()))?
    }
}

impl Ledger for LocalLedger {
    fn first_use<'a>(
        &'a self,
        tenant: &'a str,
        nonce: &'a str,
        until: u64,
    ) -> BoxFuture<'a, Result<bool, LedgerError>> {
        Box::pin(async move { self.redeemed.first_use(tenant, nonce, until) })
    }

    fn revoke(&self, revoked: Revoked) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(self.store(revoked))
    }
}

/// The cluster's ledger: `<stream>_TICKETS` (a key per redeemed ticket, created only if absent,
/// so exactly one node wins; entries expire after a minute) and `<stream>_REVOKED` (a key per
/// revocation, watched by every node).
pub struct JetStreamLedger {
    /// This node's count of what it redeemed, for the per-tenant and total caps.
    redeemed: Redeemed,
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
        let watch = revoked.watch_all().await.map_err(unavailable)?;
        let mut keys = revoked.keys().await.map_err(unavailable)?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            if let Some(bytes) = revoked.get(&key).await.map_err(unavailable)? {
                apply(&revocations, &bytes);
            }
        }
        let (store, local) = (revoked.clone(), revocations.clone());
        let watcher = tokio::spawn(follow(store, watch, revocations));
        Ok(Self { redeemed: Redeemed::default(), tickets, revoked, revocations: local, watcher })
    }
}

/// Keeps `revocations` following the bucket: every put applied, the watch re-made from every
/// key's latest value when it fails (nothing revoked meanwhile is missed), and expired entries
/// forgotten (and purged) every minute.
async fn follow(store: kv::Store, mut watch: kv::Watch, revocations: Revocations) {
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
}

fn apply(revocations: &Revocations, bytes: &[u8]) {
    match serde_json::from_slice::<Revoked>(bytes) {
        Ok(r) if r.exp > now_secs() => revocations.insert(&r.tenant, &r.jti, r.exp),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "unreadable revocation ignored"),
    }
}

impl Ledger for JetStreamLedger {
    fn first_use<'a>(
        &'a self,
        tenant: &'a str,
        nonce: &'a str,
        until: u64,
    ) -> BoxFuture<'a, Result<bool, LedgerError>> {
        Box::pin(async move {
            // Seen here before, or past this node's caps: no need to ask the cluster.
            if !self.redeemed.first_use(tenant, nonce, until)? {
                return Ok(false);
            }
            match self.tickets.create(nonce, bytes::Bytes::new()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn revoke(&self, revoked: Revoked) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async move {
            room_for(&self.revocations, &revoked)?;
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
    async fn revocations_are_capped_per_tenant_clamped_to_a_token_lifetime_and_appended() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revoked.json");
        // The array earlier versions wrote is read, then the file becomes a line each.
        let old = vec![Revoked { tenant: "acme".into(), jti: "old".into(), exp: now_secs() + 60 }];
        std::fs::write(&file, serde_json::to_vec(&old).unwrap()).unwrap();
        let revocations = Revocations::default();
        let ledger = LocalLedger::open(file.clone(), revocations.clone()).unwrap();
        assert!(revocations.is_revoked(&principal("old")));
        let far = Revoked::new("acme".into(), "far".into(), u64::MAX);
        assert!(far.exp <= now_secs() + MAX_TOKEN_LIFETIME_SECS, "clamped");
        ledger.revoke(far).await.unwrap();
        ledger.revoke(Revoked::new("flood".into(), "first".into(), now_secs() + 60)).await.unwrap();
        // (The rest of the flood straight into memory: ten thousand fsyncs would only be slow.)
        for i in 1..MAX_REVOKED_PER_TENANT {
            revocations.insert("flood", &i.to_string(), now_secs() + 60);
        }
        let refused = ledger.revoke(Revoked::new("flood".into(), "one more".into(), now_secs() + 60)).await;
        assert!(matches!(refused, Err(LedgerError::Full(_))), "{refused:?}");
        ledger.revoke(Revoked::new("acme".into(), "t3".into(), now_secs() + 60)).await.expect("another tenant's");
        let lines: Vec<Revoked> =
            std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let jtis: Vec<&str> = lines.iter().map(|r| r.jti.as_str()).collect();
        assert_eq!(jtis, ["old", "far", "first", "t3"], "compacted on open, then appended a line each");
        let reopened = Revocations::default();
        LocalLedger::open(file, reopened.clone()).unwrap();
        assert_eq!(reopened.len(), 4);
    }

    #[tokio::test]
    async fn a_ticket_nonce_is_used_once_and_the_set_is_bounded() {
        let ledger = LocalLedger::open(std::env::temp_dir().join("unused.json"), Revocations::default()).unwrap();
        let until = now_secs() + 30;
        assert!(ledger.first_use("acme", "n1", until).await.unwrap());
        assert!(!ledger.first_use("acme", "n1", until).await.unwrap());
        // One tenant at its cap of live nonces: refused (retry), not grown; another is served.
        let r = Redeemed::default();
        for i in 0..MAX_REDEEMED_PER_TENANT {
            assert!(r.first_use("flood", &i.to_string(), until).unwrap());
        }
        assert!(matches!(r.first_use("flood", "x", until), Err(LedgerError::Full(_))));
        assert!(r.first_use("acme", "x", until).unwrap(), "another tenant still redeems");
        // Expired ones make room, forgotten from the front.
        let r = Redeemed::default();
        for i in 0..MAX_REDEEMED_PER_TENANT {
            r.first_use("flood", &i.to_string(), now_secs() - 1).unwrap();
        }
        assert!(r.first_use("flood", "y", until).unwrap());
        assert_eq!(r.0.lock().unwrap().total, 1);
    }
}
