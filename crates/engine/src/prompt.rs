//! Turns a domain prompt into tokens: chat template, tokenisation and length checks.
//!
//! This runs on the caller's thread, not the engine's, so a bad request is
//! refused before it queues and tokenising never stalls decoding.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use types::{ChatMessage, GenerateError, Prompt};

/// Renders chat messages with the model's template, ending in an open assistant turn.
pub(crate) fn render_chat(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[ChatMessage],
) -> Result<String, GenerateError> {
    if messages.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let chat = messages
        .iter()
        .map(|m| LlamaChatMessage::new(m.role.as_str().to_string(), m.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| GenerateError::Template("a message contains a NUL character".into()))?;
    model
        .apply_chat_template(template, &chat, true)
        .map_err(|e| GenerateError::Template(e.to_string()))
}

/// Tokenises a prompt and checks it against the vocabulary and context.
pub(crate) fn tokenize(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    prompt: &Prompt,
    n_ctx: u32,
) -> Result<Vec<LlamaToken>, GenerateError> {
    let tokens = match prompt {
        Prompt::Chat(messages) => {
            let text = render_chat(model, template, messages)?;
            // The template already spells out special tokens such as
            // <|im_start|>; parse them as tokens, as llama-server does.
            model.vocab().tokenize(text.as_bytes(), true, true)
        }
        Prompt::Text(text) => model.vocab().tokenize(text.as_bytes(), true, true),
        Prompt::Tokens(ids) => {
            let vocab_size = model.n_vocab() as u32;
            ids.iter()
                .map(|&id| match i32::try_from(id) {
                    Ok(t) if id < vocab_size => Ok(LlamaToken(t)),
                    _ => Err(GenerateError::InvalidToken {
                        token: id,
                        vocab_size,
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    if tokens.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    // At least one position must stay free for the reply.
    if tokens.len() >= n_ctx as usize {
        return Err(GenerateError::ContextOverflow {
            prompt_tokens: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            context: n_ctx,
        });
    }
    Ok(tokens)
}
