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
