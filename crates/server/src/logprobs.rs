//! OpenAI's `logprobs` objects: the chat shape (`content` entries with
//! `top_logprobs` lists) and the legacy completions shape (parallel arrays
//! with a `text_offset` per token).

use serde::Serialize;
use types::TokenLogprob;

/// What OpenAI writes for a token the model gave no chance at all (JSON has
/// no minus infinity).
const IMPOSSIBLE: f32 = -9999.0;

fn finite(logprob: f32) -> f32 {
    if logprob.is_finite() {
        logprob
    } else {
        IMPOSSIBLE
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ChatLogprobs {
    content: Vec<ChatToken>,
    refusal: Option<()>,
}

/// One token as OpenAI's chat and Ollama write it.
#[derive(Debug, Serialize)]
pub(crate) struct ChatToken {
    token: String,
    logprob: f32,
    bytes: Vec<u8>,
    top_logprobs: Vec<ChatAlternative>,
}

#[derive(Debug, Serialize)]
struct ChatAlternative {
    token: String,
    logprob: f32,
    bytes: Vec<u8>,
}

/// Each token with its alternatives, in chat's shape.
pub(crate) fn chat_tokens(tokens: Vec<TokenLogprob>) -> Vec<ChatToken> {
    tokens
        .into_iter()
        .map(|t| ChatToken {
            token: t.text(),
            logprob: finite(t.logprob),
            top_logprobs: t
                .top
                .into_iter()
                .map(|a| ChatAlternative {
                    token: a.text(),
                    logprob: finite(a.logprob),
                    bytes: a.bytes,
                })
                .collect(),
            bytes: t.bytes,
        })
        .collect()
}

impl ChatLogprobs {
    pub fn new(tokens: Vec<TokenLogprob>) -> Self {
        Self {
            content: chat_tokens(tokens),
            refusal: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct TextLogprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    /// One object per token, alternative text to log-probability. Two
    /// alternatives can share a text (distinct byte fragments of one
    /// character); the likelier one is kept.
    top_logprobs: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Where each token starts in the choice's text, in characters.
    text_offset: Vec<usize>,
}

impl TextLogprobs {
    /// `offset` is where the first token starts; it is moved past the last.
    pub fn new(tokens: Vec<TokenLogprob>, offset: &mut usize) -> Self {
        let mut out = Self {
            tokens: Vec::with_capacity(tokens.len()),
            token_logprobs: Vec::with_capacity(tokens.len()),
            top_logprobs: Vec::with_capacity(tokens.len()),
            text_offset: Vec::with_capacity(tokens.len()),
        };
        for t in tokens {
            let text = t.text();
            let mut top = serde_json::Map::new();
            for a in t.top {
                top.entry(a.text())
                    .or_insert_with(|| serde_json::json!(finite(a.logprob)));
            }
            out.text_offset.push(*offset);
            *offset += text.chars().count();
            out.tokens.push(text);
            out.token_logprobs.push(finite(t.logprob));
            out.top_logprobs.push(top);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::TopLogprob;

    fn token(bytes: &[u8], logprob: f32, top: &[(&[u8], f32)]) -> TokenLogprob {
        TokenLogprob {
            bytes: bytes.to_vec(),
            logprob,
            top: top
                .iter()
                .map(|&(b, l)| TopLogprob {
                    bytes: b.to_vec(),
                    logprob: l,
                })
                .collect(),
        }
    }

    #[test]
    fn chat_shape_keeps_bytes_and_replaces_minus_infinity() {
        let tokens = vec![
            token(b"Hi", -0.25, &[(b"Hi", -0.25), (b"Hello", -1.5)]),
            token(&[0xE2, 0x82], f32::NEG_INFINITY, &[]),
        ];
        let json = serde_json::to_value(ChatLogprobs::new(tokens)).unwrap();
        assert_eq!(json["content"][0]["token"], "Hi");
        assert_eq!(json["content"][0]["top_logprobs"][1]["token"], "Hello");
        assert_eq!(json["content"][0]["top_logprobs"][1]["logprob"], -1.5);
        // Half a character: the text is lossy, the bytes are exact.
        assert_eq!(json["content"][1]["bytes"], serde_json::json!([0xE2, 0x82]));
        assert_eq!(json["content"][1]["logprob"], -9999.0);
        assert!(json["refusal"].is_null());
    }

    #[test]
    fn text_shape_counts_offsets_across_calls() {
        let mut offset = 0;
        let first = TextLogprobs::new(
            vec![token(b"Hello", -0.5, &[(b"Hello", -0.5), (b"Hi", -2.0)])],
            &mut offset,
        );
        let second = TextLogprobs::new(vec![token(" wörld".as_bytes(), -1.0, &[])], &mut offset);
        assert_eq!(first.text_offset, [0]);
        assert_eq!(second.text_offset, [5]);
        assert_eq!(offset, 11);
        let json = serde_json::to_value(&first).unwrap();
        assert_eq!(json["top_logprobs"][0]["Hi"], -2.0);
        assert_eq!(json["token_logprobs"], serde_json::json!([-0.5]));
    }
}
