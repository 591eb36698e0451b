//! How a model writes tool calls, how tools are described to a model whose
//! template does not, and the grammar that forces a call.

use serde_json::{json, Value};
use types::{Tool, ToolCall, ToolChoice};

/// The text shape of a model's tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (Hermes, Qwen,
    /// and what Hearth asks of models whose template knows no tools).
    Hermes,
    /// A bare JSON object, `{"name": …, "parameters": {…}}` (Llama 3.x).
    Llama3,
    /// `[TOOL_CALLS][{"name": …, "arguments": {…}}]`, or the newer
    /// `[TOOL_CALLS]name[ARGS]{…}` (Mistral).
    Mistral,
    /// A template that renders tools without a known marker: the reply is
    /// JSON, `{"tool_calls": [...]}` or `{"name": …, "arguments": …}`.
    Generic,
}

impl ToolFormat {
    /// Recognises the format by the markers a template writes.
    pub fn detect(template: &str) -> ToolFormat {
        if template.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if template.contains("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if template.contains("<|python_tag|>") || template.contains("ipython") {
            ToolFormat::Llama3
        } else if template.contains("tools") {
            ToolFormat::Generic
        } else {
            ToolFormat::Hermes
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::Llama3 => "llama3",
            ToolFormat::Mistral => "mistral",
            ToolFormat::Generic => "generic",
        }
    }
}

/// The system-prompt text that offers `tools` to a model whose template
/// cannot: the Hermes function-calling prompt, which many small models saw
/// in training.
pub(crate) fn describe_tools(tools: &[Tool]) -> String {
    let mut text = String::from(
        "You may call one or more functions to assist with the user query. \
         The functions are described within <tools></tools> XML tags:\n<tools>\n",
    );
    for tool in tools {
        let spec = json!({"type": "function", "function": tool});
        text.push_str(&spec.to_string());
        text.push('\n');
    }
    text.push_str(
        "</tools>\n\nTo call a function, reply with a JSON object naming it and giving its \
         arguments, within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    text
}

/// An earlier call, written back into the conversation the way the model
/// was told to write it.
pub(crate) fn hermes_call_text(call: &ToolCall) -> String {
    let arguments: Value = serde_json::from_str(&call.arguments)
        .unwrap_or_else(|_| Value::String(call.arguments.clone()));
    format!(
        "<tool_call>\n{}\n</tool_call>",
        json!({"name": call.name, "arguments": arguments})
    )
}

/// A Lark grammar (llguidance's dialect) whose every sentence is a
/// well-formed call, in `format`, to a tool `choice` allows, with arguments
/// valid under that tool's parameter schema. `None` when `choice` forces
/// nothing. A named tool must be among `tools` (the caller checks).
pub fn tool_grammar(
    format: ToolFormat,
    tools: &[Tool],
    choice: &ToolChoice,
    parallel: bool,
) -> Option<String> {
    let allowed: Vec<&Tool> = match choice {
        ToolChoice::Auto | ToolChoice::None => return None,
        ToolChoice::Required => tools.iter().collect(),
        ToolChoice::Function(name) => tools.iter().filter(|t| &t.name == name).collect(),
    };
    let arguments_key = match format {
        ToolFormat::Llama3 => "parameters",
        _ => "arguments",
    };
    let variants: Vec<Value> = allowed
        .iter()
        .map(|tool| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": tool.name},
                    arguments_key: parameters_schema(&tool.parameters),
                },
                "required": ["name", arguments_key],
                "additionalProperties": false,
            })
        })
        .collect();
    let call_schema = json!({
        "anyOf": variants,
        "x-guidance": {
            "whitespace_flexible": false,
            "item_separator": ", ",
            "key_separator": ": ",
        },
    });
    let call = format!("call: %json {call_schema}\n");
    let start = match (format, parallel) {
        (ToolFormat::Hermes, false) => r#"start: "<tool_call>\n" call "\n</tool_call>""#,
        (ToolFormat::Hermes, true) => {
            r#"start: "<tool_call>\n" call "\n</tool_call>" ("\n<tool_call>\n" call "\n</tool_call>")*"#
        }
        (ToolFormat::Mistral, false) => r#"start: "[TOOL_CALLS][" call "]""#,
        (ToolFormat::Mistral, true) => r#"start: "[TOOL_CALLS][" call (", " call)* "]""#,
        (ToolFormat::Llama3, _) => "start: call",
        (ToolFormat::Generic, false) => r#"start: "{\"tool_calls\": [" call "]}""#,
        (ToolFormat::Generic, true) => r#"start: "{\"tool_calls\": [" call (", " call)* "]}""#,
    };
    Some(format!("{start}\n{call}"))
}

