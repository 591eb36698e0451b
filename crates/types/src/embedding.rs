//! Embeddings: texts or token arrays in, one pooled, L2-normalised vector per input out.

use tokio::sync::oneshot;

use crate::GenerateError;

/// One input to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedInput {
    /// Tokenised with the model's BOS token if it wants one; special
    /// tokens written in it stay text.
    Text(String),
    /// Pre-tokenised input, as OpenAI's embeddings API allows.
    Tokens(Vec<u32>),
}

/// One request for embeddings; its inputs are embedded together.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRequest {
    pub inputs: Vec<EmbedInput>,
    /// Cut an input longer than the model's window to fit (Ollama's
    /// default) instead of refusing the request (OpenAI's behaviour).
    pub truncate: bool,
    /// Keep only the first this many dimensions, normalised again (for
    /// models trained to allow it); at most the model's width.
    pub dimensions: Option<u32>,
    /// Names the request in logs; empty lets the generator pick one.
    pub request_id: String,
}

impl EmbeddingRequest {
    pub fn new(inputs: Vec<EmbedInput>) -> Self {
        Self {
            inputs,
            truncate: false,
            dimensions: None,
            request_id: String::new(),
        }
    }
}

/// The vectors, in input order, and what they cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of every input together, after truncation.
    pub prompt_tokens: u32,
}

/// The answer to an embedding request, once the engine has computed it.
/// Dropping it tells the engine nobody waits any more.
#[derive(Debug)]
pub struct PendingEmbeddings(oneshot::Receiver<Result<Embeddings, GenerateError>>);

/// The engine's end of a [`PendingEmbeddings`].
pub type EmbeddingReply = oneshot::Sender<Result<Embeddings, GenerateError>>;

impl PendingEmbeddings {
    /// Creates the pair: the sender goes to the producer.
    pub fn channel() -> (EmbeddingReply, PendingEmbeddings) {
        let (tx, rx) = oneshot::channel();
        (tx, PendingEmbeddings(rx))
    }

    /// Waits for the vectors; a producer that went away is `Unavailable`.
    pub async fn wait(self) -> Result<Embeddings, GenerateError> {
        self.0.await.unwrap_or(Err(GenerateError::Unavailable))
    }

    /// Blocking twin of [`PendingEmbeddings::wait`], for the CLI.
    pub fn blocking_wait(self) -> Result<Embeddings, GenerateError> {
        self.0
            .blocking_recv()
            .unwrap_or(Err(GenerateError::Unavailable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_vanished_producer_is_unavailable() {
        let (tx, pending) = PendingEmbeddings::channel();
        drop(tx);
        assert_eq!(pending.wait().await, Err(GenerateError::Unavailable));
    }
}
