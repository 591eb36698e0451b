//! The scheduler's settings and the rules they must keep.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// KV pool size in cells (tokens), shared by every sequence.
    pub kv_cells: u32,
    /// Sequence ids available (llama.cpp's `n_seq_max`): running sequences
    /// plus cached prefixes.
    pub max_seqs: u32,
    /// Most sequences decoding at once.
    pub max_running: u32,
    /// Most requests waiting for admission; more are refused.
    pub max_queue: u32,
    /// Most tokens one step carries, decode tokens included.
    pub step_tokens: u32,
    /// How far behind interactive work a batch request ranks (ageing).
    pub batch_delay: Duration,
    /// Keep finished sequences' cells for later requests.
    pub prefix_cache: bool,
    /// Most cells held only by cache entries (on no running sequence's
    /// path) once those entries have been idle for [`CACHE_GRACE`](crate::CACHE_GRACE).
    /// llama.cpp's attention scans every cell up to the highest one in use,
    /// masked or not, so cached cells slow every step of every sequence;
    /// this bounds that cost (measured in docs/benchmarks.md).
    pub cache_cells: u32,
    /// `Some(cells)`: every sequence id is a stream of its own with this
    /// many cells (llama.cpp's KV with `kv_unified` off), and `kv_cells`
    /// is all the streams together. `None`: one unified pool.
    pub stream_cells: Option<u32>,
    /// Shorter matches are computed again instead of shared. Sharing pins
    /// the source's cells wherever they sit in the pool, and llama.cpp's
    /// attention scans every cell up to the highest one in use: a chat
    /// template's few header tokens, shared by every request, would
    /// otherwise keep one old entry's cells (and so every step's scan) at
    /// the far end of the pool. Streams pin nothing: there a shorter match
    /// is still taken over in place, never copied (see `place_in_stream`).
    pub min_reuse: u32,
    /// Streams: a copy of a whole stream costs as much as computing this
    /// many prompt tokens (the engine measures both, see
    /// [`Scheduler::set_copy_tokens`](crate::Scheduler::set_copy_tokens)); a shorter prefix is computed rather
    /// than copied. llama.cpp copies streams only whole, so a copy's cost
    /// is the stream's size, whatever the prefix's length.
    pub copy_tokens: u32,
    /// While nothing runs, the first step waits up to this long for a
    /// burst of requests to arrive in full (see `gather.rs`); zero plans
    /// at the first arrival.
    pub gather: Duration,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid scheduler setting: {0}")]
pub struct ConfigError(String);

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: &str| Err(ConfigError(s.to_string()));
        if self.kv_cells == 0 {
            return bad("the KV pool needs at least one cell");
        }
        if self.max_running == 0 {
            return bad("max-running must be at least 1");
        }
        if self.max_seqs < self.max_running {
            return bad("there must be at least as many sequence ids as running sequences");
        }
        if self.step_tokens <= self.max_running {
            return bad("step-tokens must exceed max-running, so prompts always make progress");
        }
        if let Some(cells) = self.stream_cells {
            if cells == 0 || u64::from(cells) * u64::from(self.max_seqs) > u64::from(self.kv_cells)
            {
                return bad("the streams need at least one cell each, within the pool");
            }
        }
        Ok(())
    }
}
