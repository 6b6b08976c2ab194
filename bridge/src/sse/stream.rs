//! What every SSE stream writes and how it is accounted, whoever writes it (the stream's own
//! task during its replay, a writer after its live seam): the frames (an event's encoded once
//! and shared), the rendering of subscription items into them, the frames that end a stream,
//! and its `Session` (log lines, frame and lag counts).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use switchyard::{
    auth::{Lapse, Standing},
    bus::Bus,
    log::Record,
    names::{Cursor, EventId},
    subscription::Item,
};

use crate::{metrics::Metrics, sse::pulse::Pulse};

pub const HEARTBEAT: Bytes = Bytes::from_static(b": heartbeat\n\n");
const EVICTED: Bytes =
    Bytes::from_static(b": disconnected: this client fell too far behind; reconnect with Last-Event-ID to resume\n\n");
pub const SHUTDOWN: Bytes =
    Bytes::from_static(b"retry: 1000\nevent: stream:reconnect\ndata: {\"reason\":\"server shutting down\"}\n\n");
/// The stream's token expired: reconnect with a fresh one (client.js asks for a new ticket).
const EXPIRED: Bytes = Bytes::from_static(
    b"retry: 1000\nevent: stream:reconnect\ndata: {\"reason\":\"token expired\",\"code\":\"token_expired\"}\n\n",
);
/// The stream's token was revoked: a reconnect with it is refused (401).
const REVOKED: Bytes = Bytes::from_static(
    b"retry: 1000\nevent: stream:reconnect\ndata: {\"reason\":\"token revoked\",\"code\":\"token_revoked\"}\n\n",
);

/// The record's SSE frame, encoded on first use and shared after that.
pub fn frame(record: &Record) -> Bytes {
    record
        .frame
        .get_or_init(|| {
            let json = switchyard::json::event_to_json(&record.event);
            let mut b = BytesMut::with_capacity(json.len() + record.type_name().len() + 40);
            b.put_slice(b"id: ");
            b.put_slice(record.id.to_string().as_bytes());
            b.put_slice(b"\nevent: ");
            b.put_slice(record.type_name().as_bytes());
            b.put_slice(b"\ndata: ");
            b.put_slice(json.as_bytes());
            b.put_slice(b"\n\n");
            b.freeze()
        })
        .clone()
}

/// The same frame without its `id:` line (a zero-copy slice), for frames whose resume cursor
/// is not their own id: coalesced snapshots arrive after later ids, and while snapshots are
/// held back the cursor owes their state (`N~W`).
fn frame_without_id(record: &Record) -> Bytes {
    let f = frame(record);
    let cut = f.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
    f.slice(cut..)
}

fn id_line(cursor: Cursor) -> Bytes {
    Bytes::from(format!("id: {cursor}\n"))
}

/// `stream:state`: the state part of the stream is complete, as of `as_of`.
fn state_end_frame(cursor: Cursor, as_of: EventId, count: usize) -> Bytes {
    Bytes::from(format!("id: {cursor}\nevent: stream:state\ndata: {{\"asOf\":\"{as_of}\",\"events\":{count}}}\n\n"))
}

pub fn gap_frame(requested: Option<EventId>, oldest: EventId, head: EventId) -> Bytes {
    let data = serde_json::json!({
        "requestedId": requested.map(|i| i.to_string()),
        "oldestAvailableId": oldest.to_string(),
        "headId": head.to_string(),
        "reason": "history no longer holds every event after the requested id; the current state of what changed follows",
    });
    Bytes::from(format!("event: stream:gap\ndata: {data}\n\n"))
}

/// The frame that ends a stream on this pulse, and why, if it must end: shutdown, or a
/// credential that expired or was revoked (also looked at before every write: [`lapsed`]).
pub fn ending(now: Pulse, standing: &mut Standing) -> Option<(Bytes, &'static str)> {
    match now {
        Pulse::Stop => Some((SHUTDOWN, "server shutting down")),
        Pulse::Beat(_) => lapsed(standing, switchyard::auth::now_secs()),
    }
}

/// The frame that ends a stream whose credential no longer holds at `now`, and why. Streams
/// look before they write what they were given: nothing goes out after `exp` or a revocation.
pub fn lapsed(standing: &mut Standing, now: u64) -> Option<(Bytes, &'static str)> {
    standing.check(now).map(|lapse| match lapse {
        Lapse::Expired => (EXPIRED, "token expired"),
        Lapse::Revoked => (REVOKED, "token revoked"),
    })
}

