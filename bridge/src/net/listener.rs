//! How HTTP connections are accepted and served: plain TCP (TLS is [`super::tls`] on top),
//! each wrapped in a [`StallGuard`], admitted through the pending-connection [`Gate`].
//!
//! The guard exists because a client that stops reading entirely never lets the server
//! notice anything at the application level: its socket buffers fill, writes stop
//! completing, and the connection would sit forever. A write that makes no progress for
//! the stall timeout fails instead, and the connection is closed.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use crate::sse::{
    Streams,
    direct::{Rewind, Sniffed},
};
use switchyard::grpc::idle::{Counted, Watched};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Sleep,
};

/// An IO whose writes fail after making no progress for `limit`.
pub struct StallGuard<T> {
    inner: T,
    limit: Duration,
    // Allocated only while a write is stalled.
    timer: Option<Pin<Box<Sleep>>>,
    /// The connection's place in the open-connections [`Gate`].
    _slot: Option<Slot>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        Self { inner, limit, timer: None, _slot: None }
    }

    /// Holds `slot` as long as the connection lives.
    fn holding(mut self, slot: Slot) -> Self {
        self._slot = Some(slot);
        self
    }

    fn check<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Pending => {
                let limit = self.limit;
                let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.timer = None;
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.timer = None;
                ready
            }
        }
    }
}

