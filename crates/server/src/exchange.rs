//! What every generation endpoint shares, whatever its API family: the
//! checks on fields every family has (stops, tool names and results,
//! Hearth's `priority` and `timeout`), handing a domain request to the right
//! model (priority cap, draining, submission off the async workers), the
//! request's own deadline, and the observers (audit record, quota charge)
//! that hear what it produced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::Principal;
use axum::Extension;
use tokio::time::timeout_at;
use types::{
    ChatMessage, Generation, GenerationEvent, GenerationOutput, GenerationRequest, Priority, Role,
    Usage,
};

use crate::audit::RequestAudit;
use crate::error::ApiError;
use crate::quota::QuotaCharge;
use crate::AppState;

/// Who hears what a request produced: its audit record and its quota
/// charge, each when configured.
#[derive(Clone, Default)]
pub(crate) struct Observers {
    audit: Option<Arc<RequestAudit>>,
    quota: Option<QuotaCharge>,
}

impl Observers {
    /// From the extensions the access layers left on the request.
    pub fn new(
        audit: Option<Extension<Arc<RequestAudit>>>,
        quota: Option<Extension<QuotaCharge>>,
    ) -> Self {
        Self {
            audit: audit.map(|Extension(a)| a),
            quota: quota.map(|Extension(q)| q),
        }
    }

    /// The request got its id and its model.
    pub fn started(&self, id: &str, model: &str) {
        if let Some(a) = &self.audit {
            a.request_id(id);
            a.model(model);
        }
    }

    /// One piece of the answer (text, or a tool call's arguments) sent.
    pub fn piece(&self, piece: &str) {
        if let Some(a) = &self.audit {
            a.response_piece(piece);
        }
        if let Some(q) = &self.quota {
            q.piece();
        }
    }

    /// The prompt's tokens, charged as soon as the engine accepted it, so a
    /// request that times out or is dropped before its end still pays for
    /// its prefill.
    fn submitted(&self, prompt_tokens: u32) {
        if let Some(q) = &self.quota {
            q.usage(prompt_tokens, 0);
        }
    }

    pub fn usage(&self, usage: &Usage) {
        if let Some(a) = &self.audit {
            a.usage(usage.prompt_tokens, usage.completion_tokens);
        }
        if let Some(q) = &self.quota {
            q.usage(usage.prompt_tokens, usage.completion_tokens);
        }
    }

    /// Whole answers (one per choice), collected: their text, every call's
    /// arguments, and their usage together.
    pub fn output(&self, outs: &[GenerationOutput]) {
        for out in outs {
            self.piece(&out.text);
            for call in &out.tool_calls {
                self.piece(&call.arguments);
            }
        }
        self.usage(&total_usage(outs.iter().map(|o| o.usage)));
    }
}

/// One request's usage over its choices: the prompt counted once (the
/// choices share it, and its cells), every choice's reply.
pub(crate) fn total_usage(usages: impl Iterator<Item = Usage>) -> Usage {
    let mut total: Option<Usage> = None;
    for u in usages {
        match &mut total {
            None => total = Some(u),
            Some(t) => t.completion_tokens += u.completion_tokens,
        }
    }
    total.unwrap_or_default()
}

/// When a request's own `timeout` runs out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The error a request gets at its deadline. The engine ends a request
    /// at its deadline between decode steps; this answers at the deadline
    /// itself, and dropping the generation frees its sequence at the next
    /// step.
    pub fn error(&self) -> ApiError {
        ApiError::timed_out(self.timeout.as_millis() as u64)
    }
}

/// A request the engine accepted.
pub(crate) struct Submitted {
    /// The served model's id, as replies name it.
    pub model: String,
    pub generation: Generation,
    pub deadline: Option<Deadline>,
}

/// A request for several choices the engine accepted: one generation each.
pub(crate) struct Choices {
    pub model: String,
    /// The model version answering (`system_fingerprint`), when known.
    pub fingerprint: Option<String>,
    pub generations: Vec<Generation>,
    pub deadline: Option<Deadline>,
}

/// Hands `request` to the model it names (`None`: the default model), as
/// request `id`. The principal's priority class caps the request's.
pub(crate) async fn submit(
    app: &AppState,
    principal: Option<&Principal>,
    model: Option<&str>,
    id: &str,
    request: GenerationRequest,
    observers: &Observers,
) -> Result<Submitted, ApiError> {
    let mut choices = submit_choices(app, principal, model, id, request, 1, observers).await?;
    Ok(Submitted {
        model: choices.model,
        generation: choices.generations.remove(0),
        deadline: choices.deadline,
    })
}

/// [`submit`] for `n` choices of one prompt, queued together (all or
/// none): choice `i` samples with the request's seed plus `i`, and the
/// engine computes the shared prompt once.
pub(crate) async fn submit_choices(
    app: &AppState,
    principal: Option<&Principal>,
    model: Option<&str>,
    id: &str,
    mut request: GenerationRequest,
    n: u32,
    observers: &Observers,
) -> Result<Choices, ApiError> {
    if let Some(p) = principal {
        // A request cannot raise itself above its key's class.
        request.priority = p.cap_priority(request.priority);
    }
    let served = app.admit(model)?;
    request.request_id = id.to_string();
    observers.started(id, &served.id);
    let deadline = request.timeout.map(|timeout| Deadline {
        at: Instant::now() + timeout,
        timeout,
    });
    let generator = Arc::clone(&served.generator);
    // Templating and tokenising a long prompt is CPU work: keep it off the
    // async workers.
    let generations = tokio::task::spawn_blocking(move || generator.submit_choices(request, n))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    observers.submitted(generations[0].prompt_tokens());
    Ok(Choices {
        model: served.id.clone(),
        fingerprint: generations[0].fingerprint().map(str::to_string),
        generations,
        deadline,
    })
}

