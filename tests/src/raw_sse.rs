//! The fan-out baseline: a server that does only the raw work of SSE fan-out — each event's
//! frame encoded once, handed to N loopback sockets, the frames queued for a socket coalesced
//! into one write — and nothing else (no auth, log, resume or heartbeats). Fan-out benches run it
//! beside Switchyard in the same run and report Switchyard as a ratio to it.
//!
//! It runs in its own process, as Switchyard does: a bench re-executes itself with
//! [`ENV`] set and calls [`serve`]. Events arrive on a control socket as length-prefixed frames.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::broadcast,
};

/// Set (to anything) in the child process that should be the raw server.
pub const ENV: &str = "SWITCHYARD_RAW_SSE";

/// Frames a socket may fall behind by before it skips ahead (the baseline never blocks the
/// publisher).
const RING: usize = 1 << 16;

/// The raw server in its own process, killed on drop.
pub struct RawServer {
    child: Child,
    /// SSE clients connect here (any `GET`).
    pub sse_addr: String,
    /// Frames to broadcast: each a big-endian u32 length, then the frame's bytes.
    pub control_addr: String,
}

impl RawServer {
    /// Starts `std::env::current_exe()` with [`ENV`] set; the caller's `main` must call [`serve`]
    /// when it sees it.
    pub fn start() -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .env(ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("raw server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its addresses");
        let mut parts = line.split_whitespace().map(str::to_owned);
        let (sse_addr, control_addr) = (parts.next().expect("sse addr"), parts.next().expect("control addr"));
        Self { child, sse_addr, control_addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The raw server's `main`: prints `<sse addr> <control addr>`, then serves until killed.
pub async fn serve() {
    let sse = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let control = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("{} {}", sse.local_addr().expect("addr"), control.local_addr().expect("addr"));
    let (tx, _) = broadcast::channel::<Bytes>(RING);
    let frames = tx.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = sse.accept().await else { continue };
            tokio::spawn(connection(s, frames.subscribe()));
        }
    });
    loop {
        let Ok((mut s, _)) = control.accept().await else { continue };
        let mut len = [0u8; 4];
        while s.read_exact(&mut len).await.is_ok() {
            let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
            if s.read_exact(&mut frame).await.is_err() {
                break;
            }
            let _ = tx.send(Bytes::from(frame));
        }
    }
}

/// One subscriber: the request head read and dropped, the stream's head written, then every
/// frame, all those already queued in one write.
async fn connection(mut s: TcpStream, mut rx: broadcast::Receiver<Bytes>) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    drop(head);
    let open = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\nretry: 1000\n\n";
    if s.write_all(open).await.is_err() {
        return;
    }
    let mut out = BytesMut::new();
    loop {
        let first = match rx.recv().await {
            Ok(f) => f,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        out.extend_from_slice(&first);
        while let Ok(f) = rx.try_recv() {
            out.extend_from_slice(&f);
        }
        if s.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}
