//! Small durable records kept beside the history, in the same store: what a durable
//! subscriber of the bus's own (an outbound endpoint) must not lose across a crash: its
//! definition, its cursor, the events it still owes.
//!
//! Why not a file of its own: the cursor is only meaningful against the history it points
//! into, so it lives and is backed up where the history is (a table in the redb file; a
//! JetStream KV bucket on a cluster, where any node may take a subscriber over). Three
//! backends: [`RedbKv`], [`JetStreamKv`] and [`MemoryKv`] (tools and tests).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, kv};
use futures::{StreamExt, future::BoxFuture};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

use super::LogError;

/// Writes (`Some`) and deletes (`None`) made together.
pub type Writes = Vec<(String, Option<Vec<u8>>)>;

/// Keys with their values, in key order.
pub type Rows = Vec<(String, Vec<u8>)>;

/// Keys are `[A-Za-z0-9_.=-]` (what every backend can hold); callers build them from ids.
pub trait Kv: Send + Sync + 'static {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, LogError>>;
    /// Every key starting with `prefix`, in key order, with its value.
    fn scan(&self, prefix: &str) -> BoxFuture<'_, Result<Rows, LogError>>;
    /// Applies `writes` durably; concurrent commits share one sync where the backend can. The
    /// embedded store applies them atomically; JetStream one key at a time, in order.
    fn commit(&self, writes: Writes) -> BoxFuture<'_, Result<(), LogError>>;
    /// Takes or renews the lease `name` for `holder` for `ttl`; `true` when `holder` holds it
    /// afterwards. A holder that stops renewing loses it after `ttl`. A backend with one
    /// process (the embedded store's file is locked) grants every claim.
    fn lease(&self, name: &str, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<bool, LogError>>;
}

/// A [`Kv`] in memory: nothing survives the process.
#[derive(Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
    leases: Mutex<HashMap<String, (String, Instant)>>,
}

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, LogError>> {
        let v = self.map.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned();
        Box::pin(async move { Ok(v) })
    }

    fn scan(&self, prefix: &str) -> BoxFuture<'_, Result<Rows, LogError>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let found = map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn commit(&self, writes: Writes) -> BoxFuture<'_, Result<(), LogError>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in writes {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Box::pin(async { Ok(()) })
    }

    fn lease(&self, name: &str, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<bool, LogError>> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let held = match leases.get(name) {
            Some((h, until)) if h != holder && *until > now => false,
            _ => {
                leases.insert(name.to_owned(), (holder.to_owned(), now + ttl));
                true
            }
        };
        Box::pin(async move { Ok(held) })
    }
}

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

type Commit = (Writes, oneshot::Sender<Result<(), LogError>>);

/// The embedded store's records: a table in the log's redb file. One thread applies commits;
/// whatever queued while it synced goes in its next transaction, so many subscribers' progress
/// shares one fsync. The last clone to drop stops the thread and waits for it, so the file is
/// released (and can be opened again) when it returns.
#[derive(Clone)]
pub struct RedbKv(Arc<RedbInner>);

struct RedbInner {
    db: Arc<Database>,
    commits: Mutex<Option<mpsc::Sender<Commit>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for RedbInner {
    fn drop(&mut self) {
        drop(self.commits.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl RedbKv {
    pub fn new(db: Arc<Database>) -> Result<Self, LogError> {
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(KV).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let (commits, rx) = mpsc::channel::<Commit>();
        let writer = db.clone();
        let thread = std::thread::Builder::new()
            .name("switchyard-kv-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let result = Self::apply(&writer, batch.iter().flat_map(|(w, _)| w.iter()));
                    for (_, done) in batch {
                        let _ = done.send(result.clone());
                    }
                }
            })
            .map_err(storage)?;
        Ok(Self(Arc::new(RedbInner { db, commits: Mutex::new(Some(commits)), thread: Mutex::new(Some(thread)) })))
    }

    fn apply<'a>(db: &Database, writes: impl Iterator<Item = &'a (String, Option<Vec<u8>>)>) -> Result<(), LogError> {
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        {
            let mut table = txn.open_table(KV).map_err(storage)?;
            for (k, v) in writes {
                match v {
                    Some(v) => table.insert(k.as_str(), v.as_slice()).map(drop),
                    None => table.remove(k.as_str()).map(drop),
                }
                .map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    fn read<R>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&str, &[u8]>) -> Result<R, redb::StorageError>,
    ) -> Result<R, LogError> {
        let txn = self.0.db.begin_read().map_err(storage)?;
        let table = txn.open_table(KV).map_err(storage)?;
        f(&table).map_err(storage)
    }
}

impl Kv for RedbKv {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, LogError>> {
        let found = self.read(|t| Ok(t.get(key)?.map(|v| v.value().to_vec())));
        Box::pin(async move { found })
    }

    fn scan(&self, prefix: &str) -> BoxFuture<'_, Result<Rows, LogError>> {
        let found = self.read(|t| {
            let mut out = Vec::new();
            for row in t.range(prefix..)? {
                let (k, v) = row?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        });
        Box::pin(async move { found })
    }

    fn commit(&self, writes: Writes) -> BoxFuture<'_, Result<(), LogError>> {
        let (done, applied) = oneshot::channel();
        let sent = match self.0.commits.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(c) => c.send((writes, done)).map_err(drop),
            None => Err(()),
        };
        Box::pin(async move {
            sent.map_err(|_| LogError::Closed)?;
            applied.await.map_err(|_| LogError::Closed)?
        })
    }

