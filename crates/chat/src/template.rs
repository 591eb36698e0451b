//! A model's Jinja chat template, rendered with minijinja.
//!
//! The environment mirrors what Hugging Face's `transformers` sets up
//! (`trim_blocks`, `lstrip_blocks`, `raise_exception`, `strftime_now`,
//! Python string and dict methods), so templates written for it render the
//! same prompt here. Templates come from model files, which are untrusted:
//! rendering runs on a fuel budget, so a looping template ends in an error.

use minijinja::value::{Kwargs, Serde, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;
use types::{ChatMessage, Role, Tool, ToolCall};

use crate::tool_format::{self, ToolFormat};

/// Instructions a template may execute per render. A long conversation
/// needs a few thousand; a template that loops forever runs out.
const FUEL: u64 = 5_000_000;

/// Why a template could not be used or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template's source does not parse.
    #[error("the chat template does not parse: {0}")]
    Syntax(String),
    /// The template refused the conversation (`raise_exception`), e.g.
    /// roles that do not alternate.
    #[error("{0}")]
    Refused(String),
    /// Rendering failed for another reason (a missing field, the fuel budget).
    #[error("rendering the chat template failed: {0}")]
    Render(String),
}

/// A compiled chat template plus the special tokens it is given.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// The template renders a `tools` list, and then (by convention)
    /// assistant `tool_calls` and `tool` messages, itself.
    renders_tools: bool,
    tool_format: ToolFormat,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("renders_tools", &self.renders_tools)
            .field("tool_format", &self.tool_format)
            .finish_non_exhaustive()
    }
}

/// A message as Hugging Face templates read it.
#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<TemplateToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct TemplateToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: TemplateFunctionCall<'a>,
}

#[derive(Serialize)]
struct TemplateFunctionCall<'a> {
    name: &'a str,
    /// An object, as templates expect (they `tojson` it); text that is not
    /// JSON stays text.
    arguments: serde_json::Value,
}

#[derive(Serialize)]
struct TemplateTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: &'a Tool,
}

/// ChatML, for models without a template of their own (llama.cpp's fallback too).
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

impl ChatTemplate {
    /// Compiles `source`. `bos_token` and `eos_token` are the texts of the
    /// model's special tokens, which templates print themselves.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| TemplateError::Syntax(e.to_string()))?,
        );
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message.clone())
                    .with_source(Raised(message)))
            },
        );
        env.add_function("strftime_now", |format: String| {
            crate::date::strftime_now(&format)
        });
        // Python's json.dumps arguments that templates pass (`ensure_ascii`,
        // `separators`, `sort_keys`) are accepted; minijinja's own filter
        // would reject them.
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        let tool_format = ToolFormat::detect(source);
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            renders_tools: source.contains("tools"),
            tool_format,
        })
    }

    /// Compiles `source` and renders a one-message conversation with it:
    /// a template that passes can be trusted with real ones.
    pub fn probe(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let template = Self::new(source, bos_token, eos_token)?;
        template.render(&[ChatMessage::new(Role::User, "hi")], &[], true)?;
        Ok(template)
    }

    /// How the model writes tool calls under this template.
    pub fn tool_format(&self) -> ToolFormat {
        self.tool_format
    }

    /// True when the template describes tools itself; otherwise Hearth
    /// describes them in the system prompt.
    pub fn renders_tools(&self) -> bool {
        self.renders_tools
    }

    /// Renders the conversation, with `tools` offered, ending in an open
    /// assistant turn when `add_generation_prompt` is set.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let native = self.renders_tools;
        // Only a conversation that involves tools needs rewriting for a
        // template that knows none.
        let involves_tools = !tools.is_empty()
            || messages
                .iter()
                .any(|m| m.role == Role::Tool || !m.tool_calls.is_empty());
        let flat;
        let messages = if native || !involves_tools {
            messages
        } else {
            flat = flatten_tools(messages, tools);
            &flat[..]
        };
        let wire: Vec<TemplateMessage<'_>> = messages
            .iter()
            .map(|m| TemplateMessage {
                role: m.role.as_str(),
                content: m.content.clone(),
                tool_calls: m.tool_calls.iter().map(template_call).collect(),
                tool_call_id: m.tool_call_id.as_deref(),
                name: m.name.as_deref(),
            })
            .collect();
        let tools_value = if tools.is_empty() || !native {
            Value::from(())
        } else {
            Value::from(Serde(
                tools
                    .iter()
                    .map(|function| TemplateTool {
                        kind: "function",
                        function,
                    })
                    .collect::<Vec<_>>(),
            ))
        };
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        template
            .render(minijinja::context! {
                messages => Value::from(Serde(&wire)),
                tools => tools_value,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| match raised(&e) {
                Some(message) => TemplateError::Refused(message.to_string()),
                None => TemplateError::Render(describe(&e)),
            })
    }
}

