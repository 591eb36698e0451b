//! Grammars that constrain sampling: JSON schemas (`response_format`) and
//! forced tool calls, compiled by llguidance.
//!
//! llguidance rather than llama.cpp's GBNF sampler: it computes each
//! token's mask from a trie of the vocabulary in well under a millisecond,
//! where llama.cpp's sampler checks every candidate against the grammar's
//! stacks (milliseconds per token on a 49k vocabulary, which would rival
//! the decode itself on small models); its JSON-schema compiler refuses
//! keywords it cannot enforce, naming them, instead of ignoring them; and
//! its Lark dialect embeds JSON schemas, which is how a tool call's
//! arguments are tied to the tool's parameters. Compiling happens on the
//! caller's thread, so a bad schema is a 400 before the request queues.

use std::sync::OnceLock;

use chat::ToolFormat;
use llama_cpp_2::model::LlamaModel;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use types::{GenerateError, GenerationRequest, OutputFormat, Prompt, ToolChoice};

/// Compact, fixed JSON layout: flexible whitespace lets a small model wander
/// into runs of newlines instead of closing the value.
fn json_layout() -> serde_json::Value {
    serde_json::json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

/// The model's grammar compiler, built on first use (it walks the whole
/// vocabulary once, which takes a moment on large ones).
#[derive(Default)]
pub(crate) struct Grammars {
    factory: OnceLock<Result<ParserFactory, String>>,
}

impl Grammars {
    fn factory(&self, model: &LlamaModel) -> Result<&ParserFactory, GenerateError> {
        self.factory
            .get_or_init(|| {
                let env = llama_cpp_2::sampling::LlamaSampler::llguidance_tok_env(model);
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
                factory.quiet();
                Ok(factory)
            })
            .as_ref()
            .map_err(|e| GenerateError::Internal(format!("grammar compiler: {e}")))
    }

    /// Checks the request's tools, tool choice and format, and compiles the
    /// grammar they call for, if any.
    pub(crate) fn for_request(
        &self,
        model: &LlamaModel,
        request: &GenerationRequest,
        tool_format: ToolFormat,
    ) -> Result<Option<Matcher>, GenerateError> {
        let invalid = |field: &'static str, message: String| GenerateError::InvalidConstraint {
            field,
            message,
        };
        if !request.tools.is_empty() && !matches!(request.prompt, Prompt::Chat(_)) {
            return Err(invalid("tools", "tools need a chat prompt".into()));
        }
        match &request.tool_choice {
            ToolChoice::Required if request.tools.is_empty() => {
                return Err(invalid(
                    "tool_choice",
                    "`tool_choice` is `required`, but no tools were given".into(),
                ))
            }
            ToolChoice::Function(name) if !request.tools.iter().any(|t| &t.name == name) => {
                return Err(invalid(
                    "tool_choice",
                    format!("`tool_choice` names `{name}`, which is not among the tools"),
                ))
            }
            _ => {}
        }
        let forced = request.tool_choice.is_forced();
        if !request.tools.is_empty() {
            // Every tool's schema is checked, called or not, so a broken one
            // is reported by name instead of failing inside a larger
            // grammar. Keywords that cannot be enforced matter only when a
            // call is forced; otherwise they are let through (lenient), as
            // OpenAI lets them through.
            let factory = self.factory(model)?;
            for tool in &request.tools {
                let mut schema = tool.parameters.clone();
                if let Some(map) = schema.as_object_mut() {
                    map.insert("x-guidance".into(), serde_json::json!({"lenient": !forced}));
                }
                if let Err(e) = factory.create_parser(TopLevelGrammar::from_json_schema(schema)) {
                    return Err(invalid(
                        "tools",
                        format!(
                            "the parameters of tool `{}` are not a usable JSON schema: {e}",
                            tool.name
                        ),
                    ));
                }
            }
        }
        let grammar = match (&request.format, forced) {
            (OutputFormat::Json(_), true) => {
                return Err(invalid(
                    "response_format",
                    "a JSON `response_format` cannot be combined with a required tool call".into(),
                ))
            }
            (OutputFormat::Json(schema), false) => {
                let mut schema = schema.clone();
                if let Some(map) = schema.as_object_mut() {
                    map.entry("x-guidance").or_insert_with(json_layout);
                }
                (TopLevelGrammar::from_json_schema(schema), "response_format")
            }
            (OutputFormat::Text, true) => {
                let lark = chat::tool_grammar(
                    tool_format,
                    &request.tools,
                    &request.tool_choice,
                    request.parallel_tool_calls,
                )
                .expect("a forced choice has a grammar");
                (TopLevelGrammar::from_lark(lark), "tools")
            }
            (OutputFormat::Text, false) => return Ok(None),
        };
        let (grammar, field) = grammar;
        if request.ignore_eos {
            // The grammar's last word is end-of-generation, which this bans.
            return Err(invalid(
                "ignore_eos",
                "`ignore_eos` cannot be combined with a constrained reply".into(),
            ));
        }
        let factory = self.factory(model)?;
        let matcher = Matcher::new(factory.create_parser(grammar));
        if let Some(err) = matcher.get_error() {
            return Err(invalid(field, unsupported_message(field, &err)));
        }
        Ok(Some(matcher))
    }
}

/// llguidance's message, said in terms of the request.
fn unsupported_message(field: &str, err: &str) -> String {
    let what = if field == "tools" {
        "a tool's parameter schema"
    } else {
        "the JSON schema"
    };
    format!("{what} cannot be enforced: {err}")
}
