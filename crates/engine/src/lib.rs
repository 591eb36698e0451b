//! Hearth's inference engine: llama.cpp behind a thread-owned, cancellable generation API.
//!
//! [`Engine::load`] checks the file with the pure-Rust [`gguf`] reader, loads
//! it with llama.cpp, and starts one engine thread that owns the context.
//! [`Engine::submit`] tokenises on the caller's thread, queues the request and
//! returns a [`types::Generation`] that streams text pieces and ends with usage
//! and timings. Many sequences share the context's KV pool, planned by the
//! [`scheduler`]; each has its own sampler. [`Engine::perplexity`] scores a
//! text in a context of its own, and [`quantize`] writes a GGUF in another
//! weight type with llama.cpp's quantizer.

mod backend;
mod constraint;
mod copy_cost;
mod embedding;
mod logprob;
mod perplexity;
mod pool;
mod prompt;
mod quantize;
mod sampler;
mod sequence;
mod text;
mod turns;
mod worker;

pub use turns::taken as cpu_turns_taken;

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use types::{
    Completion, EmbedInput, EmbeddingRequest, FinishReason, GenerateError, Generation,
    GenerationEvent, GenerationObserver, GenerationRequest, LoadSnapshot, PendingEmbeddings,
    TextGenerator, Timings, Usage,
};

pub use perplexity::{Perplexity, MIN_WINDOW};
pub use pool::{machine_memory, KvLayout, KvPool, ModelKv};
pub use quantize::{quantize, quantize_type, quantize_types, quantized_weights, QuantizeOptions};
use sequence::Job;
use worker::{Shared, State};

/// Context length per sequence used when none is configured, capped by the model's own.
pub const DEFAULT_CTX_SIZE: u32 = 4096;

/// How to run a model. Built once from the validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Threads for decoding and prompt processing.
    pub threads: u32,
    /// Most tokens one sequence may hold (prompt and reply); `None` means the
    /// model's, capped at [`DEFAULT_CTX_SIZE`].
    pub ctx_size: Option<u32>,
    /// KV pool shared by all sequences, in tokens; `None` means
    /// [`default_kv_size`], or a whole context per stream.
    pub kv_size: Option<u32>,
    /// One unified pool, or a stream per sequence ([`KvPool::choose`]).
    pub kv_layout: KvLayout,
    /// Most sequences decoding at once.
    pub max_running: u32,
    /// Most requests waiting; more are refused with [`GenerateError::QueueFull`].
    pub max_queue: u32,
    /// Most tokens one decode step carries, decode tokens and prompt chunks together.
    pub step_tokens: u32,
    /// Physical batch llama.cpp splits a step into.
    pub ubatch_size: u32,
    /// How far behind interactive work a batch request ranks (ageing).
    pub batch_delay: std::time::Duration,
    /// Keep finished sequences' KV cells for later requests with the same prefix.
    pub prefix_cache: bool,
    /// Most KV cells kept only for the prefix cache once idle for
    /// [`scheduler::CACHE_GRACE`]; `None` means [`DEFAULT_PREFIX_CACHE_SIZE`].
    pub prefix_cache_size: Option<u32>,
    /// Layers to offload to a GPU (needs the `cuda` feature); 0 is CPU only.
    pub gpu_layers: u32,
    /// Map the weights from the model file (llama.cpp's default) instead
    /// of reading them into the engine's own memory.
    pub use_mmap: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: 4,
            ctx_size: None,
            kv_size: None,
            kv_layout: KvLayout::Auto,
            max_running: 16,
            max_queue: 128,
            step_tokens: 512,
            // llama.cpp's default.
            ubatch_size: 512,
            // Longer than batch work typically queues and runs under load, so
            // interactive requests overtake (and may pause) it; short enough
            // that batch work still ages into line within a minute.
            batch_delay: std::time::Duration::from_secs(60),
            prefix_cache: true,
            prefix_cache_size: None,
            gpu_layers: 0,
            use_mmap: true,
        }
    }
}

/// The pool when none is configured: room for four full-length sequences
/// (fewer if fewer may run), which is also room for many more short ones,
/// since cells are handed out per token, not per slot.
pub fn default_kv_size(ctx_size: u32, max_running: u32) -> u32 {
    ctx_size.saturating_mul(max_running.clamp(1, 4))
}

