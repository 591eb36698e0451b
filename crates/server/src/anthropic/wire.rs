//! Anthropic's Messages request JSON and its explicit conversion to domain types.

use serde::Deserialize;
use types::{
    ChatMessage, GenerationRequest, OutputFormat, Prompt, Role, SamplingParams, Tool, ToolCall,
    ToolChoice,
};

use crate::error::ApiError;
use crate::exchange::{check_stops, check_tool_results, priority, timeout, valid_tool_name};

/// `POST /v1/messages`.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    #[serde(flatten)]
    pub prompt: PromptFields,
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub stream: bool,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    /// Hearth's extension (Anthropic has none): the sampler's seed, for
    /// answers that can be reproduced.
    pub seed: Option<i64>,
    /// Structured output: `format` `{"type": "json_schema", "schema"}`,
    /// enforced token by token. `effort` is accepted and has no effect.
    pub output_config: Option<OutputConfig>,
    /// Hearth's extension, as on the OpenAI routes: `interactive` or `batch`.
    pub priority: Option<String>,
    /// Hearth's extension: seconds after which the request ends with an error.
    pub timeout: Option<f64>,
    // `metadata.user_id` is accepted and ignored: the audit log records the
    // authenticated principal. `thinking` is accepted and ignored: a model
    // that does not reason answers without a thinking block, as Anthropic's
    // own older models do.
}

#[derive(Debug, Deserialize)]
pub struct OutputConfig {
    pub format: Option<OutputFormatField>,
}

#[derive(Debug, Deserialize)]
pub struct OutputFormatField {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema: Option<serde_json::Value>,
}

impl OutputFormatField {
    fn into_domain(self) -> Result<OutputFormat, ApiError> {
        if self.kind != "json_schema" {
            return Err(bad(
                "output_config",
                format!(
                    "`output_config.format` type `{}` is not supported; use `json_schema`",
                    self.kind
                ),
            ));
        }
        match self.schema {
            Some(schema) if schema.is_object() || schema.is_boolean() => {
                Ok(OutputFormat::Json(schema))
            }
            _ => Err(bad(
                "output_config",
                "`output_config.format.schema` must be a JSON schema object",
            )),
        }
    }
}

/// What makes up the prompt; `count_tokens` takes exactly these.
#[derive(Debug, Deserialize)]
pub struct PromptFields {
    pub messages: Vec<Message>,
    pub system: Option<SystemPrompt>,
    pub tools: Option<Vec<WireTool>>,
    pub tool_choice: Option<WireToolChoice>,
}

/// `POST /v1/messages/count_tokens`.
#[derive(Debug, Deserialize)]
pub struct CountTokensRequest {
    pub model: String,
    #[serde(flatten)]
    pub prompt: PromptFields,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SystemPrompt {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: MessageContent,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Blocks(Vec<Block>),
}

/// A content block. Kinds Hearth cannot take (images, documents) are kept
/// by name so the error can say which.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        tool_use_id: String,
        content: Option<ToolResultContent>,
        #[serde(default)]
        is_error: bool,
    },
    /// Reasoning from an earlier turn: not shown to the model again, as
    /// Anthropic drops earlier turns' thinking too.
    Thinking {},
    RedactedThinking {},
    #[serde(untagged)]
    Other {
        #[serde(rename = "type")]
        kind: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Deserialize)]
pub struct WireTool {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Option<serde_json::Value>,
    /// `custom` (or absent) for client tools; Anthropic's server tools
    /// (web search, code execution...) have their own types.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WireToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    #[serde(default)]
    pub disable_parallel_tool_use: bool,
}

fn bad(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::invalid("invalid_value", message).with_param(param)
}

