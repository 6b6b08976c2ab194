//! The clock deliverers schedule by: wall time, advanced by tokio's clock, so tests with paused
//! time see a whole retry ladder (hours of it) in no time, and stored times stay wall times.

use tokio::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    wall_ms: u64,
    at: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self { wall_ms: switchyard::log::now_ms(), at: Instant::now() }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.wall_ms + self.at.elapsed().as_millis() as u64
    }

    /// The instant a wall time falls at (now for one in the past).
    pub(crate) fn instant(&self, ms: u64) -> Instant {
        self.at + Duration::from_millis(ms.saturating_sub(self.wall_ms))
    }
}
