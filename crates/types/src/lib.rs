//! Hearth's shared vocabulary: the domain types that feature crates exchange.
//!
//! This crate is deliberately small and knows nothing about HTTP, JSON wire
//! formats, llama.cpp or the file system. The server converts API JSON into
//! these types; the engine consumes them; the binary wires the two together.

mod embedding;
mod generation;
mod library;
mod logprob;
mod model;
mod sampling;
mod serving;
mod tools;

pub use embedding::{EmbedInput, EmbeddingReply, EmbeddingRequest, Embeddings, PendingEmbeddings};
pub use generation::{
    CancelFlag, ChatMessage, Completion, FinishReason, GenerateError, Generation, GenerationEvent,
    GenerationOutput, GenerationRequest, Prompt, Role, TextGenerator, Timings, Usage,
};
pub use library::{
    LibraryError, ModelDetails, ModelInfo, ModelLibrary, NoProgress, Progress, SharedFile,
    SharedModels,
};
pub use logprob::{TokenLogprob, TopLogprob, MAX_TOP_LOGPROBS};
pub use model::{ModelResolver, ResolveError, ResolvedModel};
pub use sampling::{InvalidSampling, SamplingParams};
pub use serving::{GenerationObserver, LoadSnapshot, Outcome, Priority, RequestRecord};
pub use tools::{OutputFormat, Tool, ToolCall, ToolChoice};
