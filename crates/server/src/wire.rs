//! OpenAI's JSON, as it crosses the wire, and its explicit conversion to domain types.
//!
//! These types exist only in this crate. Requests are checked here and turned
//! into [`types::GenerationRequest`]; nothing downstream sees JSON.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use types::{ChatMessage, GenerationRequest, Priority, Prompt, Role, SamplingParams, Timings};

use crate::error::ApiError;
use crate::reply::Endpoint;

/// Most stop sequences one request may carry.
const MAX_STOPS: usize = 16;

/// Sampling fields shared by both endpoints. The OpenAI ones plus the
/// llama.cpp extensions (`top_k`, `min_p`, `repeat_penalty`, ...) that local
/// clients commonly send.
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<u32>,
    pub stop: Option<Stop>,
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub ignore_eos: bool,
    /// OpenAI allows several choices; one is all a local model should spend.
    pub n: Option<u32>,
    pub logprobs: Option<serde_json::Value>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Hearth's extension: `interactive` (default) or `batch`.
    pub priority: Option<String>,
    /// Hearth's extension: seconds after which the request ends with an error.
    pub timeout: Option<f64>,
}

/// Longest `timeout` a request may ask for: a day.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

impl SamplingFields {
    /// Builds the domain request around `prompt`. `default_max_tokens` is
    /// what the endpoint assumes when the client says nothing.
    fn into_request(
        self,
        prompt: Prompt,
        defaults: &SamplingParams,
        default_max_tokens: Option<u32>,
    ) -> Result<GenerationRequest, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::unsupported("n", "More than one choice (`n` > 1)"));
        }
        if self
            .logprobs
            .as_ref()
            .is_some_and(|v| !v.is_null() && v != &serde_json::Value::Bool(false))
        {
            return Err(ApiError::unsupported("logprobs", "`logprobs`"));
        }
        let temperature = self.temperature.unwrap_or(defaults.temperature);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "invalid_value",
                format!("`temperature` is {temperature}; it must be between 0 and 2"),
            )
            .with_param("temperature"));
        }
        let sampling = SamplingParams {
            temperature,
            top_p: self.top_p.unwrap_or(defaults.top_p),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            // OpenAI seeds are 64-bit signed; llama.cpp's are 32-bit.
            seed: self.seed.map(|s| s as u32).or(defaults.seed),
            presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
            repeat_penalty: self.repeat_penalty.unwrap_or(defaults.repeat_penalty),
            repeat_last_n: self.repeat_last_n.unwrap_or(defaults.repeat_last_n),
        };
        sampling
            .validate()
            .map_err(|e| ApiError::invalid("invalid_value", e.to_string()).with_param(e.field))?;
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > MAX_STOPS {
            return Err(ApiError::invalid(
                "invalid_value",
                format!(
                    "At most {MAX_STOPS} stop sequences are allowed, got {}",
                    stop.len()
                ),
            )
            .with_param("stop"));
        }
        let priority = match self.priority.as_deref() {
            None => Priority::Interactive,
            Some(p) => Priority::parse(p).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_value",
                    format!("`priority` is `{p}`; it must be `interactive` or `batch`"),
                )
                .with_param("priority")
            })?,
        };
        let timeout = match self.timeout {
            None => None,
            Some(t) if t > 0.0 && t <= MAX_TIMEOUT_SECS => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    format!("`timeout` is {t}; it must be more than 0 and at most {MAX_TIMEOUT_SECS} seconds"),
                )
                .with_param("timeout"))
            }
        };
        Ok(GenerationRequest {
            prompt,
            sampling,
            stop,
            max_tokens: self.max_tokens.or(default_max_tokens),
            ignore_eos: self.ignore_eos,
            priority,
            timeout,
            request_id: String::new(),
        })
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: Option<String>,
    pub messages: Vec<WireMessage>,
    /// The newer name for `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    pub tools: Option<Vec<serde_json::Value>>,
    pub response_format: Option<ResponseFormat>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
pub struct WireMessage {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// A request body one of the two generation endpoints accepts.
pub trait CompletionBody: serde::de::DeserializeOwned + Send + 'static {
    const ENDPOINT: Endpoint;

    fn sampling(&self) -> &SamplingFields;

    /// Checks the request and converts it: the model it names, and the
    /// domain request. `defaults` fill the sampling fields it leaves out.
    fn into_domain(
        self,
        defaults: &SamplingParams,
    ) -> Result<(Option<String>, GenerationRequest), ApiError>;
}

impl CompletionBody for ChatCompletionRequest {
    const ENDPOINT: Endpoint = Endpoint::Chat;

