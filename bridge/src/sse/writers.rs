//! The SSE writers: the live part of every SSE stream is written by one of a few writer tasks
//! (one per core), not by a task per stream. They own the sockets of the direct HTTP/1 path,
//! and fill a [`Pipe`] to hyper's response body for HTTP/2 and TLS streams.
//!
//! Why: at fan-out rates a delivery cost far more in the machinery around the write than in
//! the write: per subscriber and per event a task wake-up, a ring receive, two stream
//! generators and a `select!` (a profile at 2 M deliveries/s put half the server's CPU there).
//! A writer takes each committed batch from the hub once, hands each record to the streams
//! that want it (grouped by the ring stream they read, so a record costs one lookup per group,
//! not a check per socket), queues the shared frames (`Bytes`, never copied) per socket and
//! writes each socket's queue with one vectored write per batch.
//!
//! A stream comes here only at its live seam ([`switchyard::subscription::Item::Live`]):
//! opening, replay, state and gap healing stay in `sse::open_stream`. The handed-over ring
//! receiver, subscribed before the replay began, is drained after the writer's own ring is
//! subscribed, so nothing falls between the two and ids drop the overlap. Everything else
//! is what `sse` does, with its code (`stream`: `render`, `Session`, `ending`): heartbeats, expiry and
//! revocation on the shared pulse, coalescing, eviction with a reason (a socket a ring's worth
//! of frames behind, or a writer a whole ring behind), close on the client's EOF, and the
//! stall limit.

use std::{
    collections::{HashMap, VecDeque},
    io::{self, IoSlice},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use bytes::{Buf, Bytes};
use switchyard::{
    auth::Standing,
    coalesce::Coalescer,
    hub::{Hub, Receiver},
    log::{Record, Stream},
    names::EventId,
    subscription::{self, Filter, Item, Keep, Live},
};
use tokio::{
    net::TcpStream,
    sync::{
        Notify,
        broadcast::error::{RecvError, TryRecvError},
        mpsc, watch,
    },
    time::Instant,
};

use crate::{
    http::limits,
    sse::pipe::{self, Pipe},
    sse::pulse::Pulse,
    sse::stream::{self, Session},
};

/// Frames a socket may have waiting before it is evicted: a ring's worth, as a stream
/// reading its own ring would be.
const MAX_QUEUED: usize = switchyard::hub::DEFAULT_RING;
/// Frames per vectored write.
const IOV: usize = 64;
/// Records taken from the ring in one turn before anything else is looked at.
const BATCH: usize = 1024;

/// A direct SSE connection's socket, with what the listener attached to it.
pub struct Wire {
    pub tcp: TcpStream,
    /// A socket whose writes make no progress for this long is closed.
    pub stall: Duration,
    /// Held as long as the socket is open (its place among the listener's open connections).
    pub keep: Option<Keep>,
}

/// A connection a writer can take over: the socket below it.
pub trait IntoWire {
    fn into_wire(self) -> Wire;
}

/// Where a writer puts a stream's frames.
pub enum Sink {
    /// The socket itself (the direct HTTP/1 path).
    Socket(Wire),
    /// A pipe to the response body hyper sends (HTTP/2 and TLS, which hyper frames and encrypts),
    /// closed after `stall` without room.
    Body(Pipe, Duration),
}

/// An SSE stream at its live seam: what `sse::open_stream` hands over.
pub struct Handed {
    pub live: Box<Live>,
    pub session: Session,
    pub quiet: bool,
    pub floor: Option<EventId>,
    pub standing: Standing,
    pub beat: Bytes,
    pub slot: limits::Slot,
}

/// The writer tasks, started on first use, one per core. Streams are dealt to them in turn.
pub struct Writers {
    /// What every writer needs: committed records and the shared pulse.
    hub: Hub,
    pulse: watch::Receiver<Pulse>,
    // Unbounded: what waits here is connections already admitted and counted by the limits.
    shards: OnceLock<Vec<mpsc::UnboundedSender<(Sink, Handed)>>>,
    next: AtomicUsize,
    /// Streams the writers write now.
    streams: Arc<AtomicUsize>,
}

impl Writers {
    pub fn new(hub: Hub, pulse: watch::Receiver<Pulse>) -> Self {
        Self { hub, pulse, shards: OnceLock::new(), next: AtomicUsize::new(0), streams: Arc::default() }
    }

    /// Takes a direct stream over; it is written until it ends, then its socket is closed.
    pub fn take(&self, wire: Wire, handed: Handed) {
        self.deal(Sink::Socket(wire), handed);
    }

    /// Takes a stream hyper sends over: the returned body yields its frames until it ends.
    /// A body with no room for `stall` (the client stopped reading) is ended.
    pub fn take_body(&self, handed: Handed, stall: Duration) -> pipe::Body {
        let (pipe, body) = pipe::pipe();
        self.deal(Sink::Body(pipe, stall), handed);
        body
    }

    fn deal(&self, sink: Sink, handed: Handed) {
        let shards = self.shards.get_or_init(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            (0..n)
                .map(|_| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(Shard::new(self).run(rx));
                    tx
                })
                .collect()
        });
        let i = self.next.fetch_add(1, Ordering::Relaxed) % shards.len();
        // A writer that is gone (runtime shutting down) drops the stream, closing it.
        let _ = shards[i].send((sink, handed));
    }

    /// Writer tasks running, and the live streams they own.
    pub fn counts(&self) -> (usize, usize) {
        (self.shards.get().map_or(0, Vec::len), self.streams.load(Ordering::Relaxed))
    }
}