/// What one subscription item puts on the wire.
pub enum Out {
    Nothing,
    Frame(Bytes),
    /// An `id:` line carrying a cursor, then the frame without its own id.
    Pair(Bytes, Bytes),
    /// The stream's last frame, and why it ends.
    Last(Bytes, &'static str),
}

/// Renders one item. `floor` is what coalescing holds back (frames then carry `id: N~floor`,
/// see `Cursor`); `quiet` turns false when anything but a heartbeat went out.
pub fn render(
    item: Result<Item, switchyard::log::LogError>,
    floor: &mut Option<EventId>,
    frames: &mut Session,
    quiet: &mut bool,
) -> Out {
    match item {
        Ok(Item::Event(r)) => {
            frames.add(&r);
            *quiet = false;
            match *floor {
                None => Out::Frame(frame(&r)),
                Some(w) => Out::Pair(id_line(Cursor::owing(r.id, Some(w))), frame_without_id(&r)),
            }
        }
        Ok(Item::Coalesced(r, cursor)) => {
            frames.add(&r);
            *quiet = false;
            Out::Pair(id_line(cursor), frame_without_id(&r))
        }
        Ok(Item::StateEnd { as_of, count }) => {
            *quiet = false;
            Out::Frame(state_end_frame(Cursor::owing(as_of, *floor), as_of, count))
        }
        Ok(Item::Floor(f)) => {
            *floor = f;
            Out::Nothing
        }
        Ok(Item::Gap { after, next, .. }) => Out::Frame(gap_frame(Some(after), next, next)),
        Ok(Item::Evicted { .. }) => {
            frames.metrics.sse_evicted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Out::Last(EVICTED, "evicted: fell a whole ring behind")
        }
        // Taken by the stream before it is rendered (see `open_stream`).
        Ok(Item::Status { .. } | Item::Live(_)) => Out::Nothing,
        Err(e) => {
            tracing::warn!(error = %e, "subscription failed");
            Out::Last(Bytes::from(": error: the log is unavailable; reconnect to resume\n\n"), "log unavailable")
        }
    }
}

/// Numbers each stream, for its log lines.
static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One stream's life, for operators: logged (info) when it opens, with its id, tenant, channels
/// and resume point, and when it ends, with the same id, how long it lasted, events and bytes
/// sent and why it ended (only the id is kept between: a stream's memory is per connection).
/// Its frame count goes to the shared metric in steps (and on drop), so the hot path does not
/// write a cache line every core shares.
pub struct Session {
    metrics: Arc<Metrics>,
    bus: Bus,
    id: u64,
    /// The tenant and the channels, for the close line: one allocation, `tenant channels`.
    who: Box<str>,
    opened: std::time::Instant,
    events: u64,
    pending: u64,
    bytes: u64,
    /// `None` until the server ends it: then the client went away.
    reason: Option<&'static str>,
    /// The next event delivered is the first of a run (see `run_starts`).
    observe_lag: bool,
}

impl Session {
    /// `who`: the tenant and the channels, as logged.
    pub fn open(metrics: Arc<Metrics>, bus: Bus, who: (&str, &str), resumes: Option<EventId>, complete: bool) -> Self {
        let (tenant, channels) = who;
        let id = NEXT_SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(conn = id, %tenant, %channels, resume = ?resumes.map(|r| r.0), complete, "SSE stream opened");
        if resumes.is_some() {
            metrics.sse_resumes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if !complete {
            metrics.sse_gaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let opened = std::time::Instant::now();
        let who = format!("{tenant} {channels}").into_boxed_str();
        Self { metrics, bus, id, who, opened, events: 0, pending: 0, bytes: 0, reason: None, observe_lag: false }
    }

    /// A run of items begins: the first event in it has its publish → write lag observed
    /// (once per wake-up, not per frame: a clock read and a few atomic adds per run).
    pub(crate) fn run_starts(&mut self) {
        self.observe_lag = true;
    }

    /// Counts a delivered event; for an event whose publisher sampled its trace, records a
    /// delivery span in that trace (unsampled fan-out makes no span).
    fn add(&mut self, record: &Record) {
        if self.observe_lag {
            self.observe_lag = false;
            self.bus.deliveries().observe_lag(switchyard::metrics::Transport::Sse, record.published_ms());
        }
        if switchyard::trace::sampled(&record.event) {
            drop(switchyard::trace::delivery("sse.deliver", &record.event, self.id).entered());
        }
        self.events += 1;
        self.pending += 1;
        if self.pending == 256 {
            self.flush();
        }
    }

    pub(crate) fn sent(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// What to write for `out` (up to two frames), and whether it is the stream's last.
    pub(crate) fn emit(&mut self, out: Out) -> (Option<Bytes>, Option<Bytes>, bool) {
        match out {
            Out::Nothing => (None, None, false),
            Out::Frame(f) => {
                self.sent(f.len());
                (Some(f), None, false)
            }
            Out::Pair(id, f) => {
                self.sent(id.len() + f.len());
                (Some(id), Some(f), false)
            }
            Out::Last(f, reason) => {
                self.end(reason, f.len());
                (Some(f), None, true)
            }
        }
    }

    /// The server ends the stream with a last frame of `bytes`, for `reason`.
    pub(crate) fn end(&mut self, reason: &'static str, bytes: usize) {
        self.sent(bytes);
        self.reason = Some(reason);
    }

    fn flush(&mut self) {
        self.metrics.sse_frames.fetch_add(std::mem::take(&mut self.pending), std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.flush();
        let (tenant, channels) = self.who.split_once(' ').unwrap_or((&self.who, ""));
        tracing::info!(
            conn = self.id,
            %tenant,
            %channels,
            secs = self.opened.elapsed().as_secs_f64(),
            events = self.events,
            bytes = self.bytes,
            reason = self.reason.unwrap_or("client went away"),
            "SSE stream closed"
        );
    }
}
