//! Tools a chat model may call, the calls it makes, and the shape its output must take.

use serde::{Deserialize, Serialize};

/// A function the model may call, described by a JSON schema of its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema (`{"type": "object", ...}`); `{}` when the tool takes nothing in particular.
    pub parameters: serde_json::Value,
}

/// A call the model made (in a reply) or made earlier (in the history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Unique within a conversation; tool results refer to it.
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, exactly as OpenAI's clients expect them.
    pub arguments: String,
}

/// Whether, and which, tool the model must call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides; a call is recognised in its output if it makes one.
    #[default]
    Auto,
    /// Tools are described, but the model must answer in text.
    None,
    /// The model must call one of the tools (enforced by a grammar).
    Required,
    /// The model must call this tool (enforced by a grammar).
    Function(String),
}

impl ToolChoice {
    /// True when the output is forced to be tool calls.
    pub fn is_forced(&self) -> bool {
        matches!(self, ToolChoice::Required | ToolChoice::Function(_))
    }
}

/// What shape the generated text must have.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum OutputFormat {
    /// Anything the model writes.
    #[default]
    Text,
    /// A JSON value matching the schema (`{"type": "object"}` for any JSON object),
    /// enforced token by token.
    Json(serde_json::Value),
}