impl MessagesRequest {
    /// Checks the request and converts it; `defaults` fill the sampling
    /// fields it leaves out.
    pub fn into_domain(self, defaults: &SamplingParams) -> Result<GenerationRequest, ApiError> {
        if self.max_tokens == 0 {
            return Err(bad("max_tokens", "`max_tokens` must be at least 1"));
        }
        let temperature = self.temperature.unwrap_or(defaults.temperature);
        // Anthropic's range is narrower than OpenAI's.
        if !(0.0..=1.0).contains(&temperature) {
            return Err(bad(
                "temperature",
                format!("`temperature` is {temperature}; it must be between 0 and 1"),
            ));
        }
        let sampling = SamplingParams {
            temperature,
            top_p: self.top_p.unwrap_or(defaults.top_p),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            // As on the OpenAI routes: 64-bit in JSON, 32-bit in llama.cpp.
            seed: self.seed.map(|s| s as u32).or(defaults.seed),
            ..defaults.clone()
        };
        sampling
            .validate()
            .map_err(|e| ApiError::invalid("invalid_value", e.to_string()).with_param(e.field))?;
        let stop = self.stop_sequences.unwrap_or_default();
        check_stops(&stop, "stop_sequences")?;
        let priority = priority(self.priority.as_deref())?;
        let timeout = timeout(self.timeout)?;
        let mut request = self.prompt.into_domain()?;
        request.sampling = sampling;
        request.stop = stop;
        request.max_tokens = Some(self.max_tokens);
        request.priority = priority;
        request.timeout = timeout;
        if let Some(format) = self.output_config.and_then(|c| c.format) {
            request.format = format.into_domain()?;
        }
        Ok(request)
    }
}

impl PromptFields {
    /// The conversation, tools and tool choice as a domain request with
    /// default sampling.
    pub fn into_domain(self) -> Result<GenerationRequest, ApiError> {
        let tools = self
            .tools
            .unwrap_or_default()
            .into_iter()
            .map(WireTool::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        let (tool_choice, parallel) = match self.tool_choice {
            None => (ToolChoice::Auto, true),
            Some(choice) => choice.into_domain()?,
        };
        if self.messages.is_empty() {
            return Err(bad("messages", "`messages` must not be empty"));
        }
        let mut messages = Vec::new();
        if let Some(system) = self.system {
            let text = match system {
                SystemPrompt::Text(text) => text,
                SystemPrompt::Blocks(blocks) => text_of(blocks, "system")?,
            };
            if !text.is_empty() {
                messages.push(ChatMessage::new(Role::System, text));
            }
        }
        for message in self.messages {
            message.into_domain(&mut messages)?;
        }
        if messages.last().is_some_and(|m| m.role == Role::Assistant) {
            // A prefilled answer would need the template to leave the turn
            // open; say so rather than answer a different question.
            return Err(bad(
                "messages",
                "The last message must come from the user: continuing a prefilled assistant turn is not supported",
            ));
        }
        check_tool_results(&messages)?;
        let mut request = GenerationRequest::new(Prompt::Chat(messages));
        request.tools = tools;
        request.tool_choice = tool_choice;
        request.parallel_tool_calls = parallel;
        Ok(request)
    }
}

/// The text of text blocks; any other kind of block is refused, naming it.
fn text_of(blocks: Vec<Block>, param: &'static str) -> Result<String, ApiError> {
    let mut text = String::new();
    for block in blocks {
        match block {
            Block::Text { text: t } => text.push_str(&t),
            other => return Err(unsupported_block(&other, param)),
        }
    }
    Ok(text)
}

fn unsupported_block(block: &Block, param: &'static str) -> ApiError {
    let kind = match block {
        Block::Text { .. } => "text",
        Block::ToolUse { .. } => "tool_use",
        Block::ToolResult { .. } => "tool_result",
        Block::Thinking {} => "thinking",
        Block::RedactedThinking {} => "redacted_thinking",
        Block::Other { kind } => kind,
    };
    ApiError::invalid(
        "invalid_value",
        format!("Content blocks of type `{kind}` are not supported here"),
    )
    .with_param(param)
}

impl Message {
    /// Appends this message's domain messages: a user message's tool
    /// results become `tool` messages (before its text, as Anthropic orders
    /// them), an assistant message's `tool_use` blocks its calls.
    fn into_domain(self, out: &mut Vec<ChatMessage>) -> Result<(), ApiError> {
        let role = match self.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(bad(
                    "messages",
                    format!("Message role `{other}` is not supported: use `user` or `assistant`, and the top-level `system` field for instructions"),
                ))
            }
        };
        let blocks = match self.content {
            MessageContent::Text(text) => vec![Block::Text { text }],
            MessageContent::Blocks(blocks) => blocks,
        };
        let mut text = String::new();
        let mut calls = Vec::new();
        for block in blocks {
            match (role, block) {
                (_, Block::Text { text: t }) => text.push_str(&t),
                (Role::Assistant, Block::ToolUse { id, name, input }) => {
                    if !input.is_object() {
                        return Err(bad(
                            "messages",
                            format!("The input of `tool_use` block `{id}` must be an object"),
                        ));
                    }
                    calls.push(ToolCall {
                        id,
                        name,
                        arguments: input.to_string(),
                    });
                }
                (
                    Role::User,
                    Block::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    },
                ) => {
                    let mut result = match content {
                        None => String::new(),
                        Some(ToolResultContent::Text(t)) => t,
                        Some(ToolResultContent::Blocks(b)) => text_of(b, "messages")?,
                    };
                    if is_error {
                        result.insert_str(0, "Error: ");
                    }
                    let mut message = ChatMessage::new(Role::Tool, result);
                    message.tool_call_id = Some(tool_use_id);
                    out.push(message);
                }
                (_, Block::Thinking {} | Block::RedactedThinking {}) => {}
                (Role::User, block @ Block::ToolUse { .. }) => {
                    return Err(ApiError {
                        message: "`tool_use` blocks belong in assistant messages".into(),
                        ..unsupported_block(&block, "messages")
                    })
                }
                (_, block @ Block::ToolResult { .. }) => {
                    return Err(ApiError {
                        message: "`tool_result` blocks belong in user messages".into(),
                        ..unsupported_block(&block, "messages")
                    })
                }
                (_, block) => return Err(unsupported_block(&block, "messages")),
            }
        }
        if !text.is_empty() || !calls.is_empty() || role == Role::Assistant {
            let mut message = ChatMessage::new(role, text);
            message.tool_calls = calls;
            out.push(message);
        }
        Ok(())
    }
}

