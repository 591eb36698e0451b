//! A generation: what is asked (request), what streams back (events) and how it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    EmbeddingRequest, GenerationObserver, LoadSnapshot, OutputFormat, PendingEmbeddings, Priority,
    SamplingParams, TokenLogprob, Tool, ToolCall, ToolChoice,
};

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering an assistant message's call.
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// Calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a tool message: the tool's name, where the client gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
}

/// What the model continues from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Rendered through the model's own chat template, ending with an open assistant turn.
    Chat(Vec<ChatMessage>),
    /// Raw text, tokenised as is (with the model's BOS token if it wants one).
    Text(String),
    /// Pre-tokenised input, as OpenAI's completions API allows.
    Tokens(Vec<u32>),
}

/// One request for text.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// Generation ends before the first occurrence of any of these; the stop text is not returned.
    pub stop: Vec<String>,
    /// Upper bound on generated tokens; `None` means "until end of turn or context".
    pub max_tokens: Option<u32>,
    /// Keep going past end-of-generation tokens (benchmarks want a fixed length).
    pub ignore_eos: bool,
    /// Which queue class it waits in.
    pub priority: Priority,
    /// Ends the request with [`GenerateError::Timeout`] this long after
    /// submission, whether it is still queued or already running.
    pub timeout: Option<Duration>,
    /// Names the request in logs and records; empty lets the generator pick one.
    pub request_id: String,
    /// Functions the model may call (chat prompts only).
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    /// Whether one reply may hold several calls.
    pub parallel_tool_calls: bool,
    /// The shape the reply must have.
    pub format: OutputFormat,
    /// `Some(k)`: report each generated token's log-probability and the
    /// `k` likeliest alternatives (at most [`crate::MAX_TOP_LOGPROBS`]).
    pub logprobs: Option<u32>,
    /// Start from a cached prompt prefix when there is one (llama-server's
    /// `cache_prompt`); off, the prompt is computed whole, so a greedy
    /// answer does not depend on what the server ran before.
    pub cache_prompt: bool,
}

impl GenerationRequest {
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            max_tokens: None,
            ignore_eos: false,
            priority: Priority::Interactive,
            timeout: None,
            request_id: String::new(),
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            format: OutputFormat::Text,
            logprobs: None,
            cache_prompt: true,
        }
    }

    /// Choice `i` of a request for several: sampled with the request's seed
    /// plus `i` (so each choice is reproducible and no two are the same
    /// draw), named `<id>/<i>`. Choice 0 is the request itself.
    pub fn choice(&self, i: u32) -> GenerationRequest {
        let mut choice = self.clone();
        if i > 0 {
            choice.sampling.seed = self.sampling.seed.map(|s| s.wrapping_add(i));
            if !self.request_id.is_empty() {
                choice.request_id = format!("{}/{i}", self.request_id);
            }
        }
        choice
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// The caller cancelled or went away.
    Cancelled,
    /// The model called one or more tools.
    ToolCalls,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens taken from the prefix cache instead of computed
    /// (included in `prompt_tokens`).
    #[serde(default)]
    pub cached_tokens: u32,
}

impl Usage {
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Wall-clock timings of one generation, in milliseconds and tokens per second.
///
/// Prefill covers evaluating the prompt and sampling the first token; decode
/// covers every later token. Rates are 0 when nothing was measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting for the engine before any work started.
    pub queued_ms: f64,
    /// From submission to the first generated token.
    pub time_to_first_token_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
}

/// The summary that ends a successful generation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub finish_reason: FinishReason,
    /// With [`FinishReason::Stop`]: which of the request's `stop` strings
    /// ended it, by index (`None`: the model's end-of-generation token).
    #[serde(default)]
    pub stop_index: Option<u32>,
    pub usage: Usage,
    pub timings: Timings,
}

/// What a running generation reports, in order: text pieces, then exactly one
/// `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// Non-empty, valid UTF-8 text; never half a character, never part of a stop string.
    Text(String),
    /// A complete, well-formed tool call recognised in the output (its text is not sent as `Text`).
    ToolCall(ToolCall),
    /// With [`GenerationRequest::logprobs`]: one generated token, sent
    /// before the `Text` that holds it (text may be held back for a stop
    /// string, so a token's text can arrive some events later). The
    /// end-of-generation token that ends a reply is not reported.
    Logprob(TokenLogprob),
    Done(Completion),
    Failed(GenerateError),
}

