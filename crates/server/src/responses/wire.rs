//! The Responses API's request as it crosses the wire, and its conversion
//! into a conversation (earlier turns from `previous_response_id`, then
//! the new input items) and a domain request.

use serde::Deserialize;
use serde_json::Value;
use types::{
    ChatMessage, GenerationRequest, OutputFormat, Prompt, Role, SamplingParams, Tool, ToolCall,
    ToolChoice,
};

use crate::error::ApiError;
use crate::exchange::{check_tool_results, function_tool, priority, timeout};

#[derive(Debug, Deserialize)]
pub struct CreateBody {
    pub model: Option<String>,
    pub input: Input,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    /// Kept for `previous_response_id` and `GET` unless `false`.
    pub store: Option<bool>,
    #[serde(default)]
    pub stream: bool,
    pub tools: Option<Vec<WireTool>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub text: Option<TextConfig>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_output_tokens: Option<u32>,
    pub metadata: Option<serde_json::Map<String, Value>>,
    pub reasoning: Option<Value>,
    pub truncation: Option<String>,
    pub top_logprobs: Option<u32>,
    /// Hearth's extensions, as on the other routes.
    pub seed: Option<i64>,
    pub priority: Option<String>,
    pub timeout: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Item>),
}

/// One input item: a message, a function call the model made earlier, or
/// a call's output.
#[derive(Debug, Deserialize)]
pub struct Item {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub role: Option<String>,
    pub content: Option<ItemContent>,
    pub call_id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
    pub output: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ItemContent {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WireTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub parameters: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct TextConfig {
    pub format: Option<TextFormat>,
}

#[derive(Debug, Deserialize)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema: Option<Value>,
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::invalid("invalid_value", message).with_param(param)
}

/// The new turn's messages, appended to `history` (the earlier turns).
pub fn conversation(
    mut history: Vec<ChatMessage>,
    input: Input,
) -> Result<Vec<ChatMessage>, ApiError> {
    let items = match input {
        Input::Text(text) => {
            history.push(ChatMessage::new(Role::User, text));
            return Ok(history);
        }
        Input::Items(items) => items,
    };
    for item in items {
        match item.kind.as_deref().unwrap_or("message") {
            "message" => {
                let role = match item.role.as_deref() {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("system" | "developer") => Role::System,
                    other => {
                        return Err(invalid(
                            "input",
                            format!("Input message role {other:?} is not supported (use user, assistant, system or developer)"),
                        ))
                    }
                };
                history.push(ChatMessage::new(role, content_text(item.content)?));
            }
            "function_call" => {
                let (Some(call_id), Some(name)) = (item.call_id, item.name) else {
                    return Err(invalid(
                        "input",
                        "A `function_call` item needs `call_id` and `name`",
                    ));
                };
                let call = ToolCall {
                    id: call_id,
                    name,
                    arguments: item.arguments.unwrap_or_else(|| "{}".into()),
                };
                // Calls belong to the assistant turn that made them.
                match history.last_mut() {
                    Some(last) if last.role == Role::Assistant => last.tool_calls.push(call),
                    _ => {
                        let mut turn = ChatMessage::new(Role::Assistant, "");
                        turn.tool_calls.push(call);
                        history.push(turn);
                    }
                }
            }
            "function_call_output" => {
                let Some(call_id) = item.call_id else {
                    return Err(invalid(
                        "input",
                        "A `function_call_output` item needs the `call_id` it answers",
                    ));
                };
                let output = match item.output {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                let mut result = ChatMessage::new(Role::Tool, output);
                result.tool_call_id = Some(call_id);
                history.push(result);
            }
            other => {
                return Err(ApiError::unsupported(
                    "input",
                    &format!("Input items of type `{other}`"),
                ))
            }
        }
    }
    check_tool_results(&history).map_err(|e| e.with_param("input"))?;
    Ok(history)
}

fn content_text(content: Option<ItemContent>) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(ItemContent::Text(text)) => Ok(text),
        Some(ItemContent::Parts(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.kind.as_str(), part.text) {
                    ("input_text" | "output_text" | "text", Some(t)) => text.push_str(&t),
                    (kind, _) => {
                        return Err(ApiError::unsupported(
                            "input",
                            &format!("Content of type `{kind}`"),
                        ))
                    }
                }
            }
            Ok(text)
        }
    }
}