impl WireTool {
    fn into_domain(self) -> Result<Tool, ApiError> {
        if let Some(kind) = self.kind.as_deref().filter(|k| *k != "custom") {
            return Err(bad(
                "tools",
                format!("Tools of type `{kind}` are not supported; define client tools with `name` and `input_schema`"),
            ));
        }
        let name = self.name;
        if !valid_tool_name(&name) {
            return Err(bad(
                "tools",
                format!("Tool name `{name}` is invalid: use 1 to 64 letters, digits, `_` or `-`"),
            ));
        }
        let parameters = match self.input_schema {
            Some(p @ serde_json::Value::Object(_)) => p,
            _ => {
                return Err(bad(
                    "tools",
                    format!("Tool `{name}` needs an `input_schema` that is a JSON schema object"),
                ))
            }
        };
        Ok(Tool {
            name,
            description: self.description,
            parameters,
        })
    }
}

impl WireToolChoice {
    /// The choice and whether one reply may hold several calls.
    fn into_domain(self) -> Result<(ToolChoice, bool), ApiError> {
        let choice = match (self.kind.as_str(), self.name) {
            ("auto", _) => ToolChoice::Auto,
            ("any", _) => ToolChoice::Required,
            ("none", _) => ToolChoice::None,
            ("tool", Some(name)) => ToolChoice::Function(name),
            ("tool", None) => {
                return Err(bad(
                    "tool_choice",
                    "`tool_choice` of type `tool` needs the tool's `name`",
                ))
            }
            (other, _) => {
                return Err(bad(
                    "tool_choice",
                    format!("`tool_choice` type `{other}` is not supported; use `auto`, `any`, `tool` or `none`"),
                ))
            }
        };
        Ok((choice, !self.disable_parallel_tool_use))
    }
}