/// Idle cached cells kept by default: none. llama.cpp's attention scans
/// every cell up to the highest one in use, and cache entries sit anywhere
/// in the pool, so even a few idle entries can slow every step by a third
/// (docs/benchmarks.md). Entries still serve follow-ups within
/// [`scheduler::CACHE_GRACE`] and anything that shares cells with a running
/// sequence.
pub const DEFAULT_PREFIX_CACHE_SIZE: u32 = 0;

/// Most tokens per llama_decode call when a step feeds several sequences:
/// one less than the query rows at which llama.cpp's CPU flash attention
/// turns to its tiled kernel, which attends densely to every cell in use
/// (see `worker::step`). Offloaded layers run other kernels, so a GPU build
/// keeps whole steps.
fn mixed_batch(config: &EngineConfig) -> usize {
    const CPU_FA_TILE_ROWS: usize = 64;
    if config.gpu_layers > 0 {
        config.step_tokens as usize
    } else {
        CPU_FA_TILE_ROWS - 1
    }
}

/// Sequence ids kept for cached prefixes, beyond the running ones.
const CACHE_SEQS: u32 = 64;
/// llama.cpp's `LLAMA_MAX_SEQ`.
const MAX_SEQS: u32 = 256;

/// Sequence ids llama.cpp tracks: the running ones plus room for cached
/// prefixes. llama.cpp reserves an output row per sequence id and aborts if
/// that exceeds the batch size, so the step budget caps it too.
pub(crate) fn seq_ids(config: &EngineConfig) -> u32 {
    (config.max_running + CACHE_SEQS)
        .min(MAX_SEQS)
        .min(config.step_tokens)
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    InvalidModel(#[from] gguf::GgufFileError),
    #[error("llama.cpp could not load {}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("cannot create an inference context for {}: {reason}", path.display())]
    Context { path: PathBuf, reason: String },
    #[error("invalid engine setting: {0}")]
    Config(String),
    #[error("llama.cpp backend failed to start: {0}")]
    Backend(String),
    #[error("cannot quantize {}: {reason}", path.display())]
    Quantize { path: PathBuf, reason: String },
    #[error("unsupported quantization type {name:?}; supported: {supported}")]
    QuantizeType { name: String, supported: String },
}

/// What a loaded model is, as far as serving it is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub architecture: String,
    pub parameters: u64,
    pub vocab_size: u32,
    pub ctx_train: u32,
    /// Most tokens one sequence may hold.
    pub ctx_size: u32,
    /// KV pool shared by all sequences, in tokens (all streams together).
    pub kv_size: u32,
    /// `Some(cells)` when each sequence has a stream of its own.
    pub stream_cells: Option<u32>,
    /// Where the chat format comes from: the model's own template, or a fallback.
    pub chat_template: ChatTemplateSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplateSource {
    /// The model's own Jinja template, rendered by minijinja.
    Model,
    /// The model's template as llama.cpp's built-in matcher renders it
    /// (it does not run as Jinja).
    LlamaCppBuiltin,
    /// The model has no template; llama.cpp's built-in one of this name,
    /// for the model's architecture, is used.
    LlamaCppForArchitecture(String),
    /// The model has no usable template; ChatML is used instead.
    ChatMlFallback,
}

/// A loaded model with its engine thread.
///
/// Requests share one KV pool (llama.cpp's unified cache) through the
/// [`scheduler`]; the engine thread carries out its plans.
pub struct Engine {
    shared: Arc<Shared>,
    chat: prompt::ChatFormat,
    grammars: constraint::Grammars,
    info: ModelInfo,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Validates, loads and starts serving the model at `path`.
    pub fn load(path: &Path, config: &EngineConfig) -> Result<Engine, EngineError> {
        check_config(config)?;
        // A split set loads from its first file and llama.cpp finds the
        // rest by name: each is checked first, so a missing or foreign one
        // is an error naming it rather than a failure inside llama.cpp.
        let header = gguf::split::read_set(path)?.swap_remove(0);
        let backend = backend::get().map_err(EngineError::Backend)?;
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(config.gpu_layers)
            .with_use_mmap(config.use_mmap);
        let started = Instant::now();
        let model =
            LlamaModel::load_from_file(backend, path, &params).map_err(|e| EngineError::Load {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        tracing::info!(path = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");

        let ctx_train = model.n_ctx_train();
        let wanted_ctx = config
            .ctx_size
            .unwrap_or(DEFAULT_CTX_SIZE.min(ctx_train.max(1)));
        if wanted_ctx > ctx_train && ctx_train > 0 {
            tracing::warn!(
                ctx_size = wanted_ctx,
                ctx_train,
                "context longer than the model was trained on; quality may drop"
            );
        }
        let recurrent = model.is_recurrent() || model.is_hybrid();
        let model_kv = ModelKv {
            // The header's guess, settled by llama.cpp's own answer.
            recurrent,
            ..ModelKv::from_header(&header)
        };
        let pool = KvPool::choose(config, wanted_ctx, model_kv, machine_memory());
        let (kv_size, ctx_size) = (pool.cells, pool.ctx_size);
        if recurrent && config.prefix_cache {
            tracing::info!(
                "recurrent model: its state cannot be shared, so the prefix cache is off"
            );
        }
        let max_seqs = pool.seqs;
        let sched = scheduler::Scheduler::new(scheduler::Config {
            kv_cells: kv_size,
            max_seqs,
            stream_cells: pool.stream_cells,
            max_running: config.max_running,
            max_queue: config.max_queue,
            step_tokens: config.step_tokens,
            batch_delay: config.batch_delay,
            prefix_cache: config.prefix_cache && !recurrent,
            cache_cells: config
                .prefix_cache_size
                .unwrap_or(DEFAULT_PREFIX_CACHE_SIZE),
            min_reuse: scheduler::MIN_REUSE_TOKENS,
            // Measured as prompts run; until then `min_reuse` decides.
            copy_tokens: 0,
            gather: scheduler::GATHER,
        })
        .map_err(|e| EngineError::Config(e.to_string()))?;
        let chat = prompt::ChatFormat::choose(&model);
        let info = ModelInfo {
            path: path.to_path_buf(),
            architecture: header.architecture().unwrap_or("unknown").to_string(),
            parameters: model.n_params(),
            vocab_size: model.n_vocab() as u32,
            ctx_train,
            ctx_size,
            kv_size,
            stream_cells: pool.stream_cells,
            chat_template: chat.source(),
        };
        let pooling = embedding::pooling_from_metadata(
            header.get_u64(&format!("{}.pooling_type", info.architecture)),
        );
        let eog_tokens = model
            .vocab()
            .tokens()
            .filter(|&t| model.vocab().is_eog(t))
            .collect();
        // Only an engine whose every layer runs on a GPU leaves the CPU's
        // cores to others; a partial offload, or a CUDA build on a machine
        // without a usable GPU, computes on them and takes turns.
        let offloaded = backend.supports_gpu_offload() && config.gpu_layers >= model.n_layer();
        let shared = Arc::new(Shared {
            model,
            state: Mutex::new(State {
                sched,
                jobs: HashMap::new(),
                next_id: 1,
                embeds: VecDeque::new(),
                shutdown: false,
                running: true,
            }),
            wake: Condvar::new(),
            eog_tokens,
            n_ctx_seq: ctx_size,
            streams: pool.stream_cells.map(|cells| {
                copy_cost::CopyCost::new(
                    u64::from(cells) * model_kv.bytes_per_token,
                    copy_cost::memory_copy_rate(),
                )
            }),
            mixed_batch: mixed_batch(config),
            observer: OnceLock::new(),
            seat: turns::Seat::take(if offloaded { 0 } else { config.threads }),
            embed: embedding::EmbedSettings {
                pooling,
                n_ctx: ctx_size,
                threads: i32::try_from(config.threads).unwrap_or(i32::MAX),
                busy_budget: config.step_tokens,
            },
        });
        let thread = spawn_worker(Arc::clone(&shared), config, &pool, path)?;
        Ok(Engine {
            shared,
            chat,
            grammars: constraint::Grammars::default(),
            info,
            thread: Some(thread),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The exact text the model sees for a chat prompt.
    pub fn render_chat(&self, messages: &[types::ChatMessage]) -> Result<String, GenerateError> {
        self.chat.render(&self.shared.model, messages, &[])
    }

    /// How this model writes tool calls.
    pub fn tool_format(&self) -> chat::ToolFormat {
        self.chat.tool_format()
    }

    /// The request's prompt as the model sees it: templated with the tools
    /// it may call, then tokenised and checked against the context.
    fn prompt_tokens(
        &self,
        request: &GenerationRequest,
    ) -> Result<Vec<llama_cpp_2::token::LlamaToken>, GenerateError> {
        prompt::tokenize(
            &self.shared.model,
            &self.chat,
            &request.prompt,
            offered_tools(request),
            self.shared.n_ctx_seq,
        )
    }

    /// What the request's fields must satisfy beyond their own ranges:
    /// biased tokens inside the vocabulary, a bounded logprobs report.
    fn check(&self, request: &GenerationRequest) -> Result<(), GenerateError> {
        request.sampling.validate()?;
        let vocab_size = self.shared.model.n_vocab() as u32;
        if let Some(&(token, _)) = request
            .sampling
            .logit_bias
            .iter()
            .find(|(t, _)| *t >= vocab_size)
        {
            return Err(GenerateError::InvalidConstraint {
                field: "logit_bias",
                message: format!(
                    "`logit_bias` names token {token}, outside the vocabulary of {vocab_size} tokens"
                ),
            });
        }
        if let Some(top) = request.logprobs.filter(|&k| k > types::MAX_TOP_LOGPROBS) {
            return Err(GenerateError::InvalidConstraint {
                field: "top_logprobs",
                message: format!(
                    "`top_logprobs` is {top}; at most {} alternatives can be reported",
                    types::MAX_TOP_LOGPROBS
                ),
            });
        }
        Ok(())
    }
}

/// The tools that reach the prompt: none when the model may not call them.
fn offered_tools(request: &GenerationRequest) -> &[types::Tool] {
    if request.tool_choice == types::ToolChoice::None {
        &[]
    } else {
        &request.tools
    }
}

impl Engine {
    /// Nothing runs or waits: no request in the scheduler, no embedding
    /// input queued. A manager may unload an idle engine without failing
    /// anyone.
    pub fn is_idle(&self) -> bool {
        let st = self.shared.lock();
        st.sched.is_idle() && st.embeds.is_empty()
    }
}

impl TextGenerator for Engine {
    fn count_tokens(&self, request: &GenerationRequest) -> Result<u32, GenerateError> {
        Ok(self.prompt_tokens(request)?.len() as u32)
    }

    fn embed(&self, request: EmbeddingRequest) -> Result<PendingEmbeddings, GenerateError> {
        let settings = self.shared.embed;
        let refuse = |field: &'static str, message: String| {
            Err(GenerateError::InvalidConstraint { field, message })
        };
        if settings.pooling == LlamaPoolingType::Rank {
            return refuse(
                "model",
                "this model is a reranker: it scores pairs and makes no embeddings".into(),
            );
        }
        if request.inputs.is_empty() || request.inputs.len() > embedding::MAX_INPUTS {
            return refuse(
                "input",
                format!(
                    "`input` has {} items; it needs 1 to {}",
                    request.inputs.len(),
                    embedding::MAX_INPUTS
                ),
            );
        }
        let width = self.shared.model.n_embd().max(0) as u32;
        if let Some(d) = request.dimensions.filter(|&d| d == 0 || d > width) {
            return refuse(
                "dimensions",
                format!("`dimensions` is {d}; this model's embeddings have 1 to {width}"),
            );
        }
        let n_ctx = settings.n_ctx as usize;
        let mut inputs = Vec::with_capacity(request.inputs.len());
        for (i, input) in request.inputs.iter().enumerate() {
            let mut tokens = match input {
                // Text is data here, never markup: special tokens written in
                // it stay text.
                EmbedInput::Text(text) => {
                    self.shared
                        .model
                        .vocab()
                        .tokenize(text.as_bytes(), true, false)
                }
                EmbedInput::Tokens(ids) => prompt::checked_tokens(&self.shared.model, ids)?,
            };
            if tokens.is_empty() {
                return refuse("input", format!("`input` item {i} is empty"));
            }
            if tokens.len() > n_ctx {
                if !request.truncate {
                    return Err(GenerateError::ContextOverflow {
                        prompt_tokens: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
                        context: settings.n_ctx,
                    });
                }
                tokens.truncate(n_ctx);
            }
            inputs.push(tokens);
        }
        let prompt_tokens = inputs.iter().map(|t| t.len() as u32).sum();
        let (reply, pending) = PendingEmbeddings::channel();
        let mut st = self.shared.lock();
        if !st.running || st.shutdown {
            return Err(GenerateError::Unavailable);
        }
        if st.embeds.len() + inputs.len() > embedding::EMBED_QUEUE_INPUTS {
            return Err(GenerateError::QueueFull {
                waiting: st.embeds.len() as u32,
                retry_after_secs: 1,
            });
        }
        let id = st.next_id;
        st.next_id += 1;
        let request_id = if request.request_id.is_empty() {
            format!("emb-{id}")
        } else {
            request.request_id
        };
        tracing::debug!(%request_id, inputs = inputs.len(), prompt_tokens, "embedding queued");
        let job = Arc::new(embedding::EmbedJob::new(
            request_id,
            request.dimensions,
            inputs.len(),
            prompt_tokens,
            reply,
        ));
        st.embeds
            .extend(
                inputs
                    .into_iter()
                    .enumerate()
                    .map(|(index, tokens)| embedding::EmbedItem {
                        job: Arc::clone(&job),
                        index,
                        tokens,
                    }),
            );
        drop(st);
        self.shared.wake.notify_one();
        Ok(pending)
    }

    fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, GenerateError> {
        Ok(self
            .shared
            .model
            .vocab()
            .tokenize(text.as_bytes(), special, special)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect())
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, GenerateError> {
        let tokens = prompt::checked_tokens(&self.shared.model, tokens)?;
        if tokens.is_empty() {
            return Ok(String::new());
        }
        let bytes = self.shared.model.vocab().detokenize(&tokens, false, true);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn submit(&self, request: GenerationRequest) -> Result<Generation, GenerateError> {
        let mut one = self.submit_choices(request, 1)?;
        Ok(one.remove(0))
    }

    /// Templates and tokenises the prompt once, then queues every choice
    /// under one lock: the scheduler admits the first, the others wait for
    /// its prompt and share its cells (`NewRequest::sibling_of`).
    fn submit_choices(
        &self,
        request: GenerationRequest,
        n: u32,
    ) -> Result<Vec<Generation>, GenerateError> {
        self.check(&request)?;
        let submitted = Instant::now();
        let tool_format = self.chat.tool_format();
        let tokens = self.prompt_tokens(&request)?;
        // Calls are looked for only where tools reached the prompt.
        let calls = (!offered_tools(&request).is_empty()).then_some(tool_format);
        let mut jobs = Vec::with_capacity(n as usize);
        let mut generations = Vec::with_capacity(n as usize);
        for i in 0..n {
            let choice = request.choice(i);
            // Each choice's grammar has its own state.
            let grammar = self
                .grammars
                .for_request(&self.shared.model, &choice, tool_format)?;
            let (tx, cancel, generation) = Generation::channel(tokens.len() as u32);
            jobs.push(Job {
                tokens: tokens.clone(),
                grammar,
                tool_format: calls,
                request: choice,
                tx,
                cancel,
                submitted,
            });
            generations.push(generation);
        }
        if request.max_tokens == Some(0) {
            // Nothing to generate: answer without occupying the engine.
            for job in jobs {
                let _ = job.tx.send(GenerationEvent::Done(Completion {
                    finish_reason: FinishReason::Length,
                    stop_index: None,
                    usage: Usage {
                        prompt_tokens: tokens.len() as u32,
                        ..Usage::default()
                    },
                    timings: Timings::default(),
                }));
            }
            return Ok(generations);
        }
        let mut st = self.shared.lock();
        if !st.running || st.shutdown {
            return Err(GenerateError::Unavailable);
        }
        let mut ids: Vec<scheduler::RequestId> = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            let id = st.next_id;
            st.next_id += 1;
            if job.request.request_id.is_empty() {
                job.request.request_id = format!("req-{id}");
            }
            let new = scheduler::NewRequest {
                id,
                tokens: job.tokens.iter().map(|t| t.0 as u32).collect(),
                priority: job.request.priority,
                deadline: job.request.timeout.map(|t| submitted + t),
                sibling_of: ids.first().copied(),
                reuse_prefix: job.request.cache_prompt,
            };
            if let Err(refused) = st.sched.enqueue(new, submitted) {
                // All or none: the choices already queued leave again.
                for id in ids {
                    st.sched.finish(id);
                    st.jobs.remove(&id);
                }
                return Err(match refused {
                    scheduler::Rejected::QueueFull { waiting } => GenerateError::QueueFull {
                        waiting,
                        retry_after_secs: retry_after(&st.sched),
                    },
                    scheduler::Rejected::TooLong { tokens, cells } => {
                        GenerateError::ContextOverflow {
                            prompt_tokens: tokens,
                            context: cells,
                        }
                    }
                });
            }
            st.jobs.insert(id, job);
            ids.push(id);
        }
        drop(st);
        self.shared.wake.notify_one();
        Ok(generations)
    }

    fn is_ready(&self) -> bool {
        let st = self.shared.lock();
        st.running && !st.shutdown
    }

    fn load(&self) -> LoadSnapshot {
        self.shared.lock().sched.load()
    }

    fn set_observer(&self, observer: Arc<dyn GenerationObserver>) {
        let _ = self.shared.observer.set(observer);
    }
}

/// A fair guess of when a refused request could be admitted: each running
/// place turns over about once every few seconds for typical replies, and
/// the queue ahead drains through all of them.
fn retry_after(sched: &scheduler::Scheduler) -> u32 {
    let load = sched.load();
    let per_place = load.waiting / sched.config().max_running.max(1);
    (1 + per_place).clamp(1, 60)
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("engine thread panicked");
            }
        }
    }
}

fn check_config(config: &EngineConfig) -> Result<(), EngineError> {
    let bad = |what: &str| Err(EngineError::Config(what.to_string()));
    if config.threads == 0 {
        return bad("threads must be at least 1");
    }
    if config.max_running == 0 || config.max_running > MAX_SEQS {
        return bad("max-running must be between 1 and 256");
    }
    if config.ctx_size == Some(0) {
        return bad("context size must be at least 1");
    }
    if config.ubatch_size == 0 {
        return bad("the micro-batch size must be at least 1");
    }
    if config.kv_size == Some(0) {
        return bad("the KV pool needs at least one token");
    }
    Ok(())
}

/// Starts the engine thread and waits until its context exists (or failed).
fn spawn_worker(
    shared: Arc<Shared>,
    config: &EngineConfig,
    pool: &KvPool,
    path: &Path,
) -> Result<JoinHandle<()>, EngineError> {
    let threads = i32::try_from(config.threads).unwrap_or(i32::MAX);
    let n_batch = config.step_tokens;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(pool.cells))
        .with_n_batch(n_batch)
        .with_n_ubatch(config.ubatch_size.min(n_batch))
        .with_n_seq_max(pool.seqs)
        // One pool of cells for every sequence (cells are handed out per
        // token, and shared prefixes are shared cells), or a stream each.
        .with_kv_unified(pool.stream_cells.is_none())
        // Sliding-window layers must keep every position, or a prefix shared
        // from the cache would be missing its window.
        .with_swa_full(true)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("hearth-engine".into())
        .spawn(move || {
            let backend = backend::get().expect("initialised by Engine::load");
            let ctx = match shared.model.new_context(backend, params) {
                Ok(ctx) => ctx,
                Err(e) => {
                    shared.lock().running = false;
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            worker::run(Arc::clone(&shared), ctx, n_batch as usize);
        })
        .map_err(|e| EngineError::Backend(format!("cannot start the engine thread: {e}")))?;
    let context_error = |reason| EngineError::Context {
        path: path.to_path_buf(),
        reason,
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(reason)) => {
            let _ = thread.join();
            Err(context_error(reason))
        }
        Err(_) => {
            let _ = thread.join();
            Err(context_error(
                "the engine thread exited during start-up".into(),
            ))
        }
    }
}