/// Why a generation could not be started or did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is {prompt_tokens} tokens long, but the context holds {context} tokens including the reply")]
    ContextOverflow { prompt_tokens: u32, context: u32 },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("token id {token} is outside the vocabulary of {vocab_size} tokens")]
    InvalidToken { token: u32, vocab_size: u32 },
    #[error("invalid sampling parameter: {0}")]
    InvalidSampling(crate::InvalidSampling),
    #[error("cannot apply the chat template: {0}")]
    Template(String),
    /// The tools, tool choice or output format cannot be honoured; `field`
    /// names the request field at fault.
    #[error("{message}")]
    InvalidConstraint {
        field: &'static str,
        message: String,
    },
    #[error("the engine is shutting down")]
    Unavailable,
    /// The model could not be loaded (it failed, or no room freed up in
    /// time); a retry after the given seconds may succeed.
    #[error("the model cannot be loaded now; retry in {retry_after_secs} s")]
    NotLoaded { retry_after_secs: u32 },
    #[error("the server is at capacity: {waiting} requests are already waiting")]
    QueueFull {
        waiting: u32,
        /// A fair guess, in seconds, of when a retry may be admitted.
        retry_after_secs: u32,
    },
    #[error("the request did not finish within its timeout of {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("inference failed: {0}")]
    Internal(String),
}

// By hand rather than `#[from]`, which would also make it the `source()`:
// the message already includes it.
impl From<crate::InvalidSampling> for GenerateError {
    fn from(err: crate::InvalidSampling) -> Self {
        GenerateError::InvalidSampling(err)
    }
}

/// Shared flag that asks a running generation to stop at the next step.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Receiving end of a generation. Dropping it cancels the generation, so a
/// client that disconnects frees its slot at the next step.
#[derive(Debug)]
pub struct Generation {
    prompt_tokens: u32,
    events: mpsc::UnboundedReceiver<GenerationEvent>,
    cancel: CancelFlag,
    /// Which version of the model answers (OpenAI's `system_fingerprint`).
    fingerprint: Option<std::sync::Arc<str>>,
}

/// A finished generation, collected in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationOutput {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    /// See [`Completion::stop_index`].
    #[serde(default)]
    pub stop_index: Option<u32>,
    /// One entry per generated token, when the request asked for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
    pub usage: Usage,
    pub timings: Timings,
}

impl Generation {
    /// Creates the pair: the sender and flag go to the producer, the handle to the caller.
    pub fn channel(
        prompt_tokens: u32,
    ) -> (
        mpsc::UnboundedSender<GenerationEvent>,
        CancelFlag,
        Generation,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancelFlag::default();
        let handle = Generation {
            prompt_tokens,
            events: rx,
            cancel: cancel.clone(),
            fingerprint: None,
        };
        (tx, cancel, handle)
    }

    /// Names the version of the model that produces this generation: a
    /// server swapping model versions tells clients which answered.
    pub fn with_fingerprint(mut self, fingerprint: std::sync::Arc<str>) -> Generation {
        self.fingerprint = Some(fingerprint);
        self
    }

    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// Tokens in the prompt after templating, known before the first event.
    pub fn prompt_tokens(&self) -> u32 {
        self.prompt_tokens
    }

    /// Asks the producer to stop; a `Done` with `Cancelled` follows.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    pub async fn next(&mut self) -> Option<GenerationEvent> {
        self.events.recv().await
    }

    /// For callers outside an async runtime, such as the CLI.
    pub fn blocking_next(&mut self) -> Option<GenerationEvent> {
        self.events.blocking_recv()
    }

    /// Waits for the whole text.
    pub async fn collect(mut self) -> Result<GenerationOutput, GenerateError> {
        let mut so_far = Collected::default();
        while let Some(event) = self.next().await {
            if let Some(output) = so_far.fold(event)? {
                return Ok(output);
            }
        }
        Err(GenerateError::Unavailable)
    }

    /// Blocking twin of [`Generation::collect`].
    pub fn blocking_collect(mut self) -> Result<GenerationOutput, GenerateError> {
        let mut so_far = Collected::default();
        while let Some(event) = self.blocking_next() {
            if let Some(output) = so_far.fold(event)? {
                return Ok(output);
            }
        }
        Err(GenerateError::Unavailable)
    }
}

/// What a collecting caller has gathered before the final event.
#[derive(Default)]
struct Collected {
    text: String,
    calls: Vec<ToolCall>,
    logprobs: Vec<TokenLogprob>,
}

