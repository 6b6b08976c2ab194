//! Connections with nothing open are closed after a while, whether or not they answer pings.
//!
//! Neither hyper nor tonic closes an HTTP/2 connection that holds no stream: keep-alive pings
//! only prove the peer is there, so a client could park thousands of idle connections (and
//! their descriptors and buffers) for good. A [`Watched`] IO knows how many requests its
//! connection has open ([`Activity`], counted by [`Counted`] around the service); once none has
//! been open for the idle timeout, its next read is end-of-file and the server lets the
//! connection go. Bytes the client sends (pings, settings) do not reset the clock; a request does.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::task::AtomicWaker;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};
use tonic::codegen::{Body as HttpBody, Service, http};

/// A connection's open requests, and its reader to wake when the last one ends.
#[derive(Debug, Default)]
pub struct Activity {
    open: AtomicUsize,
    reader: AtomicWaker,
}

/// An IO that reads end-of-file once its connection has had no request open for `idle`.
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    idle: Duration,
    // Set while nothing is open: when it fires, the connection is done.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, idle: Duration) -> Self {
        Self { inner, activity: Arc::default(), idle, timer: None }
    }

    /// What the connection's service counts its requests on.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Whether the connection has been idle for its timeout (starting the clock if it is idle).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.activity.reader.register(cx.waker());
        if self.activity.open.load(Ordering::Acquire) > 0 {
            self.timer = None;
            return false;
        }
        let idle = self.idle;
        self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle))).as_mut().poll(cx).is_ready()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending if self.expired(cx) => {
                tracing::debug!("connection idle past its timeout; closed");
                Poll::Ready(Ok(()))
            }
            polled => polled,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
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

/// tonic hands each request its connection's info: here, the [`Activity`] to count it on.
impl tonic::transport::server::Connected for Watched<tokio::net::TcpStream> {
    type ConnectInfo = Arc<Activity>;

    fn connect_info(&self) -> Arc<Activity> {
        self.activity()
    }
}

/// One open request; the last to end wakes the reader so its idle clock starts.
pub struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// A response body that holds `guard` (a request's place: open on its connection, among its
/// token's calls) until the server is done with the body: sent, or reset.
pub struct Held<B, G> {
    body: B,
    _guard: G,
}

impl<B, G> Held<B, G> {
    pub fn new(body: B, guard: G) -> Self {
        Self { body, _guard: guard }
    }
}

impl<B: HttpBody + Unpin, G: Unpin> HttpBody for Held<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A service whose requests are counted on their connection's [`Activity`]: the one it was
/// built with (hyper, a service per connection), or else the one in the request's extensions
/// (tonic, through [`Watched`]'s connect info).
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    activity: Option<Arc<Activity>>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, activity: Option<Arc<Activity>>) -> Self {
        Self { inner, activity }
    }
}

impl<S, B, RB> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Held<RB, Option<Busy>>>;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let activity = self.activity.clone().or_else(|| req.extensions().get::<Arc<Activity>>().cloned());
        let busy = activity.map(Busy::new);
        let response = self.inner.call(req);
        Box::pin(async move { Ok(response.await?.map(|body| Held::new(body, busy))) })
    }
}

/// [`Counted`] as a tower layer (for tonic's server builder).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountLayer;

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted::new(inner, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Idle for the timeout: end-of-file, though the peer kept sending; a request open holds
    /// the connection, and the clock starts again when it ends.
    #[tokio::test(start_paused = true)]
    async fn a_connection_is_let_go_after_its_idle_timeout_and_held_while_a_request_is_open() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut watched = Watched::new(near, Duration::from_secs(30));
        let activity = watched.activity();
        let busy = Busy::new(activity.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut got = 0;
            loop {
                match watched.read(&mut buf).await {
                    Ok(0) => return (got, tokio::time::Instant::now()),
                    Ok(n) => got += n,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let started = tokio::time::Instant::now();
        // A minute with a request open, the peer pinging every 10 s: still open.
        for _ in 0..6 {
            tokio::io::AsyncWriteExt::write_all(&mut far, b"ping").await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        assert!(!reader.is_finished());
        drop(busy);
        // Pings go on, but nothing is open: 30 s later the reader sees the end.
        let pinger = tokio::spawn(async move {
            loop {
                if tokio::io::AsyncWriteExt::write_all(&mut far, b"ping").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        let (got, ended) = reader.await.unwrap();
        assert!(got >= 7 * 4, "it read the pings: {got}");
        assert_eq!((ended - started).as_secs(), 90, "idle from 60 s, closed at 90 s");
        pinger.abort();
    }
}
