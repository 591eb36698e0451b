//! OpenAI's JSON, as it crosses the wire, and its explicit conversion to domain types.
//!
//! These types exist only in this crate. Requests are checked here and turned
//! into [`types::GenerationRequest`]; nothing downstream sees JSON.

use serde::{Deserialize, Serialize};

use types::{
    ChatMessage, GenerationRequest, OutputFormat, Prompt, Role, SamplingParams, Timings, Tool,
    ToolCall, ToolChoice,
};

use crate::error::ApiError;
use crate::exchange::{check_stops, check_tool_results, function_tool, priority, timeout};
use crate::reply::Endpoint;

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
    /// Token id (as a string, as OpenAI writes JSON keys) to bias.
    pub logit_bias: Option<std::collections::BTreeMap<String, f32>>,
    pub stop: Option<Stop>,
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub ignore_eos: bool,
    /// How many choices to generate from the one prompt (at most [`MAX_CHOICES`]).
    pub n: Option<u32>,
    /// Chat: `true` or `false`; completions: how many alternatives per token.
    pub logprobs: Option<serde_json::Value>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Hearth's extension: `interactive` (default) or `batch`.
    pub priority: Option<String>,
    /// Hearth's extension: seconds after which the request ends with an error.
    pub timeout: Option<f64>,
    /// llama-server's extension: `false` computes the whole prompt instead
    /// of starting from a cached prefix.
    pub cache_prompt: Option<bool>,
}

/// Most choices one request may ask for. Each is a sequence of its own
/// (sharing the prompt's cells), so a request for more than the server runs
/// at once by default would queue behind itself.
pub const MAX_CHOICES: u32 = 16;

/// Most entries in one `logit_bias` (OpenAI's limit).
const MAX_LOGIT_BIAS: usize = 300;

/// OpenAI's `logit_bias`: token ids as JSON keys, biases as values.
fn logit_bias(
    field: Option<std::collections::BTreeMap<String, f32>>,
) -> Result<Vec<(u32, f32)>, ApiError> {
    let bad =
        |message: String| ApiError::invalid("invalid_value", message).with_param("logit_bias");
    let map = field.unwrap_or_default();
    if map.len() > MAX_LOGIT_BIAS {
        return Err(bad(format!(
            "`logit_bias` has {} entries; at most {MAX_LOGIT_BIAS} are allowed",
            map.len()
        )));
    }
    map.into_iter()
        .map(|(key, bias)| {
            let token = key
                .parse::<u32>()
                .map_err(|_| bad(format!("`logit_bias` key `{key}` is not a token id")))?;
            Ok((token, bias))
        })
        .collect()
}

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
            logit_bias: logit_bias(self.logit_bias)?,
        };
        sampling
            .validate()
            .map_err(|e| ApiError::invalid("invalid_value", e.to_string()).with_param(e.field))?;
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        check_stops(&stop, "stop")?;
        let priority = priority(self.priority.as_deref())?;
        let timeout = timeout(self.timeout)?;
        Ok(GenerationRequest {
            sampling,
            stop,
            max_tokens: self.max_tokens.or(default_max_tokens),
            ignore_eos: self.ignore_eos,
            priority,
            timeout,
            cache_prompt: self.cache_prompt.unwrap_or(true),
            ..GenerationRequest::new(prompt)
        })
    }

    /// `n`, checked: 1 to [`MAX_CHOICES`].
    pub fn choices(&self) -> Result<u32, ApiError> {
        match self.n {
            None => Ok(1),
            Some(n) if (1..=MAX_CHOICES).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::invalid(
                "invalid_value",
                format!("`n` is {n}; it must be between 1 and {MAX_CHOICES}"),
            )
            .with_param("n")),
        }
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
    pub tools: Option<Vec<WireTool>>,
    pub tool_choice: Option<WireToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    /// Alternatives per token, with `logprobs: true`.
    pub top_logprobs: Option<u32>,
    // `user` (OpenAI's end-user id for abuse monitoring) is accepted and,
    // like any field not named here, ignored: the audit log already
    // records the authenticated principal.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    // `name` and `strict` are accepted and not needed: every schema is
    // enforced token by token, strict or not.
    pub schema: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct WireTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: WireFunction,
}

