//! Turns a domain prompt into tokens: chat template, tokenisation and length checks.
//!
//! This runs on the caller's thread, not the engine's, so a bad request is
//! refused before it queues and tokenising never stalls decoding.

use chat::{ChatTemplate, ToolFormat};
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use types::{ChatMessage, GenerateError, Prompt, Tool};

use crate::ChatTemplateSource;

/// How a model's conversations become text.
pub(crate) struct ChatFormat {
    renderer: Renderer,
    source: ChatTemplateSource,
    /// The BOS token's text, when the tokeniser adds BOS itself: a template
    /// that also prints it would otherwise give the model two.
    strip_bos: Option<String>,
}

enum Renderer {
    /// The model's Jinja template (or ChatML) through minijinja.
    Jinja(Box<ChatTemplate>),
    /// A template minijinja cannot run but llama.cpp's built-in matcher knows.
    LlamaCpp(LlamaChatTemplate),
}

impl ChatFormat {
    /// The model's own template through minijinja; else llama.cpp's
    /// built-in rendering of it; else ChatML. Each candidate must render a
    /// probe conversation before it is chosen.
    pub(crate) fn choose(model: &LlamaModel) -> ChatFormat {
        let vocab = model.vocab();
        let text = |t: LlamaToken| {
            vocab
                .text(t)
                .and_then(|c| c.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let bos = text(vocab.bos());
        let eos = text(vocab.eos());
        let strip_bos = (vocab.should_add_bos() && !bos.is_empty()).then(|| bos.clone());
        let probe = [ChatMessage::new(types::Role::User, "hi")];
        let make = |renderer, source| ChatFormat {
            renderer,
            source,
            strip_bos: strip_bos.clone(),
        };
        match model.chat_template(None) {
            Ok(builtin) => {
                let source = builtin.to_str().unwrap_or_default();
                match ChatTemplate::probe(source, &bos, &eos) {
                    Ok(t) => return make(Renderer::Jinja(Box::new(t)), ChatTemplateSource::Model),
                    Err(e) => {
                        tracing::warn!(error = %e, "the model's chat template does not run as Jinja");
                        let format = make(
                            Renderer::LlamaCpp(builtin),
                            ChatTemplateSource::LlamaCppBuiltin,
                        );
                        if format.render(model, &probe, &[]).is_ok() {
                            tracing::warn!(
                                "using llama.cpp's built-in version of the chat template"
                            );
                            return format;
                        }
                        tracing::warn!(
                            "the model's chat template cannot be rendered; using ChatML"
                        );
                    }
                }
            }
            Err(_) => {
                // Files without a template: llama.cpp's own version of their
                // architecture's format, if it has one.
                let arch = model
                    .meta_val_str("general.architecture")
                    .unwrap_or_default();
                if let Some(name) = chat::builtin_template_for(&arch) {
                    if let Ok(builtin) = LlamaChatTemplate::new(name) {
                        let format = make(
                            Renderer::LlamaCpp(builtin),
                            ChatTemplateSource::LlamaCppForArchitecture(name.to_string()),
                        );
                        if format.render(model, &probe, &[]).is_ok() {
                            tracing::info!(template = name, "the model has no chat template; using llama.cpp's for its architecture");
                            return format;
                        }
                    }
                }
                tracing::warn!("the model has no chat template; using ChatML");
            }
        }
        let chatml = ChatTemplate::new(chat::CHATML, &bos, &eos).expect("ChatML compiles");
        make(
            Renderer::Jinja(Box::new(chatml)),
            ChatTemplateSource::ChatMlFallback,
        )
    }

    pub(crate) fn source(&self) -> ChatTemplateSource {
        self.source.clone()
    }

    /// How the model writes tool calls under this format.
    pub(crate) fn tool_format(&self) -> ToolFormat {
        match &self.renderer {
            Renderer::Jinja(t) => t.tool_format(),
            // Tools reach it through `flatten_tools`, which asks for Hermes.
            Renderer::LlamaCpp(_) => ToolFormat::Hermes,
        }
    }

    /// Renders chat messages, ending in an open assistant turn.
    pub(crate) fn render(
        &self,
        model: &LlamaModel,
        messages: &[ChatMessage],
        tools: &[Tool],
    ) -> Result<String, GenerateError> {
        if messages.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        let text = match &self.renderer {
            Renderer::Jinja(t) => t.render(messages, tools, true).map_err(|e| match e {
                chat::TemplateError::Refused(why) => GenerateError::Template(why),
                other => GenerateError::Template(other.to_string()),
            })?,
            Renderer::LlamaCpp(template) => {
                let flat = chat::flatten_tools(messages, tools);
                let chat = flat
                    .iter()
                    .map(|m| LlamaChatMessage::new(m.role.as_str().to_string(), m.content.clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        GenerateError::Template("a message contains a NUL character".into())
                    })?;
                model
                    .apply_chat_template(template, &chat, true)
                    .map_err(|e| GenerateError::Template(e.to_string()))?
            }
        };
        Ok(match &self.strip_bos {
            Some(bos) => text
                .strip_prefix(bos.as_str())
                .map(str::to_string)
                .unwrap_or(text),
            None => text,
        })
    }
}

/// Token ids a client sent, each checked against the vocabulary.
pub(crate) fn checked_tokens(
    model: &LlamaModel,
    ids: &[u32],
) -> Result<Vec<LlamaToken>, GenerateError> {
    let vocab_size = model.n_vocab() as u32;
    ids.iter()
        .map(|&id| match i32::try_from(id) {
            Ok(t) if id < vocab_size => Ok(LlamaToken(t)),
            _ => Err(GenerateError::InvalidToken {
                token: id,
                vocab_size,
            }),
        })
        .collect()
}

/// Tokenises a prompt and checks it against the vocabulary and context.
pub(crate) fn tokenize(
    model: &LlamaModel,
    format: &ChatFormat,
    prompt: &Prompt,
    tools: &[Tool],
    n_ctx: u32,
) -> Result<Vec<LlamaToken>, GenerateError> {
    let tokens = match prompt {
        Prompt::Chat(messages) => {
            let text = format.render(model, messages, tools)?;
            // The template already spells out special tokens such as
            // <|im_start|>; parse them as tokens, as llama-server does.
            model.vocab().tokenize(text.as_bytes(), true, true)
        }
        Prompt::Text(text) => model.vocab().tokenize(text.as_bytes(), true, true),
        Prompt::Tokens(ids) => checked_tokens(model, ids)?,
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