/// Sockets that woke (readable: the client sent something or left; writable again).
#[derive(Default)]
struct Woken {
    ids: Mutex<Vec<usize>>,
    notify: Notify,
}

/// A socket's waker: says which socket woke, then wakes its writer.
struct SocketWaker {
    id: usize,
    woken: Arc<Woken>,
}

impl Wake for SocketWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.ids.lock().unwrap_or_else(|e| e.into_inner()).push(self.id);
        self.woken.notify.notify_one();
    }
}

/// One live stream in a writer.
struct Sub {
    sink: Sink,
    waker: Waker,
    queue: VecDeque<Bytes>,
    /// The front frame is partly written: nothing may go before the rest of it.
    partial: bool,
    /// Its last frame is queued: it closes once that is written.
    closing: bool,
    /// Since when a write has waited on a full socket.
    stalled: Option<Instant>,
    /// Touched in the batch being delivered.
    in_batch: bool,
    /// In the writer's list of streams with coalesced snapshots waiting.
    holding: bool,
    // The subscription's live state (see `subscription::subscribe`).
    ring: Stream,
    cursor: EventId,
    filter: Filter,
    coalescer: Option<Coalescer>,
    floor: Option<EventId>,
    _keep: Keep,
    // The SSE stream's (see `sse::open_stream`).
    session: Session,
    quiet: bool,
    sse_floor: Option<EventId>,
    standing: Standing,
    beat: Bytes,
    _slot: limits::Slot,
}

impl Sub {
    /// A record from the stream's ring: delivered if it is new and wanted.
    fn deliver(&mut self, r: &Arc<Record>) {
        if self.closing {
            return;
        }
        for item in subscription::live(r, &mut self.cursor, &self.filter, self.coalescer.as_mut(), &mut self.floor) {
            self.put(item);
        }
    }

    /// Queues what an item puts on the wire, as `sse::open_stream` would write it.
    fn put(&mut self, item: Item) {
        if self.closing {
            return;
        }
        let out = stream::render(Ok(item), &mut self.sse_floor, &mut self.session, &mut self.quiet);
        let (first, second, last) = self.session.emit(out);
        self.queue.extend(first.into_iter().chain(second));
        self.closing = last;
        if !last && self.queue.len() > MAX_QUEUED {
            self.evict();
        }
    }

    /// Ends a stream that fell too far behind with its reason: what waits is dropped (the
    /// client resumes after the last whole frame it got), a partly written frame is finished.
    fn evict(&mut self) {
        self.queue.truncate(usize::from(self.partial));
        self.put(Item::Evicted { after: self.cursor });
    }

    /// The last frame, for an end the pulse decides (shutdown, expiry, revocation).
    fn end(&mut self, last: Bytes, reason: &'static str) {
        if !self.closing {
            self.session.end(reason, last.len());
            self.queue.push_back(last);
            self.closing = true;
        }
    }

    /// Writes what is queued, as far as the socket takes it. `false`: the socket failed.
    fn flush(&mut self) -> bool {
        let written = self.write_queued();
        // A burst can grow a queue to a ring's worth of slots: give them back once it drained,
        // so a stream's memory follows what it holds now.
        if self.queue.is_empty() && self.queue.capacity() > 64 {
            self.queue = VecDeque::new();
        }
        written
    }