impl Submitted {
    /// Waits for the whole answer. If the client disconnects, this future
    /// is dropped with the generation, which cancels it.
    pub async fn collect(self) -> Result<GenerationOutput, ApiError> {
        within(self.deadline, self.generation.collect()).await
    }
}

impl Choices {
    /// Waits for every choice's whole answer, in order.
    pub async fn collect(self) -> Result<Vec<GenerationOutput>, ApiError> {
        let all = futures::future::try_join_all(self.generations.into_iter().map(|g| g.collect()));
        within(self.deadline, all).await
    }
}

/// Runs `work` until the request's deadline, if it has one.
async fn within<T>(
    deadline: Option<Deadline>,
    work: impl std::future::Future<Output = Result<T, types::GenerateError>>,
) -> Result<T, ApiError> {
    match deadline {
        None => Ok(work.await?),
        Some(d) => timeout_at(d.at.into(), work)
            .await
            .map_err(|_| d.error())?
            .map_err(ApiError::from),
    }
}

/// A streamed answer, with the keep-alive comments every family's stream
/// sends while a request waits for its first token.
pub(crate) fn sse_response(
    events: impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>
        + Send
        + 'static,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::response::sse::Sse::new(events)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response()
}

/// The next event of a streamed generation, or the timeout error once its
/// deadline has passed. `None` means the producer went away.
pub(crate) async fn next_event(
    generation: &mut Generation,
    deadline: Option<Deadline>,
) -> Result<Option<GenerationEvent>, ApiError> {
    match deadline {
        None => Ok(generation.next().await),
        Some(d) => timeout_at(d.at.into(), generation.next())
            .await
            .map_err(|_| d.error()),
    }
}

/// Most stop sequences one request may carry.
const MAX_STOPS: usize = 16;
/// Longest `timeout` a request may ask for: a day.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// Refuses more than [`MAX_STOPS`] stop sequences, naming `param`.
pub(crate) fn check_stops(stops: &[String], param: &'static str) -> Result<(), ApiError> {
    if stops.len() > MAX_STOPS {
        return Err(ApiError::invalid(
            "invalid_value",
            format!(
                "At most {MAX_STOPS} stop sequences are allowed, got {}",
                stops.len()
            ),
        )
        .with_param(param));
    }
    Ok(())
}

/// Hearth's `priority` field: `interactive` (the default) or `batch`.
pub(crate) fn priority(field: Option<&str>) -> Result<Priority, ApiError> {
    match field {
        None => Ok(Priority::Interactive),
        Some(p) => Priority::parse(p).ok_or_else(|| {
            ApiError::invalid(
                "invalid_value",
                format!("`priority` is `{p}`; it must be `interactive` or `batch`"),
            )
            .with_param("priority")
        }),
    }
}

/// Hearth's `timeout` field, in seconds: more than 0, at most a day.
pub(crate) fn timeout(field: Option<f64>) -> Result<Option<Duration>, ApiError> {
    match field {
        None => Ok(None),
        Some(t) if t > 0.0 && t <= MAX_TIMEOUT_SECS => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(ApiError::invalid(
            "invalid_value",
            format!(
                "`timeout` is {t}; it must be more than 0 and at most {MAX_TIMEOUT_SECS} seconds"
            ),
        )
        .with_param("timeout")),
    }
}

/// Tool names as OpenAI and Anthropic allow them: letters, digits, `_`
/// and `-`, at most 64.
pub(crate) fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A function tool as every family describes one: a valid name, and
/// parameters that are a JSON schema object (none: no parameters).
pub(crate) fn function_tool(
    name: String,
    description: Option<String>,
    parameters: Option<serde_json::Value>,
) -> Result<types::Tool, ApiError> {
    let bad = |message: String| ApiError::invalid("invalid_value", message).with_param("tools");
    if !valid_tool_name(&name) {
        return Err(bad(format!(
            "Tool name `{name}` is invalid: use 1 to 64 letters, digits, `_` or `-`"
        )));
    }
    let parameters = match parameters {
        None => serde_json::json!({"type": "object", "properties": {}}),
        Some(p @ serde_json::Value::Object(_)) => p,
        Some(_) => {
            return Err(bad(format!(
                "The parameters of tool `{name}` must be a JSON schema object"
            )))
        }
    };
    Ok(types::Tool {
        name,
        description,
        parameters,
    })
}

/// Every tool result answers a call an earlier assistant message made, as
/// both OpenAI and Anthropic require; a result with nothing to answer is a mixed-up
/// conversation, not something to guess about.
pub(crate) fn check_tool_results(messages: &[ChatMessage]) -> Result<(), ApiError> {
    let mut calls: Vec<&str> = Vec::new();
    for message in messages {
        calls.extend(message.tool_calls.iter().map(|c| c.id.as_str()));
        if message.role == Role::Tool {
            let id = message.tool_call_id.as_deref().unwrap_or_default();
            if !calls.contains(&id) {
                return Err(ApiError::invalid(
                    "invalid_value",
                    format!("A tool result must answer a call made by an earlier assistant message; `{id}` was never called"),
                )
                .with_param("messages"));
            }
        }
    }
    Ok(())
}
