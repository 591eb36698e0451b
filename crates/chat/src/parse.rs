//! Finds tool calls in a reply as it streams, in the model's [`ToolFormat`].
//!
//! Text that may still turn into a call (a partial `<tool_call>` marker, a
//! reply that opens with `{`) is held back until it is known; everything
//! else passes through at once. A call that does not parse is returned as
//! the text it was, never dropped and never an error: the client sees what
//! the model wrote.

use serde_json::Value;

use crate::ToolFormat;

/// One thing recognised in the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedPiece {
    Text(String),
    /// A call; `arguments` is JSON text.
    Call {
        name: String,
        arguments: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Plain text, watching for the format's opening marker.
    Text,
    /// Inside a marked call (after `<tool_call>` or `[TOOL_CALLS]`).
    Marked,
    /// The reply opened with JSON (Llama 3, generic): held until the value ends.
    Json,
}

/// Incremental parser for one reply.
#[derive(Debug)]
pub struct ToolCallParser {
    format: ToolFormat,
    state: State,
    /// Text not yet classified.
    buf: String,
    /// Trailing whitespace of emitted text, held so that whitespace around
    /// calls does not become content.
    pending_ws: String,
    calls: usize,
    /// A call was the last thing recognised: whitespace up to the next text
    /// is layout.
    after_call: bool,
    /// Anything other than whitespace has been seen.
    started: bool,
    /// The tools offered; a call to any other name is not a call.
    names: Vec<String>,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_OPEN: &str = "[TOOL_CALLS]";
const MISTRAL_ARGS: &str = "[ARGS]";

impl ToolCallParser {
    /// A parser for a reply in `format` that may call the tools `names`.
    pub fn new(format: ToolFormat, names: Vec<String>) -> Self {
        Self {
            format,
            state: State::Text,
            buf: String::new(),
            pending_ws: String::new(),
            calls: 0,
            after_call: false,
            started: false,
            names,
        }
    }

    /// How many calls have been recognised so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Feeds the next piece of the reply; returns what is now known.
    pub fn push(&mut self, piece: &str) -> Vec<ParsedPiece> {
        self.buf.push_str(piece);
        let mut out = Vec::new();
        self.advance(&mut out, false);
        out
    }

    /// The reply has ended: classifies whatever is held.
    pub fn finish(&mut self) -> Vec<ParsedPiece> {
        let mut out = Vec::new();
        self.advance(&mut out, true);
        match self.state {
            State::Text => {
                let rest = std::mem::take(&mut self.buf);
                self.emit_text(&mut out, &rest);
            }
            State::Marked => {
                // The model stopped before closing the call: accept it if
                // what it wrote is a complete call, else show it as text.
                let body = std::mem::take(&mut self.buf);
                let calls = match self.format {
                    ToolFormat::Mistral => mistral_calls(&body, &self.names).map(|(c, _)| c),
                    _ => whole_json(&body).and_then(|v| calls_in(&v, &self.names, false)),
                };
                match calls {
                    Some(calls) => self.emit_calls(&mut out, calls),
                    None => {
                        let text = format!("{}{body}", self.open_marker());
                        self.emit_text(&mut out, &text);
                    }
                }
            }
            State::Json => {
                let rest = std::mem::take(&mut self.buf);
                self.emit_text(&mut out, &rest);
            }
        }
        self.state = State::Text;
        if self.calls == 0 && !self.pending_ws.is_empty() {
            out.push(ParsedPiece::Text(std::mem::take(&mut self.pending_ws)));
        }
        out
    }

    fn open_marker(&self) -> &'static str {
        match self.format {
            ToolFormat::Mistral => MISTRAL_OPEN,
            _ => HERMES_OPEN,
        }
    }

