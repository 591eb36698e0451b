//! Turns on the CPU: when the loaded engines' threads outnumber the
//! cores, their llama.cpp computations run one at a time, in the order
//! they asked, instead of together.
//!
//! Each engine's threads meet at a barrier after every graph node and spin
//! there (libgomp's wait policy, set by the `hearth` binary). Two engines
//! computing at once on too few cores spin on the cores the other needs:
//! with one stream per model on this 2-core machine, both finished 256
//! tokens in 10.1 s, against 6.2 s one after the other. Taking turns step
//! by step gives each step the whole machine, so together they take about
//! as long as one after the other, and neither waits for the other's
//! whole reply. With enough cores for every engine's threads, nothing
//! waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Turns given since the process started.
static TAKEN: AtomicU64 = AtomicU64::new(0);

/// Computations that took a turn on a crowded CPU since the process
/// started: zero while the loaded engines' threads fit the cores.
pub fn taken() -> u64 {
    TAKEN.load(Ordering::Relaxed)
}

/// The process's CPU: threads seated by loaded engines and the queue of
/// computations waiting for a turn.
struct Cpu {
    state: Mutex<State>,
    turn: Condvar,
}

struct State {
    /// Threads of every loaded CPU engine.
    seated: u64,
    /// The next ticket to hand out, and the one whose turn it is.
    next: u64,
    serving: u64,
}

static CPU: Cpu = Cpu {
    state: Mutex::new(State {
        seated: 0,
        next: 0,
        serving: 0,
    }),
    turn: Condvar::new(),
};

fn state() -> MutexGuard<'static, State> {
    // The state is two counters a panic cannot leave half-updated.
    CPU.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Logical CPUs, read once: asking costs system calls (and cgroup files),
/// and every decode asks under the lock.
fn cores() -> u64 {
    static CORES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
}

/// An engine's claim on the CPU for as long as it is loaded.
pub(crate) struct Seat {
    threads: u64,
}

impl Seat {
    /// Seats `threads` threads; an engine that computes on a GPU takes no
    /// seat (`threads` 0) and never waits.
    pub(crate) fn take(threads: u32) -> Seat {
        let threads = u64::from(threads);
        state().seated += threads;
        Seat { threads }
    }

    /// Waits for this engine's turn when the seated threads outnumber the
    /// cores; `None` (go ahead) otherwise. The turn ends when dropped, so a
    /// long prompt chunk holds it for its whole call (one step, at most
    /// `step_tokens`). Cores are logical CPUs: two models whose threads
    /// fit the logical CPUs but share physical cores do not take turns.
    pub(crate) fn turn(&self) -> Option<Turn> {
        if self.threads == 0 {
            return None;
        }
        let mut st = state();
        if st.seated <= cores() {
            return None;
        }
        let ticket = st.next;
        st.next += 1;
        while st.serving != ticket {
            st = CPU.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        TAKEN.fetch_add(1, Ordering::Relaxed);
        Some(Turn { _ticket: ticket })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        state().seated -= self.threads;
    }
}

/// The CPU is this computation's until dropped. Only [`Seat::turn`] makes
/// one: each must match a ticket, or the queue would skip a waiter.
#[must_use = "the turn ends when dropped"]
pub(crate) struct Turn {
    _ticket: u64,
}

impl Drop for Turn {
    fn drop(&mut self) {
        state().serving += 1;
        CPU.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn crowded_engines_compute_one_at_a_time() {
        let cores = cores() as u32;
        // More threads than cores: every computation takes a turn, and no
        // two overlap.
        let seats: Vec<Arc<Seat>> = (0..3).map(|_| Arc::new(Seat::take(cores))).collect();
        let inside = Arc::new(AtomicU32::new(0));
        let overlapped = Arc::new(AtomicU32::new(0));
        let workers: Vec<_> = seats
            .iter()
            .map(|seat| {
                let (seat, inside, overlapped) = (
                    Arc::clone(seat),
                    Arc::clone(&inside),
                    Arc::clone(&overlapped),
                );
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let turn = seat.turn();
                        assert!(turn.is_some());
                        if inside.fetch_add(1, Ordering::SeqCst) > 0 {
                            overlapped.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(turn);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(overlapped.load(Ordering::SeqCst), 0);
        // A GPU engine never waits.
        assert!(Seat::take(0).turn().is_none());
        drop(seats);
    }
}
