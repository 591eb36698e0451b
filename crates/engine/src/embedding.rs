//! Embeddings on the engine thread: a second llama.cpp context over the same
//! weights, made on first use, pooling as the model's metadata says (mean
//! for models that declare none, such as chat models), fed batches of whole
//! inputs between generation steps.

use std::sync::{Arc, Mutex};

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use types::{EmbeddingReply, Embeddings, GenerateError};

use crate::backend;

/// Most sequences one embedding batch carries.
pub(crate) const EMBED_SEQS: u32 = 16;
/// Most inputs waiting for embedding, over all requests; more are refused
/// as a full queue.
pub(crate) const EMBED_QUEUE_INPUTS: usize = 4096;
/// Most inputs in one request (OpenAI's limit).
pub(crate) const MAX_INPUTS: usize = 2048;

/// The pooling llama.cpp should use, from the GGUF's `<arch>.pooling_type`:
/// the model's own when it names one, else mean, which gives chat models
/// usable sentence vectors. Rank (reranker heads) cannot embed.
pub(crate) fn pooling_from_metadata(declared: Option<u64>) -> LlamaPoolingType {
    match declared {
        Some(2) => LlamaPoolingType::Cls,
        Some(3) => LlamaPoolingType::Last,
        Some(4) => LlamaPoolingType::Rank,
        // 1 is mean; 0 (none) and no key at all mean "not an embedding
        // model", which is mean-pooled too.
        _ => LlamaPoolingType::Mean,
    }
}

/// How the embedding context is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EmbedSettings {
    pub pooling: LlamaPoolingType,
    /// Longest input, and the most tokens one batch may carry.
    pub n_ctx: u32,
    pub threads: i32,
    /// The batch budget while generation is running: one step's worth, so
    /// an embedding batch stalls streams no longer than a step.
    pub busy_budget: u32,
}

/// One request, shared by its inputs as they are embedded, possibly over
/// several batches.
pub(crate) struct EmbedJob {
    pub request_id: String,
    dimensions: Option<u32>,
    prompt_tokens: u32,
    state: Mutex<JobState>,
}

struct JobState {
    reply: Option<EmbeddingReply>,
    vectors: Vec<Option<Vec<f32>>>,
    remaining: usize,
}

/// One input waiting for its batch.
pub(crate) struct EmbedItem {
    pub job: Arc<EmbedJob>,
    pub index: usize,
    pub tokens: Vec<LlamaToken>,
}