/// A tool's parameter schema as a forced call enforces it; an empty one
/// means any object. Declared properties are the only ones allowed unless
/// the schema says otherwise (as OpenAI's strict mode requires it to):
/// small models otherwise pad calls with keys no function takes.
fn parameters_schema(parameters: &Value) -> Value {
    match parameters {
        Value::Object(map) if map.is_empty() => json!({"type": "object"}),
        Value::Null => json!({"type": "object"}),
        Value::Object(map)
            if map.contains_key("properties") && !map.contains_key("additionalProperties") =>
        {
            let mut map = map.clone();
            map.insert("additionalProperties".into(), Value::Bool(false));
            Value::Object(map)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Tool {
        Tool {
            name: name.into(),
            description: Some("d".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        }
    }

    #[test]
    fn detects_formats_by_marker() {
        assert_eq!(
            ToolFormat::detect("{{ '<tool_call>' }}"),
            ToolFormat::Hermes
        );
        assert_eq!(ToolFormat::detect("[TOOL_CALLS]"), ToolFormat::Mistral);
        assert_eq!(ToolFormat::detect("<|python_tag|>"), ToolFormat::Llama3);
        assert_eq!(ToolFormat::detect("{% if tools %}"), ToolFormat::Generic);
        assert_eq!(ToolFormat::detect("{{ messages }}"), ToolFormat::Hermes);
    }

    #[test]
    fn no_grammar_unless_a_call_is_forced() {
        let tools = [tool("a")];
        assert!(tool_grammar(ToolFormat::Hermes, &tools, &ToolChoice::Auto, true).is_none());
        assert!(tool_grammar(ToolFormat::Hermes, &tools, &ToolChoice::None, true).is_none());
    }

    #[test]
    fn a_named_choice_allows_only_that_tool() {
        let tools = [tool("get_weather"), tool("get_time")];
        let g = tool_grammar(
            ToolFormat::Hermes,
            &tools,
            &ToolChoice::Function("get_time".into()),
            false,
        )
        .unwrap();
        assert!(g.contains(r#""const":"get_time""#), "{g}");
        assert!(!g.contains("get_weather"), "{g}");
        assert!(g.starts_with(r#"start: "<tool_call>\n" call "\n</tool_call>""#));
    }

    #[test]
    fn forced_arguments_allow_only_declared_properties() {
        let g = tool_grammar(
            ToolFormat::Hermes,
            &[tool("f")],
            &ToolChoice::Required,
            false,
        )
        .unwrap();
        assert!(
            g.contains(r#""properties":{"city":{"type":"string"}},"additionalProperties":false"#),
            "{g}"
        );
        let mut open = tool("f");
        open.parameters["additionalProperties"] = Value::Bool(true);
        let g = tool_grammar(ToolFormat::Hermes, &[open], &ToolChoice::Required, false).unwrap();
        assert!(
            !g.contains(r#""additionalProperties":false},"required""#),
            "{g}"
        );
    }

    #[test]
    fn llama3_calls_carry_parameters() {
        let g = tool_grammar(
            ToolFormat::Llama3,
            &[tool("f")],
            &ToolChoice::Required,
            true,
        )
        .unwrap();
        assert!(g.contains(r#""required":["name","parameters"]"#), "{g}");
    }

    #[test]
    fn tools_are_described_with_their_schemas() {
        let text = describe_tools(&[tool("get_weather")]);
        assert!(text.contains(r#""name":"get_weather""#), "{text}");
        assert!(text.contains("<tool_call>"));
    }
}
