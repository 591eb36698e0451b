//! Response bodies and stream chunks for the two completion endpoints.

use serde::Serialize;
use types::{Completion, GenerationOutput};

use crate::wire::{finish_reason, WireFunctionCall, WireTimings, WireToolCall, WireUsage};

/// Which OpenAI endpoint is answering; it decides every JSON shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Text,
}

/// Identity shared by every chunk of one response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

#[derive(Serialize)]
struct Envelope<C> {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<WireUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timings: Option<WireTimings>,
}

#[derive(Serialize)]
struct ChatChoice {
    index: u32,
    message: AssistantMessage,
    finish_reason: &'static str,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct AssistantMessage {
    role: &'static str,
    /// `null` when the reply is only tool calls, as OpenAI sends it.
    content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Serialize)]
struct ChatDeltaChoice {
    index: u32,
    delta: Delta,
    finish_reason: Option<&'static str>,
    logprobs: Option<()>,
}

#[derive(Serialize, Default)]
struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<DeltaToolCall>>,
}

/// A call in a stream: sent whole, in one chunk, with its position.
#[derive(Serialize)]
struct DeltaToolCall {
    index: u32,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall,
}

#[derive(Serialize)]
struct TextChoice {
    index: u32,
    text: String,
    finish_reason: Option<&'static str>,
    logprobs: Option<()>,
}

impl Reply {
    /// A fresh response id, as OpenAI shapes them for `endpoint`.
    pub fn new_id(endpoint: Endpoint) -> String {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Text => "cmpl",
        };
        format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
    }

    pub fn new(endpoint: Endpoint, id: String, model: String) -> Self {
        Self {
            endpoint,
            id,
            created: unix_now(),
            model,
        }
    }

    fn envelope<C: Serialize>(
        &self,
        chunk: bool,
        choices: Vec<C>,
        usage: Option<WireUsage>,
        timings: Option<WireTimings>,
    ) -> serde_json::Value {
        let object = match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Text, _) => "text_completion",
        };
        serde_json::to_value(Envelope {
            id: self.id.clone(),
            object,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            timings,
        })
        .expect("reply serialises")
    }

    /// The whole answer, for non-streaming requests.
    pub fn full(&self, out: GenerationOutput) -> serde_json::Value {
        let reason = finish_reason(out.finish_reason);
        let usage = Some(out.usage.into());
        let timings = Some(out.timings.into());
        match self.endpoint {
            Endpoint::Chat => self.envelope(
                false,
                vec![ChatChoice {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant",
                        content: (out.tool_calls.is_empty() || !out.text.is_empty())
                            .then_some(out.text),
                        tool_calls: out.tool_calls.into_iter().map(Into::into).collect(),
                    },
                    finish_reason: reason,
                    logprobs: None,
                }],
                usage,
                timings,
            ),
            Endpoint::Text => self.envelope(
                false,
                vec![TextChoice {
                    index: 0,
                    text: out.text,
                    finish_reason: Some(reason),
                    logprobs: None,
                }],
                usage,
                timings,
            ),
        }
    }

    /// The opening chunk: chat streams announce the assistant role first.
    pub fn opening(&self) -> Option<serde_json::Value> {
        (self.endpoint == Endpoint::Chat).then(|| {
            let delta = Delta {
                role: Some("assistant"),
                content: Some(String::new()),
                tool_calls: None,
            };
            self.chat_chunk(delta, None, None)
        })
    }

    fn chat_chunk(
        &self,
        delta: Delta,
        reason: Option<&'static str>,
        timings: Option<WireTimings>,
    ) -> serde_json::Value {
        let choice = ChatDeltaChoice {
            index: 0,
            delta,
            finish_reason: reason,
            logprobs: None,
        };
        self.envelope(true, vec![choice], None, timings)
    }

    fn text_chunk(
        &self,
        text: String,
        reason: Option<&'static str>,
        timings: Option<WireTimings>,
    ) -> serde_json::Value {
        let choice = TextChoice {
            index: 0,
            text,
            finish_reason: reason,
            logprobs: None,
        };
        self.envelope(true, vec![choice], None, timings)
    }

    /// A chunk carrying one text piece.
    pub fn piece(&self, text: String) -> serde_json::Value {
        match self.endpoint {
            Endpoint::Chat => self.chat_chunk(
                Delta {
                    content: Some(text),
                    ..Delta::default()
                },
                None,
                None,
            ),
            Endpoint::Text => self.text_chunk(text, None, None),
        }
    }

    /// A chunk carrying one whole tool call, the `index`-th of the reply.
    /// Only chat replies have calls.
    pub fn tool_call(&self, index: u32, call: types::ToolCall) -> serde_json::Value {
        let delta = Delta {
            tool_calls: Some(vec![DeltaToolCall {
                index,
                id: call.id,
                kind: "function",
                function: WireFunctionCall {
                    name: call.name,
                    arguments: call.arguments,
                },
            }]),
            ..Delta::default()
        };
        self.chat_chunk(delta, None, None)
    }

    /// The closing chunks: the finish reason (with timings), then usage if asked for.
    pub fn closing(&self, done: Completion, include_usage: bool) -> Vec<serde_json::Value> {
        let reason = Some(finish_reason(done.finish_reason));
        let timings = Some(done.timings.into());
        let mut chunks = vec![match self.endpoint {
            Endpoint::Chat => self.chat_chunk(Delta::default(), reason, timings),
            Endpoint::Text => self.text_chunk(String::new(), reason, timings),
        }];
        if include_usage {
            let empty: Vec<TextChoice> = Vec::new();
            chunks.push(self.envelope(true, empty, Some(done.usage.into()), None));
        }
        chunks
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