    fn lease(&self, _name: &str, _holder: &str, _ttl: Duration) -> BoxFuture<'_, Result<bool, LogError>> {
        Box::pin(async { Ok(true) })
    }
}

/// The cluster's records: a KV bucket `<stream>_OUTBOUND` replicated like the stream. A lease
/// is a key holding its holder and expiry, changed only by compare-and-set on its revision, so
/// two nodes never both take it.
#[derive(Clone)]
pub struct JetStreamKv {
    store: kv::Store,
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Lease {
    holder: String,
    until_ms: u64,
}

impl JetStreamKv {
    pub async fn open(js: &jetstream::Context, stream: &str, replicas: usize) -> Result<Self, LogError> {
        let config = kv::Config {
            bucket: format!("{stream}_OUTBOUND"),
            history: 1,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        Ok(Self { store: js.create_key_value(config).await.map_err(unavailable)? })
    }
}

impl Kv for JetStreamKv {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, LogError>> {
        let key = key.to_owned();
        Box::pin(async move { Ok(self.store.get(key).await.map_err(unavailable)?.map(|b| b.to_vec())) })
    }

    fn scan(&self, prefix: &str) -> BoxFuture<'_, Result<Rows, LogError>> {
        let prefix = prefix.to_owned();
        Box::pin(async move {
            let mut keys: Vec<String> = Vec::new();
            let mut all = self.store.keys().await.map_err(unavailable)?;
            while let Some(k) = all.next().await {
                let k = k.map_err(unavailable)?;
                if k.starts_with(&prefix) {
                    keys.push(k);
                }
            }
            keys.sort();
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                if let Some(v) = self.store.get(&k).await.map_err(unavailable)? {
                    out.push((k, v.to_vec()));
                }
            }
            Ok(out)
        })
    }

    fn commit(&self, writes: Writes) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            for (k, v) in writes {
                match v {
                    Some(v) => self.store.put(&k, v.into()).await.map(drop).map_err(unavailable)?,
                    None => self.store.purge(&k).await.map_err(unavailable)?,
                }
            }
            Ok(())
        })
    }

    fn lease(&self, name: &str, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<bool, LogError>> {
        let key = format!("lease.{name}");
        let holder = holder.to_owned();
        Box::pin(async move {
            let now = super::now_ms();
            let value = serde_json::to_vec(&Lease { holder: holder.clone(), until_ms: now + ttl.as_millis() as u64 })
                .map_err(storage)?;
            let current = self.store.entry(&key).await.map_err(unavailable)?;
            let taken = match current.filter(|e| e.operation == kv::Operation::Put) {
                None => self.store.create(&key, value.into()).await.is_ok(),
                Some(e) => {
                    let lease: Option<Lease> = serde_json::from_slice(&e.value).ok();
                    let free = lease.is_none_or(|l| l.holder == holder || l.until_ms <= now);
                    free && self.store.update(&key, value.into(), e.revision).await.is_ok()
                }
            };
            Ok(taken)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_scans_by_prefix_and_leases_exclude_others_until_they_lapse() {
        let kv = MemoryKv::default();
        let w = |k: &str, v: &str| (k.to_owned(), Some(v.as_bytes().to_vec()));
        kv.commit(vec![w("a.1", "x"), w("a.2", "y"), w("b.1", "z")]).await.unwrap();
        kv.commit(vec![("a.2".into(), None)]).await.unwrap();
        let found = kv.scan("a.").await.unwrap();
        assert_eq!(found, vec![("a.1".to_owned(), b"x".to_vec())]);
        assert!(kv.lease("ep", "n1", Duration::from_millis(50)).await.unwrap());
        assert!(!kv.lease("ep", "n2", Duration::from_millis(50)).await.unwrap());
        assert!(kv.lease("ep", "n1", Duration::from_millis(50)).await.unwrap(), "the holder renews");
        std::thread::sleep(Duration::from_millis(60));
        assert!(kv.lease("ep", "n2", Duration::from_millis(50)).await.unwrap(), "a lapsed lease is taken");
    }

    #[tokio::test]
    async fn redb_commits_concurrently_and_keeps_them_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        {
            let kv = RedbKv::new(Arc::new(Database::create(&path).unwrap())).unwrap();
            let commits = (0..50).map(|i| kv.commit(vec![(format!("q.{i:03}"), Some(vec![i as u8]))]));
            futures::future::try_join_all(commits).await.unwrap();
            kv.commit(vec![("q.007".into(), None), ("p.1".into(), Some(b"x".to_vec()))]).await.unwrap();
        }
        let kv = RedbKv::new(Arc::new(Database::create(&path).unwrap())).unwrap();
        let q = kv.scan("q.").await.unwrap();
        assert_eq!(q.len(), 49);
        assert_eq!(q[0], ("q.000".to_owned(), vec![0]));
        assert_eq!(kv.get("q.007").await.unwrap(), None);
        assert_eq!(kv.get("p.1").await.unwrap(), Some(b"x".to_vec()));
    }
}