impl Collected {
    fn fold(&mut self, event: GenerationEvent) -> Result<Option<GenerationOutput>, GenerateError> {
        match event {
            GenerationEvent::Text(piece) => {
                self.text.push_str(&piece);
                Ok(None)
            }
            GenerationEvent::ToolCall(call) => {
                self.calls.push(call);
                Ok(None)
            }
            GenerationEvent::Logprob(logprob) => {
                self.logprobs.push(logprob);
                Ok(None)
            }
            GenerationEvent::Done(done) => {
                let so_far = std::mem::take(self);
                Ok(Some(GenerationOutput {
                    text: so_far.text,
                    tool_calls: so_far.calls,
                    finish_reason: done.finish_reason,
                    stop_index: done.stop_index,
                    logprobs: so_far.logprobs,
                    usage: done.usage,
                    timings: done.timings,
                }))
            }
            GenerationEvent::Failed(err) => Err(err),
        }
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Anything that turns requests into generations: the llama.cpp engine today,
/// a scheduler or a remote node later. The server only sees this trait.
pub trait TextGenerator: Send + Sync + 'static {
    /// Validates and queues a request. Errors here are the caller's fault
    /// (too long, bad parameters) or mean the generator is gone.
    fn submit(&self, request: GenerationRequest) -> Result<Generation, GenerateError>;

    /// Queues `n` choices of one request ([`GenerationRequest::choice`]),
    /// all or none. A generator that can computes their shared prompt once.
    fn submit_choices(
        &self,
        request: GenerationRequest,
        n: u32,
    ) -> Result<Vec<Generation>, GenerateError> {
        // Generations already made are dropped, so cancelled, on an error.
        (0..n).map(|i| self.submit(request.choice(i))).collect()
    }

    /// How many tokens `request`'s prompt takes once templated (with the
    /// tools it offers), as [`TextGenerator::submit`] would count them;
    /// nothing is generated. Errors are those `submit` would give the prompt.
    fn count_tokens(&self, request: &GenerationRequest) -> Result<u32, GenerateError>;

    /// Validates and queues an embedding request (tokenising on the
    /// caller's thread); the vectors arrive through the returned handle.
    fn embed(&self, request: EmbeddingRequest) -> Result<PendingEmbeddings, GenerateError>;

    /// The model's token ids for `text`; `special` adds BOS where the model
    /// wants one and parses special tokens written out in the text.
    fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, GenerateError>;

    /// The text of `tokens`, special tokens written out; ids outside the
    /// vocabulary are [`GenerateError::InvalidToken`].
    fn detokenize(&self, tokens: &[u32]) -> Result<String, GenerateError>;

    /// False once the generator can no longer serve (its engine thread died,
    /// or it is shutting down); health checks report it.
    fn is_ready(&self) -> bool {
        true
    }

    /// Whether the model is in memory now (a generator that loads on
    /// demand can be ready without being loaded); what `/api/ps` lists.
    fn is_loaded(&self) -> bool {
        self.is_ready()
    }

    /// When the model leaves memory if no request comes before (Ollama's
    /// `expires_at` in `/api/ps`); `None`: it stays, or is not loaded.
    fn unloads_at(&self) -> Option<std::time::SystemTime> {
        None
    }

    /// Current load and running totals, for metrics and load-aware routing.
    fn load(&self) -> LoadSnapshot {
        LoadSnapshot::default()
    }

    /// How long the model should stay in memory after its latest request
    /// (Ollama's `keep_alive`; `None`: for ever); zero unloads it as soon
    /// as it is idle. Generators whose model is always loaded ignore it.
    /// May block (an unload joins the engine).
    fn keep_alive(&self, keep_alive: Option<std::time::Duration>) {
        let _ = keep_alive;
    }

    /// Loads the model now if it loads on demand (Ollama's request with
    /// an empty prompt). Blocks while it loads.
    fn warm(&self) -> Result<(), GenerateError> {
        Ok(())
    }

    /// Reports every request that ends from now on to `observer`. A
    /// generator keeps the first observer it is given.
    fn set_observer(&self, observer: Arc<dyn GenerationObserver>) {
        let _ = observer;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(reason: FinishReason) -> GenerationEvent {
        GenerationEvent::Done(Completion {
            finish_reason: reason,
            stop_index: None,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                cached_tokens: 0,
            },
            timings: Timings::default(),
        })
    }

    #[tokio::test]
    async fn collect_joins_pieces_and_keeps_summary() {
        let (tx, _cancel, generation) = Generation::channel(3);
        tx.send(GenerationEvent::Text("Hel".into())).unwrap();
        tx.send(GenerationEvent::Text("lo".into())).unwrap();
        tx.send(done(FinishReason::Length)).unwrap();
        let out = generation.collect().await.unwrap();
        assert_eq!(out.text, "Hello");
        assert_eq!(out.finish_reason, FinishReason::Length);
        assert_eq!(out.usage.total_tokens(), 5);
    }

    #[tokio::test]
    async fn collect_keeps_tool_calls_apart_from_text() {
        let (tx, _cancel, generation) = Generation::channel(3);
        let call = ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{}".into(),
        };
        tx.send(GenerationEvent::Text("Checking.".into())).unwrap();
        tx.send(GenerationEvent::ToolCall(call.clone())).unwrap();
        tx.send(done(FinishReason::ToolCalls)).unwrap();
        let out = generation.collect().await.unwrap();
        assert_eq!(out.text, "Checking.");
        assert_eq!(out.tool_calls, vec![call]);
        assert_eq!(out.finish_reason, FinishReason::ToolCalls);
    }

    #[tokio::test]
    async fn producer_vanishing_is_an_error_not_a_hang() {
        let (tx, _cancel, generation) = Generation::channel(1);
        tx.send(GenerationEvent::Text("x".into())).unwrap();
        drop(tx);
        assert_eq!(generation.collect().await, Err(GenerateError::Unavailable));
    }

    #[test]
    fn dropping_the_handle_cancels() {
        let (_tx, cancel, generation) = Generation::channel(1);
        assert!(!cancel.is_cancelled());
        drop(generation);
        assert!(cancel.is_cancelled());
    }
}
