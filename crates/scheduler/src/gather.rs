//! When the first step after an idle engine starts: a burst of requests
//! that arrive together is admitted together.
//!
//! Clients that start together (a batch job's workers, users answering the
//! same broadcast, a load balancer's retries) reach an idle server a few
//! milliseconds apart. Planning at the first arrival prefills only the
//! requests already there; the rest wait through that step and then share
//! theirs with the first ones, whose second token waits on their prompts.
//! Measured with W1's 16 clients (`hearth bench --workload w1`, the
//! server's request and step logs): the 16 arrived within 6 to 20 ms, the
//! engine started on 2 to 5 of them, and the step that followed, a full
//! prompt budget, held those streams for 1.5 s.
//!
//! So while nothing runs, the first step waits for the burst to end: until
//! no request has arrived for a fifth of the window, the first request has
//! waited the whole window, or enough have come to fill every running
//! place. A request alone waits a fifth of the window; work that arrives
//! while anything runs waits for nothing.

use std::time::{Duration, Instant};

/// The burst seen since the engine was last busy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Burst {
    pub first: Instant,
    pub last: Instant,
}

impl Burst {
    pub fn start(now: Instant) -> Self {
        Self {
            first: now,
            last: now,
        }
    }

    pub fn arrived(&mut self, now: Instant) {
        self.last = now;
    }
}

/// Until when the first step waits for more of `burst`; `None`: plan now.
pub(crate) fn hold_until(
    window: Duration,
    burst: Burst,
    waiting: usize,
    max_running: usize,
    now: Instant,
) -> Option<Instant> {
    if window.is_zero() || waiting == 0 || waiting >= max_running {
        return None;
    }
    let until = (burst.first + window).min(burst.last + window / 5);
    (now < until).then_some(until)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(10);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn a_lone_request_waits_a_fifth_of_the_window() {
        let t0 = Instant::now();
        let burst = Burst::start(t0);
        assert_eq!(hold_until(WINDOW, burst, 1, 16, t0), Some(ms(t0, 2)));
        assert_eq!(hold_until(WINDOW, burst, 1, 16, ms(t0, 2)), None);
    }

    #[test]
    fn each_arrival_extends_the_wait_up_to_the_window() {
        let t0 = Instant::now();
        let mut burst = Burst::start(t0);
        burst.arrived(ms(t0, 1));
        assert_eq!(hold_until(WINDOW, burst, 2, 16, ms(t0, 1)), Some(ms(t0, 3)));
        burst.arrived(ms(t0, 9));
        // The first request has waited nearly the whole window: no more.
        assert_eq!(
            hold_until(WINDOW, burst, 3, 16, ms(t0, 9)),
            Some(ms(t0, 10))
        );
        assert_eq!(hold_until(WINDOW, burst, 3, 16, ms(t0, 10)), None);
    }

    #[test]
    fn a_burst_that_fills_every_running_place_starts_at_once() {
        let t0 = Instant::now();
        let burst = Burst::start(t0);
        assert_eq!(hold_until(WINDOW, burst, 16, 16, t0), None);
        assert_eq!(hold_until(WINDOW, burst, 15, 16, t0), Some(ms(t0, 2)));
    }

    #[test]
    fn a_zero_window_never_waits() {
        let t0 = Instant::now();
        assert_eq!(
            hold_until(Duration::ZERO, Burst::start(t0), 1, 16, t0),
            None
        );
    }
}