impl EmbedJob {
    pub(crate) fn new(
        request_id: String,
        dimensions: Option<u32>,
        inputs: usize,
        prompt_tokens: u32,
        reply: EmbeddingReply,
    ) -> Self {
        Self {
            request_id,
            dimensions,
            prompt_tokens,
            state: Mutex::new(JobState {
                reply: Some(reply),
                vectors: vec![None; inputs],
                remaining: inputs,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nobody waits for the answer any more (or it failed already).
    pub(crate) fn abandoned(&self) -> bool {
        self.state()
            .reply
            .as_ref()
            .is_none_or(EmbeddingReply::is_closed)
    }

    /// Stores input `index`'s pooled vector; the last one sends the answer.
    fn complete(&self, index: usize, mut vector: Vec<f32>) {
        if let Some(d) = self.dimensions {
            vector.truncate(d as usize);
        }
        normalize(&mut vector);
        let mut st = self.state();
        if st.vectors[index].replace(vector).is_none() {
            st.remaining -= 1;
        }
        if st.remaining == 0 {
            if let Some(reply) = st.reply.take() {
                let vectors = std::mem::take(&mut st.vectors)
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect();
                let _ = reply.send(Ok(Embeddings {
                    vectors,
                    prompt_tokens: self.prompt_tokens,
                }));
            }
        }
    }

    /// Ends the request with `err`, once.
    pub(crate) fn fail(&self, err: GenerateError) {
        if let Some(reply) = self.state().reply.take() {
            tracing::warn!(request_id = %self.request_id, %err, "embedding request failed");
            let _ = reply.send(Err(err));
        }
    }
}

/// The embedding context and its batch.
pub(crate) struct Embedder<'a> {
    ctx: LlamaContext<'a>,
    batch: LlamaBatch<'static>,
}

impl<'a> Embedder<'a> {
    pub(crate) fn new(model: &'a LlamaModel, settings: EmbedSettings) -> Result<Self, String> {
        let backend = backend::get()?;
        let n_ctx = settings.n_ctx.max(1);
        let params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_pooling_type(settings.pooling)
            .with_n_ctx(std::num::NonZeroU32::new(n_ctx))
            // Pooling needs each input whole in one micro-batch, and an
            // encoder (BERT-style) model needs the whole batch in one.
            .with_n_batch(n_ctx)
            .with_n_ubatch(n_ctx)
            .with_n_seq_max(EMBED_SEQS)
            .with_kv_unified(true)
            .with_n_threads(settings.threads)
            .with_n_threads_batch(settings.threads);
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            ctx,
            batch: LlamaBatch::new(n_ctx as usize, 1),
        })
    }

    /// Embeds `items` in one decode (their tokens fit the context: the
    /// caller's batch never exceeds it) and answers each input.
    pub(crate) fn run(&mut self, items: &[EmbedItem]) {
        let started = std::time::Instant::now();
        // The last batch's sequences: every batch starts from an empty pool.
        self.ctx.clear_kv_cache();
        self.batch.clear();
        for (seq, item) in (0i32..).zip(items) {
            if let Err(e) = self.batch.add_sequence(&item.tokens, seq, false) {
                fail_all(items, &e);
                return;
            }
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            fail_all(items, &e);
            return;
        }
        for (seq, item) in (0i32..).zip(items) {
            match self.ctx.embeddings_seq_ith(seq) {
                Ok(v) => item.job.complete(item.index, v.to_vec()),
                Err(e) => item.job.fail(GenerateError::Internal(format!(
                    "no pooled embedding for sequence {seq}: {e}"
                ))),
            }
        }
        tracing::debug!(
            inputs = items.len(),
            tokens = items.iter().map(|i| i.tokens.len()).sum::<usize>(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            request_ids = ?items.iter().map(|i| i.job.request_id.as_str()).collect::<Vec<_>>(),
            "embedding batch"
        );
    }
}

/// Scales `v` to unit length in place (a zero vector stays zero).
fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

fn fail_all(items: &[EmbedItem], err: &dyn std::fmt::Display) {
    tracing::error!(%err, "embedding batch failed");
    for item in items {
        item.job
            .fail(GenerateError::Internal(format!("embedding failed: {err}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::PendingEmbeddings;

    #[test]
    fn normalised_vectors_have_unit_length() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = vec![0.0; 3];
        normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }

    #[test]
    fn pooling_follows_the_metadata_and_defaults_to_mean() {
        assert_eq!(pooling_from_metadata(None), LlamaPoolingType::Mean);
        assert_eq!(pooling_from_metadata(Some(0)), LlamaPoolingType::Mean);
        assert_eq!(pooling_from_metadata(Some(1)), LlamaPoolingType::Mean);
        assert_eq!(pooling_from_metadata(Some(2)), LlamaPoolingType::Cls);
        assert_eq!(pooling_from_metadata(Some(3)), LlamaPoolingType::Last);
        assert_eq!(pooling_from_metadata(Some(4)), LlamaPoolingType::Rank);
    }

    #[test]
    fn a_job_answers_once_every_input_is_in_in_input_order() {
        let (tx, pending) = PendingEmbeddings::channel();
        let job = EmbedJob::new("r".into(), Some(2), 2, 7, tx);
        job.complete(1, vec![0.0, 2.0, 9.0]);
        assert!(!job.abandoned());
        job.complete(0, vec![3.0, 4.0, 9.0]);
        let out = pending.blocking_wait().unwrap();
        assert_eq!(out.vectors, [vec![0.6, 0.8], vec![0.0, 1.0]]);
        assert_eq!(out.prompt_tokens, 7);
        assert!(job.abandoned(), "answered: nothing more to do");
    }

    #[test]
    fn a_dropped_handle_abandons_the_job() {
        let (tx, pending) = PendingEmbeddings::channel();
        let job = EmbedJob::new("r".into(), None, 1, 1, tx);
        drop(pending);
        assert!(job.abandoned());
    }
}
