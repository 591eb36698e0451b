//! Ollama's JSON as it crosses the wire, and its explicit conversion into
//! domain requests: messages, tools, `format`, `options`, `keep_alive`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use types::{
    ChatMessage, GenerationRequest, OutputFormat, Prompt, Role, SamplingParams, Tool, ToolCall,
};

use crate::error::ApiError;
use crate::exchange::{check_stops, check_tool_results, function_tool};

/// What chat and generate requests share.
#[derive(Debug, Deserialize)]
pub struct Common {
    #[serde(default)]
    pub model: String,
    pub format: Option<Value>,
    pub options: Option<Options>,
    /// Ollama streams unless told not to.
    pub stream: Option<bool>,
    pub keep_alive: Option<Value>,
    pub think: Option<Value>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
}

impl Common {
    /// The checks that come before anything else: a model named, a
    /// readable `keep_alive`.
    pub fn check(&self) -> Result<KeepAlive, ApiError> {
        if self.model.is_empty() {
            return Err(model_required());
        }
        keep_alive(self.keep_alive.as_ref())
    }

    /// The domain request around `prompt`: sampling from `options`, the
    /// reply's shape from `format`, logprobs.
    fn request(
        self,
        prompt: Prompt,
        defaults: &SamplingParams,
    ) -> Result<GenerationRequest, ApiError> {
        think(self.think.as_ref(), &self.model)?;
        let (sampling, max_tokens, stop) = self.options.unwrap_or_default().sampling(defaults)?;
        Ok(GenerationRequest {
            sampling,
            max_tokens,
            stop,
            format: format(self.format)?,
            logprobs: logprobs(self.logprobs, self.top_logprobs)?,
            ..GenerationRequest::new(prompt)
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatBody {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub messages: Vec<Message>,
    pub tools: Option<Vec<ToolDef>>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    pub images: Option<Vec<Value>>,
    pub tool_calls: Option<Vec<WireToolCall>>,
    pub tool_name: Option<String>,
}

/// A call as Ollama writes it: arguments are a JSON object, not a string.
#[derive(Debug, Deserialize)]
pub struct WireToolCall {
    pub function: WireCallFunction,
}

#[derive(Debug, Deserialize)]
pub struct WireCallFunction {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Debug, Deserialize)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: ToolFunction,
}

#[derive(Debug, Deserialize)]
pub struct ToolFunction {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct GenerateBody {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub prompt: String,
    pub suffix: Option<String>,
    pub system: Option<String>,
    pub template: Option<String>,
    pub context: Option<Vec<u32>>,
    #[serde(default)]
    pub raw: bool,
    pub images: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
pub struct EmbedBody {
    #[serde(default)]
    pub model: String,
    pub input: EmbedInput,
    /// Ollama cuts over-long inputs unless told not to.
    pub truncate: Option<bool>,
    pub dimensions: Option<u32>,
    // `options` for embeddings are load-time ones (`num_ctx`...), the
    // operator's: accepted without effect, as on the generation routes.
    pub keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

/// The older single-input embedding route.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsBody {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    pub keep_alive: Option<Value>,
}

/// `show`, `pull` and `delete` name a model as `model` (or, in older
/// clients, `name`).
#[derive(Debug, Deserialize)]
pub struct ModelBody {
    pub model: Option<String>,
    pub name: Option<String>,
    pub stream: Option<bool>,
    // `insecure` (TLS to the registry) has no meaning here: pulls go
    // through the machine's pip configuration.
}

impl ModelBody {
    pub fn model(&self) -> Result<&str, ApiError> {
        self.model
            .as_deref()
            .or(self.name.as_deref())
            .filter(|m| !m.is_empty())
            .ok_or_else(model_required)
    }
}

pub fn model_required() -> ApiError {
    ApiError::invalid("invalid_request", "model is required").with_param("model")
}

/// Ollama's `options`: the sampling ones map onto Hearth's; those that
/// configure how a model is loaded (`num_ctx`, `num_thread`, `num_gpu`...)
/// belong to the operator, who set them when starting the server, and are
/// accepted without effect, as Ollama accepts options a runner does not use.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    pub temperature: Option<f32>,
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub num_predict: Option<i64>,
    pub stop: Option<Vec<String>>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub typical_p: Option<f32>,
    pub mirostat: Option<i64>,
    pub tfs_z: Option<f32>,
}

impl Options {
    /// Sampling parameters over `defaults`, the reply's length limit and
    /// its stop strings.
    fn sampling(
        self,
        defaults: &SamplingParams,
    ) -> Result<(SamplingParams, Option<u32>, Vec<String>), ApiError> {
        let refuse = |field: &'static str, what: &str| ApiError::unsupported(field, what);
        if self.mirostat.is_some_and(|m| m != 0) {
            return Err(refuse("options.mirostat", "Mirostat sampling"));
        }
        if self.typical_p.is_some_and(|p| p != 1.0) {
            return Err(refuse("options.typical_p", "Locally typical sampling"));
        }
        if self.tfs_z.is_some_and(|z| z != 1.0) {
            return Err(refuse("options.tfs_z", "Tail-free sampling"));
        }
        let max_tokens = match self.num_predict {
            // -1: until the model stops; -2: until the context is full.
            // Both end at the context here, so they mean the same.
            None | Some(-1) | Some(-2) => None,
            Some(n) if n >= 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            Some(n) => {
                return Err(invalid(
                    "options.num_predict",
                    format!("`num_predict` is {n}; use a count, -1 or -2"),
                ))
            }
        };
        let repeat_last_n = match self.repeat_last_n {
            None => defaults.repeat_last_n,
            // The whole sequence: the engine caps the window at the context.
            Some(-1) => u32::MAX,
            Some(n) if n >= 0 => u32::try_from(n).unwrap_or(u32::MAX),
            Some(n) => {
                return Err(invalid(
                    "options.repeat_last_n",
                    format!("`repeat_last_n` is {n}; use a count, 0 to disable or -1 for all"),
                ))
            }
        };
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            // Ollama's seeds are 64-bit; llama.cpp's are 32-bit.
            seed: self.seed.map(|s| s as u32).or(defaults.seed),
            repeat_penalty: self.repeat_penalty.unwrap_or(defaults.repeat_penalty),
            repeat_last_n,
            presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
            logit_bias: Vec::new(),
        };
        sampling
            .validate()
            .map_err(|e| ApiError::invalid("invalid_value", e.to_string()).with_param("options"))?;
        let stop = self.stop.unwrap_or_default();
        check_stops(&stop, "options.stop")?;
        Ok((sampling, max_tokens, stop))
    }
}

fn invalid(param: &'static str, message: String) -> ApiError {
    ApiError::invalid("invalid_value", message).with_param(param)
}

/// How long a model stays loaded after a request (`keep_alive`): a Go
/// duration string (`"5m"`, `"1h30m"`) or a number of seconds; negative
/// means for ever, zero unload now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

impl KeepAlive {
    /// As [`types::TextGenerator::keep_alive`] takes it: `None` for ever.
    pub fn duration(self) -> Option<Duration> {
        match self {
            KeepAlive::For(d) => Some(d),
            KeepAlive::Forever => None,
        }
    }
}

/// A `keep_alive` the request gave, to pass on; `None` when it gave none
/// (the server's own keep-alive applies).
pub fn requested_keep_alive(field: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    match field {
        None | Some(Value::Null) => Ok(None),
        given => keep_alive(given).map(Some),
    }
}

/// Ollama's default `keep_alive`.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(300);

pub fn keep_alive(field: Option<&Value>) -> Result<KeepAlive, ApiError> {
    let bad = |v: &Value| {
        invalid(
            "keep_alive",
            format!("`keep_alive` is {v}; use a duration such as \"5m\" or a number of seconds"),
        )
    };
    match field {
        None | Some(Value::Null) => Ok(KeepAlive::For(DEFAULT_KEEP_ALIVE)),
        Some(v @ Value::Number(n)) => match n.as_f64() {
            Some(s) if s < 0.0 => Ok(KeepAlive::Forever),
            Some(s) if s.is_finite() => Ok(KeepAlive::For(Duration::from_secs_f64(s))),
            _ => Err(bad(v)),
        },
        Some(v @ Value::String(s)) => {
            let s = s.trim();
            if let Some(rest) = s.strip_prefix('-') {
                return go_duration(rest)
                    .map(|_| KeepAlive::Forever)
                    .ok_or_else(|| bad(v));
            }
            go_duration(s).map(KeepAlive::For).ok_or_else(|| bad(v))
        }
        Some(v) => Err(bad(v)),
    }
}

/// A Go duration (`300ms`, `1.5h`, `1h30m`, `0`): signed numbers with
/// units, as `time.ParseDuration` reads them; a bare number is seconds, as
/// Ollama reads it.
fn go_duration(s: &str) -> Option<Duration> {
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    total.is_finite().then(|| Duration::from_secs_f64(total))
}

/// `format`: `"json"` (any JSON object) or a JSON schema; `""` is none.
fn format(field: Option<Value>) -> Result<OutputFormat, ApiError> {
    match field {
        None | Some(Value::Null) => Ok(OutputFormat::Text),
        Some(Value::String(s)) if s.is_empty() => Ok(OutputFormat::Text),
        Some(Value::String(s)) if s == "json" => {
            Ok(OutputFormat::Json(serde_json::json!({"type": "object"})))
        }
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => Ok(OutputFormat::Json(schema)),
        Some(other) => Err(invalid(
            "format",
            format!("`format` is {other}; use \"json\" or a JSON schema"),
        )),
    }
}

/// `think`: Hearth's models have no separate reasoning channel, so asking
/// for one is refused, as Ollama refuses it for models that cannot think.
fn think(field: Option<&Value>, model: &str) -> Result<(), ApiError> {
    match field {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        Some(_) => Err(invalid(
            "think",
            format!("\"{model}\" does not support thinking"),
        )),
    }
}

/// `logprobs` with `top_logprobs` (0 to 20, only with `logprobs`).
fn logprobs(wanted: bool, top: Option<u32>) -> Result<Option<u32>, ApiError> {
    match (wanted, top) {
        (_, Some(k)) if k > types::MAX_TOP_LOGPROBS => Err(invalid(
            "top_logprobs",
            format!(
                "`top_logprobs` is {k}; it must be between 0 and {}",
                types::MAX_TOP_LOGPROBS
            ),
        )),
        (true, k) => Ok(Some(k.unwrap_or(0))),
        (false, _) => Ok(None),
    }
}

fn images(images: &Option<Vec<Value>>) -> Result<(), ApiError> {
    match images {
        Some(list) if !list.is_empty() => Err(ApiError::unsupported(
            "images",
            "Images (the served models read text only)",
        )),
        _ => Ok(()),
    }
}

impl ChatBody {
    /// The request; `None` when there are no messages, which asks for the
    /// model to be loaded (or, with `keep_alive: 0`, unloaded).
    pub fn into_domain(
        self,
        defaults: &SamplingParams,
    ) -> Result<Option<GenerationRequest>, ApiError> {
        think(self.common.think.as_ref(), &self.common.model)?;
        if self.messages.is_empty() {
            return Ok(None);
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        let mut call_ids = 0u32;
        let mut pending: Vec<ToolCall> = Vec::new();
        for m in self.messages {
            images(&m.images)?;
            let role = match m.role.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                other => {
                    return Err(invalid(
                        "messages",
                        format!("Message role `{other}` is not supported (use system, user, assistant or tool)"),
                    ))
                }
            };
            let mut message = ChatMessage::new(role, m.content);
            match (role, m.tool_calls) {
                (Role::Assistant, Some(calls)) => {
                    // Ollama's calls carry no ids: results answer them in
                    // order, by name. Ids are made up here so the template
                    // and the checks see a well-formed conversation.
                    for call in calls {
                        call_ids += 1;
                        let arguments = match call.function.arguments {
                            Value::Null => "{}".to_string(),
                            args @ Value::Object(_) => args.to_string(),
                            other => {
                                return Err(invalid(
                                    "messages",
                                    format!(
                                        "Tool call arguments must be a JSON object, not {other}"
                                    ),
                                ))
                            }
                        };
                        let call = ToolCall {
                            id: format!("call_{call_ids}"),
                            name: call.function.name,
                            arguments,
                        };
                        pending.push(call.clone());
                        message.tool_calls.push(call);
                    }
                }
                (_, Some(calls)) if !calls.is_empty() => {
                    return Err(invalid(
                        "messages",
                        "Only assistant messages may carry `tool_calls`".into(),
                    ))
                }
                _ => {}
            }
            if role == Role::Tool {
                // The earliest open call to this tool (or any, unnamed).
                let at = pending
                    .iter()
                    .position(|c| m.tool_name.as_deref().is_none_or(|name| c.name == name));
                message.tool_call_id = Some(match at {
                    Some(i) => pending.remove(i).id,
                    None => String::new(),
                });
                message.name = m.tool_name;
            }
            messages.push(message);
        }
        check_tool_results(&messages)?;
        let tools = self
            .tools
            .unwrap_or_default()
            .into_iter()
            .map(ToolDef::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        let mut request = self.common.request(Prompt::Chat(messages), defaults)?;
        request.tools = tools;
        Ok(Some(request))
    }
}

impl ToolDef {
    fn into_domain(self) -> Result<Tool, ApiError> {
        if self.kind.as_deref().is_some_and(|k| k != "function") {
            return Err(invalid(
                "tools",
                format!(
                    "Tools of type `{}` are not supported; use `function`",
                    self.kind.unwrap_or_default()
                ),
            ));
        }
        // `null` parameters are none, as Ollama reads them.
        let parameters = self.function.parameters.filter(|p| !p.is_null());
        function_tool(self.function.name, self.function.description, parameters)
    }
}

impl GenerateBody {
    /// `None`: an empty prompt, which only loads the model (or, with
    /// `keep_alive: 0`, unloads it).
    pub fn into_domain(
        self,
        defaults: &SamplingParams,
    ) -> Result<Option<GenerationRequest>, ApiError> {
        think(self.common.think.as_ref(), &self.common.model)?;
        images(&self.images)?;
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::unsupported(
                "suffix",
                "`suffix` (fill-in-the-middle)",
            ));
        }
        if self.template.as_deref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::unsupported(
                "template",
                "A per-request `template` (the model's own chat template is used)",
            ));
        }
        if self.context.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(ApiError::unsupported(
                "context",
                "`context` (send the conversation to /api/chat instead)",
            ));
        }
        if self.prompt.is_empty() {
            return Ok(None);
        }
        let prompt = if self.raw {
            // Raw prompts skip the template; a system prompt would have
            // nowhere to go.
            if self.system.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(invalid(
                    "system",
                    "`system` cannot be combined with `raw`".into(),
                ));
            }
            Prompt::Text(self.prompt)
        } else {
            let mut messages = Vec::new();
            if let Some(system) = self.system.filter(|s| !s.is_empty()) {
                messages.push(ChatMessage::new(Role::System, system));
            }
            messages.push(ChatMessage::new(Role::User, self.prompt));
            Prompt::Chat(messages)
        };
        self.common.request(prompt, defaults).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_alive_reads_go_durations_seconds_and_negatives() {
        let ka = |v: Value| keep_alive(Some(&v));
        assert_eq!(
            ka(json!("5m")).unwrap(),
            KeepAlive::For(Duration::from_secs(300))
        );
        assert_eq!(
            ka(json!("1h30m")).unwrap(),
            KeepAlive::For(Duration::from_secs(5400))
        );
        assert_eq!(
            ka(json!("1.5s")).unwrap(),
            KeepAlive::For(Duration::from_millis(1500))
        );
        assert_eq!(
            ka(json!("300ms")).unwrap(),
            KeepAlive::For(Duration::from_millis(300))
        );
        assert_eq!(ka(json!(0)).unwrap(), KeepAlive::For(Duration::ZERO));
        assert_eq!(ka(json!("0")).unwrap(), KeepAlive::For(Duration::ZERO));
        assert_eq!(
            ka(json!(120)).unwrap(),
            KeepAlive::For(Duration::from_secs(120))
        );
        assert_eq!(ka(json!(-1)).unwrap(), KeepAlive::Forever);
        assert_eq!(ka(json!("-1m")).unwrap(), KeepAlive::Forever);
        assert_eq!(
            keep_alive(None).unwrap(),
            KeepAlive::For(DEFAULT_KEEP_ALIVE)
        );
        for bad in [
            json!("soon"),
            json!("5 minutes"),
            json!("5x"),
            json!(""),
            json!(true),
            json!([1]),
        ] {
            let err = ka(bad.clone()).unwrap_err();
            assert_eq!(err.param, Some("keep_alive"), "{bad}");
        }
    }

    #[test]
    fn options_map_onto_sampling_and_refuse_what_cannot_be_done() {
        let defaults = SamplingParams::default();
        let options: Options = serde_json::from_value(json!({
            "temperature": 0.2, "top_k": 5, "seed": 42, "num_predict": 7,
            "stop": ["\n"], "repeat_last_n": -1, "num_ctx": 8192, "num_thread": 4
        }))
        .unwrap();
        let (s, max, stop) = options.sampling(&defaults).unwrap();
        assert_eq!((s.temperature, s.top_k, s.seed), (0.2, 5, Some(42)));
        assert_eq!(s.repeat_last_n, u32::MAX);
        assert_eq!(max, Some(7));
        assert_eq!(stop, ["\n"]);
        for (field, value) in [
            ("mirostat", json!(2)),
            ("typical_p", json!(0.5)),
            ("num_predict", json!(-3)),
            ("temperature", json!(-1.0)),
        ] {
            let options: Options = serde_json::from_value(json!({ field: value })).unwrap();
            assert!(options.sampling(&defaults).is_err(), "{field}");
        }
        let unlimited: Options = serde_json::from_value(json!({"num_predict": -2})).unwrap();
        assert_eq!(unlimited.sampling(&defaults).unwrap().1, None);
    }

    #[test]
    fn tool_results_answer_calls_in_order_by_name() {
        let body: ChatBody = serde_json::from_value(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather in Oslo and Rome?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "weather", "arguments": {"city": "Oslo"}}},
                    {"function": {"name": "weather", "arguments": {"city": "Rome"}}}]},
                {"role": "tool", "content": "5C", "tool_name": "weather"},
                {"role": "tool", "content": "20C", "tool_name": "weather"}
            ]
        }))
        .unwrap();
        let request = body
            .into_domain(&SamplingParams::default())
            .unwrap()
            .unwrap();
        let Prompt::Chat(messages) = request.prompt else {
            panic!()
        };
        assert_eq!(messages[1].tool_calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(messages[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(messages[3].tool_call_id.as_deref(), Some("call_2"));

        let orphan: ChatBody = serde_json::from_value(json!({
            "model": "m",
            "messages": [{"role": "tool", "content": "5C", "tool_name": "weather"}]
        }))
        .unwrap();
        assert!(orphan.into_domain(&SamplingParams::default()).is_err());
    }
}
