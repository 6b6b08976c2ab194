//! SSE served directly on the socket, below hyper.
//!
//! Why: an idle SSE connection through hyper keeps hyper's HTTP/1 read and write buffers
//! (8 KiB each) for its whole life, which is most of the memory a connection costs. Here
//! the request head is read into a small buffer that is freed once parsed, and the frames
//! (already shared `Bytes`) are written straight to the socket, with a close-delimited
//! body (`Connection: close`, no chunking), which every SSE client accepts.
//!
//! Only plain HTTP/1.x `GET /api/sse/...` requests without percent-escapes come here; any
//! other request (and anything this code does not fully understand) is handed to hyper
//! with the bytes read so far replayed in front of the socket ([`Rewind`]), so behaviour is
//! the same either way: both paths call [`crate::sse::handlers::open_stream`].

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::Streams;
use crate::{
    http::error::ApiError,
    sse::handlers::{SseQuery, open_stream, split_channels},
    sse::writers::{Handed, IntoWire},
};

/// A connection this path can serve: readable, writable, and for a writer to take over.
pub trait Socket: AsyncRead + AsyncWrite + IntoWire + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + IntoWire + Unpin + Send + 'static> Socket for T {}

/// Longest request head read here; longer ones go to hyper (which answers 431).
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written per system call at most when several are ready.
const BATCH: usize = 64;

/// An IO that yields `prefix` before reading from `inner`.
pub struct Rewind<T> {
    prefix: Option<Bytes>,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix: (!prefix.is_empty()).then_some(prefix), inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(mut prefix) = self.prefix.take() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix.split_to(n));
            if !prefix.is_empty() {
                self.prefix = Some(prefix);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A parsed SSE request this module can serve.
pub struct SseRequest {
    channels: Vec<String>,
    query: SseQuery,
    headers: HeaderMap,
}

impl SseRequest {
    /// The channels asked for (empty: every channel the token allows).
    pub fn channels(&self) -> &[String] {
        &self.channels
    }
}

/// What the first bytes of a connection turned out to be.
pub enum Sniffed<T> {
    /// Served (or failed) here; nothing left to do.
    Done,
    /// Not ours: hand to hyper, bytes replayed.
    Pass(Rewind<T>),
}

/// Reads the request head; serves it if it is an SSE GET, else returns the connection for hyper.
pub async fn sniff<T: Socket>(streams: &Streams, mut io: T) -> Sniffed<T> {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(HEAD_TIMEOUT, async {
        loop {
            if buf.len() >= MAX_HEAD {
                return None;
            }
            // Straight into the heap buffer: a stack array here would live in every
            // connection's task for its whole life (it is part of the future's state).
            buf.reserve(1024);
            let n = io.read_buf(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            // Cheap test first: most requests are not SSE and go to hyper untouched.
            if !buf.starts_with(&b"GET /api/sse/"[..buf.len().min(13)]) {
                return None;
            }
            if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                return Some(parse(&buf[..end + 4], &streams.own_paths));
            }
        }
    })
    .await;
    // Nothing, or no complete request head, within the limit: an idle or slow-loris connection
    // holds a descriptor and a task for nothing. Close it rather than hand it on.
    let Ok(parsed) = read else { return Sniffed::Done };
    let Some(req) = parsed.flatten() else { return Sniffed::Pass(Rewind::new(Bytes::from(buf), io)) };
    // Bytes after the head (a pipelined request) would be lost here: leave those to hyper.
    if memchr::memmem::find(&buf, b"\r\n\r\n").is_some_and(|end| end + 4 != buf.len()) {
        return Sniffed::Pass(Rewind::new(Bytes::from(buf), io));
    }
    drop(buf);
    serve(streams, req, io).await;
    Sniffed::Done
}

/// Every path the route table names: those are the router's, never a channel.
/// A complete request head that is an SSE GET this path serves, or `None` (hyper's to answer):
/// not a GET, a path the route table names, percent-encoding, an unparsable query or header.
/// `own`: every path the route table names (the router's, never taken here).
pub fn parse(head: &[u8], own: &[String]) -> Option<SseRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) || req.method != Some("GET") {
        return None;
    }
    let target = req.path?;
    if target.contains('%') || target.contains('+') {
        return None; // percent-decoding is hyper's and axum's job
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let rest = path.strip_prefix("/api/sse/")?;
    // A path the route table names for itself (`/api/sse/status`, `/api/sse/ticket`, any new
    // one) is the router's, whatever the method: never taken for a channel of that name.
    if own.iter().any(|p| p == path) && rest != "subscribe" {
        return None;
    }
    let query: SseQuery = serde_urlencoded::from_str(query).ok()?;
    let channels = match rest.split_once('/') {
        None if rest == "subscribe" => split_channels(query.channels.as_deref()),
        None if !rest.is_empty() => vec![rest.to_owned()],
        Some(("jobs", id)) if !id.is_empty() && !id.contains('/') => vec![format!("jobs/{id}")],
        _ => return None,
    };
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        map.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(SseRequest { channels, query, headers: map })
}