#[derive(Debug, Deserialize)]
pub struct WireFunction {
    pub name: String,
    pub description: Option<String>,
    /// Enforced when a call is forced, whatever `strict` says.
    pub parameters: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum WireToolChoice {
    Mode(String),
    Named {
        #[serde(rename = "type")]
        kind: String,
        function: NamedFunction,
    },
}

#[derive(Debug, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct WireMessage {
    pub role: String,
    pub content: Option<Content>,
    pub tool_calls: Option<Vec<WireToolCall>>,
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// A call as OpenAI writes it, in requests (history) and replies.
#[derive(Debug, Deserialize, Serialize)]
pub struct WireToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: WireFunctionCall,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct WireFunctionCall {
    pub name: String,
    pub arguments: String,
}

impl From<ToolCall> for WireToolCall {
    fn from(call: ToolCall) -> Self {
        Self {
            id: call.id,
            kind: "function".into(),
            function: WireFunctionCall {
                name: call.name,
                arguments: call.arguments,
            },
        }
    }
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
        let tools = self
            .tools
            .unwrap_or_default()
            .into_iter()
            .map(WireTool::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        let tool_choice = match self.tool_choice {
            None => ToolChoice::Auto,
            Some(choice) => choice.into_domain()?,
        };
        let format = match self.response_format {
            None => OutputFormat::Text,
            Some(format) => format.into_domain()?,
        };
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
        check_tool_results(&messages)?;
        if let Some(m) = self.max_completion_tokens {
            self.sampling.max_tokens = Some(m);
        }
        let logprobs = chat_logprobs(self.sampling.logprobs.take(), self.top_logprobs)?;
        let mut request = self
            .sampling
            .into_request(Prompt::Chat(messages), defaults, None)?;
        request.tools = tools;
        request.tool_choice = tool_choice;
        request.parallel_tool_calls = self.parallel_tool_calls.unwrap_or(true);
        request.format = format;
        request.logprobs = logprobs;
        Ok((self.model, request))
    }
}

/// Chat's `logprobs` (a boolean) and `top_logprobs` (0 to 20, only with
/// `logprobs: true`, as OpenAI insists).
fn chat_logprobs(
    logprobs: Option<serde_json::Value>,
    top: Option<u32>,
) -> Result<Option<u32>, ApiError> {
    let wanted = match logprobs {
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => false,
        Some(serde_json::Value::Bool(true)) => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_type",
                format!("`logprobs` is {other}; it must be a boolean"),
            )
            .with_param("logprobs"))
        }
    };
    match (wanted, top) {
        (false, Some(_)) => Err(ApiError::invalid(
            "invalid_value",
            "`top_logprobs` needs `logprobs` set to true",
        )
        .with_param("top_logprobs")),
        (_, Some(k)) if k > types::MAX_TOP_LOGPROBS => Err(ApiError::invalid(
            "invalid_value",
            format!(
                "`top_logprobs` is {k}; it must be between 0 and {}",
                types::MAX_TOP_LOGPROBS
            ),
        )
        .with_param("top_logprobs")),
        (true, k) => Ok(Some(k.unwrap_or(0))),
        (false, None) => Ok(None),
    }
}

/// Completions' `logprobs`: how many alternatives per token (0 to 20;
/// OpenAI stops at 5, local servers commonly allow more).
fn text_logprobs(logprobs: Option<serde_json::Value>) -> Result<Option<u32>, ApiError> {
    match logprobs {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(k))
            if k.as_u64()
                .is_some_and(|k| k <= u64::from(types::MAX_TOP_LOGPROBS)) =>
        {
            Ok(k.as_u64().map(|k| k as u32))
        }
        Some(other) => Err(ApiError::invalid(
            "invalid_value",
            format!(
                "`logprobs` is {other}; it must be a whole number between 0 and {}",
                types::MAX_TOP_LOGPROBS
            ),
        )
        .with_param("logprobs")),
    }
}