    fn write_queued(&mut self) -> bool {
        let tcp = match &self.sink {
            Sink::Socket(wire) => &wire.tcp,
            Sink::Body(pipe, _) => {
                let Ok((moved, all)) = pipe.fill(&mut self.queue) else { return false };
                if moved {
                    self.stalled = None;
                }
                if !all {
                    self.stalled.get_or_insert_with(Instant::now);
                }
                return true;
            }
        };
        while !self.queue.is_empty() {
            let mut iov = [IoSlice::new(&[]); IOV];
            let n = self.queue.iter().zip(iov.iter_mut()).map(|(f, s)| *s = IoSlice::new(f)).count();
            match tcp.try_write_vectored(&iov[..n]) {
                Ok(0) => return false,
                Ok(written) => {
                    self.stalled = None;
                    advance(&mut self.queue, &mut self.partial, written);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tcp.poll_write_ready(&mut Context::from_waker(&self.waker)) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(_)) => return false,
                        Poll::Pending => {
                            self.stalled.get_or_insert_with(Instant::now);
                            return true;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads what the client sent (nothing is expected after the request) to notice it
    /// leaving; arms the socket's waker for the next. `false`: the client is gone.
    fn still_there(&mut self) -> bool {
        let tcp = match &self.sink {
            Sink::Socket(wire) => &wire.tcp,
            Sink::Body(pipe, _) => return !pipe.is_gone(),
        };
        let mut buf = [0u8; 512];
        loop {
            match tcp.try_read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tcp.poll_read_ready(&mut Context::from_waker(&self.waker)) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(_)) => return false,
                        Poll::Pending => return true,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// When the stream's stalled write reaches its limit, if a write is stalled.
    fn stall_deadline(&self) -> Option<Instant> {
        let limit = match &self.sink {
            Sink::Socket(wire) => wire.stall,
            Sink::Body(_, stall) => *stall,
        };
        self.stalled.map(|since| since + limit)
    }

    /// Whether the stream is over: its socket failed, or its last frame is written.
    fn done(&mut self) -> bool {
        !self.flush() || (self.closing && self.queue.is_empty())
    }
}

/// One writer: the streams it owns, grouped by the ring stream they read.
struct Shard {
    hub: Hub,
    pulse: watch::Receiver<Pulse>,
    stopped: bool,
    subs: Vec<Option<Sub>>,
    free: Vec<usize>,
    live: usize,
    /// Shared by all writers: the streams they own.
    streams: Arc<AtomicUsize>,
    groups: HashMap<Stream, Vec<usize>>,
    /// Every committed record, while the writer owns a stream.
    all: Option<Receiver>,
    batch: Vec<Arc<Record>>,
    touched: Vec<usize>,
    woken: Arc<Woken>,
    /// Streams with coalesced snapshots waiting, and the earliest time one is due.
    holding: Vec<usize>,
    due: Option<Instant>,
    /// The earliest time a stalled stream reaches its stall limit.
    stall_due: Option<Instant>,
}

impl Shard {
    fn new(writers: &Writers) -> Self {
        let mut pulse = writers.pulse.clone();
        pulse.mark_unchanged();
        Self {
            hub: writers.hub.clone(),
            pulse,
            stopped: false,
            subs: Vec::new(),
            free: Vec::new(),
            live: 0,
            streams: writers.streams.clone(),
            groups: HashMap::new(),
            all: None,
            batch: Vec::with_capacity(BATCH),
            touched: Vec::new(),
            woken: Arc::default(),
            holding: Vec::new(),
            due: None,
            stall_due: None,
        }
    }

    async fn run(mut self, mut intake: mpsc::UnboundedReceiver<(Sink, Handed)>) {
        let mut open = true;
        while open || self.live > 0 {
            let (due, stall_due) = (self.due, self.stall_due);
            // Biased, the ring last: under a flood of records the pulse (heartbeats, expiry,
            // shutdown), coalescing timers and sockets draining still get their turn.
            tokio::select! {
                biased;
                joined = intake.recv(), if open => match joined {
                    Some((sink, handed)) => self.join(sink, handed),
                    None => open = false,
                },
                changed = self.pulse.changed(), if !self.stopped => {
                    let now = if changed.is_ok() { *self.pulse.borrow_and_update() } else { Pulse::Stop };
                    self.on_pulse(now);
                }
                () = subscription::sleep_until_opt(due) => self.release_due(),
                () = subscription::sleep_until_opt(stall_due) => self.drop_stalled(),
                () = self.woken.notify.notified() => self.serve_woken(),
                got = next_batch(&mut self.all, &mut self.batch) => self.deliver_batch(got),
            }
        }
    }

    /// Takes a stream over at its seam: first what its own ring holds (everything since it
    /// subscribed, up to now), then — from the writer's ring, subscribed before that drain —
    /// everything after.
    fn join(&mut self, sink: Sink, handed: Handed) {
        if self.all.is_none() {
            self.all = Some(self.hub.subscribe(Stream::All));
        }
        let Handed { live, session, quiet, floor: sse_floor, standing, beat, slot } = handed;
        let Live { ring: mut own, cursor, filter, coalescer, floor, keep } = *live;
        let id = self.free.pop().unwrap_or_else(|| {
            self.subs.push(None);
            self.subs.len() - 1
        });
        let waker = Waker::from(Arc::new(SocketWaker { id, woken: self.woken.clone() }));
        if let Sink::Body(pipe, _) = &sink {
            pipe.attach(waker.clone());
        }
        let mut sub = Sub {
            sink,
            waker,
            queue: VecDeque::new(),
            partial: false,
            closing: false,
            stalled: None,
            in_batch: false,
            holding: false,
            ring: filter.ring.clone(),
            cursor,
            filter,
            coalescer,
            floor,
            _keep: keep,
            session,
            quiet,
            sse_floor,
            standing,
            beat,
            _slot: slot,
        };
        if self.stopped {
            sub.end(stream::SHUTDOWN, "server shutting down");
        }
        sub.session.run_starts();
        // Drained between publishes: a record the writer's ring already gave out (before this
        // stream joined) is then surely on the stream's own ring too. Drained at any moment, a
        // publish could have reached the writer's ring and not yet the stream's (one record
        // lost at the seam, seen about once in fourteen runs of the seam test).
        let (held, lagged) = self.hub.between_publishes(|| {
            let mut held = Vec::new();
            loop {
                match own.try_recv() {
                    Ok(r) => held.push(r),
                    Err(TryRecvError::Lagged(_)) => return (held, true),
                    Err(_) => return (held, false),
                }
            }
        });
        drop(own);
        for r in &held {
            sub.deliver(r);
        }
        if lagged {
            sub.evict();
        }
        self.groups.entry(sub.ring.clone()).or_default().push(id);
        self.subs[id] = Some(sub);
        self.live += 1;
        self.streams.fetch_add(1, Ordering::Relaxed);
        self.note_holding(id);
        self.check(id, true);
    }

    /// Flushes a stream (and with `read`, looks for its client leaving); removes it if it is over.
    fn check(&mut self, id: usize, read: bool) {
        let Some(sub) = self.subs.get_mut(id).and_then(Option::as_mut) else { return };
        if (read && !sub.still_there()) || sub.done() {
            self.remove(id);
        } else if let Some(at) = sub.stall_deadline() {
            self.stall_due = Some(self.stall_due.map_or(at, |d| d.min(at)));
        }
    }

    /// Closes the streams whose writes made no progress for their stall limit (the client
    /// stopped reading), and sets the time of the next such check.
    fn drop_stalled(&mut self) {
        let now = Instant::now();
        self.stall_due = None;
        for id in 0..self.subs.len() {
            let Some(at) = self.subs[id].as_ref().and_then(Sub::stall_deadline) else { continue };
            if at <= now {
                self.remove(id);
            } else {
                self.stall_due = Some(self.stall_due.map_or(at, |d| d.min(at)));
            }
        }
    }

    fn remove(&mut self, id: usize) {
        let Some(sub) = self.subs.get_mut(id).and_then(Option::take) else { return };
        self.free.push(id);
        self.live -= 1;
        self.streams.fetch_sub(1, Ordering::Relaxed);
        if let Some(ids) = self.groups.get_mut(&sub.ring) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.groups.remove(&sub.ring);
            }
        }
        if self.live == 0 {
            // No stream left: the writer's ring goes too (it holds records while it exists).
            self.all = None;
        }
        // A body ends when its pipe is dropped (with the sub), after what it holds.
        if sub.closing
            && sub.queue.is_empty()
            && let Sink::Socket(wire) = sub.sink
            && let Ok(tcp) = wire.tcp.into_std()
        {
            // The server ended the stream: a clean end of the body (close-delimited).
            let _ = tcp.shutdown(std::net::Shutdown::Write);
        }
    }

    fn serve_woken(&mut self) {
        let ids = std::mem::take(&mut *self.woken.ids.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ids {
            self.check(id, true);
        }
    }

    /// Hands a batch of committed records to the streams that want them, then writes.
    fn deliver_batch(&mut self, got: Result<(), RecvError>) {
        if let Err(e) = got {
            self.batch.clear();
            if matches!(e, RecvError::Lagged(_)) {
                // This writer fell a whole ring behind: every stream it owns missed records.
                tracing::warn!("an SSE writer fell a whole ring behind; its streams are evicted");
                for sub in self.subs.iter_mut().flatten() {
                    sub.evict();
                }
                self.touched.extend(self.subs.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i));
            }
        }
        let mut batch = std::mem::take(&mut self.batch);
        // One clock read a batch: each stream looks at its credential before it is given any.
        let now = switchyard::auth::now_secs();
        for r in batch.drain(..) {
            let keys = [Stream::All, Stream::Tenant(r.tenant.clone())].into_iter();
            let channels = r.routing.channels.iter().map(|c| Stream::Channel(r.tenant.clone(), c.clone()));
            for key in keys.chain(channels) {
                let Some(ids) = self.groups.get(&key) else { continue };
                for &id in ids {
                    let Some(sub) = self.subs[id].as_mut() else { continue };
                    if !sub.in_batch {
                        sub.in_batch = true;
                        sub.session.run_starts();
                        self.touched.push(id);
                        if let Some((last, reason)) = stream::lapsed(&mut sub.standing, now) {
                            sub.end(last, reason);
                        }
                    }
                    sub.deliver(&r);
                }
            }
        }
        self.batch = batch;
        for id in std::mem::take(&mut self.touched) {
            if let Some(sub) = self.subs[id].as_mut() {
                sub.in_batch = false;
            }
            self.note_holding(id);
            self.check(id, false);
        }
    }

    /// Heartbeats for quiet streams; the end of streams whose credential expired or was
    /// revoked, or of all on shutdown.
    fn on_pulse(&mut self, now: Pulse) {
        self.stopped = now == Pulse::Stop;
        for id in 0..self.subs.len() {
            let Some(sub) = self.subs[id].as_mut() else { continue };
            if let Some((last, reason)) = stream::ending(now, &mut sub.standing) {
                sub.end(last, reason);
            } else if !sub.closing {
                if sub.quiet {
                    sub.session.sent(sub.beat.len());
                    sub.queue.push_back(sub.beat.clone());
                }
                sub.quiet = true;
            }
            self.check(id, false);
        }
    }

    /// Puts a stream in the coalescing list if it holds snapshots back now.
    fn note_holding(&mut self, id: usize) {
        let Some(sub) = self.subs[id].as_mut() else { return };
        if let Some(at) = sub.coalescer.as_ref().and_then(Coalescer::next_due)
            && !sub.holding
        {
            sub.holding = true;
            self.holding.push(id);
            self.due = Some(self.due.map_or(at, |d| d.min(at)));
        }
    }

    /// Sends the snapshots whose coalescing window has ended.
    fn release_due(&mut self) {
        let now = Instant::now();
        self.due = None;
        for id in std::mem::take(&mut self.holding) {
            let Some(sub) = self.subs[id].as_mut() else { continue };
            let Some(c) = sub.coalescer.as_mut() else { continue };
            if c.next_due().is_some_and(|at| at <= now) {
                sub.session.run_starts();
                for item in subscription::due_now(c, sub.cursor, &mut sub.floor) {
                    sub.put(item);
                }
            }
            sub.holding = false;
            self.note_holding(id);
            self.check(id, false);
        }
    }
}

/// The next batch of committed records into `batch` (never, while there is no ring).
async fn next_batch(all: &mut Option<Receiver>, batch: &mut Vec<Arc<Record>>) -> Result<(), RecvError> {
    let Some(rx) = all.as_mut() else { return std::future::pending().await };
    batch.push(rx.recv().await?);
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(TryRecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
            Err(_) => break,
        }
    }
    Ok(())
}

/// Drops what a write took from the front of `queue`; `partial`: its front frame is now partly
/// written.
fn advance(queue: &mut VecDeque<Bytes>, partial: &mut bool, mut written: usize) {
    while written > 0 {
        let Some(front) = queue.front_mut() else { return };
        if written >= front.len() {
            written -= front.len();
            queue.pop_front();
            *partial = false;
        } else {
            front.advance(written);
            *partial = true;
            written = 0;
        }
    }
}
