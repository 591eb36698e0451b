//! One request in the engine: waiting as a [`Job`], then generating as an [`Active`] sequence.
//!
//! The scheduler owns the tokens and the KV bookkeeping; this side owns what
//! llama.cpp and the caller need: sampler, text assembly, clocks and the reply
//! channel.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;
use types::{
    CancelFlag, Completion, FinishReason, GenerateError, GenerationEvent, GenerationRequest,
    Outcome, RequestRecord, Timings, TokenLogprob, ToolCall, TopLogprob, Usage,
};

use chat::{ParsedPiece, ToolCallParser};

use crate::sampler::TokenSampler;
use crate::text::TextAssembler;

/// A validated request waiting for admission.
pub(crate) struct Job {
    pub tokens: Vec<LlamaToken>,
    /// The compiled constraint on the reply, if any; the sampler takes it.
    pub grammar: Option<llguidance::Matcher>,
    /// Set when tools were offered: how to find calls in the reply.
    pub tool_format: Option<chat::ToolFormat>,
    pub request: GenerationRequest,
    pub tx: UnboundedSender<GenerationEvent>,
    pub cancel: CancelFlag,
    pub submitted: Instant,
}

impl Job {
    pub(crate) fn abandoned(&self) -> bool {
        self.cancel.is_cancelled() || self.tx.is_closed()
    }

    /// Ends a job that never ran; the record says so.
    pub(crate) fn end(self, outcome: Outcome, error: Option<GenerateError>) -> Ended {
        let event = match error {
            Some(err) => GenerationEvent::Failed(err),
            None => GenerationEvent::Done(Completion {
                finish_reason: FinishReason::Cancelled,
                stop_index: None,
                usage: Usage {
                    prompt_tokens: self.tokens.len() as u32,
                    ..Usage::default()
                },
                timings: Timings::default(),
            }),
        };
        let waited = ms(self.submitted, Instant::now());
        let record = RequestRecord {
            request_id: self.request.request_id,
            priority: self.request.priority,
            outcome,
            prompt_tokens: self.tokens.len() as u32,
            cached_tokens: 0,
            generated_tokens: 0,
            queue_ms: waited,
            ttft_ms: None,
            prefill_ms: None,
            decode_ms: None,
            total_ms: waited,
            inter_token_ms: Vec::new(),
        };
        Ended {
            record,
            last: Some(event),
            tx: self.tx,
        }
    }
}

/// A request that has ended: what the observer learns, and the caller's last
/// event, held back until the observer has it.
///
/// Why held back: a client that reads its reply and then scrapes `/metrics`
/// must find its request counted (regression: models.rs saw the second of
/// two requests missing from `hearth_e2e_request_latency_seconds_count`).
pub(crate) struct Ended {
    pub record: RequestRecord,
    last: Option<GenerationEvent>,
    tx: UnboundedSender<GenerationEvent>,
}

impl Ended {
    /// Sends the held final event (done or failed) to the caller.
    pub(crate) fn deliver(self) {
        if let Some(event) = self.last {
            let _ = self.tx.send(event);
        }
    }
}

/// What sampling one token did to a sequence.
pub(crate) enum Step {
    Continue,
    Finished(FinishReason),
}

/// A request that has been admitted at least once.
pub(crate) struct Active {
    request_id: String,
    priority: types::Priority,
    prompt_tokens: u32,
    /// Prompt tokens reused from the prefix cache at first admission.
    cached_tokens: u32,
    sampler: TokenSampler,
    text: TextAssembler,
    /// Finds tool calls in the text when tools were offered.
    tools: Option<ToolCallParser>,
    generated: u32,
    max_new: u32,
    ignore_eos: bool,
    /// How many alternatives to report per token; `None`: no logprobs.
    logprobs: Option<u32>,
    timeout: Option<std::time::Duration>,
    tx: UnboundedSender<GenerationEvent>,
    /// The final event, sent by [`Ended::deliver`] after the observer.
    last: Option<GenerationEvent>,
    cancel: CancelFlag,
    submitted: Instant,
    started: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    inter_token_ms: Vec<f64>,
}

impl Active {
    pub(crate) fn start(job: Job, n_ctx_seq: u32, sampler: TokenSampler, cached: u32) -> Self {
        let prompt_tokens = job.tokens.len() as u32;
        let room = n_ctx_seq.saturating_sub(prompt_tokens);
        let max_new = job.request.max_tokens.map_or(room, |m| m.min(room));
        Self {
            request_id: job.request.request_id,
            priority: job.request.priority,
            prompt_tokens,
            cached_tokens: cached,
            sampler,
            text: TextAssembler::new(&job.request.stop),
            tools: job.tool_format.map(|format| {
                let names = job.request.tools.iter().map(|t| t.name.clone()).collect();
                ToolCallParser::new(format, names)
            }),
            generated: 0,
            max_new,
            ignore_eos: job.request.ignore_eos,
            logprobs: job.request.logprobs,
            timeout: job.request.timeout,
            tx: job.tx,
            last: None,
            cancel: job.cancel,
            submitted: job.submitted,
            started: Instant::now(),
            first_token: None,
            last_token: None,
            inter_token_ms: Vec::new(),
        }
    }

    pub(crate) fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The caller cancelled or stopped listening.
    pub(crate) fn abandoned(&self) -> bool {
        self.cancel.is_cancelled() || self.tx.is_closed()
    }

