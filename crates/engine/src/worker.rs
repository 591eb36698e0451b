//! The engine thread: owns the llama.cpp context and steps every active sequence together.
//!
//! One context, many sequences: each step builds a single batch holding the
//! next token of every decoding sequence and, in the room left, prompt chunks
//! of sequences still prefilling. One `llama_decode` serves them all, then each
//! sequence samples from its own logits row with its own sampler.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use types::{FinishReason, GenerateError};

use crate::sampler;
use crate::sequence::{Job, Sequence, Step};

/// Jobs waiting for a slot, shared between submitters and the engine thread.
#[derive(Default)]
pub(crate) struct Queue {
    pub jobs: VecDeque<Job>,
    pub shutdown: bool,
    /// False once the engine thread has exited, for whatever reason.
    pub running: bool,
}

pub(crate) struct Shared {
    pub model: LlamaModel,
    pub queue: Mutex<Queue>,
    pub wake: Condvar,
    /// Tokens that end a turn; banned outright when a request ignores EOS.
    pub eog_tokens: Vec<LlamaToken>,
    pub n_ctx_seq: u32,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the queue half-updated
        // (every critical section is a single push/pop), so poisoning is moot.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sizes fixed when the context was created.
pub(crate) struct Geometry {
    pub n_parallel: usize,
    pub n_batch: usize,
}

/// Marks the engine stopped and fails queued jobs when the thread ends, even by panic.
struct ExitGuard<'a>(&'a Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.running = false;
        for job in q.jobs.drain(..) {
            job.reject(GenerateError::Unavailable);
        }
    }
}

pub(crate) fn run(shared: Arc<Shared>, mut ctx: LlamaContext<'_>, geometry: Geometry) {
    let _guard = ExitGuard(&shared);
    let model = &shared.model;
    let mut slots: Vec<Option<Sequence>> = (0..geometry.n_parallel).map(|_| None).collect();
    let mut batch = LlamaBatch::new(geometry.n_batch, 1);

    loop {
        if !admit(&shared, &mut slots) {
            for seq in slots.iter_mut().filter_map(Option::take) {
                seq.fail(GenerateError::Unavailable);
            }
            return;
        }

        for slot in slots.iter_mut() {
            if slot.as_ref().is_some_and(Sequence::abandoned) {
                let mut seq = slot.take().expect("checked above");
                seq.finish(FinishReason::Cancelled);
                release(&mut ctx, seq.seq_id);
            }
        }

        batch.clear();
        let mut room = geometry.n_batch;
        let mut fed = vec![false; slots.len()];
        // Decoding sequences first: one token each keeps their latency flat
        // while long prompts are prefilled in the room that is left.
        for prefill in [false, true] {
            for (i, slot) in slots.iter_mut().enumerate() {
                let Some(seq) = slot.as_mut() else { continue };
                let wanted = if prefill {
                    seq.is_prefilling()
                } else {
                    seq.is_decoding()
                };
                if !wanted {
                    continue;
                }
                let seq_id = seq.seq_id;
                let n = seq.feed(room, |token, pos, logits| {
                    let row = batch.n_tokens();
                    batch
                        .add(token, pos, &[seq_id], logits)
                        .expect("batch sized to n_batch and room tracked");
                    row
                });
                room -= n;
                fed[i] |= n > 0;
            }
        }
        if batch.n_tokens() == 0 {
            // Every live sequence always has a token to feed; reaching this
            // would be a bookkeeping bug, and spinning on it would hang callers.
            for seq in slots.iter_mut().filter_map(Option::take) {
                tracing::error!(seq_id = seq.seq_id, "sequence had nothing to feed");
                seq.fail(GenerateError::Internal("engine bookkeeping error".into()));
                release(&mut ctx, seq.seq_id);
            }
            continue;
        }

        if let Err(err) = ctx.decode(&mut batch) {
            // Every sequence with tokens in this batch now has an unknown KV
            // state; end those, keep the others.
            tracing::error!(%err, tokens = batch.n_tokens(), "llama_decode failed");
            for (slot, _) in slots.iter_mut().zip(&fed).filter(|(_, &f)| f) {
                if let Some(seq) = slot.take() {
                    seq.fail(GenerateError::Internal(format!("decode failed: {err}")));
                    release(&mut ctx, seq.seq_id);
                }
            }
            continue;
        }

        for slot in slots.iter_mut() {
            let Some(seq) = slot.as_mut() else { continue };
            if let Step::Finished = seq.sample(model, &ctx) {
                release(&mut ctx, seq.seq_id);
                *slot = None;
            }
        }
    }
}

/// Moves queued jobs into free slots; blocks while there is nothing to do.
/// Returns false when the engine should stop.
fn admit(shared: &Shared, slots: &mut [Option<Sequence>]) -> bool {
    let mut admitted = Vec::new();
    {
        let mut q = shared.lock();
        loop {
            if q.shutdown {
                return false;
            }
            for (seq_id, slot) in slots.iter().enumerate() {
                if slot.is_some() {
                    continue;
                }
                let Some(job) = next_live_job(&mut q.jobs) else {
                    break;
                };
                admitted.push((seq_id, job));
            }
            if !admitted.is_empty() || slots.iter().any(Option::is_some) {
                break;
            }
            q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
    // Sampler set-up happens outside the lock so submitters never wait on it.
    for (seq_id, job) in admitted {
        let banned: &[LlamaToken] = if job.request.ignore_eos {
            &shared.eog_tokens
        } else {
            &[]
        };
        let sampler = sampler::build(
            &job.request.sampling,
            shared.model.n_vocab(),
            &job.tokens,
            banned,
        );
        slots[seq_id] = Some(Sequence::start(
            job,
            seq_id as i32,
            shared.n_ctx_seq,
            sampler,
        ));
    }
    true
}

/// Pops jobs until one whose caller is still waiting; the others are told they were cancelled.
fn next_live_job(jobs: &mut VecDeque<Job>) -> Option<Job> {
    while let Some(job) = jobs.pop_front() {
        if job.cancel.is_cancelled() || job.tx.is_closed() {
            job.cancelled();
        } else {
            return Some(job);
        }
    }
    None
}

fn release(ctx: &mut LlamaContext<'_>, seq_id: i32) {
    if let Err(err) = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None) {
        tracing::error!(%err, seq_id, "could not clear KV cache for sequence");
    }
}
