//! Ollama's response bodies: generation chunks and summaries (durations in
//! nanoseconds), model listings and descriptions. Pure data, no I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use types::{Completion, FinishReason, ModelInfo, TokenLogprob, ToolCall};

use crate::logprobs::chat_tokens;

/// Which route is answering: chat replies carry a `message`, generate
/// replies a `response` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Generate,
}

/// Identity shared by every line of one reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub route: Route,
    /// The model as the request named it.
    pub model: String,
}

/// RFC 3339 with nanoseconds, as Ollama writes its times.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_nanos(at).to_string()
}

fn now() -> String {
    timestamp(SystemTime::now())
}

fn nanos(ms: f64) -> u64 {
    (ms.max(0.0) * 1e6) as u64
}

fn done_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        // Ollama ends a reply that called tools with "stop" too.
        FinishReason::Stop | FinishReason::ToolCalls | FinishReason::Cancelled => "stop",
    }
}

/// A call as Ollama writes it: arguments as an object.
fn call(index: usize, call: &ToolCall) -> Value {
    let arguments: Value =
        serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!(call.arguments));
    json!({"function": {"index": index, "name": call.name, "arguments": arguments}})
}

impl Reply {
    fn line(&self, text: &str, calls: &[(usize, &ToolCall)], done: bool) -> Map<String, Value> {
        let mut line = Map::new();
        line.insert("model".into(), json!(self.model));
        line.insert("created_at".into(), json!(now()));
        match self.route {
            Route::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    message["tool_calls"] = calls.iter().map(|(i, c)| call(*i, c)).collect();
                }
                line.insert("message".into(), message);
            }
            Route::Generate => {
                line.insert("response".into(), json!(text));
            }
        }
        line.insert("done".into(), json!(done));
        line
    }

    /// One piece of a streamed reply, with the tokens it came from.
    pub fn piece(&self, text: &str, logprobs: Option<Vec<TokenLogprob>>) -> Value {
        let mut line = self.line(text, &[], false);
        if let Some(tokens) = logprobs {
            line.insert("logprobs".into(), json!(chat_tokens(tokens)));
        }
        Value::Object(line)
    }

    /// A streamed tool call (chat only), the `index`-th of the reply.
    pub fn tool_call(&self, index: usize, tool_call: &ToolCall) -> Value {
        Value::Object(self.line("", &[(index, tool_call)], false))
    }

    /// The last line: how it ended and what it cost. A whole (not
    /// streamed) reply carries its text and calls here.
    pub fn done(
        &self,
        text: &str,
        calls: &[ToolCall],
        logprobs: Option<Vec<TokenLogprob>>,
        done: &Completion,
        total: Duration,
    ) -> Value {
        let calls: Vec<(usize, &ToolCall)> = calls.iter().enumerate().collect();
        let mut line = self.line(text, &calls, true);
        let t = &done.timings;
        line.insert("done_reason".into(), json!(done_reason(done.finish_reason)));
        line.insert("total_duration".into(), json!(total.as_nanos() as u64));
        line.insert("load_duration".into(), json!(0));
        line.insert("prompt_eval_count".into(), json!(done.usage.prompt_tokens));
        line.insert("prompt_eval_duration".into(), json!(nanos(t.prefill_ms)));
        line.insert("eval_count".into(), json!(done.usage.completion_tokens));
        line.insert("eval_duration".into(), json!(nanos(t.decode_ms)));
        if let Some(tokens) = logprobs {
            line.insert("logprobs".into(), json!(chat_tokens(tokens)));
        }
        Value::Object(line)
    }

    /// What an empty generate request gets: the model is loaded (or,
    /// with `keep_alive: 0`, asked to unload).
    pub fn loaded(&self, reason: &'static str) -> Value {
        let mut line = self.line("", &[], true);
        line.insert("done_reason".into(), json!(reason));
        Value::Object(line)
    }
}

/// Ollama's `details`: format, family and size in its own words.
pub fn details(info: &ModelInfo) -> Value {
    let d = &info.details;
    let family = d.architecture.clone().unwrap_or_default();
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": parameter_size(d.parameter_count),
        "quantization_level": d.quantization.clone().unwrap_or_default(),
    })
}

/// `135M`, `8.0B`: how Ollama writes a parameter count.
pub fn parameter_size(count: u64) -> String {
    let n = count as f64;
    if n >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0}K", n / 1e3)
    } else {
        count.to_string()
    }
}

fn modified(info: &ModelInfo) -> String {
    timestamp(UNIX_EPOCH + Duration::from_secs(info.modified))
}

fn digest(info: &ModelInfo) -> String {
    info.sha256.clone().unwrap_or_default()
}

/// One entry of `/api/tags`.
pub fn tag(info: &ModelInfo) -> Value {
    json!({
        "name": info.name,
        "model": info.name,
        "modified_at": modified(info),
        "size": info.size,
        "digest": digest(info),
        "details": details(info),
    })
}

/// One entry of `/api/ps`: a loaded model.
pub fn running(info: &ModelInfo, expires_at: Option<SystemTime>) -> Value {
    let mut entry = json!({
        "name": info.name,
        "model": info.name,
        "size": info.size,
        "digest": digest(info),
        "details": details(info),
        // Everything lives in main memory on a CPU server.
        "size_vram": 0,
    });
    if let Some(at) = expires_at {
        entry["expires_at"] = json!(timestamp(at));
    }
    entry
}

/// `/api/show`: the model's description, its template and what it can do.
pub fn show(info: &ModelInfo, capabilities: &[&str]) -> Value {
    let d = &info.details;
    json!({
        "license": "",
        "modelfile": format!("# Served by Hearth\nFROM {}\n", info.name),
        "parameters": "",
        "template": d.chat_template.clone().unwrap_or_default(),
        "details": details(info),
        "model_info": d.metadata,
        "capabilities": capabilities,
        "modified_at": modified(info),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::{Timings, Usage};

    #[test]
    fn parameter_sizes_read_like_ollamas() {
        assert_eq!(parameter_size(134_515_008), "135M");
        assert_eq!(parameter_size(268_098_176), "268M");
        assert_eq!(parameter_size(8_030_261_248), "8.0B");
        assert_eq!(parameter_size(999), "999");
    }

    #[test]
    fn the_last_line_reports_durations_in_nanoseconds() {
        let reply = Reply {
            route: Route::Chat,
            model: "smollm2:latest".into(),
        };
        let done = Completion {
            finish_reason: FinishReason::Length,
            stop_index: None,
            usage: Usage {
                prompt_tokens: 12,
                completion_tokens: 5,
                cached_tokens: 0,
            },
            timings: Timings {
                prefill_ms: 20.0,
                decode_ms: 40.5,
                ..Timings::default()
            },
        };
        let call = ToolCall {
            id: "c".into(),
            name: "weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        };
        let line = reply.done("", &[call], None, &done, Duration::from_millis(70));
        assert_eq!(line["done"], true);
        assert_eq!(line["done_reason"], "length");
        assert_eq!(line["model"], "smollm2:latest");
        assert_eq!(line["prompt_eval_count"], 12);
        assert_eq!(line["eval_count"], 5);
        assert_eq!(line["eval_duration"], 40_500_000);
        assert_eq!(line["total_duration"], 70_000_000);
        assert_eq!(
            line["message"]["tool_calls"][0]["function"]["arguments"]["city"],
            "Oslo"
        );
        assert!(line["created_at"].as_str().unwrap().ends_with('Z'));
    }
}
