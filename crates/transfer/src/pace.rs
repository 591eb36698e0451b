//! A bandwidth cap shared by every connection of one transfer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Holds the transfer's average rate at or under `bytes_per_sec`: after
/// each read, a connection sleeps until the bytes all connections received
/// so far are due. Averaging from the start (rather than a token bucket)
/// keeps the code small; a cap is meant for long transfers, where the two
/// agree.
pub struct Pace {
    start: Instant,
    received: AtomicU64,
    bytes_per_sec: Option<u64>,
}

impl Pace {
    pub fn new(bytes_per_sec: Option<u64>) -> Pace {
        Pace {
            start: Instant::now(),
            received: AtomicU64::new(0),
            bytes_per_sec: bytes_per_sec.filter(|r| *r > 0),
        }
    }

    /// Counts `n` more bytes, sleeping until they are due under the cap.
    pub fn received(&self, n: u64) {
        let total = self.received.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(rate) = self.bytes_per_sec {
            let due = Duration::from_secs_f64(total as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}
