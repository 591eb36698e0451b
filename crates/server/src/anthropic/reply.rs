//! Anthropic's response shapes: the whole `message`, and the typed event
//! sequence a stream sends, built as pure data so its order is tested
//! without a model.

use serde::Serialize;
use serde_json::{json, Value};
use types::{Completion, FinishReason, GenerationOutput, ToolCall, Usage};

use crate::error::{ApiError, Dialect};

/// Identity shared by every event of one message.
#[derive(Debug, Clone)]
pub(crate) struct MessageReply {
    pub id: String,
    pub model: String,
    /// The request's stop sequences, to name the one that ended it.
    pub stops: Vec<String>,
}

#[derive(Serialize)]
struct WireUsage {
    /// Prompt tokens computed for this request; those read from the prefix
    /// cache are counted apart, as Anthropic counts cache reads.
    input_tokens: u32,
    output_tokens: u32,
    cache_read_input_tokens: u32,
    cache_creation_input_tokens: u32,
}

impl From<Usage> for WireUsage {
    fn from(u: Usage) -> Self {
        Self {
            input_tokens: u.prompt_tokens - u.cached_tokens.min(u.prompt_tokens),
            output_tokens: u.completion_tokens,
            cache_read_input_tokens: u.cached_tokens,
            cache_creation_input_tokens: 0,
        }
    }
}

/// A call as a `tool_use` block. Its arguments are a JSON object: the
/// engine emits a call only when they parse as one.
fn tool_use(call: ToolCall) -> Value {
    let input: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

impl MessageReply {
    pub fn new_id() -> String {
        format!("msg_{}", uuid::Uuid::new_v4().simple())
    }

    /// Anthropic's `stop_reason` and `stop_sequence`.
    fn stop(
        &self,
        reason: FinishReason,
        stop_index: Option<u32>,
    ) -> (&'static str, Option<String>) {
        match reason {
            FinishReason::Length => ("max_tokens", None),
            FinishReason::ToolCalls => ("tool_use", None),
            FinishReason::Stop | FinishReason::Cancelled => {
                match stop_index.and_then(|i| self.stops.get(i as usize)) {
                    Some(s) => ("stop_sequence", Some(s.clone())),
                    None => ("end_turn", None),
                }
            }
        }
    }

    /// The whole message, for requests that do not stream.
    pub fn full(&self, out: GenerationOutput) -> Value {
        let mut content = Vec::new();
        if !out.text.is_empty() {
            content.push(json!({"type": "text", "text": out.text}));
        }
        content.extend(out.tool_calls.into_iter().map(tool_use));
        let (stop_reason, stop_sequence) = self.stop(out.finish_reason, out.stop_index);
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": WireUsage::from(out.usage),
        })
    }
}

/// One server-sent event: its name and its data.
pub(crate) type NamedEvent = (&'static str, Value);

/// The block a stream has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
}

/// The event sequence of one streamed message: `message_start`, `ping`,
/// then per block `content_block_start`, deltas and `content_block_stop`,
/// then `message_delta` (stop reason, usage) and `message_stop`.
pub(crate) struct MessageStream {
    reply: MessageReply,
    open: Open,
    /// Index of the next block to open.
    next_block: u32,
}

impl MessageStream {
    pub fn new(reply: MessageReply) -> Self {
        Self {
            reply,
            open: Open::None,
            next_block: 0,
        }
    }

