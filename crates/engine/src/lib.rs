//! Hearth's inference engine: llama.cpp behind a thread-owned, cancellable generation API.
//!
//! [`Engine::load`] checks the file with the pure-Rust [`gguf`] reader, loads
//! it with llama.cpp, and starts one engine thread that owns the context.
//! [`Engine::submit`] tokenises on the caller's thread, queues the request and
//! returns a [`types::Generation`] that streams text pieces and ends with usage
//! and timings. Several sequences share the context; each has its own sampler.

mod backend;
mod prompt;
mod sampler;
mod sequence;
mod text;
mod worker;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatTemplate, LlamaModel};
use types::{
    Completion, FinishReason, GenerateError, Generation, GenerationEvent, GenerationRequest,
    TextGenerator, Timings, Usage,
};

use sequence::Job;
use worker::{Geometry, Queue, Shared};

/// Context length used when none is configured, capped by the model's own.
pub const DEFAULT_CTX_SIZE: u32 = 4096;

/// How to run a model. Built once from the validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Threads for decoding and prompt processing.
    pub threads: u32,
    /// Context length per sequence; `None` means the model's, capped at [`DEFAULT_CTX_SIZE`].
    pub ctx_size: Option<u32>,
    /// Sequences decoded together in one context.
    pub parallel: u32,
    /// Logical batch: most tokens one decode step may carry.
    pub batch_size: u32,
    /// Physical batch llama.cpp splits a step into.
    pub ubatch_size: u32,
    /// Layers to offload to a GPU (needs the `cuda` feature); 0 is CPU only.
    pub gpu_layers: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: 4,
            ctx_size: None,
            parallel: 1,
            // llama.cpp's defaults, which llama-bench uses too.
            batch_size: 2048,
            ubatch_size: 512,
            gpu_layers: 0,
        }
    }
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
}

/// What a loaded model is, as far as serving it is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub architecture: String,
    pub parameters: u64,
    pub vocab_size: u32,
    pub ctx_train: u32,
    /// Context length each sequence gets.
    pub ctx_size: u32,
    /// Where the chat format comes from: the model's own template, or a fallback.
    pub chat_template: ChatTemplateSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplateSource {
    Model,
    /// The model has no usable template; ChatML is used instead.
    ChatMlFallback,
}

