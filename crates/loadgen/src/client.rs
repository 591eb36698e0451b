//! One streaming chat completion against an OpenAI-compatible server, timed per chunk.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

/// A chat message as sent on the wire.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system",
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user",
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: "assistant",
            content: content.into(),
        }
    }
}

/// What to ask for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    /// Generate exactly `max_tokens` (llama.cpp's `ignore_eos`, which both servers accept).
    pub fixed_length: bool,
    /// Hearth's extensions; left out of the body when `None`.
    pub priority: Option<&'static str>,
    pub timeout_secs: Option<f64>,
    /// Hang up after this many content chunks.
    pub hang_up_after: Option<usize>,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
}

impl Ask {
    pub fn new(messages: Vec<Message>, max_tokens: u32) -> Self {
        Self {
            messages,
            max_tokens,
            fixed_length: true,
            priority: None,
            timeout_secs: None,
            hang_up_after: None,
            temperature: 0.0,
        }
    }
}

/// What came back, with client-side clocks (milliseconds from sending).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub error: Option<String>,
    pub ttft_ms: Option<f64>,
    /// Arrival time of every content chunk.
    pub chunk_ms: Vec<f64>,
    pub total_ms: f64,
    pub text: String,
    pub completion_tokens: Option<u32>,
    pub finish_reason: Option<String>,
    pub hung_up: bool,
}

impl Answer {
    /// Gaps between consecutive content chunks.
    pub fn inter_chunk_ms(&self) -> Vec<f64> {
        self.chunk_ms.windows(2).map(|w| w[1] - w[0]).collect()
    }

    pub fn ok(&self) -> bool {
        self.status == 200 && self.error.is_none()
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    model: String,
}

impl Client {
    pub fn new(base: &str, model: &str) -> Self {
        Self::with_api_key(base, model, None)
    }

    /// A client that sends `api_key` as a bearer token on every request.
    pub fn with_api_key(base: &str, model: &str, api_key: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .expect("an API key is a valid header value");
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(600))
            // A fresh connection per request: a pooled one the server has
            // just closed fails the next request, which is the client's
            // fault, not the server's.
            .pool_max_idle_per_host(0)
            .build()
            .expect("a plain HTTP client builds");
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            model: model.to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GETs a path and returns the body, or an empty string on failure.
    pub async fn get_text(&self, path: &str) -> String {
        match self.http.get(format!("{}{path}", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Sends one streaming chat completion and times every chunk.
    pub async fn chat(&self, ask: &Ask) -> Answer {
        let mut body = json!({
            "model": self.model,
            "messages": ask.messages,
            "max_tokens": ask.max_tokens,
            "temperature": ask.temperature,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if ask.fixed_length {
            body["ignore_eos"] = json!(true);
        }
        if let Some(p) = ask.priority {
            body["priority"] = json!(p);
        }
        if let Some(t) = ask.timeout_secs {
            body["timeout"] = json!(t);
        }
        let sent = Instant::now();
        let ms = |at: Instant| at.duration_since(sent).as_secs_f64() * 1e3;
        let mut answer = Answer::default();
        let resp = match self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                answer.error = Some(format!("request failed: {e}"));
                answer.total_ms = ms(Instant::now());
                return answer;
            }
        };
        answer.status = resp.status().as_u16();
        answer.retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            answer.error = Some(text);
            answer.total_ms = ms(Instant::now());
            return answer;
        }
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        'read: while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                answer.error = Some("stream broke".into());
                break;
            };
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(end) = find(&buf, b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                let event = String::from_utf8_lossy(&event);
                for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                    if data == "[DONE]" {
                        break 'read;
                    }
                    let Ok(v) = serde_json::from_str::<Value>(data) else {
                        continue;
                    };
                    if let Some(err) = v.get("error") {
                        answer.error = Some(err.to_string());
                        continue;
                    }
                    if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                        answer.completion_tokens = Some(n as u32);
                    }
                    let choice = &v["choices"][0];
                    if let Some(reason) = choice["finish_reason"].as_str() {
                        answer.finish_reason = Some(reason.to_string());
                    }
                    if let Some(text) = choice["delta"]["content"].as_str() {
                        if !text.is_empty() {
                            answer.ttft_ms.get_or_insert(ms(now));
                            answer.chunk_ms.push(ms(now));
                            answer.text.push_str(text);
                        }
                    }
                }
                if ask
                    .hang_up_after
                    .is_some_and(|n| answer.chunk_ms.len() >= n)
                {
                    answer.hung_up = true;
                    break 'read;
                }
            }
        }
        answer.total_ms = ms(Instant::now());
        answer
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
