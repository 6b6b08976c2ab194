//! Committed records to the deliverers that want them, from the log's feed: one lookup by
//! tenant and type per record, then a bounded queue per interested endpoint. An endpoint that
//! selects nothing being published costs nothing per event; one whose queue is full is marked
//! lagged and catches up from the log (so a slow receiver never holds the commit path).

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use switchyard::log::Record;
use tokio::sync::mpsc;

use crate::filter::Selector;

/// Records queued per endpoint before it is marked lagged.
const QUEUE: usize = 8192;
/// Type names whose verdicts a tenant's routes remember (custom types are tenant-chosen).
const MAX_TYPES: usize = 1024;

struct Route {
    key: u64,
    selector: Selector,
    tx: mpsc::Sender<Arc<Record>>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Routes {
    routes: Vec<Route>,
    /// Which routes want a type, by type name.
    by_type: RwLock<HashMap<String, Arc<[usize]>>>,
}

impl Routes {
    fn wanting(&self, type_name: &str) -> Arc<[usize]> {
        if let Some(w) = self.by_type.read().unwrap_or_else(|p| p.into_inner()).get(type_name) {
            return w.clone();
        }
        let w: Arc<[usize]> = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.selector.type_matches(type_name))
            .map(|(i, _)| i)
            .collect();
        let mut cache = self.by_type.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() < MAX_TYPES {
            cache.insert(type_name.to_owned(), w.clone());
        }
        w
    }
}

/// The feed's side: every tenant's routes. Built before the log, fed by it.
#[derive(Default)]
pub struct Dispatch {
    tenants: RwLock<HashMap<String, Routes>>,
    next: AtomicU64,
}

/// A deliverer's side: its queue and lag flag; dropping it removes the route.
pub(crate) struct Registration {
    pub rx: mpsc::Receiver<Arc<Record>>,
    pub lagged: Arc<AtomicBool>,
    dispatch: Arc<Dispatch>,
    tenant: String,
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut tenants = self.dispatch.tenants.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tenants.get_mut(&self.tenant) {
            t.routes.retain(|r| r.key != self.key);
            t.by_type.get_mut().unwrap_or_else(|p| p.into_inner()).clear();
            if t.routes.is_empty() {
                tenants.remove(&self.tenant);
            }
        }
    }
}

impl Dispatch {
    /// The log's feed calls this with every committed batch, in id order.
    pub fn committed(&self, records: &[Arc<Record>]) {
        let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        if tenants.is_empty() {
            return;
        }
        for r in records {
            let Some(t) = tenants.get(r.tenant.as_str()) else { continue };
            for &i in t.wanting(r.type_name()).iter() {
                let route = &t.routes[i];
                if route.selector.channels_match(r) && route.tx.try_send(r.clone()).is_err() {
                    route.lagged.store(true, Ordering::Release);
                }
            }
        }
    }

    pub(crate) fn register(self: &Arc<Self>, tenant: &str, selector: Selector) -> Registration {
        let (tx, rx) = mpsc::channel(QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let mut tenants = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        let t = tenants.entry(tenant.to_owned()).or_default();
        t.routes.push(Route { key, selector, tx, lagged: lagged.clone() });
        t.by_type.get_mut().unwrap_or_else(|p| p.into_inner()).clear();
        Registration { rx, lagged, dispatch: self.clone(), tenant: tenant.to_owned(), key }
    }
}