/// A loaded model with its engine thread.
pub struct Engine {
    shared: Arc<Shared>,
    template: LlamaChatTemplate,
    info: ModelInfo,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Validates, loads and starts serving the model at `path`.
    pub fn load(path: &Path, config: &EngineConfig) -> Result<Engine, EngineError> {
        check_config(config)?;
        let header = gguf::read_model(path)?;
        let backend = backend::get().map_err(EngineError::Backend)?;
        let params = LlamaModelParams::default().with_n_gpu_layers(config.gpu_layers);
        let started = Instant::now();
        let model =
            LlamaModel::load_from_file(backend, path, &params).map_err(|e| EngineError::Load {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        tracing::info!(path = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");

        let ctx_train = model.n_ctx_train();
        let ctx_size = config
            .ctx_size
            .unwrap_or(DEFAULT_CTX_SIZE.min(ctx_train.max(1)));
        if ctx_size > ctx_train && ctx_train > 0 {
            tracing::warn!(
                ctx_size,
                ctx_train,
                "context longer than the model was trained on; quality may drop"
            );
        }
        let (template, source) = chat_template(&model);
        let info = ModelInfo {
            path: path.to_path_buf(),
            architecture: header.architecture().unwrap_or("unknown").to_string(),
            parameters: model.n_params(),
            vocab_size: model.n_vocab() as u32,
            ctx_train,
            ctx_size,
            chat_template: source,
        };
        let eog_tokens = model
            .vocab()
            .tokens()
            .filter(|&t| model.vocab().is_eog(t))
            .collect();
        let shared = Arc::new(Shared {
            model,
            queue: Mutex::new(Queue {
                running: true,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            eog_tokens,
            n_ctx_seq: ctx_size,
        });
        let thread = spawn_worker(Arc::clone(&shared), config, ctx_size, path)?;
        Ok(Engine {
            shared,
            template,
            info,
            thread: Some(thread),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Token ids for `text`, as a prompt would be tokenised (benchmarks build
    /// exact-length prompts with this).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.shared
            .model
            .vocab()
            .tokenize(text.as_bytes(), true, true)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect()
    }

    /// The exact text the model sees for a chat prompt.
    pub fn render_chat(&self, messages: &[types::ChatMessage]) -> Result<String, GenerateError> {
        prompt::render_chat(&self.shared.model, &self.template, messages)
    }
}

impl TextGenerator for Engine {
    fn submit(&self, request: GenerationRequest) -> Result<Generation, GenerateError> {
        request.sampling.validate()?;
        let submitted = Instant::now();
        let tokens = prompt::tokenize(
            &self.shared.model,
            &self.template,
            &request.prompt,
            self.shared.n_ctx_seq,
        )?;
        let (tx, cancel, generation) = Generation::channel(tokens.len() as u32);
        if request.max_tokens == Some(0) {
            // Nothing to generate: answer without occupying a slot.
            let _ = tx.send(GenerationEvent::Done(Completion {
                finish_reason: FinishReason::Length,
                usage: Usage {
                    prompt_tokens: tokens.len() as u32,
                    completion_tokens: 0,
                },
                timings: Timings::default(),
            }));
            return Ok(generation);
        }
        let job = Job {
            tokens,
            request,
            tx,
            cancel,
            submitted,
        };
        let mut q = self.shared.lock();
        if !q.running || q.shutdown {
            return Err(GenerateError::Unavailable);
        }
        q.jobs.push_back(job);
        drop(q);
        self.shared.wake.notify_one();
        Ok(generation)
    }

    fn is_ready(&self) -> bool {
        let q = self.shared.lock();
        q.running && !q.shutdown
    }
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
    if config.parallel == 0 || config.parallel > 256 {
        return bad("parallel sequences must be between 1 and 256");
    }
    if config.ctx_size == Some(0) {
        return bad("context size must be at least 1");
    }
    if config.ubatch_size == 0 || config.batch_size < config.ubatch_size {
        return bad("batch size must be at least the micro-batch size, which must be at least 1");
    }
    Ok(())
}

/// The model's template if llama.cpp can render it, else ChatML.
fn chat_template(model: &LlamaModel) -> (LlamaChatTemplate, ChatTemplateSource) {
    let probe = [types::ChatMessage::new(types::Role::User, "hi")];
    if let Ok(template) = model.chat_template(None) {
        if prompt::render_chat(model, &template, &probe).is_ok() {
            return (template, ChatTemplateSource::Model);
        }
        tracing::warn!("the model's chat template is not one llama.cpp can render; using ChatML");
    } else {
        tracing::warn!("the model has no chat template; using ChatML");
    }
    let chatml = LlamaChatTemplate::new("chatml").expect("literal has no NUL");
    (chatml, ChatTemplateSource::ChatMlFallback)
}

/// Starts the engine thread and waits until its context exists (or failed).
fn spawn_worker(
    shared: Arc<Shared>,
    config: &EngineConfig,
    ctx_size: u32,
    path: &Path,
) -> Result<JoinHandle<()>, EngineError> {
    let n_ctx = ctx_size
        .checked_mul(config.parallel)
        .ok_or_else(|| EngineError::Config("context size × parallel overflows".into()))?;
    let threads = i32::try_from(config.threads).unwrap_or(i32::MAX);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.ubatch_size)
        .with_n_seq_max(config.parallel)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let geometry = Geometry {
        n_parallel: config.parallel as usize,
        n_batch: config.batch_size as usize,
    };
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
            worker::run(Arc::clone(&shared), ctx, geometry);
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
