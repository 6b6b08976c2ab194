//! Request bodies: read only once the request is allowed one, capped by the route's limit, and
//! timed. A body that trickles in (a byte every few seconds) would otherwise hold its
//! connection, its task and its buffer for as long as the client likes.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::FromRequest,
    http::StatusCode,
};
use tokio::time::{Instant, Sleep};

use crate::http::error::ApiError;

/// A body gets this long before its rate is first looked at...
pub const GRACE: Duration = Duration::from_secs(10);
/// ...must then have arrived at this many bytes a second on average (looked at every second)...
pub const MIN_BYTES_PER_SEC: u64 = 8 * 1024;
/// ...and must be whole within this, however fast it comes.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The raw request body, with axum's rejections (413 over the route's limit, 400 on a broken
/// upload) and a body too slow (408) answered as JSON errors like every other.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, ApiError> {
        let slow = Arc::new(AtomicBool::new(false));
        let req = req.map(|body| Body::new(Timed::new(body, slow.clone())));
        match Bytes::from_request(req, &()).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(_) if slow.load(Ordering::Relaxed) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_too_slow",
                format!(
                    "the body must arrive at {} KiB/s after the first {} s, and whole within {} s",
                    MIN_BYTES_PER_SEC / 1024,
                    GRACE.as_secs(),
                    DEADLINE.as_secs()
                ),
            )),
            Err(r) => {
                let status = r.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "invalid_body" };
                Err(ApiError { field: Some("body"), ..ApiError::new(status, code, r.body_text()) })
            }
        }
    }
}

impl RawBody {
    /// Reads a request's body once its sender is known to be allowed to send one: a request
    /// that fails authentication (or names a source that is not configured) costs no body read
    /// and no buffer.
    pub async fn after_auth(req: axum::extract::Request) -> Result<Self, ApiError> {
        <Self as FromRequest<()>>::from_request(req, &()).await
    }
}

/// A body that fails when it comes too slowly (see [`GRACE`], [`MIN_BYTES_PER_SEC`], [`DEADLINE`]);
/// `slow` says that was why.
struct Timed {
    inner: Body,
    started: Instant,
    received: u64,
    check: Pin<Box<Sleep>>,
    slow: Arc<AtomicBool>,
}

impl Timed {
    fn new(inner: Body, slow: Arc<AtomicBool>) -> Self {
        let started = Instant::now();
        Self { inner, started, received: 0, check: Box::pin(tokio::time::sleep_until(started + GRACE)), slow }
    }

    /// Whether the body is behind: past its deadline, or under the rate on average.
    fn behind(&self, now: Instant) -> bool {
        let elapsed = now - self.started;
        elapsed >= DEADLINE || u128::from(self.received) * 1000 < u128::from(MIN_BYTES_PER_SEC) * elapsed.as_millis()
    }
}

impl http_body::Body for Timed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        // The clock first, so a body that trickles in is looked at too, not only one that stops.
        while self.check.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if self.behind(now) {
                self.slow.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(axum::Error::new("request body too slow"))));
            }
            self.check.as_mut().reset(now + Duration::from_secs(1));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.received += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;

    /// A body fed `chunk` every second for `seconds`, read through [`Timed`].
    async fn fed(chunk: usize, seconds: usize, slow: Arc<AtomicBool>) -> Result<Bytes, axum::Error> {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tokio::spawn(async move {
            for _ in 0..seconds {
                if tx.send(Ok(Bytes::from(vec![b'x'; chunk]))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        axum::body::to_bytes(Body::new(Timed::new(Body::from_stream(rx), slow)), usize::MAX).await
    }

    /// A body that sends a byte a second is cut once its grace is over; one that arrives at the
    /// rate is read whole.
    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_is_cut_after_its_grace_and_a_steady_one_is_read() {
        let slow = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        assert!(fed(1, 1000, slow.clone()).await.is_err());
        assert!(slow.load(Ordering::Relaxed));
        assert_eq!(started.elapsed().as_secs(), GRACE.as_secs(), "cut when the grace ends");

        let slow = Arc::new(AtomicBool::new(false));
        let whole = fed(MIN_BYTES_PER_SEC as usize * 2, 30, slow.clone()).await.expect("a steady body is read");
        assert_eq!(whole.len(), 30 * 2 * MIN_BYTES_PER_SEC as usize);
        assert!(!slow.load(Ordering::Relaxed));
    }
}