impl CreateBody {
    /// Refuses what cannot be honoured before anything runs.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.reasoning.as_ref().is_some_and(|r| !r.is_null()) {
            return Err(ApiError::unsupported(
                "reasoning",
                "`reasoning` (the served models have no reasoning mode)",
            ));
        }
        if self.truncation.as_deref().is_some_and(|t| t != "disabled") {
            return Err(ApiError::unsupported(
                "truncation",
                "`truncation` other than `disabled`",
            ));
        }
        if self.top_logprobs.is_some_and(|k| k > 0) {
            return Err(ApiError::unsupported(
                "top_logprobs",
                "`top_logprobs` on the Responses API (use chat completions)",
            ));
        }
        if let Some(t) = self.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
            return Err(invalid(
                "temperature",
                format!("`temperature` is {t}; it must be between 0 and 2"),
            ));
        }
        Ok(())
    }

    /// The domain request over `messages` (the whole conversation, new
    /// turn included).
    pub fn request(
        &self,
        messages: Vec<ChatMessage>,
        defaults: &SamplingParams,
    ) -> Result<GenerationRequest, ApiError> {
        let mut prompt = Vec::with_capacity(messages.len() + 1);
        if let Some(instructions) = self.instructions.as_ref().filter(|i| !i.is_empty()) {
            prompt.push(ChatMessage::new(Role::System, instructions.clone()));
        }
        prompt.extend(messages);
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            seed: self.seed.map(|s| s as u32).or(defaults.seed),
            ..defaults.clone()
        };
        sampling
            .validate()
            .map_err(|e| invalid(e.field, e.to_string()))?;
        let tools = self
            .tools
            .iter()
            .flatten()
            .map(WireTool::domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GenerationRequest {
            sampling,
            max_tokens: self.max_output_tokens,
            priority: priority(self.priority.as_deref())?,
            timeout: timeout(self.timeout)?,
            tools,
            tool_choice: tool_choice(self.tool_choice.as_ref())?,
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
            format: self.format()?,
            ..GenerationRequest::new(Prompt::Chat(prompt))
        })
    }

    fn format(&self) -> Result<OutputFormat, ApiError> {
        let Some(format) = self.text.as_ref().and_then(|t| t.format.as_ref()) else {
            return Ok(OutputFormat::Text);
        };
        match format.kind.as_str() {
            "text" => Ok(OutputFormat::Text),
            "json_object" => Ok(OutputFormat::Json(serde_json::json!({"type": "object"}))),
            "json_schema" => match &format.schema {
                Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
                    Ok(OutputFormat::Json(schema.clone()))
                }
                _ => Err(invalid(
                    "text.format",
                    "`text.format.schema` must be a JSON schema object",
                )),
            },
            other => Err(invalid(
                "text.format",
                format!(
                    "`text.format.type` is `{other}`; use `text`, `json_object` or `json_schema`"
                ),
            )),
        }
    }
}

impl WireTool {
    fn domain(&self) -> Result<Tool, ApiError> {
        if self.kind != "function" {
            return Err(ApiError::unsupported(
                "tools",
                &format!("Tools of type `{}`", self.kind),
            ));
        }
        let parameters = self.parameters.clone().filter(|p| !p.is_null());
        function_tool(
            self.name.clone().unwrap_or_default(),
            self.description.clone(),
            parameters,
        )
    }
}

fn tool_choice(field: Option<&Value>) -> Result<ToolChoice, ApiError> {
    let bad = |v: &Value| {
        invalid(
            "tool_choice",
            format!("`tool_choice` is {v}; use `auto`, `none`, `required` or a function"),
        )
    };
    match field {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            _ => Err(bad(field.unwrap())),
        },
        Some(v @ Value::Object(o)) => match (
            o.get("type").and_then(Value::as_str),
            o.get("name").and_then(Value::as_str),
        ) {
            (Some("function"), Some(name)) => Ok(ToolChoice::Function(name.to_string())),
            _ => Err(bad(v)),
        },
        Some(v) => Err(bad(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_become_a_conversation_with_calls_and_their_outputs() {
        let input: Input = serde_json::from_value(json!([
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "5C"}
        ]))
        .unwrap();
        let earlier = vec![
            ChatMessage::new(Role::User, "Hi"),
            ChatMessage::new(Role::Assistant, "Hello!"),
        ];
        let messages = conversation(earlier, input).unwrap();
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[2].content, "Weather in Oslo?");
        assert_eq!(messages[3].role, Role::Assistant);
        assert_eq!(messages[3].tool_calls[0].name, "weather");
        assert_eq!(messages[4].tool_call_id.as_deref(), Some("call_1"));
    }

    #[test]
    fn an_output_for_a_call_never_made_is_refused() {
        let input: Input = serde_json::from_value(
            json!([{"type": "function_call_output", "call_id": "nope", "output": "1"}]),
        )
        .unwrap();
        let err = conversation(Vec::new(), input).unwrap_err();
        assert_eq!(err.param, Some("input"));
        let image: Input = serde_json::from_value(
            json!([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]),
        )
        .unwrap();
        assert_eq!(
            conversation(Vec::new(), image).unwrap_err().code,
            "unsupported_parameter"
        );
    }
}
