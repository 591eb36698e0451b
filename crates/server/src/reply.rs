//! Response bodies and stream chunks for the two completion endpoints.

use serde::Serialize;
use types::{Completion, GenerationOutput, TokenLogprob, Usage};

use crate::exchange::total_usage;
use crate::logprobs::{ChatLogprobs, TextLogprobs};
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
    /// Which version of the model answered (its files' digest, shortened).
    pub system_fingerprint: Option<String>,
}

#[derive(Serialize)]
struct Envelope<C> {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<String>,
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
    logprobs: Option<ChatLogprobs>,
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
    logprobs: Option<ChatLogprobs>,
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
    logprobs: Option<TextLogprobs>,
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
            system_fingerprint: None,
        }
    }

    pub fn with_fingerprint(mut self, fingerprint: Option<String>) -> Self {
        self.system_fingerprint = fingerprint;
        self
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
            system_fingerprint: self.system_fingerprint.clone(),
            choices,
            usage,
            timings,
        })
        .expect("reply serialises")
    }

    /// The whole answer, for non-streaming requests: one choice per
    /// output, in order. `logprobs` says whether the request asked for them.
    pub fn full(&self, outs: Vec<GenerationOutput>, logprobs: bool) -> serde_json::Value {
        let usage = Some(total_usage(outs.iter().map(|o| o.usage)).into());
        // The first choice's timings: the choices share one prompt and run
        // side by side, so theirs differ little.
        let timings = outs.first().map(|o| o.timings.into());
        let outs = outs.into_iter().zip(0u32..);
        match self.endpoint {
            Endpoint::Chat => {
                let choices = outs
                    .map(|(out, index)| ChatChoice {
                        index,
                        finish_reason: finish_reason(out.finish_reason),
                        logprobs: logprobs.then(|| ChatLogprobs::new(out.logprobs)),
                        message: AssistantMessage {
                            role: "assistant",
                            content: (out.tool_calls.is_empty() || !out.text.is_empty())
                                .then_some(out.text),
                            tool_calls: out.tool_calls.into_iter().map(Into::into).collect(),
                        },
                    })
                    .collect();
                self.envelope(false, choices, usage, timings)
            }
            Endpoint::Text => {
                let choices = outs
                    .map(|(out, index)| TextChoice {
                        index,
                        finish_reason: Some(finish_reason(out.finish_reason)),
                        logprobs: logprobs.then(|| TextLogprobs::new(out.logprobs, &mut 0)),
                        text: out.text,
                    })
                    .collect();
                self.envelope(false, choices, usage, timings)
            }
        }
    }

    /// The opening chunk of choice `index`: chat streams announce the
    /// assistant role first.
    pub fn opening(&self, index: u32) -> Option<serde_json::Value> {
        (self.endpoint == Endpoint::Chat).then(|| {
            let delta = Delta {
                role: Some("assistant"),
                content: Some(String::new()),
                tool_calls: None,
            };
            self.chat_chunk(index, delta, None, None, None)
        })
    }

    fn chat_chunk(
        &self,
        index: u32,
        delta: Delta,
        reason: Option<&'static str>,
        logprobs: Option<ChatLogprobs>,
        timings: Option<WireTimings>,
    ) -> serde_json::Value {
        let choice = ChatDeltaChoice {
            index,
            delta,
            finish_reason: reason,
            logprobs,
        };
        self.envelope(true, vec![choice], None, timings)
    }

    fn text_chunk(
        &self,
        index: u32,
        text: String,
        reason: Option<&'static str>,
        logprobs: Option<TextLogprobs>,
        timings: Option<WireTimings>,
    ) -> serde_json::Value {
        let choice = TextChoice {
            index,
            text,
            finish_reason: reason,
            logprobs,
        };
        self.envelope(true, vec![choice], None, timings)
    }

    /// A chunk of choice `index`: one text piece, with the tokens it holds
    /// when the request asked for logprobs.
    pub fn piece(
        &self,
        index: u32,
        text: String,
        logprobs: &mut StreamedLogprobs,
    ) -> serde_json::Value {
        match self.endpoint {
            Endpoint::Chat => {
                let delta = Delta {
                    content: Some(text),
                    ..Delta::default()
                };
                self.chat_chunk(index, delta, None, logprobs.chat(), None)
            }
            Endpoint::Text => self.text_chunk(index, text, None, logprobs.text(), None),
        }
    }

    /// A chunk carrying one whole tool call, the `call`-th of choice
    /// `index`. Only chat replies have calls.
    pub fn tool_call(
        &self,
        index: u32,
        call: u32,
        tool_call: types::ToolCall,
    ) -> serde_json::Value {
        let delta = Delta {
            tool_calls: Some(vec![DeltaToolCall {
                index: call,
                id: tool_call.id,
                kind: "function",
                function: WireFunctionCall {
                    name: tool_call.name,
                    arguments: tool_call.arguments,
                },
            }]),
            ..Delta::default()
        };
        self.chat_chunk(index, delta, None, None, None)
    }

    /// The last chunk of choice `index`: its finish reason and timings, and
    /// the tokens no text carried (those of a stop string).
    pub fn finish(
        &self,
        index: u32,
        done: &Completion,
        logprobs: &mut StreamedLogprobs,
    ) -> serde_json::Value {
        let reason = Some(finish_reason(done.finish_reason));
        let timings = Some(done.timings.into());
        match self.endpoint {
            Endpoint::Chat => {
                self.chat_chunk(index, Delta::default(), reason, logprobs.chat(), timings)
            }
            Endpoint::Text => {
                self.text_chunk(index, String::new(), reason, logprobs.text(), timings)
            }
        }
    }

    /// The chunk after every choice finished, when the client asked for
    /// usage: no choices, the whole request's usage.
    pub fn usage(&self, usage: Usage) -> serde_json::Value {
        let empty: Vec<TextChoice> = Vec::new();
        self.envelope(true, empty, Some(usage.into()), None)
    }
}

/// The tokens one streamed choice generated but has not sent yet: each
/// goes out with the next chunk, so a chunk's logprobs cover its text.
#[derive(Default)]
pub struct StreamedLogprobs {
    /// `None`: the request did not ask.
    pending: Option<Vec<TokenLogprob>>,
    /// Characters of the choice's text covered so far (completions' `text_offset`).
    offset: usize,
}

impl StreamedLogprobs {
    pub fn new(wanted: bool) -> Self {
        Self {
            pending: wanted.then(Vec::new),
            offset: 0,
        }
    }

    pub fn push(&mut self, token: TokenLogprob) {
        if let Some(pending) = &mut self.pending {
            pending.push(token);
        }
    }

    fn take(&mut self) -> Option<Vec<TokenLogprob>> {
        self.pending.as_mut().map(std::mem::take)
    }

    fn chat(&mut self) -> Option<ChatLogprobs> {
        self.take().map(ChatLogprobs::new)
    }

    fn text(&mut self) -> Option<TextLogprobs> {
        let offset = &mut self.offset;
        self.pending
            .as_mut()
            .map(|p| TextLogprobs::new(std::mem::take(p), offset))
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