/// The conversation for a template that knows nothing of tools: the tools
/// described in the system prompt, earlier calls written out in the Hermes
/// form the model was asked to use, and results as the user's turn
/// (`<tool_response>`), several in a row merged so that user and assistant
/// still alternate. Without tools or tool messages it is the conversation
/// unchanged.
pub fn flatten_tools(messages: &[ChatMessage], tools: &[Tool]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    if !tools.is_empty() {
        let instructions = tool_format::describe_tools(tools);
        match messages.first() {
            Some(first) if first.role == Role::System => {}
            _ => out.push(ChatMessage::new(Role::System, instructions)),
        }
    }
    for (i, message) in messages.iter().enumerate() {
        let mut content = message.content.clone();
        if i == 0 && message.role == Role::System && !tools.is_empty() {
            content = format!("{content}\n\n{}", tool_format::describe_tools(tools));
        }
        match message.role {
            Role::Assistant => {
                for call in &message.tool_calls {
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&tool_format::hermes_call_text(call));
                }
                out.push(ChatMessage::new(Role::Assistant, content));
            }
            Role::Tool => {
                let text = format!("<tool_response>\n{content}\n</tool_response>");
                match out.last_mut() {
                    Some(prev) if i > 0 && messages[i - 1].role == Role::Tool => {
                        prev.content.push('\n');
                        prev.content.push_str(&text);
                    }
                    _ => out.push(ChatMessage::new(Role::User, text)),
                }
            }
            role => out.push(ChatMessage::new(role, content)),
        }
    }
    out
}

fn template_call(call: &ToolCall) -> TemplateToolCall<'_> {
    TemplateToolCall {
        id: &call.id,
        kind: "function",
        function: TemplateFunctionCall {
            name: &call.name,
            arguments: serde_json::from_str(&call.arguments)
                .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone())),
        },
    }
}

/// What a template's `raise_exception` call said: the template refusing
/// the conversation, as opposed to failing.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raised(e: &Error) -> Option<&str> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<Raised>())
        .map(|r| r.0.as_str())
}

/// The error with the template's line, which `Display` leaves out.
fn describe(e: &Error) -> String {
    match e.line() {
        Some(line) => format!("{e} (template line {line})"),
        None => e.to_string(),
    }
}

fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    for ignored in ["ensure_ascii", "separators", "sort_keys"] {
        let _: Option<Value> = kwargs.get(ignored)?;
    }
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let text = match indent.and_then(|v| usize::try_from(v).ok()) {
        Some(width) => {
            let indent = " ".repeat(width);
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            json.serialize(&mut ser)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
            String::from_utf8(out).unwrap_or_default()
        }
        // Python's json.dumps default separators: ", " and ": ".
        None => python_spacing(&json),
    };
    Ok(Value::from_safe_string(text))
}

/// JSON as Python's `json.dumps` writes it by default, which is what
/// templates' `tojson` produced when the model was trained.
fn python_spacing(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(python_spacing).collect();
            format!("[{}]", inner.join(", "))
        }
        serde_json::Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}: {}",
                        serde_json::Value::String(k.clone()),
                        python_spacing(v)
                    )
                })
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_spaces_like_python_and_indents_on_request() {
        let env = {
            let mut env = Environment::new();
            env.add_filter("tojson", tojson);
            env
        };
        let out = env
            .render_str(
                "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(ensure_ascii=False) }}",
                minijinja::context! { x => Value::from(Serde(serde_json::json!({"a": [1, "b"]}))) },
            )
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": [1, \"b\"]}|{\n  \"a\": [\n    1,\n    \"b\"\n  ]\n}|{\"a\": [1, \"b\"]}"
        );
    }
}
