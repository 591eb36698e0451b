//! OpenAI's Responses API: `POST /v1/responses` (whole, or streamed as its
//! typed events), `GET` and `DELETE /v1/responses/{id}`. A stored response
//! keeps its conversation, so `previous_response_id` continues it; only
//! the principal that made a response can read, continue or delete it.
//! Generation goes through the same submission, limits and observers as
//! the other families.

mod reply;
mod wire;

use std::convert::Infallible;
use std::sync::Arc;

use auth::Principal;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Map, Value};
use types::{ChatMessage, GenerationEvent, Role, ToolCall};

use crate::audit::RequestAudit;
use crate::error::ApiError;
use crate::exchange::{self, Observers, Submitted};
use crate::quota::QuotaCharge;
use crate::AppState;
pub use history::{ResponseStore, ResponseStoreError, StoredResponse, RETENTION};
use reply::{Envelope, ResponseStream, StreamEvent};
use wire::CreateBody;

/// Whose responses these are: the principal's id, or nobody's in
/// particular on a server without authentication.
fn owner(principal: &Option<Extension<Principal>>) -> String {
    principal
        .as_ref()
        .map_or_else(String::new, |Extension(p)| p.id.clone())
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("not_found", format!("Response with id '{id}' not found.")).with_param("id")
}

/// Runs a store call off the async workers.
async fn with_store<T: Send + 'static>(
    app: &AppState,
    f: impl FnOnce(&ResponseStore) -> Result<T, ResponseStoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = Arc::clone(&app.responses);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))
}

pub async fn create(
    State(app): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    audit: Option<Extension<Arc<RequestAudit>>>,
    quota: Option<Extension<QuotaCharge>>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let observers = Observers::new(audit, quota);
    let Json(mut body) = body?;
    body.check()?;
    let owner = owner(&principal);
    let history = match body.previous_response_id.clone() {
        None => Vec::new(),
        Some(previous) => {
            let (who, id) = (owner.clone(), previous.clone());
            let now = crate::reply::unix_now();
            with_store(&app, move |s| s.get(&id, &who, now))
                .await?
                .ok_or_else(|| {
                    ApiError::invalid(
                        "previous_response_not_found",
                        format!("Previous response with id '{previous}' not found."),
                    )
                    .with_param("previous_response_id")
                })?
                .history
        }
    };
    let input = std::mem::replace(&mut body.input, wire::Input::Items(Vec::new()));
    let conversation = wire::conversation(history, input)?;
    let request = body.request(conversation.clone(), &app.defaults)?;
    let echo = echo(&body, &request);
    let id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    let principal = principal.as_ref().map(|Extension(p)| p);
    let submitted = exchange::submit(
        &app,
        principal,
        body.model.as_deref(),
        &id,
        request,
        &observers,
    )
    .await?;
    let envelope = Envelope {
        id,
        created_at: crate::reply::unix_now(),
        model: submitted.model.clone(),
        echo,
    };
    let keep = body.store.unwrap_or(true).then(|| Keep {
        app: Arc::clone(&app),
        owner,
        conversation,
    });
    if body.stream {
        let events = sse_events(submitted, envelope, observers, keep);
        return Ok(exchange::sse_response(events));
    }
    let out = submitted.collect().await?;
    observers.output(std::slice::from_ref(&out));
    let object = envelope.full(&out);
    if let Some(keep) = keep {
        keep.save(&envelope.id, &object).await?;
    }
    Ok(Json(object).into_response())
}

/// What storing a finished response needs.
struct Keep {
    app: Arc<AppState>,
    owner: String,
    /// The conversation up to the reply (without the instructions, which
    /// a follow-up gives anew).
    conversation: Vec<ChatMessage>,
}

impl Keep {
    /// Stores `object` with the conversation it ends.
    async fn save(self, id: &str, object: &Value) -> Result<(), ApiError> {
        let mut history = self.conversation;
        history.push(reply_message(object));
        let stored = StoredResponse {
            response: object.clone(),
            history,
        };
        let (id, owner) = (id.to_string(), self.owner);
        let created = object["created_at"].as_u64().unwrap_or_default();
        with_store(&self.app, move |s| s.put(&id, &owner, created, &stored)).await
    }
}

/// The assistant turn a response's output makes, for the next turn's
/// prompt.
fn reply_message(object: &Value) -> ChatMessage {
    let mut message = ChatMessage::new(Role::Assistant, "");
    for item in object["output"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") => {
                for part in item["content"].as_array().into_iter().flatten() {
                    message
                        .content
                        .push_str(part["text"].as_str().unwrap_or_default());
                }
            }
            Some("function_call") => message.tool_calls.push(ToolCall {
                id: item["call_id"].as_str().unwrap_or_default().to_string(),
                name: item["name"].as_str().unwrap_or_default().to_string(),
                arguments: item["arguments"].as_str().unwrap_or("{}").to_string(),
            }),
            _ => {}
        }
    }
    message
}