async fn serve<T: Socket>(streams: &Streams, req: SseRequest, mut io: T) {
    let SseRequest { channels, query, headers } = req;
    let opened = match open_stream(streams, channels, &query, &headers).await {
        Ok(o) => o,
        Err(e) => return write_error(&mut io, e).await,
    };
    // The request's heap parts would otherwise live as long as the connection.
    drop((query, headers));
    let mut head = String::from("HTTP/1.1 200 OK\r\nconnection: close\r\n");
    for (k, v) in opened.headers() {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(&v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    if io.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    drop(head);
    // The replay runs as its own small task: this one (request parsing, opening the
    // subscription) ends here and its larger state is freed with it. At the live seam the
    // stream goes to a writer (`crate::sse::writers`), which owns the socket from then on.
    let streams = streams.clone();
    tokio::spawn(async move {
        if let Some((io, handed)) = pump(opened.frames, opened.handoff, io).await {
            streams.writers.take(io.into_wire(), handed);
        }
    });
}

/// Writes frames to the socket until the stream ends or the client goes away; at the live
/// seam, returns the socket with the stream's live part.
async fn pump<T: Socket>(
    mut frames: Pin<Box<dyn futures::Stream<Item = Bytes> + Send>>,
    mut handoff: tokio::sync::oneshot::Receiver<Handed>,
    io: T,
) -> Option<(T, Handed)> {
    // Nothing is read after the head except to notice the client leaving (EOF), which frees
    // its connection slot at once instead of at the next failed write.
    let (mut rd, mut io) = tokio::io::split(io);
    let mut probe = [0u8; 16];
    loop {
        let first = tokio::select! {
            biased;
            f = frames.next() => match f {
                Some(f) => f,
                None => break,
            },
            r = rd.read(&mut probe) => match r {
                Ok(0) | Err(_) => return None,
                Ok(_) => continue,
            },
        };
        // Whatever else is ready goes out in the same write.
        let mut more: Vec<Bytes> = Vec::new();
        while more.len() < BATCH {
            match frames.next().now_or_never() {
                Some(Some(f)) => more.push(f),
                _ => break,
            }
        }
        let ok = if more.is_empty() {
            io.write_all(&first).await.is_ok()
        } else {
            let mut joined = Vec::with_capacity(first.len() + more.iter().map(Bytes::len).sum::<usize>());
            joined.extend_from_slice(&first);
            for f in &more {
                joined.extend_from_slice(f);
            }
            io.write_all(&joined).await.is_ok()
        };
        if !ok {
            return None;
        }
    }
    if let Ok(handed) = handoff.try_recv() {
        return Some((rd.unsplit(io), handed));
    }
    let _ = io.shutdown().await;
    None
}

async fn write_error<T: AsyncWrite + Unpin>(io: &mut T, e: ApiError) {
    let mut body = serde_json::json!({ "error": { "code": e.code, "message": e.message } });
    if let Some(f) = e.field {
        body["error"]["field"] = serde_json::json!(f);
    }
    let body = body.to_string();
    let reason = e.status.canonical_reason().unwrap_or("");
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        e.status.as_u16(),
        body.len()
    );
    if let Some(s) = e.retry_after {
        head.push_str(&format!("retry-after: {s}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let _ = io.write_all(head.as_bytes()).await;
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::parse;

    /// The server's own paths, as `serve` gives them to the direct path.
    fn own() -> Vec<String> {
        crate::router::routes().into_iter().map(|r| r.path).collect()
    }

    fn channels(head: &str) -> Option<Vec<String>> {
        parse(head.as_bytes(), &own()).map(|r| r.channels)
    }

    #[test]
    fn sse_paths_parse_and_every_other_route_is_left_to_the_router() {
        let get = |target: &str| format!("GET {target} HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_eq!(channels(&get("/api/sse/dashboard")), Some(vec!["dashboard".to_owned()]));
        assert_eq!(channels(&get("/api/sse/jobs/42?lastEventId=7")), Some(vec!["jobs/42".to_owned()]));
        assert_eq!(channels(&get("/api/sse/subscribe?channels=a,b")), Some(vec!["a".to_owned(), "b".to_owned()]));
        // Routes of their own, whatever the method: never a channel named after them.
        for route in own().iter().filter(|r| r.starts_with("/api/sse/") && !r.contains('{')) {
            if *route != "/api/sse/subscribe" {
                assert_eq!(channels(&get(route)), None, "{route}");
            }
        }
        // Not for this fast path: other methods, encoded or odd paths, bad queries, other prefixes.
        for head in [
            "POST /api/sse/dashboard HTTP/1.1\r\n\r\n".to_owned(),
            get("/api/sse/dash%20board"),
            get("/api/sse/"),
            get("/api/sse/jobs/"),
            get("/api/sse/jobs/a/b"),
            get("/api/sse/x/y"),
            get("/api/sse/dashboard?coalesce=maybe"),
            get("/api/events"),
            "GET /api/sse/dashboard HTTP/1.1\r\n".to_owned(),
        ] {
            assert_eq!(channels(&head), None, "{head:?}");
        }
    }
}
