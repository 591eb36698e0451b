//! Serving many users: priority classes, what a finished request reports, and the load a generator carries.
//!
//! These are the seams between the engine (which knows token-level timings
//! and KV occupancy) and whoever observes it (metrics, logs, probes), so that
//! neither has to know the other.

use serde::{Deserialize, Serialize};

/// Which class of work a request belongs to. Interactive work goes first;
/// batch work is admitted behind it but never starved (see the scheduler).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Interactive,
    Batch,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }

    /// Parses the wire and config spelling.
    pub fn parse(text: &str) -> Option<Priority> {
        match text {
            "interactive" => Some(Priority::Interactive),
            "batch" => Some(Priority::Batch),
            _ => None,
        }
    }
}

/// How a request ended, as a bounded set (metric labels and log fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// End-of-generation token or stop string.
    Stop,
    /// `max_tokens` or the context reached.
    Length,
    /// The client cancelled or went away, or the server shut down.
    Cancelled,
    /// The request's own `timeout` passed.
    Timeout,
    /// The engine failed it.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Stop,
        Outcome::Length,
        Outcome::Cancelled,
        Outcome::Timeout,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stop => "stop",
            Outcome::Length => "length",
            Outcome::Cancelled => "cancelled",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

/// Everything measured about one request, reported once when it ends.
/// Times are milliseconds; `None` where the request never got that far.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub request_id: String,
    pub priority: Priority,
    pub outcome: Outcome,
    pub prompt_tokens: u32,
    /// Prompt tokens taken from the prefix cache instead of computed.
    pub cached_tokens: u32,
    pub generated_tokens: u32,
    /// Submission until the scheduler first admitted it.
    pub queue_ms: f64,
    /// Submission until the first generated token.
    pub ttft_ms: Option<f64>,
    /// Admission until the first generated token.
    pub prefill_ms: Option<f64>,
    /// First until last generated token.
    pub decode_ms: Option<f64>,
    /// Submission until the end.
    pub total_ms: f64,
    /// Gap before each generated token after the first.
    pub inter_token_ms: Vec<f64>,
}

/// Told about every request a generator finishes, whatever the outcome, on
/// the generator's own thread: keep it cheap.
pub trait GenerationObserver: Send + Sync + 'static {
    fn finished(&self, record: &RequestRecord);
}

/// A generator's load right now, plus its running totals. Gauges describe
/// this instant; `*_total` fields only ever grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LoadSnapshot {
    /// Sequences admitted and decoding (or prefilling).
    pub running: u32,
    /// Requests waiting for admission, preempted ones included.
    pub waiting: u32,
    /// Size of the KV pool, in tokens (cells).
    pub kv_cells: u32,
    /// Cells held by running sequences; with a stream per sequence, each
    /// running sequence's whole stream.
    pub kv_active_cells: u32,
    /// Cells held only by the prefix cache (evictable).
    pub kv_cached_cells: u32,
    pub prefix_queries_total: u64,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_query_tokens_total: u64,
    /// Prompt tokens found there.
    pub prefix_hit_tokens_total: u64,
    pub prefix_evictions_total: u64,
    pub preemptions_total: u64,
    /// Requests refused because the wait queue was full.
    pub rejected_total: u64,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
}

impl LoadSnapshot {
    /// Fraction of the pool held by running sequences, 0 to 1.
    pub fn kv_usage(&self) -> f64 {
        if self.kv_cells == 0 {
            0.0
        } else {
            f64::from(self.kv_active_cells) / f64::from(self.kv_cells)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_round_trips_its_spelling() {
        for p in [Priority::Interactive, Priority::Batch] {
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        assert_eq!(Priority::parse("urgent"), None);
        assert_eq!(Priority::default(), Priority::Interactive);
    }

    #[test]
    fn kv_usage_is_a_fraction_of_the_pool() {
        let s = LoadSnapshot {
            kv_cells: 200,
            kv_active_cells: 50,
            kv_cached_cells: 100,
            ..LoadSnapshot::default()
        };
        assert_eq!(s.kv_usage(), 0.25);
        assert_eq!(LoadSnapshot::default().kv_usage(), 0.0);
    }
}
