//! One generation in flight: its tokens, sampler, text assembly, clock and reply channel.

use std::time::Instant;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;
use types::{
    CancelFlag, Completion, FinishReason, GenerateError, GenerationEvent, GenerationRequest,
    Timings, Usage,
};

use crate::sampler::TokenSampler;
use crate::text::TextAssembler;

/// A validated request waiting for a slot.
pub(crate) struct Job {
    pub tokens: Vec<LlamaToken>,
    pub request: GenerationRequest,
    pub tx: UnboundedSender<GenerationEvent>,
    pub cancel: CancelFlag,
    pub submitted: Instant,
}

impl Job {
    /// Tells the caller this job will never run.
    pub(crate) fn reject(self, err: GenerateError) {
        let _ = self.tx.send(GenerationEvent::Failed(err));
    }

    /// Ends a job cancelled while it was still queued.
    pub(crate) fn cancelled(self) {
        let _ = self.tx.send(GenerationEvent::Done(Completion {
            finish_reason: FinishReason::Cancelled,
            usage: Usage {
                prompt_tokens: self.tokens.len() as u32,
                completion_tokens: 0,
            },
            timings: Timings::default(),
        }));
    }
}

/// What feeding one sampled token did to a sequence.
pub(crate) enum Step {
    Continue,
    Finished,
}

/// A job that owns a sequence id in the shared context.
pub(crate) struct Sequence {
    pub seq_id: i32,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already placed in a batch.
    fed: usize,
    /// Positions occupied in this sequence's KV cache.
    n_past: i32,
    /// Sampled but not yet fed back.
    next: Option<LlamaToken>,
    /// Batch row whose logits this sequence samples from after the decode.
    pub logits_row: Option<i32>,
    sampler: TokenSampler,
    text: TextAssembler,
    generated: u32,
    max_new: u32,
    ignore_eos: bool,
    tx: UnboundedSender<GenerationEvent>,
    cancel: CancelFlag,
    submitted: Instant,
    started: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

impl Sequence {
    pub(crate) fn start(job: Job, seq_id: i32, n_ctx: u32, sampler: TokenSampler) -> Self {
        let room = n_ctx.saturating_sub(job.tokens.len() as u32);
        let max_new = job.request.max_tokens.map_or(room, |m| m.min(room));
        Self {
            seq_id,
            fed: 0,
            n_past: 0,
            next: None,
            logits_row: None,
            sampler,
            text: TextAssembler::new(&job.request.stop),
            generated: 0,
            max_new,
            ignore_eos: job.request.ignore_eos,
            tx: job.tx,
            cancel: job.cancel,
            submitted: job.submitted,
            started: Instant::now(),
            first_token: None,
            last_token: None,
            prompt: job.tokens,
        }
    }

    /// The caller cancelled or stopped listening.
    pub(crate) fn abandoned(&self) -> bool {
        self.cancel.is_cancelled() || self.tx.is_closed()
    }

    /// Has a sampled token waiting to be fed back.
    pub(crate) fn is_decoding(&self) -> bool {
        self.next.is_some()
    }

    /// Still has prompt tokens that are not in the KV cache.
    pub(crate) fn is_prefilling(&self) -> bool {
        self.fed < self.prompt.len()
    }

    /// Puts the tokens this sequence needs next into the batch: the pending
    /// sampled token, or the next chunk of its prompt, at most `room` of them.
    /// `add` receives (token, position, wants_logits) and returns the row.
    /// Called at most once per step.
    pub(crate) fn feed(
        &mut self,
        room: usize,
        mut add: impl FnMut(LlamaToken, i32, bool) -> i32,
    ) -> usize {
        self.logits_row = None;
        if room == 0 {
            return 0;
        }
        if let Some(token) = self.next.take() {
            self.logits_row = Some(add(token, self.n_past, true));
            self.n_past += 1;
            return 1;
        }
        let end = self.prompt.len().min(self.fed + room);
        for i in self.fed..end {
            let last = i + 1 == self.prompt.len();
            let row = add(self.prompt[i], self.n_past, last);
            if last {
                self.logits_row = Some(row);
            }
            self.n_past += 1;
        }
        let n = end - self.fed;
        self.fed = end;
        n
    }

    /// Samples from this sequence's logits row and advances; `Finished` means
    /// the final event has been sent.
    pub(crate) fn sample(
        &mut self,
        model: &LlamaModel,
        ctx: &llama_cpp_2::context::LlamaContext<'_>,
    ) -> Step {
        let Some(row) = self.logits_row.take() else {
            return Step::Continue;
        };
        let token = self.sampler.sample(ctx, row);
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
        self.generated += 1;

        if model.vocab().is_eog(token) && !self.ignore_eos {
            return self.finish(FinishReason::Stop);
        }
        let bytes = model.vocab().token_to_piece(token, false, None);
        let piece = self.text.push(&bytes);
        self.send_text(piece.text);
        if piece.stopped {
            // The assembler already cut the text at the stop string; nothing
            // after it may be flushed.
            self.send_done(FinishReason::Stop);
            return Step::Finished;
        }
        if self.generated >= self.max_new {
            return self.finish(FinishReason::Length);
        }
        self.next = Some(token);
        Step::Continue
    }

    fn send_text(&self, text: String) {
        if !text.is_empty() {
            let _ = self.tx.send(GenerationEvent::Text(text));
        }
    }

    /// Flushes held text and sends the summary.
    pub(crate) fn finish(&mut self, reason: FinishReason) -> Step {
        let tail = self.text.finish();
        self.send_text(tail);
        self.send_done(reason);
        Step::Finished
    }

    pub(crate) fn fail(&self, err: GenerateError) {
        let _ = self.tx.send(GenerationEvent::Failed(err));
    }

    fn send_done(&self, finish_reason: FinishReason) {
        let _ = self.tx.send(GenerationEvent::Done(Completion {
            finish_reason,
            usage: Usage {
                prompt_tokens: self.prompt.len() as u32,
                completion_tokens: self.generated,
            },
            timings: self.timings(),
        }));
    }

    fn timings(&self) -> Timings {
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
        let rate = |n: f64, ms: f64| {
            if ms > 0.0 && n > 0.0 {
                n * 1e3 / ms
            } else {
                0.0
            }
        };
        let mut t = Timings {
            queued_ms: ms(self.submitted, self.started),
            ..Timings::default()
        };
        if let (Some(first), Some(last)) = (self.first_token, self.last_token) {
            t.time_to_first_token_ms = ms(self.submitted, first);
            t.prefill_ms = ms(self.started, first);
            t.decode_ms = ms(first, last);
            t.prefill_tokens_per_second = rate(self.prompt.len() as f64, t.prefill_ms);
            // The first token comes out of the prefill; each later one is a decode step.
            t.decode_tokens_per_second = rate(f64::from(self.generated - 1), t.decode_ms);
        }
        t
    }
}