    fn advance(&mut self, out: &mut Vec<ParsedPiece>, at_end: bool) {
        loop {
            match self.state {
                State::Text => {
                    if !self.started {
                        // After a call, `;` separates the next one (Llama 3).
                        let after_call = self.calls > 0;
                        let rest = self.buf.trim_start_matches(|c: char| {
                            c.is_whitespace() || (after_call && c == ';')
                        });
                        if rest.is_empty() {
                            return;
                        }
                        self.started = true;
                        let lead = self.buf.len() - rest.len();
                        if rest.starts_with('{')
                            && matches!(self.format, ToolFormat::Llama3 | ToolFormat::Generic)
                        {
                            let lead_text: String = self.buf.drain(..lead).collect();
                            if !after_call {
                                self.pending_ws.push_str(&lead_text);
                            }
                            self.state = State::Json;
                            continue;
                        }
                    }
                    let marker = match self.format {
                        ToolFormat::Hermes => HERMES_OPEN,
                        ToolFormat::Mistral => MISTRAL_OPEN,
                        // Llama 3 and generic calls are only recognised
                        // when the reply opens with them.
                        ToolFormat::Llama3 | ToolFormat::Generic => {
                            let text = std::mem::take(&mut self.buf);
                            self.emit_text(out, &text);
                            return;
                        }
                    };
                    if let Some(at) = self.buf.find(marker) {
                        let before = self.buf[..at].to_string();
                        self.emit_text(out, &before);
                        self.buf.drain(..at + marker.len());
                        self.state = State::Marked;
                        continue;
                    }
                    // Hold back a tail that may be the start of the marker.
                    let keep = if at_end {
                        0
                    } else {
                        partial_suffix(&self.buf, marker)
                    };
                    let cut = self.buf.len() - keep;
                    let text: String = self.buf.drain(..cut).collect();
                    self.emit_text(out, &text);
                    return;
                }
                State::Marked => match self.format {
                    ToolFormat::Mistral => match mistral_calls(&self.buf, &self.names) {
                        Some((calls, used)) => {
                            self.emit_calls(out, calls);
                            self.buf.drain(..used);
                            self.state = State::Text;
                        }
                        None => return,
                    },
                    _ => {
                        let Some(at) = self.buf.find(HERMES_CLOSE) else {
                            return;
                        };
                        let body = self.buf[..at].to_string();
                        self.buf.drain(..at + HERMES_CLOSE.len());
                        self.state = State::Text;
                        match whole_json(&body).and_then(|v| calls_in(&v, &self.names, false)) {
                            Some(calls) => self.emit_calls(out, calls),
                            None => {
                                let text = format!("{HERMES_OPEN}{body}{HERMES_CLOSE}");
                                self.emit_text(out, &text);
                            }
                        }
                    }
                },
                State::Json => match first_json(&self.buf) {
                    JsonPrefix::Incomplete if !at_end => return,
                    JsonPrefix::Value(value, used) => {
                        let rest = self.buf[used..].to_string();
                        // A reply that is bare JSON is a call only if it says
                        // so in full (name and arguments): an answer that
                        // happens to have a "name" is an answer.
                        match calls_in(&value, &self.names, true) {
                            Some(calls) => {
                                self.emit_calls(out, calls);
                                self.buf = rest;
                                self.started = false;
                            }
                            None => {
                                let text = std::mem::take(&mut self.buf);
                                self.emit_text(out, &text);
                            }
                        }
                        self.state = State::Text;
                    }
                    JsonPrefix::Incomplete | JsonPrefix::Invalid => {
                        let text = std::mem::take(&mut self.buf);
                        self.emit_text(out, &text);
                        self.state = State::Text;
                        // What follows is plain text, not another call.
                        self.started = true;
                    }
                },
            }
        }
    }

    fn emit_calls(&mut self, out: &mut Vec<ParsedPiece>, calls: Vec<ParsedPiece>) {
        // Whitespace between text and a call is layout, not content.
        self.pending_ws.clear();
        self.after_call = true;
        self.calls += calls.len();
        out.extend(calls);
    }

