//! The Responses API's response object and the typed events of a stream
//! (`response.created` … `response.completed`), built as pure data from
//! generation events.

use serde_json::{json, Map, Value};
use types::{Completion, FinishReason, GenerationOutput, ToolCall, Usage};

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// What every version of one response shares: its id, model and the
/// request's settings it echoes.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    /// Echoed fields: instructions, previous_response_id, store, tools...
    pub echo: Map<String, Value>,
}

impl Envelope {
    /// The response object with `output` so far.
    pub fn object(
        &self,
        status: &str,
        output: &[Value],
        usage: Option<Usage>,
        reason: Option<FinishReason>,
    ) -> Value {
        let mut o = Map::new();
        o.insert("id".into(), json!(self.id));
        o.insert("object".into(), json!("response"));
        o.insert("created_at".into(), json!(self.created_at));
        o.insert("status".into(), json!(status));
        o.insert("error".into(), Value::Null);
        let incomplete =
            (reason == Some(FinishReason::Length)).then(|| json!({"reason": "max_output_tokens"}));
        o.insert(
            "incomplete_details".into(),
            incomplete.unwrap_or(Value::Null),
        );
        o.insert("model".into(), json!(self.model));
        o.insert("output".into(), json!(output));
        o.extend(self.echo.clone());
        o.insert("usage".into(), usage.map_or(Value::Null, usage_json));
        Value::Object(o)
    }

    /// The whole response to a request that did not stream.
    pub fn full(&self, out: &GenerationOutput) -> Value {
        let mut output = Vec::new();
        if !out.text.is_empty() || out.tool_calls.is_empty() {
            output.push(message_item(&new_id("msg"), &out.text, "completed"));
        }
        output.extend(
            out.tool_calls
                .iter()
                .map(|c| call_item(&new_id("fc"), c, "completed")),
        );
        self.object(
            status(out.finish_reason),
            &output,
            Some(out.usage),
            Some(out.finish_reason),
        )
    }
}

fn status(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "incomplete",
        _ => "completed",
    }
}

fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens(),
    })
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([text_part(text)])
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    let arguments = if status == "in_progress" {
        ""
    } else {
        call.arguments.as_str()
    };
    json!({"type": "function_call", "id": id, "call_id": call.id, "name": call.name,
           "arguments": arguments, "status": status})
}

/// A stream in progress: the items so far and the message being written.
pub struct ResponseStream {
    envelope: Envelope,
    sequence: u64,
    output: Vec<Value>,
    /// The open message's id and text.
    open: Option<(String, String)>,
}

/// One event: its name (also the SSE `event:` line) and its data.
pub type StreamEvent = (&'static str, Value);

impl ResponseStream {
    pub fn new(envelope: Envelope) -> Self {
        Self {
            envelope,
            sequence: 0,
            output: Vec::new(),
            open: None,
        }
    }

    fn event(&mut self, name: &'static str, mut data: Value) -> StreamEvent {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        (name, data)
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<StreamEvent> {
        let object = self.envelope.object("in_progress", &[], None, None);
        vec![
            self.event("response.created", json!({"response": object.clone()})),
            self.event("response.in_progress", json!({"response": object})),
        ]
    }

    /// A piece of text, opening a message item first when none is open.
    pub fn text(&mut self, piece: &str) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        let index = self.output.len();
        if self.open.is_none() {
            let id = new_id("msg");
            events.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": message_item(&id, "", "in_progress")}),
            ));
            events.push(self.event("response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part("")})));
            self.open = Some((id, String::new()));
        }
        let (id, text) = self.open.as_mut().expect("opened above");
        text.push_str(piece);
        let id = id.clone();
        events.push(self.event("response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": piece, "logprobs": []})));
        events
    }

    fn close_message(&mut self) -> Vec<StreamEvent> {
        let Some((id, text)) = self.open.take() else {
            return Vec::new();
        };
        let index = self.output.len();
        let item = message_item(&id, &text, "completed");
        let events = vec![
            self.event("response.output_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})),
            self.event("response.content_part.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part(&text)})),
            self.event("response.output_item.done", json!({"output_index": index, "item": item.clone()})),
        ];
        self.output.push(item);
        events
    }

    /// A whole function call: its item, its arguments in one delta, done.
    pub fn tool_call(&mut self, call: &ToolCall) -> Vec<StreamEvent> {
        let mut events = self.close_message();
        let index = self.output.len();
        let id = new_id("fc");
        events.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": call_item(&id, call, "in_progress")}),
        ));
        events.push(self.event(
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": index, "delta": call.arguments}),
        ));
        events.push(self.event(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "arguments": call.arguments}),
        ));
        let item = call_item(&id, call, "completed");
        events.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item.clone()}),
        ));
        self.output.push(item);
        events
    }

    /// Closes what is open and ends with `response.completed` (or
    /// `response.incomplete`); returns the final object too.
    pub fn done(&mut self, done: &Completion) -> (Vec<StreamEvent>, Value) {
        let mut events = self.close_message();
        if self.output.is_empty() {
            // A reply with nothing to say is still one (empty) message.
            events.extend(self.text(""));
            events.extend(self.close_message());
        }
        let status = status(done.finish_reason);
        let object = self.envelope.object(
            status,
            &self.output,
            Some(done.usage),
            Some(done.finish_reason),
        );
        let name = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        events.push(self.event(name, json!({"response": object.clone()})));
        (events, object)
    }

    /// A failure after the stream started.
    pub fn failed(&mut self, message: &str) -> StreamEvent {
        let mut object = self.envelope.object("failed", &self.output, None, None);
        object["error"] = json!({"code": "server_error", "message": message});
        self.event("response.failed", json!({"response": object}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::Timings;

    fn stream() -> ResponseStream {
        ResponseStream::new(Envelope {
            id: "resp_1".into(),
            created_at: 7,
            model: "smollm2".into(),
            echo: Map::new(),
        })
    }

    fn names(events: &[StreamEvent]) -> Vec<&'static str> {
        events.iter().map(|(n, _)| *n).collect()
    }

    fn completion(reason: FinishReason) -> Completion {
        Completion {
            finish_reason: reason,
            stop_index: None,
            usage: Usage {
                prompt_tokens: 9,
                completion_tokens: 3,
                cached_tokens: 0,
            },
            timings: Timings::default(),
        }
    }

    #[test]
    fn text_then_call_streams_as_two_items_in_order() {
        let mut s = stream();
        let mut events = s.start();
        events.extend(s.text("Checking"));
        events.extend(s.text("."));
        let call = ToolCall {
            id: "call_1".into(),
            name: "weather".into(),
            arguments: "{\"city\":\"Oslo\"}".into(),
        };
        events.extend(s.tool_call(&call));
        let (end, object) = s.done(&completion(FinishReason::ToolCalls));
        events.extend(end);
        assert_eq!(
            names(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let numbers: Vec<u64> = events
            .iter()
            .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
        assert_eq!(object["output"][0]["content"][0]["text"], "Checking.");
        assert_eq!(object["output"][1]["call_id"], "call_1");
        assert_eq!(object["usage"]["total_tokens"], 12);
        assert_eq!(events[6].1["text"], "Checking.");
    }

    #[test]
    fn a_cut_reply_is_incomplete_and_an_empty_one_is_an_empty_message() {
        let mut s = stream();
        s.start();
        let (events, object) = s.done(&completion(FinishReason::Length));
        assert_eq!(events.last().unwrap().0, "response.incomplete");
        assert_eq!(object["status"], "incomplete");
        assert_eq!(object["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(object["output"][0]["content"][0]["text"], "");
    }
}