impl crate::sse::writers::IntoWire for StallGuard<TcpStream> {
    /// The socket and what is attached to it, for a writer to own.
    fn into_wire(self) -> crate::sse::writers::Wire {
        let keep = self._slot.map(|slot| Box::new(slot) as switchyard::subscription::Keep);
        crate::sse::writers::Wire { tcp: self.inner, stall: self.limit, keep }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connections made ready by background tasks (accepting, sniffing, TLS handshakes), handed
/// to axum in order of readiness, so no slow client ever holds up `accept`.
pub struct Queued<Io> {
    pub(super) ready: mpsc::Receiver<(Io, SocketAddr)>,
    pub(super) local: SocketAddr,
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send + 'static> axum::serve::Listener for Queued<Io> {
    type Io = Io;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A plain TCP connection, guarded.
pub type PlainIo = Rewind<StallGuard<TcpStream>>;

/// Connections in some state, counted in total and per address: past `max`, or past `per_ip`
/// from one address, new ones are closed at once. Two gates: *pending* connections (not yet a
/// request head or a finished TLS handshake), so flooding the listener with silent connections
/// costs a bounded number of tasks and descriptors; and, optionally, *open* HTTP connections
/// per address, so one address cannot take every descriptor with authenticated streams.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<std::sync::Mutex<Counts>>,
    max: usize,
    per_ip: Option<usize>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    // Only addresses with a connection pending: an entry goes when its count reaches zero.
    by_ip: std::collections::HashMap<std::net::IpAddr, usize>,
}

impl Gate {
    /// `per_ip` 0: no per-address cap (behind a proxy every client shares one address).
    pub fn new(max: usize, per_ip: usize) -> Self {
        Self { inner: Arc::default(), max, per_ip: (per_ip > 0).then_some(per_ip) }
    }

    /// A slot for one connection from `ip`, or `None` when all (or that address's) are taken.
    fn enter(&self, ip: std::net::IpAddr) -> Option<Slot> {
        let mut counts = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max {
            return None;
        }
        if let Some(per_ip) = self.per_ip {
            let n = counts.by_ip.entry(ip).or_default();
            if *n >= per_ip {
                return None;
            }
            *n += 1;
        }
        counts.total += 1;
        Some(Slot { gate: self.clone(), ip })
    }

    /// Connections pending now, and the addresses they come from.
    pub fn counts(&self) -> (usize, usize) {
        let counts = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (counts.total, counts.by_ip.len())
    }
}

/// One connection's place in a [`Gate`], given back on drop.
pub struct Slot {
    gate: Gate,
    ip: std::net::IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.gate.inner.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if self.gate.per_ip.is_some()
            && let std::collections::hash_map::Entry::Occupied(mut e) = counts.by_ip.entry(self.ip)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// The next connection. Out of file descriptors and the like: backs off instead of spinning,
/// and serves again as soon as descriptors free up.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs `admitted` (a TLS handshake, a sniff, a wait for the preface) in its own task while the
/// connection holds a pending [`Slot`], and queues what it lets through. With every slot taken,
/// `admitted` is dropped unrun, and the connection it owns with it: closed at once.
pub(super) fn admit<Io: Send + 'static>(
    pending: &Gate,
    addr: SocketAddr,
    tx: &mpsc::Sender<(Io, SocketAddr)>,
    admitted: impl std::future::Future<Output = Option<Io>> + Send + 'static,
) {
    let Some(slot) = pending.enter(addr.ip()) else {
        tracing::debug!(%addr, "too many connections without a request yet; closed");
        return;
    };
    let tx = tx.clone();
    tokio::spawn(async move {
        let admitted = admitted.await;
        drop(slot);
        if let Some(io) = admitted {
            let _ = tx.send((io, addr)).await;
        }
    });
}

/// Plain TCP. With the [`Streams`], SSE GETs are served by [`crate::sse::direct`] and only the rest
/// reaches hyper (sniffing runs in per-connection tasks).
pub fn plain(
    listener: TcpListener,
    stall: Duration,
    direct: Option<Streams>,
    pending: Gate,
    open: Gate,
) -> io::Result<Queued<PlainIo>> {
    let local = listener.local_addr()?;
    let (tx, ready) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let (s, addr) = accept(&listener).await;
            if tx.is_closed() {
                return;
            }
            // Held by the connection for its whole life, whoever serves it.
            let Some(slot) = open.enter(addr.ip()) else {
                tracing::debug!(%addr, "too many open connections from this address; closed");
                continue;
            };
            let _ = s.set_nodelay(true);
            let io = StallGuard::new(s, stall).holding(slot);
            match &direct {
                None => {
                    if tx.send((Rewind::new(bytes::Bytes::new(), io), addr)).await.is_err() {
                        return;
                    }
                }
                Some(streams) => {
                    let streams = streams.clone();
                    admit(&pending, addr, &tx, async move {
                        match crate::sse::direct::sniff(&streams, io).await {
                            Sniffed::Pass(io) => Some(io),
                            Sniffed::Done => None,
                        }
                    });
                }
            }
        }
    });
    Ok(Queued { ready, local })
}

/// The HTTP/2 connection preface every gRPC client opens with (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// gRPC connections, handed to tonic only once they have sent the HTTP/2 preface, within
/// [`HEADER_TIMEOUT`] and under the same `pending` cap as HTTP: tonic itself would hold a silent
/// connection forever (its keep-alive pings start after the handshake).
pub fn grpc(listener: TcpListener, pending: Gate) -> impl futures::Stream<Item = io::Result<TcpStream>> {
    let (tx, ready) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let (s, addr) = accept(&listener).await;
            if tx.is_closed() {
                return;
            }
            admit(&pending, addr, &tx, async move {
                match tokio::time::timeout(HEADER_TIMEOUT, preface(&s)).await {
                    Ok(true) => Some(s),
                    Ok(false) => None,
                    Err(_) => {
                        tracing::debug!(%addr, "no HTTP/2 preface in time; closed");
                        None
                    }
                }
            });
        }
    });
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(ready), |(s, _)| Ok(s))
}

