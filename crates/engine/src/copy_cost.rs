//! What a copy of a whole KV stream costs, in prompt tokens computed instead ([`scheduler::Config::copy_tokens`]).
//!
//! With a stream per sequence llama.cpp copies a prefix only as its whole
//! stream (`ggml_backend_tensor_copy` of every layer's keys and values, a
//! plain memory copy on the CPU, at the next decode). A stream of the
//! default model at 4,096 tokens is 94 MB; a 7B model's at 8,192 tokens is
//! about 4 GB. Whether a copy beats computing the prefix again depends on
//! this machine's memory copy rate and its prefill rate for this model, so
//! both are measured: the copy rate once at load, the prefill rate from the
//! engine's own steps as they run.

use std::time::{Duration, Instant};

/// Steps with at least this many rows measure the prefill rate: fewer are
/// dominated by decoding, whose rows cost more than a prompt's.
const PREFILL_STEP_MIN_TOKENS: usize = 128;

/// Weight of the newest step in the running prefill estimate.
const PREFILL_SMOOTHING: f64 = 0.2;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CopyCost {
    /// Seconds one stream copy takes.
    copy_secs: f64,
    /// Seconds of decode per prompt token, once a step has shown it.
    per_token: Option<f64>,
    /// Whether a step has run: the first pays for faulting in the weights
    /// and building llama.cpp's graphs, and is not counted.
    warm: bool,
}

impl CopyCost {
    /// A stream of `stream_bytes` copied at `bytes_per_sec`.
    pub fn new(stream_bytes: u64, bytes_per_sec: f64) -> Self {
        Self {
            copy_secs: stream_bytes as f64 / bytes_per_sec.max(1.0),
            per_token: None,
            warm: false,
        }
    }

    /// Takes in a step of `tokens` rows that decoded in `elapsed` and
    /// copied no stream. Returns the new [`CopyCost::tokens`] when it changed.
    pub fn observe(&mut self, tokens: usize, elapsed: Duration) -> Option<u32> {
        if !std::mem::replace(&mut self.warm, true) || tokens < PREFILL_STEP_MIN_TOKENS {
            return None;
        }
        let before = self.tokens();
        let sample = elapsed.as_secs_f64() / tokens as f64;
        self.per_token = Some(match self.per_token {
            Some(old) => old + PREFILL_SMOOTHING * (sample - old),
            None => sample,
        });
        let after = self.tokens();
        (after != before).then_some(after)
    }

    /// Prompt tokens that cost as much as one copy; 0 until measured.
    pub fn tokens(&self) -> u32 {
        match self.per_token {
            Some(t) if t > 0.0 => (self.copy_secs / t).ceil().min(f64::from(u32::MAX)) as u32,
            _ => 0,
        }
    }
}

/// This machine's single-threaded memory copy rate, in bytes per second:
/// the best of a few copies of 16 MiB, large enough to leave the caches.
pub(crate) fn memory_copy_rate() -> f64 {
    const BYTES: usize = 16 << 20;
    let src = vec![1u8; BYTES];
    let mut dst = vec![0u8; BYTES];
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed());
    }
    BYTES as f64 / best.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_worth_the_prompt_tokens_computed_in_its_time() {
        // 100 MB at 10 GB/s: 10 ms; prefill at 0.5 ms a token: 20 tokens.
        let mut cost = CopyCost::new(100_000_000, 10e9);
        assert_eq!(
            cost.observe(200, Duration::from_secs(5)),
            None,
            "the first step"
        );
        assert_eq!(cost.tokens(), 0, "unknown until a step is measured");
        assert_eq!(cost.observe(200, Duration::from_millis(100)), Some(20));
        // A second step at the same rate changes nothing.
        assert_eq!(cost.observe(400, Duration::from_millis(200)), None);
        assert_eq!(cost.tokens(), 20);
    }

    #[test]
    fn decode_steps_do_not_count_and_the_estimate_moves_smoothly() {
        let mut cost = CopyCost::new(100_000_000, 10e9);
        cost.observe(1, Duration::from_secs(1));
        assert_eq!(cost.observe(16, Duration::from_millis(80)), None);
        cost.observe(200, Duration::from_millis(100));
        // One step at twice the cost per token moves the estimate a fifth
        // of the way: 0.6 ms a token, 17 tokens.
        assert_eq!(cost.observe(200, Duration::from_millis(200)), Some(17));
    }

    #[test]
    fn the_copy_rate_is_measured() {
        let rate = memory_copy_rate();
        assert!(rate > 1e8, "{rate} bytes/s");
    }
}