    pub fn start(&mut self, prompt_tokens: u32) -> Vec<NamedEvent> {
        let message = json!({
            "id": self.reply.id,
            "type": "message",
            "role": "assistant",
            "model": self.reply.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 0},
        });
        vec![
            (
                "message_start",
                json!({"type": "message_start", "message": message}),
            ),
            ("ping", json!({"type": "ping"})),
        ]
    }

    fn close(&mut self, out: &mut Vec<NamedEvent>) {
        if self.open != Open::None {
            let index = self.next_block - 1;
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
            self.open = Open::None;
        }
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<NamedEvent>) -> u32 {
        let index = self.next_block;
        self.next_block += 1;
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    /// A piece of text: into the open text block, or a new one.
    pub fn text(&mut self, piece: String) -> Vec<NamedEvent> {
        let mut out = Vec::new();
        if self.open != Open::Text {
            self.close(&mut out);
            self.open_block(json!({"type": "text", "text": ""}), &mut out);
            self.open = Open::Text;
        }
        let index = self.next_block - 1;
        out.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
        ));
        out
    }

    /// A whole call: a `tool_use` block whose input arrives as one JSON delta.
    pub fn tool_call(&mut self, call: ToolCall) -> Vec<NamedEvent> {
        let mut out = Vec::new();
        self.close(&mut out);
        // The block opens with an empty input, as Anthropic streams it.
        let block = json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}});
        let index = self.open_block(block, &mut out);
        out.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": call.arguments}}),
        ));
        out.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        out
    }

    /// The end: the open block closes, then the stop reason and usage.
    pub fn done(&mut self, done: &Completion) -> Vec<NamedEvent> {
        let mut out = Vec::new();
        self.close(&mut out);
        let (stop_reason, stop_sequence) = self.reply.stop(done.finish_reason, done.stop_index);
        out.push((
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": WireUsage::from(done.usage),
            }),
        ));
        out.push(("message_stop", json!({"type": "message_stop"})));
        out
    }

    /// A failure after the stream started: Anthropic's `error` event.
    pub fn error(err: &ApiError) -> Vec<NamedEvent> {
        vec![("error", err.to_json_in(Dialect::Anthropic))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::Timings;

    fn reply(stops: &[&str]) -> MessageReply {
        MessageReply {
            id: "msg_1".into(),
            model: "m".into(),
            stops: stops.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn completion(reason: FinishReason, stop_index: Option<u32>) -> Completion {
        Completion {
            finish_reason: reason,
            stop_index,
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 4,
                cached_tokens: 6,
            },
            timings: Timings::default(),
        }
    }

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        }
    }

    fn names(events: &[NamedEvent]) -> Vec<&'static str> {
        events.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn text_then_call_streams_as_two_blocks_in_order() {
        let mut s = MessageStream::new(reply(&[]));
        let mut all = s.start(10);
        all.extend(s.text("Let me ".into()));
        all.extend(s.text("check.".into()));
        all.extend(s.tool_call(call("call_1")));
        all.extend(s.done(&completion(FinishReason::ToolCalls, None)));
        assert_eq!(
            names(&all),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        // Every event's `type` is its name, as Anthropic's SDKs dispatch on either.
        for (name, data) in &all {
            assert_eq!(data["type"], *name);
        }
        assert_eq!(all[2].1["index"], 0);
        assert_eq!(all[4].1["delta"]["text"], "check.");
        assert_eq!(all[6].1["index"], 1);
        assert_eq!(all[6].1["content_block"]["type"], "tool_use");
        assert_eq!(all[6].1["content_block"]["input"], json!({}));
        assert_eq!(
            all[7].1["delta"],
            json!({"type": "input_json_delta", "partial_json": r#"{"city":"Oslo"}"#})
        );
        assert_eq!(all[9].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(all[9].1["usage"]["output_tokens"], 4);
    }

    #[test]
    fn text_after_a_call_opens_a_new_block() {
        let mut s = MessageStream::new(reply(&[]));
        s.start(1);
        s.tool_call(call("a"));
        let out = s.text("done".into());
        assert_eq!(names(&out), ["content_block_start", "content_block_delta"]);
        assert_eq!(out[0].1["index"], 1);
        assert_eq!(out[1].1["index"], 1);
    }

    #[test]
    fn an_empty_reply_has_no_blocks() {
        let mut s = MessageStream::new(reply(&[]));
        s.start(1);
        let out = s.done(&completion(FinishReason::Length, None));
        assert_eq!(names(&out), ["message_delta", "message_stop"]);
        assert_eq!(out[0].1["delta"]["stop_reason"], "max_tokens");
    }

    #[test]
    fn stop_reasons_name_the_matched_sequence() {
        let r = reply(&["END", "STOP"]);
        assert_eq!(
            r.stop(FinishReason::Stop, Some(1)),
            ("stop_sequence", Some("STOP".into()))
        );
        assert_eq!(r.stop(FinishReason::Stop, None), ("end_turn", None));
        assert_eq!(r.stop(FinishReason::Length, None), ("max_tokens", None));
        assert_eq!(r.stop(FinishReason::ToolCalls, None), ("tool_use", None));
    }

    #[test]
    fn a_full_message_counts_cache_reads_apart() {
        let out = GenerationOutput {
            text: "Hi".into(),
            tool_calls: vec![call("c")],
            finish_reason: FinishReason::ToolCalls,
            stop_index: None,
            logprobs: Vec::new(),
            usage: completion(FinishReason::Stop, None).usage,
            timings: Timings::default(),
        };
        let m = reply(&[]).full(out);
        assert_eq!(m["content"][0], json!({"type": "text", "text": "Hi"}));
        assert_eq!(m["content"][1]["input"], json!({"city": "Oslo"}));
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(
            m["usage"],
            json!({"input_tokens": 4, "output_tokens": 4, "cache_read_input_tokens": 6, "cache_creation_input_tokens": 0})
        );
    }

    #[test]
    fn errors_take_anthropics_shape() {
        let e = MessageStream::error(&ApiError::timed_out(1000));
        assert_eq!(e[0].0, "error");
        assert_eq!(e[0].1["type"], "error");
        assert_eq!(e[0].1["error"]["type"], "timeout_error");
    }
}
