//! Chat formats without a model: how a conversation becomes prompt text, and
//! how a reply's text becomes tool calls.
//!
//! - [`ChatTemplate`] renders a model's own Jinja chat template (from its
//!   GGUF) with minijinja, configured the way Hugging Face's `transformers`
//!   renders it, so the prompt is the one the model was trained on.
//! - [`ToolFormat`] is how a model writes tool calls; templates that know no
//!   tools get tools described in the system prompt in the Hermes format.
//! - [`ToolCallParser`] finds calls in streamed text, piece by piece.
//! - [`tool_grammar`] is the Lark grammar that forces a well-formed call when
//!   `tool_choice` requires one.
//!
//! Everything here is pure: no llama.cpp, no HTTP, no clock but the one
//! `strftime_now` reads. Tests run on recorded templates and outputs.

mod date;
mod parse;
mod template;
mod tool_format;

pub use parse::{ParsedPiece, ToolCallParser};
pub use template::{flatten_tools, ChatTemplate, TemplateError, CHATML};
pub use tool_format::{tool_grammar, ToolFormat};

/// The name of llama.cpp's built-in chat template for a model architecture
/// whose files commonly ship without a template (some Gemma conversions
/// do), so such a model still gets its own turn markers instead of ChatML,
/// which it was never trained on. `None` where one architecture has had
/// several formats (Llama 2 and 3 are both `llama`).
pub fn builtin_template_for(architecture: &str) -> Option<&'static str> {
    match architecture {
        "gemma" | "gemma2" | "gemma3" | "gemma3n" => Some("gemma"),
        "phi3" => Some("phi3"),
        "command-r" | "cohere2" => Some("command-r"),
        "deepseek2" => Some("deepseek2"),
        "exaone" => Some("exaone3"),
        _ => None,
    }
}

#[cfg(test)]
mod builtin_tests {
    #[test]
    fn gemma_files_without_a_template_use_gemmas_turns() {
        assert_eq!(super::builtin_template_for("gemma3"), Some("gemma"));
        assert_eq!(super::builtin_template_for("llama"), None);
    }
}
