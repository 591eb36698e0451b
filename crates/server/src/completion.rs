//! The two generation endpoints: `/v1/chat/completions` and `/v1/completions`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::Principal;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream::{self, Stream, StreamExt};
use tokio::time::timeout_at;
use types::{Generation, GenerationEvent, Usage};

use crate::audit::RequestAudit;
use crate::error::ApiError;
use crate::quota::QuotaCharge;
use crate::reply::Reply;
use crate::wire::CompletionBody;
use crate::AppState;

/// Who hears what a request produced: its audit record and its quota
/// charge, each when configured.
#[derive(Clone, Default)]
struct Observers {
    audit: Option<Arc<RequestAudit>>,
    quota: Option<QuotaCharge>,
}

impl Observers {
    fn piece(&self, piece: &str) {
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

    fn usage(&self, usage: &Usage) {
        if let Some(a) = &self.audit {
            a.usage(usage.prompt_tokens, usage.completion_tokens);
        }
        if let Some(q) = &self.quota {
            q.usage(usage.prompt_tokens, usage.completion_tokens);
        }
    }
}

/// Handles either endpoint: validate, submit, then answer whole or streamed.
pub async fn complete<B: CompletionBody>(
    State(app): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    audit: Option<Extension<Arc<RequestAudit>>>,
    quota: Option<Extension<QuotaCharge>>,
    body: Result<Json<B>, JsonRejection>,
) -> Result<Response, ApiError> {
    let observers = Observers {
        audit: audit.map(|Extension(a)| a),
        quota: quota.map(|Extension(q)| q),
    };
    let Json(req) = body?;
    let (stream, include_usage) = (req.sampling().stream, req.sampling().include_usage());
    let (model, mut request) = req.into_domain(&app.defaults)?;
    if let Some(Extension(p)) = &principal {
        // A request cannot raise itself above its key's class.
        request.priority = p.cap_priority(request.priority);
    }
    let served = app.find(model.as_deref())?;
    if app.is_draining() {
        return Err(ApiError::unavailable());
    }
    let reply = Reply::new(B::ENDPOINT, served.id.clone());
    request.request_id = reply.id.clone();
    if let Some(a) = &observers.audit {
        a.request_id(&reply.id);
        a.model(&served.id);
    }
    let deadline = request.timeout.map(|t| (Instant::now() + t, t));
    let generator = Arc::clone(&served.generator);
    // Templating and tokenising a long prompt is CPU work: keep it off the
    // async workers.
    let generation = tokio::task::spawn_blocking(move || generator.submit(request))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    observers.submitted(generation.prompt_tokens());
    if stream {
        let events = sse_events(generation, reply, include_usage, deadline, observers);
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    // If the client disconnects, this future is dropped with the
    // generation, which cancels it.
    let out = match deadline {
        None => generation.collect().await?,
        Some((at, timeout)) => timeout_at(at.into(), generation.collect())
            .await
            .map_err(|_| timed_out(timeout))??,
    };
    observers.piece(&out.text);
    for call in &out.tool_calls {
        observers.piece(&call.arguments);
    }
    observers.usage(&out.usage);
    Ok(Json(reply.full(out)).into_response())
}

/// The engine ends a request at its deadline between decode steps; this
/// answers at the deadline itself, and dropping the generation frees its
/// sequence at the next step.
fn timed_out(timeout: Duration) -> ApiError {
    ApiError::timed_out(timeout.as_millis() as u64)
}

/// The SSE body: opening chunk, one chunk per text piece, closing chunks,
/// then `[DONE]`. Dropping the stream (client gone) drops the generation,
/// which cancels it at the next step.
fn sse_events(
    generation: Generation,
    reply: Reply,
    include_usage: bool,
    deadline: Option<(Instant, Duration)>,
    observers: Observers,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let opening = stream::iter(reply.opening().map(json_event));
    // The stream holds the request's audit record and quota charge until it
    // ends or the client goes away, so both count what was actually sent.
    let body = stream::unfold(
        Some((generation, reply, observers, 0u32)),
        move |state| async move {
            let (mut generation, reply, observers, calls) = state?;
            let next = match deadline {
                None => Ok(generation.next().await),
                Some((at, _)) => timeout_at(at.into(), generation.next()).await,
            };
            let Ok(next) = next else {
                let timeout = deadline.map(|(_, t)| t).unwrap_or_default();
                return Some((vec![json_event(timed_out(timeout).to_json())], None));
            };
            let events: Vec<Event> = match next {
                Some(GenerationEvent::Text(piece)) => {
                    observers.piece(&piece);
                    let event = json_event(reply.piece(piece));
                    return Some((vec![event], Some((generation, reply, observers, calls))));
                }
                Some(GenerationEvent::ToolCall(call)) => {
                    observers.piece(&call.arguments);
                    let event = json_event(reply.tool_call(calls, call));
                    return Some((vec![event], Some((generation, reply, observers, calls + 1))));
                }
                Some(GenerationEvent::Done(done)) => {
                    observers.usage(&done.usage);
                    let mut events: Vec<Event> = reply
                        .closing(done, include_usage)
                        .into_iter()
                        .map(json_event)
                        .collect();
                    events.push(Event::default().data("[DONE]"));
                    events
                }
                Some(GenerationEvent::Failed(err)) => {
                    vec![json_event(ApiError::from(err).to_json())]
                }
                None => vec![json_event(ApiError::unavailable().to_json())],
            };
            Some((events, None))
        },
    );
    opening.chain(body.flat_map(stream::iter)).map(Ok)
}

fn json_event(value: serde_json::Value) -> Event {
    Event::default().data(value.to_string())
}
