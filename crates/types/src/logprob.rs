//! How likely each generated token was: OpenAI's `logprobs` and
//! `top_logprobs`, in the model's own terms (token bytes, natural logs).

use serde::{Deserialize, Serialize};

/// Most alternatives one position may report (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// One generated token and how likely the model found it.
///
/// Log-probabilities are the model's own distribution (a log-softmax of the
/// raw logits), before temperature, penalties or a grammar reshaped it: the
/// number means the same whatever the request sampled with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's bytes; a token may hold part of a UTF-8 character.
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The likeliest tokens at this position, best first, as many as asked.
    pub top: Vec<TopLogprob>,
}

/// An alternative the model weighed at one position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

impl TokenLogprob {
    /// The token as text; bytes that are not UTF-8 on their own become U+FFFD,
    /// as OpenAI writes them (its `bytes` field carries the exact ones).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

impl TopLogprob {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}
