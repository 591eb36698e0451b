//! Anthropic's Messages API: `POST /v1/messages` (whole or streamed as
//! Anthropic's typed events) and `POST /v1/messages/count_tokens`.
//!
//! Requests go through the same conversion to domain types, scheduler,
//! deadline and observers as the OpenAI routes; only the wire shapes
//! differ. Errors take Anthropic's shape through [`crate::error::reshape`].

mod reply;
mod wire;

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
use crate::AppState;
use reply::{MessageReply, MessageStream};
use wire::{CountTokensRequest, MessagesRequest};

/// `POST /v1/messages`.
pub async fn messages(
    State(app): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    audit: Option<Extension<Arc<RequestAudit>>>,
    quota: Option<Extension<QuotaCharge>>,
    body: Result<Json<MessagesRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let observers = Observers::new(audit, quota);
    let Json(req) = body?;
    let stream = req.stream;
    let model = req.model.clone();
    let request = req.into_domain(&app.defaults)?;
    let stops = request.stop.clone();
    let id = MessageReply::new_id();
    let principal = principal.as_ref().map(|Extension(p)| p);
    let submitted =
        exchange::submit(&app, principal, Some(&model), &id, request, &observers).await?;
    let reply = MessageReply {
        id,
        model: submitted.model.clone(),
        stops,
    };
    if stream {
        let prompt_tokens = submitted.generation.prompt_tokens();
        let events = sse_events(
            submitted.generation,
            MessageStream::new(reply),
            prompt_tokens,
            submitted.deadline,
            observers,
        );
        return Ok(exchange::sse_response(events));
    }
    let out = submitted.collect().await?;
    observers.output(std::slice::from_ref(&out));
    Ok(Json(reply.full(out)).into_response())
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as the model
/// would see them, tools included; nothing is generated.
pub async fn count_tokens(
    State(app): State<Arc<AppState>>,
    body: Result<Json<CountTokensRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let served = app.find(Some(&req.model))?;
    let request = req.prompt.into_domain()?;
    let generator = Arc::clone(&served.generator);
    let tokens = tokio::task::spawn_blocking(move || generator.count_tokens(&request))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    Ok(Json(serde_json::json!({ "input_tokens": tokens })).into_response())
}

/// The SSE body: `message_start`, content blocks as they come, then
/// `message_delta` and `message_stop`. Dropping the stream (client gone)
/// drops the generation, which cancels it at the next step.
fn sse_events(
    generation: Generation,
    mut events: MessageStream,
    prompt_tokens: u32,
    deadline: Option<Deadline>,
    observers: Observers,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let opening = stream::iter(events.start(prompt_tokens));
    // The stream holds the request's audit record and quota charge until it
    // ends or the client goes away, so both count what was actually sent.
    let body = stream::unfold(
        Some((generation, events, observers)),
        move |state| async move {
            let (mut generation, mut events, observers) = state?;
            let next = match exchange::next_event(&mut generation, deadline).await {
                Ok(next) => next,
                Err(timed_out) => return Some((MessageStream::error(&timed_out), None)),
            };
            let out = match next {
                Some(GenerationEvent::Text(piece)) => {
                    observers.piece(&piece);
                    let out = events.text(piece);
                    return Some((out, Some((generation, events, observers))));
                }
                Some(GenerationEvent::ToolCall(call)) => {
                    observers.piece(&call.arguments);
                    let out = events.tool_call(call);
                    return Some((out, Some((generation, events, observers))));
                }
                // Messages requests never ask for logprobs.
                Some(GenerationEvent::Logprob(_)) => {
                    return Some((Vec::new(), Some((generation, events, observers))));
                }
                Some(GenerationEvent::Done(done)) => {
                    observers.usage(&done.usage);
                    events.done(&done)
                }
                Some(GenerationEvent::Failed(err)) => MessageStream::error(&ApiError::from(err)),
                None => MessageStream::error(&ApiError::unavailable()),
            };
            Some((out, None))
        },
    );
    opening
        .chain(body.flat_map(stream::iter))
        .map(|(name, data)| Ok(Event::default().event(name).data(data.to_string())))
}