    /// Samples from batch row `row`; `Finished` means the final event has been sent.
    pub(crate) fn sample(
        &mut self,
        model: &LlamaModel,
        ctx: &LlamaContext<'_>,
        row: i32,
    ) -> (LlamaToken, Step) {
        let token = self.sampler.sample(ctx, row);
        let ends = model.vocab().is_eog(token) && !self.ignore_eos;
        if let (Some(top), false) = (self.logprobs, ends) {
            self.send_logprob(model, ctx.get_logits_ith(row), token, top);
        }
        (token, self.accept(model, token))
    }

    /// Reports how likely `token` was, before the text that holds it.
    fn send_logprob(&self, model: &LlamaModel, logits: &[f32], token: LlamaToken, top: u32) {
        let piece = |t: usize| {
            model
                .vocab()
                .token_to_piece(LlamaToken(t as i32), false, None)
        };
        let (logprob, best) = crate::logprob::logprobs(logits, token.0 as usize, top as usize);
        let _ = self.tx.send(GenerationEvent::Logprob(TokenLogprob {
            bytes: piece(token.0 as usize),
            logprob,
            top: best
                .into_iter()
                .map(|(t, logprob)| TopLogprob {
                    bytes: piece(t),
                    logprob,
                })
                .collect(),
        }));
    }

    fn accept(&mut self, model: &LlamaModel, token: LlamaToken) -> Step {
        let now = Instant::now();
        if let Some(last) = self.last_token {
            self.inter_token_ms.push(ms(last, now));
        }
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
        self.generated += 1;

        if model.vocab().is_eog(token) && !self.ignore_eos {
            return self.finish(FinishReason::Stop);
        }
        let bytes = model.vocab().token_to_piece(token, false, None);
        let piece = self.text.push(&bytes);
        self.send_text(piece.text);
        if let Some(index) = piece.stopped {
            // The assembler already cut the text at the stop string; nothing
            // after it may be flushed.
            let reason = self.finish_tools(FinishReason::Stop);
            self.send_done(reason, Some(index));
            return Step::Finished(reason);
        }
        if self.generated >= self.max_new {
            return self.finish(FinishReason::Length);
        }
        Step::Continue
    }

    fn send_text(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        match &mut self.tools {
            None => {
                let _ = self.tx.send(GenerationEvent::Text(text));
            }
            Some(parser) => {
                let pieces = parser.push(&text);
                self.send_pieces(pieces);
            }
        }
    }

    fn send_pieces(&self, pieces: Vec<ParsedPiece>) {
        for piece in pieces {
            let event = match piece {
                ParsedPiece::Text(text) => GenerationEvent::Text(text),
                ParsedPiece::Call { name, arguments } => GenerationEvent::ToolCall(ToolCall {
                    id: call_id(),
                    name,
                    arguments,
                }),
            };
            let _ = self.tx.send(event);
        }
    }

    /// Classifies what the tool parser holds; a reply that made calls and
    /// then stopped by itself finished with `ToolCalls`.
    fn finish_tools(&mut self, reason: FinishReason) -> FinishReason {
        let Some(parser) = &mut self.tools else {
            return reason;
        };
        let pieces = parser.finish();
        let called = parser.calls() > 0;
        self.send_pieces(pieces);
        if called && reason == FinishReason::Stop {
            FinishReason::ToolCalls
        } else {
            reason
        }
    }

    /// Flushes held text and sends the summary.
    pub(crate) fn finish(&mut self, reason: FinishReason) -> Step {
        let tail = self.text.finish();
        self.send_text(tail);
        let reason = self.finish_tools(reason);
        self.send_done(reason, None);
        Step::Finished(reason)
    }

    /// The error for a request whose own timeout has passed.
    pub(crate) fn timed_out(&self) -> GenerateError {
        timeout_error(self.timeout)
    }

    pub(crate) fn fail(&mut self, err: GenerateError) {
        self.last = Some(GenerationEvent::Failed(err));
    }

    fn send_done(&mut self, finish_reason: FinishReason, stop_index: Option<u32>) {
        self.last = Some(GenerationEvent::Done(Completion {
            finish_reason,
            // A reply that called a tool ended for that, not for the string.
            stop_index: stop_index.filter(|_| finish_reason == FinishReason::Stop),
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.generated,
                cached_tokens: self.cached_tokens,
            },
            timings: self.timings(),
        }));
    }

    fn timings(&self) -> Timings {
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
            let computed = self.prompt_tokens - self.cached_tokens;
            t.prefill_tokens_per_second = rate(f64::from(computed), t.prefill_ms);
            // The first token comes out of the prefill; each later one is a decode step.
            t.decode_tokens_per_second = rate(f64::from(self.generated - 1), t.decode_ms);
        }
        t
    }

    /// What the observer learns once this request has ended.
    pub(crate) fn record(self, outcome: Outcome) -> Ended {
        let t = self.timings();
        let measured = |v: f64| self.first_token.map(|_| v);
        let record = RequestRecord {
            request_id: self.request_id,
            priority: self.priority,
            outcome,
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self.cached_tokens,
            generated_tokens: self.generated,
            queue_ms: t.queued_ms,
            ttft_ms: measured(t.time_to_first_token_ms),
            prefill_ms: measured(t.prefill_ms),
            decode_ms: measured(t.decode_ms),
            total_ms: ms(self.submitted, Instant::now()),
            inter_token_ms: self.inter_token_ms,
        };
        Ended {
            record,
            last: self.last,
            tx: self.tx,
        }
    }
}

/// A fresh id for a tool call: 64 random bits (from the standard library's
/// per-process random hash keys; ids need to be unique, not secret).
fn call_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    format!("call_{:016x}", hasher.finish())
}

pub(crate) fn timeout_error(timeout: Option<std::time::Duration>) -> GenerateError {
    GenerateError::Timeout {
        timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64),
    }
}

pub(crate) fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1e3
}