    fn sampling(&self) -> &SamplingFields {
        &self.sampling
    }

    fn into_domain(
        mut self,
        defaults: &SamplingParams,
    ) -> Result<(Option<String>, GenerationRequest), ApiError> {
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::unsupported("tools", "Tool calling"));
        }
        if let Some(format) = &self.response_format {
            if format.kind != "text" {
                return Err(ApiError::unsupported(
                    "response_format",
                    "Structured output",
                ));
            }
        }
        if self.messages.is_empty() {
            return Err(
                ApiError::invalid("invalid_value", "`messages` must not be empty")
                    .with_param("messages"),
            );
        }
        let messages = self
            .messages
            .into_iter()
            .map(WireMessage::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(m) = self.max_completion_tokens {
            self.sampling.max_tokens = Some(m);
        }
        let request = self
            .sampling
            .into_request(Prompt::Chat(messages), defaults, None)?;
        Ok((self.model, request))
    }
}

impl WireMessage {
    fn into_domain(self) -> Result<ChatMessage, ApiError> {
        let role = match self.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    format!(
                        "Message role `{other}` is not supported (use system, user or assistant)"
                    ),
                )
                .with_param("messages"))
            }
        };
        let content = match self.content {
            None => String::new(),
            Some(Content::Text(text)) => text,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::unsupported(
                                "messages",
                                &format!("Content of type `{kind}`"),
                            ))
                        }
                    }
                }
                text
            }
        };
        Ok(ChatMessage { role, content })
    }
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: CompletionPrompt,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub best_of: Option<u32>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// OpenAI accepts text, a list of texts, tokens, or lists of tokens.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum CompletionPrompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// OpenAI's default for the legacy completions endpoint.
const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;

impl CompletionBody for CompletionRequest {
    const ENDPOINT: Endpoint = Endpoint::Text;

    fn sampling(&self) -> &SamplingFields {
        &self.sampling
    }

    fn into_domain(
        self,
        defaults: &SamplingParams,
    ) -> Result<(Option<String>, GenerationRequest), ApiError> {
        if self.echo == Some(true) {
            return Err(ApiError::unsupported("echo", "`echo`"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::unsupported("suffix", "`suffix`"));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(ApiError::unsupported("best_of", "`best_of` > 1"));
        }
        let several = || ApiError::unsupported("prompt", "More than one prompt per request");
        let prompt = match self.prompt {
            CompletionPrompt::Text(t) => Prompt::Text(t),
            CompletionPrompt::Texts(mut v) if v.len() == 1 => Prompt::Text(v.remove(0)),
            CompletionPrompt::Tokens(t) => Prompt::Tokens(t),
            CompletionPrompt::TokenLists(mut v) if v.len() == 1 => Prompt::Tokens(v.remove(0)),
            _ => return Err(several()),
        };
        let request =
            self.sampling
                .into_request(prompt, defaults, Some(COMPLETIONS_DEFAULT_MAX_TOKENS))?;
        Ok((self.model, request))
    }
}

#[derive(Debug, Serialize)]
pub struct WireUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: WirePromptTokensDetails,
}

/// OpenAI's breakdown of the prompt: how much came from the prefix cache.
#[derive(Debug, Serialize)]
pub struct WirePromptTokensDetails {
    pub cached_tokens: u32,
}

impl From<types::Usage> for WireUsage {
    fn from(u: types::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens(),
            prompt_tokens_details: WirePromptTokensDetails {
                cached_tokens: u.cached_tokens,
            },
        }
    }
}

/// Timings as an extension field, in the spirit of llama-server's `timings`.
#[derive(Debug, Serialize)]
pub struct WireTimings {
    pub queued_ms: f64,
    pub time_to_first_token_ms: f64,
    pub prompt_ms: f64,
    pub prompt_per_second: f64,
    pub predicted_ms: f64,
    pub predicted_per_second: f64,
}

impl From<Timings> for WireTimings {
    fn from(t: Timings) -> Self {
        Self {
            queued_ms: t.queued_ms,
            time_to_first_token_ms: t.time_to_first_token_ms,
            prompt_ms: t.prefill_ms,
            prompt_per_second: t.prefill_tokens_per_second,
            predicted_ms: t.decode_ms,
            predicted_per_second: t.decode_tokens_per_second,
        }
    }
}

pub fn finish_reason(reason: types::FinishReason) -> &'static str {
    match reason {
        types::FinishReason::Length => "length",
        // A cancelled generation has no listener; "stop" keeps logs tidy.
        types::FinishReason::Stop | types::FinishReason::Cancelled => "stop",
    }
}

#[derive(Debug, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}
