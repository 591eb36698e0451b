//! The two OpenAI generation endpoints: `/v1/chat/completions` and `/v1/completions`.

use std::convert::Infallible;
use std::sync::Arc;

use auth::Principal;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream::{self, Stream, StreamExt};
use types::{Generation, GenerationEvent};

use crate::audit::RequestAudit;
use crate::error::ApiError;
use crate::exchange::{self, Deadline, Observers};
use crate::quota::QuotaCharge;
use crate::reply::Reply;
use crate::wire::CompletionBody;
use crate::AppState;

/// Handles either endpoint: validate, submit, then answer whole or streamed.
pub async fn complete<B: CompletionBody>(
    State(app): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    audit: Option<Extension<Arc<RequestAudit>>>,
    quota: Option<Extension<QuotaCharge>>,
    body: Result<Json<B>, JsonRejection>,
) -> Result<Response, ApiError> {
    let observers = Observers::new(audit, quota);
    let Json(req) = body?;
    let (stream, include_usage) = (req.sampling().stream, req.sampling().include_usage());
    let (model, request) = req.into_domain(&app.defaults)?;
    let id = Reply::new_id(B::ENDPOINT);
    let principal = principal.as_ref().map(|Extension(p)| p);
    let submitted =
        exchange::submit(&app, principal, model.as_deref(), &id, request, &observers).await?;
    let reply = Reply::new(B::ENDPOINT, id, submitted.model.clone());
    if stream {
        let events = sse_events(
            submitted.generation,
            reply,
            include_usage,
            submitted.deadline,
            observers,
        );
        return Ok(exchange::sse_response(events));
    }
    let out = submitted.collect().await?;
    observers.output(&out);
    Ok(Json(reply.full(out)).into_response())
}

/// The SSE body: opening chunk, one chunk per text piece, closing chunks,
/// then `[DONE]`. Dropping the stream (client gone) drops the generation,
/// which cancels it at the next step.
fn sse_events(
    generation: Generation,
    reply: Reply,
    include_usage: bool,
    deadline: Option<Deadline>,
    observers: Observers,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let opening = stream::iter(reply.opening().map(json_event));
    // The stream holds the request's audit record and quota charge until it
    // ends or the client goes away, so both count what was actually sent.
    let body = stream::unfold(
        Some((generation, reply, observers, 0u32)),
        move |state| async move {
            let (mut generation, reply, observers, calls) = state?;
            let next = match exchange::next_event(&mut generation, deadline).await {
                Ok(next) => next,
                Err(timed_out) => return Some((vec![json_event(timed_out.to_json())], None)),
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