/// Waits until `s` has sent the whole preface, or something else (which tonic then refuses);
/// false when the peer closed first. Peeks, so tonic still reads every byte.
async fn preface(s: &TcpStream) -> bool {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = match s.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if n == PREFACE.len() || buf[..n] != PREFACE[..n] {
            return true;
        }
        // Part of the preface: peek returns at once while bytes wait, so pause briefly rather
        // than spin. Only a client that splits its first 24 bytes ever gets here.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client gets this long to send a request's headers, its first or the next one on a kept-alive
/// connection; a connection that sends none (or idles between requests) is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What an HTTP/2 stream may have queued in the h2 crate beyond what the client's window lets
/// out (hyper's default is 400 KiB). Small, so a stream's frames wait in Switchyard, where they
/// are joined into bigger chunks and a stream that stays behind is evicted, not in a buffer:
/// with the default, 1,000 streams over 10 connections at 2 M deliveries/s had p99 205 ms in one
/// run and stalled at a third of the rate in the next; with 16 KiB, p99 150–190 ms and no stall
/// (BENCHMARKS.md, "HTTP/2 fan-out, session 8"). It also caps what a client that never reads holds per stream.
const H2_SEND_BUFFER: usize = 16 * 1024;

/// Serves `app` on `listener` until `stop` resolves, then lets open requests finish. Like
/// `axum::serve`, plus the timeouts it lacks: a header-read timeout for every HTTP/1 request,
/// HTTP/2 keep-alive pings that close connections whose peer is gone, and an idle timeout that
/// closes connections with no request open, pings or not.
pub async fn serve<L>(mut listener: L, app: axum::Router, idle: Duration, stop: impl std::future::Future<Output = ()>)
where
    L: axum::serve::Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::{conn::auto::Builder, graceful::GracefulShutdown},
        service::TowerToHyperService,
    };
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .max_send_buf_size(H2_SEND_BUFFER)
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (io, _) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut stop => break,
        };
        let io = Watched::new(io, idle);
        let service = TowerToHyperService::new(Counted::new(app.clone(), Some(io.activity())));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away mid-request is not the server's error.
            let _ = conn.await;
        });
    }
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::Gate;
    use std::net::IpAddr;

    #[test]
    fn pending_caps_per_address_and_forgets_addresses_that_leave() {
        let pending = Gate::new(5, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = pending.enter(a).unwrap();
        let a2 = pending.enter(a).unwrap();
        assert!(pending.enter(a).is_none(), "a third from one address is refused");
        let b1 = pending.enter(b).unwrap();
        assert_eq!(pending.counts(), (3, 2));
        drop((a1, a2, b1));
        assert_eq!(pending.counts(), (0, 0), "nothing kept for addresses with no connection");
        let total: Vec<_> = (0..5).map(|i| pending.enter(IpAddr::from([10, 0, 1, i]))).collect();
        assert!(total.iter().all(Option::is_some));
        assert!(pending.enter(IpAddr::from([10, 0, 2, 0])).is_none(), "the global cap holds");
        drop(total);
        let unlimited = Gate::new(3, 0);
        let held: Vec<_> = (0..3).map(|_| unlimited.enter(a).unwrap()).collect();
        assert_eq!(unlimited.counts(), (3, 0), "no per-address map without a per-address cap");
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_for_the_limit_fails_and_progress_resets_the_clock() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (near, mut far) = tokio::io::duplex(64);
        let mut guarded = super::StallGuard::new(near, std::time::Duration::from_secs(30));
        guarded.write_all(&[0; 64]).await.unwrap();
        // The peer reads a little after 20 s: the stalled write goes on, its clock starts again.
        let write = tokio::spawn(async move {
            let r = guarded.write_all(&[1; 64]).await;
            (r, guarded)
        });
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
        let mut buf = [0; 64];
        far.read_exact(&mut buf).await.unwrap();
        let (r, mut guarded) = write.await.unwrap();
        assert!(r.is_ok(), "progress within the limit: {r:?}");
        // Now nobody reads: 30 s later the write fails with TimedOut.
        let start = tokio::time::Instant::now();
        let err = guarded.write_all(&[2; 128]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= std::time::Duration::from_secs(30));
        drop(far);
    }
}
