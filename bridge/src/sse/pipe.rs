//! A live SSE stream's way from its writer to hyper, for the streams hyper must frame or
//! encrypt itself (HTTP/2, TLS): a small shared queue the writer fills and the response body
//! drains.
//!
//! Why not a channel: the writer has to learn that there is room again (as it does for a socket
//! that became writable) and that the body is gone (the client closed the stream), through the
//! one waker it keeps per stream, and only then, so a busy stream costs the writer no wake-up
//! per batch; and the body takes everything waiting as one chunk (one HTTP/2 DATA frame, one TLS
//! record), as the direct path writes it in one call.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};

/// Bytes a pipe holds before the writer keeps frames back: about a socket's send buffer.
pub const ROOM: usize = 64 * 1024;

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// The body, waiting for frames.
    body: Option<Waker>,
    /// The writer's waker for this stream, and whether it waits for room.
    writer: Option<Waker>,
    wants_room: bool,
    /// The body was dropped (the client went away).
    gone: bool,
    /// The writer let go: the body ends once drained.
    ended: bool,
}

/// The writer's end.
pub struct Pipe(Arc<Mutex<State>>);

/// hyper's end: a stream of chunks for the response body.
pub struct Body(Arc<Mutex<State>>);

/// The body went away.
#[derive(Debug)]
pub struct Gone;

/// A new pipe.
pub fn pipe() -> (Pipe, Body) {
    let state = Arc::new(Mutex::new(State::default()));
    (Pipe(state.clone()), Body(state))
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Changes the state under the lock, then wakes whoever `change` names, outside it (a woken
/// task may come straight back for the lock).
fn update(state: &Mutex<State>, change: impl FnOnce(&mut State) -> Option<Waker>) {
    let waker = change(&mut lock(state));
    if let Some(w) = waker {
        w.wake();
    }
}

impl Pipe {
    /// `writer` is woken when room frees up after a fill that could not move everything, and
    /// when the body goes away.
    pub fn attach(&self, writer: Waker) {
        lock(&self.0).writer = Some(writer);
    }

    /// Moves frames from the front of `queue` while there is room: whether it moved any, and
    /// whether `queue` is now empty (if not, the writer is woken when there is room).
    pub fn fill(&self, queue: &mut VecDeque<Bytes>) -> Result<(bool, bool), Gone> {
        let (body, moved) = {
            let mut s = lock(&self.0);
            if s.gone {
                return Err(Gone);
            }
            let mut moved = false;
            while let Some(f) = queue.front() {
                // A frame bigger than the room still goes, alone.
                if s.bytes > 0 && s.bytes + f.len() > ROOM {
                    break;
                }
                s.bytes += f.len();
                s.frames.extend(queue.pop_front());
                moved = true;
            }
            s.wants_room = !queue.is_empty();
            let body = if moved { s.body.take() } else { None };
            (body, moved)
        };
        if let Some(w) = body {
            w.wake();
        }
        Ok((moved, queue.is_empty()))
    }

    /// Whether the body went away.
    pub fn is_gone(&self) -> bool {
        lock(&self.0).gone
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        update(&self.0, |s| {
            s.ended = true;
            s.body.take()
        });
    }
}

impl futures::Stream for Body {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let (chunk, writer) = {
            let mut s = lock(&self.0);
            if s.frames.is_empty() {
                if s.ended {
                    return Poll::Ready(None);
                }
                s.body = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let chunk = if s.frames.len() == 1 {
                s.frames.pop_front().unwrap_or_default()
            } else {
                let mut joined = BytesMut::with_capacity(s.bytes);
                for f in s.frames.drain(..) {
                    joined.extend_from_slice(&f);
                }
                joined.freeze()
            };
            s.bytes = 0;
            let writer = if std::mem::take(&mut s.wants_room) { s.writer.clone() } else { None };
            (chunk, writer)
        };
        if let Some(w) = writer {
            w.wake();
        }
        Poll::Ready(Some(chunk))
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        update(&self.0, |s| {
            s.gone = true;
            s.writer.take()
        });
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Wake, Waker},
    };

    use bytes::Bytes;
    use futures::{FutureExt, StreamExt};

    use super::{ROOM, pipe};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames go out joined and in order; a full pipe keeps the rest back and wakes the writer
    /// once there is room (not on every drain); the body ends after the writer lets go and what
    /// waits is drained; a dropped body is reported to the writer.
    #[test]
    fn frames_flow_joined_the_writer_waits_for_room_and_each_end_sees_the_other_go() {
        let wakes = Arc::new(Count::default());
        let (writer, mut body) = pipe();
        writer.attach(Waker::from(wakes.clone()));
        let mut queue: VecDeque<Bytes> = ["a", "b", "c"].into_iter().map(Bytes::from).collect();
        assert_eq!(writer.fill(&mut queue).unwrap(), (true, true));
        assert_eq!(body.next().now_or_never(), Some(Some(Bytes::from("abc"))));
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0, "no wake-up while the writer waits for nothing");
        // More than the room: the rest waits in the writer's queue.
        let big = Bytes::from(vec![b'x'; ROOM / 2 + 1]);
        queue.extend([big.clone(), big.clone(), Bytes::from("tail")]);
        assert_eq!(writer.fill(&mut queue).unwrap(), (true, false));
        assert_eq!(queue.len(), 2);
        assert_eq!(body.next().now_or_never().unwrap().unwrap().len(), big.len());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "woken once there is room");
        assert_eq!(writer.fill(&mut queue).unwrap(), (true, true));
        drop(writer);
        let last = body.next().now_or_never().unwrap().unwrap();
        assert!(last.ends_with(b"tail"), "what waited is drained first");
        assert_eq!(body.next().now_or_never(), Some(None), "then the body ends");
        // The other way round: the body goes, the writer is told.
        let (writer, body) = pipe();
        writer.attach(Waker::from(wakes.clone()));
        drop(body);
        assert!(writer.is_gone());
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
        assert!(writer.fill(&mut VecDeque::from([Bytes::from("x")])).is_err());
    }
}