impl WireTool {
    fn into_domain(self) -> Result<Tool, ApiError> {
        let bad = |message: String| ApiError::invalid("invalid_value", message).with_param("tools");
        if self.kind != "function" {
            return Err(bad(format!(
                "Tools of type `{}` are not supported; use `function`",
                self.kind
            )));
        }
        function_tool(
            self.function.name,
            self.function.description,
            self.function.parameters,
        )
    }
}

impl WireToolChoice {
    fn into_domain(self) -> Result<ToolChoice, ApiError> {
        let bad =
            |message: String| ApiError::invalid("invalid_value", message).with_param("tool_choice");
        match self {
            WireToolChoice::Mode(mode) => match mode.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" => Ok(ToolChoice::Required),
                other => Err(bad(format!(
                    "`tool_choice` is `{other}`; use `auto`, `none`, `required` or a named function"
                ))),
            },
            WireToolChoice::Named { kind, function } if kind == "function" => {
                Ok(ToolChoice::Function(function.name))
            }
            WireToolChoice::Named { kind, .. } => Err(bad(format!(
                "`tool_choice` of type `{kind}` is not supported; use `function`"
            ))),
        }
    }
}

impl ResponseFormat {
    fn into_domain(self) -> Result<OutputFormat, ApiError> {
        let bad = |message: String| {
            ApiError::invalid("invalid_value", message).with_param("response_format")
        };
        match self.kind.as_str() {
            "text" => Ok(OutputFormat::Text),
            "json_object" => Ok(OutputFormat::Json(serde_json::json!({"type": "object"}))),
            "json_schema" => {
                let schema = self
                    .json_schema
                    .and_then(|s| s.schema)
                    .ok_or_else(|| bad("`response_format.json_schema.schema` is required".into()))?;
                if !(schema.is_object() || schema.is_boolean()) {
                    return Err(bad("`response_format.json_schema.schema` must be a JSON schema object".into()));
                }
                Ok(OutputFormat::Json(schema))
            }
            other => Err(bad(format!(
                "`response_format` type `{other}` is not supported; use `text`, `json_object` or `json_schema`"
            ))),
        }
    }
}

impl WireMessage {
    fn into_domain(self) -> Result<ChatMessage, ApiError> {
        let role = match self.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    format!(
                    "Message role `{other}` is not supported (use system, user, assistant or tool)"
                ),
                )
                .with_param("messages"))
            }
        };
        let tool_calls: Vec<ToolCall> = match self.tool_calls {
            Some(calls) if role != Role::Assistant && !calls.is_empty() => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    "Only assistant messages may carry `tool_calls`",
                )
                .with_param("messages"))
            }
            Some(calls) => calls
                .into_iter()
                .map(|c| ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                })
                .collect(),
            None => Vec::new(),
        };
        if role == Role::Tool && self.tool_call_id.is_none() {
            return Err(ApiError::invalid(
                "invalid_value",
                "A `tool` message needs the `tool_call_id` it answers",
            )
            .with_param("messages"));
        }
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
        Ok(ChatMessage {
            role,
            content,
            tool_calls,
            tool_call_id: self.tool_call_id,
            name: self.name,
        })
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
        mut self,
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
        let logprobs = text_logprobs(self.sampling.logprobs.take())?;
        let mut request =
            self.sampling
                .into_request(prompt, defaults, Some(COMPLETIONS_DEFAULT_MAX_TOKENS))?;
        request.logprobs = logprobs;
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
        types::FinishReason::ToolCalls => "tool_calls",
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
    /// Hearth's own field: in memory now, or loaded on its first request.
    pub loaded: bool,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}