    fn emit_text(&mut self, out: &mut Vec<ParsedPiece>, text: &str) {
        let text = if self.after_call {
            text.trim_start()
        } else {
            text
        };
        let body = text.trim_end();
        if body.is_empty() {
            self.pending_ws.push_str(text);
            return;
        }
        self.after_call = false;
        let mut piece = std::mem::take(&mut self.pending_ws);
        piece.push_str(body);
        self.pending_ws = text[body.len()..].to_string();
        out.push(ParsedPiece::Text(piece));
    }
}

/// Length of the longest proper tail of `text` that begins `marker`.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

enum JsonPrefix {
    /// A complete value and the bytes it used (after leading whitespace).
    Value(Value, usize),
    /// Valid so far, but not finished.
    Incomplete,
    Invalid,
}

fn first_json(text: &str) -> JsonPrefix {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    match stream.next() {
        Some(Ok(value)) => JsonPrefix::Value(value, stream.byte_offset()),
        Some(Err(e)) if e.is_eof() => JsonPrefix::Incomplete,
        None => JsonPrefix::Incomplete,
        Some(Err(_)) => JsonPrefix::Invalid,
    }
}

/// `text` as exactly one JSON value (surrounding whitespace allowed).
fn whole_json(text: &str) -> Option<Value> {
    serde_json::from_str(text.trim()).ok()
}

/// The calls a JSON value spells, in any of the shapes models use, to
/// tools among `names`. `bare`: the value is the whole reply, unmarked, so
/// a single call must carry its arguments to count.
fn calls_in(value: &Value, names: &[String], bare: bool) -> Option<Vec<ParsedPiece>> {
    match value {
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|v| one_call(v, names, bare)).collect()
        }
        Value::Object(map) => {
            if let Some(Value::Array(items)) = map.get("tool_calls") {
                if items.is_empty() {
                    return None;
                }
                return items.iter().map(|v| one_call(v, names, false)).collect();
            }
            if let Some(call) = map.get("tool_call") {
                return one_call(call, names, false).map(|c| vec![c]);
            }
            one_call(value, names, bare).map(|c| vec![c])
        }
        _ => None,
    }
}

fn one_call(value: &Value, names: &[String], bare: bool) -> Option<ParsedPiece> {
    let map = value.as_object()?;
    if let Some(function) = map.get("function").and_then(Value::as_object) {
        if map.get("name").is_none() {
            return one_call(&Value::Object(function.clone()), names, bare);
        }
    }
    let name = map.get("name")?.as_str()?.trim();
    if !names.iter().any(|n| n == name) {
        return None;
    }
    let arguments = map.get("arguments").or_else(|| map.get("parameters"));
    let arguments = match arguments {
        None if bare => return None,
        None | Some(Value::Null) => "{}".to_string(),
        // Arguments given as text must still be a JSON object.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(_)) => s.clone(),
            _ => return None,
        },
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => return None,
    };
    Some(ParsedPiece::Call {
        name: name.to_string(),
        arguments,
    })
}

/// Mistral's payload after `[TOOL_CALLS]`: a JSON array of calls, or
/// `name[ARGS]{…}`. Returns the calls and the bytes they used, once complete.
fn mistral_calls(text: &str, names: &[String]) -> Option<(Vec<ParsedPiece>, usize)> {
    let lead = text.len() - text.trim_start().len();
    let body = &text[lead..];
    if body.starts_with('[') || body.starts_with('{') {
        return match first_json(body) {
            JsonPrefix::Value(value, used) => {
                calls_in(&value, names, false).map(|c| (c, lead + used))
            }
            _ => None,
        };
    }
    let at = body.find(MISTRAL_ARGS)?;
    let name = body[..at].trim();
    let args_start = at + MISTRAL_ARGS.len();
    match first_json(&body[args_start..]) {
        JsonPrefix::Value(value @ Value::Object(_), used) if names.iter().any(|n| n == name) => {
            Some((
                vec![ParsedPiece::Call {
                    name: name.to_string(),
                    arguments: value.to_string(),
                }],
                lead + args_start + used,
            ))
        }
        _ => None,
    }
}