/// The request settings a response object repeats.
fn echo(body: &CreateBody, request: &types::GenerationRequest) -> Map<String, Value> {
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| {
            json!({"type": "function", "name": t.name, "description": t.description,
                        "parameters": t.parameters, "strict": false})
        })
        .collect();
    let tool_choice = match &request.tool_choice {
        types::ToolChoice::Auto => json!("auto"),
        types::ToolChoice::None => json!("none"),
        types::ToolChoice::Required => json!("required"),
        types::ToolChoice::Function(name) => json!({"type": "function", "name": name}),
    };
    let format = body
        .text
        .as_ref()
        .and_then(|t| t.format.as_ref())
        .map_or_else(
            || json!({"type": "text"}),
            |f| json!({"type": f.kind, "schema": f.schema}),
        );
    let mut echo = Map::new();
    echo.insert("instructions".into(), json!(body.instructions));
    echo.insert(
        "previous_response_id".into(),
        json!(body.previous_response_id),
    );
    echo.insert("store".into(), json!(body.store.unwrap_or(true)));
    echo.insert(
        "metadata".into(),
        json!(body.metadata.clone().unwrap_or_default()),
    );
    echo.insert("temperature".into(), json!(request.sampling.temperature));
    echo.insert("top_p".into(), json!(request.sampling.top_p));
    echo.insert("max_output_tokens".into(), json!(body.max_output_tokens));
    echo.insert(
        "parallel_tool_calls".into(),
        json!(request.parallel_tool_calls),
    );
    echo.insert("tool_choice".into(), tool_choice);
    echo.insert("tools".into(), json!(tools));
    echo.insert("text".into(), json!({"format": format}));
    echo.insert("truncation".into(), json!("disabled"));
    echo
}

/// The stream of typed events. The response is stored once it completes;
/// dropping the stream (client gone) drops the generation, which cancels it.
fn sse_events(
    submitted: Submitted,
    envelope: Envelope,
    observers: Observers,
    keep: Option<Keep>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let id = envelope.id.clone();
    let mut events = ResponseStream::new(envelope);
    let opening = stream::iter(events.start());
    let deadline = submitted.deadline;
    let state = (submitted.generation, events, observers, keep);
    let body = stream::unfold(Some(state), move |state| {
        let id = id.clone();
        async move {
            let (mut generation, mut events, observers, keep) = state?;
            let next = match exchange::next_event(&mut generation, deadline).await {
                Ok(next) => next,
                Err(timed_out) => return Some((vec![events.failed(&timed_out.message)], None)),
            };
            let out: Vec<StreamEvent> = match next {
                Some(GenerationEvent::Text(piece)) => {
                    observers.piece(&piece);
                    let out = events.text(&piece);
                    return Some((out, Some((generation, events, observers, keep))));
                }
                Some(GenerationEvent::ToolCall(call)) => {
                    observers.piece(&call.arguments);
                    let out = events.tool_call(&call);
                    return Some((out, Some((generation, events, observers, keep))));
                }
                Some(GenerationEvent::Logprob(_)) => {
                    return Some((Vec::new(), Some((generation, events, observers, keep))));
                }
                Some(GenerationEvent::Done(done)) => {
                    observers.usage(&done.usage);
                    let (mut out, object) = events.done(&done);
                    if let Some(keep) = keep {
                        if let Err(err) = keep.save(&id, &object).await {
                            out.push(events.failed(&err.message));
                        }
                    }
                    out
                }
                Some(GenerationEvent::Failed(err)) => {
                    vec![events.failed(&ApiError::from(err).message)]
                }
                None => vec![events.failed(&ApiError::unavailable().message)],
            };
            Some((out, None))
        }
    });
    opening
        .chain(body.flat_map(stream::iter))
        .map(|(name, data)| Ok(Event::default().event(name).data(data.to_string())))
}

/// `GET /v1/responses/{id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (who, key) = (owner(&principal), id.clone());
    let now = crate::reply::unix_now();
    let stored = with_store(&app, move |s| s.get(&key, &who, now)).await?;
    stored
        .map(|s| Json(s.response))
        .ok_or_else(|| not_found(&id))
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    State(app): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (who, key) = (owner(&principal), id.clone());
    if with_store(&app, move |s| s.delete(&key, &who)).await? {
        Ok(Json(
            json!({"id": id, "object": "response", "deleted": true}),
        ))
    } else {
        Err(not_found(&id))
    }
}
