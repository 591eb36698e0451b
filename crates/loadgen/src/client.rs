//! One streaming chat completion against an OpenAI-compatible server, timed per chunk.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
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
    /// `Some(false)`: ask the server to compute the whole prompt rather
    /// than start from a cached prefix (`cache_prompt`, which Hearth and
    /// llama-server accept).
    pub cache_prompt: Option<bool>,
    /// Ask for each token's log-probability and this many alternatives.
    pub top_logprobs: Option<u32>,
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
            cache_prompt: None,
            top_logprobs: None,
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
    /// The prompt's length as the server counted it (its `usage`).
    pub prompt_tokens: Option<u32>,
    pub finish_reason: Option<String>,
    pub hung_up: bool,
    /// The server's own clocks for this request, when it reports them.
    pub server: Option<ServerTimings>,
    /// OpenAI's `system_fingerprint`: which model version (Hearth) or build
    /// (llama-server) answered.
    pub fingerprint: Option<String>,
    /// Each generated token, when the ask wanted log-probabilities.
    pub tokens: Vec<TokenChoice>,
}

/// One generated token with its log-probability and the alternatives the
/// model weighed at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenChoice {
    pub token: String,
    pub logprob: f64,
    pub top: Vec<(String, f64)>,
}

impl TokenChoice {
    fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            token: v["token"].as_str()?.to_string(),
            logprob: v["logprob"].as_f64()?,
            top: v["top_logprobs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| Some((t["token"].as_str()?.to_string(), t["logprob"].as_f64()?)))
                .collect(),
        })
    }
}

/// A request as the server timed it: Hearth's `timings` extension, or
/// llama-server's, which Hearth's mirrors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerTimings {
    /// Arrival (Hearth) or slot start (llama-server, which does not report
    /// queueing) to the first generated token.
    pub ttft_ms: f64,
    /// First token to last.
    pub decode_ms: f64,
}

impl ServerTimings {
    /// Reads a response's `timings` object. Hearth reports the time to
    /// first token itself, queueing included; llama-server reports prompt
    /// processing, which is the same span when no request waits for a slot.
    pub fn from_json(v: &Value) -> Option<Self> {
        let decode_ms = v["predicted_ms"].as_f64()?;
        let ttft_ms = v["time_to_first_token_ms"]
            .as_f64()
            .or_else(|| v["prompt_ms"].as_f64())?;
        Some(Self { ttft_ms, decode_ms })
    }

    pub fn e2e_ms(&self) -> f64 {
        self.ttft_ms + self.decode_ms
    }
}

impl Answer {
    /// Gaps between consecutive content chunks.
    pub fn inter_chunk_ms(&self) -> Vec<f64> {
        self.chunk_ms.windows(2).map(|w| w[1] - w[0]).collect()
    }

    pub fn ok(&self) -> bool {
        self.status == 200 && self.error.is_none()
    }

    /// What went wrong, on one line: the HTTP status and the start of the
    /// body, or the transport's or stream's error.
    pub fn describe_error(&self) -> String {
        let body: String = self
            .error
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(300)
            .collect();
        match self.status {
            0 => body,
            200 if self.error.is_some() => format!("stream error: {body}"),
            200 => "no error".into(),
            s => format!("HTTP {s}: {body}"),
        }
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

    /// The ids `GET /v1/models` lists, loaded ones first, or why they could
    /// not be read.
    pub async fn models(&self) -> Result<Vec<String>, String> {
        let resp = self
            .http
            .get(format!("{}/v1/models", self.base))
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let text: String = text.chars().take(300).collect();
            return Err(format!("{}/v1/models answered {status}: {text}", self.base));
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}/v1/models sent no JSON: {e}", self.base))?;
        let mut models: Vec<(String, bool)> = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["id"].as_str()?.to_string(), m["loaded"] != false)))
            .collect();
        // Models already in memory first (Hearth's `loaded`): a load test
        // should not start by loading another model.
        models.sort_by_key(|(_, loaded)| !loaded);
        Ok(models.into_iter().map(|(id, _)| id).collect())
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
        if let Some(c) = ask.cache_prompt {
            body["cache_prompt"] = json!(c);
        }
        if let Some(k) = ask.top_logprobs {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(k);
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
                    if let Some(n) = v["usage"]["prompt_tokens"].as_u64() {
                        answer.prompt_tokens = Some(n as u32);
                    }
                    if let Some(t) = v.get("timings").and_then(ServerTimings::from_json) {
                        answer.server = Some(t);
                    }
                    if let Some(fp) = v["system_fingerprint"].as_str() {
                        answer.fingerprint.get_or_insert_with(|| fp.to_string());
                    }
                    let choice = &v["choices"][0];
                    if let Some(tokens) = choice["logprobs"]["content"].as_array() {
                        answer
                            .tokens
                            .extend(tokens.iter().filter_map(TokenChoice::from_json));
                    }
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
