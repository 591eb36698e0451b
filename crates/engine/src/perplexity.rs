//! Perplexity over a text by llama.cpp's method (its `llama-perplexity`):
//! the tokens cut into windows, each computed from an empty cache with its
//! first token replaced by BOS where the model adds one, and only the
//! second half of each window scored, so every scored token has at least
//! half a window of context.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use serde::Serialize;

use crate::{backend, Engine, EngineError};

/// A perplexity measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Perplexity {
    pub perplexity: f64,
    /// Standard error of the estimate, as llama.cpp reports it (from the
    /// spread of the per-token log-likelihoods).
    pub std_error: f64,
    /// Mean negative log-likelihood per scored token, nats.
    pub mean_nll: f64,
    pub scored_tokens: u64,
    pub windows: u32,
    pub window: u32,
    pub text_tokens: u64,
    pub seconds: f64,
}

/// Accumulates per-token log-probabilities into llama.cpp's estimate.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    nll: f64,
    nll2: f64,
    count: u64,
}

impl Tally {
    fn add(&mut self, logprob: f64) {
        self.nll -= logprob;
        self.nll2 += logprob * logprob;
        self.count += 1;
    }

    fn perplexity(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }

    /// (perplexity, its standard error, mean NLL).
    fn finish(&self) -> (f64, f64, f64) {
        let n = self.count as f64;
        let mean = self.nll / n;
        let variance = self.nll2 / n - mean * mean;
        let ppl = mean.exp();
        let se = if variance > 0.0 && n > 1.0 {
            (variance / (n - 1.0)).sqrt() * ppl
        } else {
            0.0
        };
        (ppl, se, mean)
    }
}

/// log softmax(logits)[target], computed stably in f64.
fn log_prob(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[target] as f64 - max - sum.ln()
}

/// Smallest window: half of it is context for the scored half.
pub const MIN_WINDOW: u32 = 16;

impl Engine {
    /// Perplexity of the model over `text` with windows of `window` tokens
    /// (at most `max_windows` of them), computed on `threads` threads in a
    /// context of its own. `on_window(done, total, running perplexity)`
    /// is called after each window.
    pub fn perplexity(
        &self,
        text: &str,
        window: u32,
        max_windows: Option<u32>,
        threads: u32,
        mut on_window: impl FnMut(u32, u32, f64),
    ) -> Result<Perplexity, EngineError> {
        let started = std::time::Instant::now();
        if window < MIN_WINDOW {
            return Err(EngineError::Config(format!(
                "the perplexity window must be at least {MIN_WINDOW} tokens"
            )));
        }
        let model = &self.shared.model;
        let vocab = model.vocab();
        // As llama-perplexity: special tokens added, none parsed from text.
        let tokens = vocab.tokenize(text.as_bytes(), true, false);
        let n = window as usize;
        if tokens.len() < 2 * n {
            return Err(EngineError::Config(format!(
                "the text is {} tokens; perplexity with a window of {window} needs at least {}",
                tokens.len(),
                2 * n
            )));
        }
        let total = (tokens.len() / n) as u32;
        let windows = max_windows.map_or(total, |m| m.clamp(1, total));
        let threads = i32::try_from(threads).unwrap_or(i32::MAX);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(window))
            .with_n_batch(window)
            .with_n_ubatch(window.min(512))
            .with_n_seq_max(1)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let backend = backend::get().map_err(EngineError::Backend)?;
        let context_error = |reason: String| EngineError::Context {
            path: self.info.path.clone(),
            reason,
        };
        let mut ctx = model
            .new_context(backend, params)
            .map_err(|e| context_error(e.to_string()))?;
        let mut batch = LlamaBatch::new(n, 1);
        let bos = vocab.should_add_bos().then(|| vocab.bos());
        let first = n / 2;
        let mut tally = Tally::default();
        for w in 0..windows as usize {
            let chunk = &tokens[w * n..(w + 1) * n];
            ctx.clear_kv_cache();
            batch.clear();
            for (k, &token) in chunk.iter().enumerate() {
                let token = match (k, bos) {
                    (0, Some(bos)) => bos,
                    _ => token,
                };
                batch
                    .add(token, k as i32, &[0], k >= first)
                    .map_err(|e| context_error(e.to_string()))?;
            }
            ctx.decode(&mut batch)
                .map_err(|e| context_error(format!("decode failed: {e}")))?;
            // Row j predicts token j + 1; the last row predicts past the window.
            for j in first..n - 1 {
                let logits = ctx.get_logits_ith(j as i32);
                tally.add(log_prob(logits, chunk[j + 1].0 as usize));
            }
            on_window(w as u32 + 1, windows, tally.perplexity());
        }
        let (perplexity, std_error, mean_nll) = tally.finish();
        Ok(Perplexity {
            perplexity,
            std_error,
            mean_nll,
            scored_tokens: tally.count,
            windows,
            window,
            text_tokens: tokens.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prob_is_a_stable_log_softmax() {
        let lp = log_prob(&[0.0, 0.0, 0.0, 0.0], 2);
        assert!((lp - (0.25f64).ln()).abs() < 1e-12);
        // Huge logits must not overflow.
        let lp = log_prob(&[1000.0, 1000.0], 0);
        assert!((lp - (0.5f64).ln()).abs() < 1e-9);
        assert!(log_prob(&[10.0, -10.0], 1) < -19.9);
    }

    #[test]
    fn a_tally_gives_llama_cpps_estimate_and_error() {
        let mut t = Tally::default();
        for lp in [-1.0, -2.0, -3.0] {
            t.add(lp);
        }
        let (ppl, se, mean) = t.finish();
        assert!((mean - 2.0).abs() < 1e-12);
        assert!((ppl - 2f64.exp()).abs() < 1e-9);
        // Variance of {1, 2, 3} (population) is 2/3; / (n - 1) = 1/3.
        assert!((se - (1.0f64 / 3.0).sqrt() * ppl).abs() < 1e-9);
    }
}
