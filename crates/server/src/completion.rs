//! The two OpenAI generation endpoints: `/v1/chat/completions` and `/v1/completions`.

use std::convert::Infallible;
use std::sync::Arc;

use auth::Principal;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream::{self, BoxStream, SelectAll, Stream, StreamExt};
use tokio::time::timeout_at;
use types::{GenerationEvent, Usage};

use crate::audit::RequestAudit;
use crate::error::ApiError;
use crate::exchange::{self, Choices, Deadline, Observers};
use crate::quota::QuotaCharge;
use crate::reply::{Reply, StreamedLogprobs};
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
    let n = req.sampling().choices()?;
    let (model, request) = req.into_domain(&app.defaults)?;
    let logprobs = request.logprobs.is_some();
    let id = Reply::new_id(B::ENDPOINT);
    let principal = principal.as_ref().map(|Extension(p)| p);
    let choices = exchange::submit_choices(
        &app,
        principal,
        model.as_deref(),
        &id,
        request,
        n,
        &observers,
    )
    .await?;
    let reply = Reply::new(B::ENDPOINT, id, choices.model.clone())
        .with_fingerprint(choices.fingerprint.clone());
    if stream {
        let events = sse_events(choices, reply, include_usage, logprobs, observers);
        return Ok(exchange::sse_response(events));
    }
    let outs = choices.collect().await?;
    observers.output(&outs);
    Ok(Json(reply.full(outs, logprobs)).into_response())
}

/// Where one streamed choice stands.
struct ChoiceStream {
    /// Tool calls sent so far (the next one's index).
    calls: u32,
    logprobs: StreamedLogprobs,
}

/// A streamed request's state between events.
struct Streaming {
    events: SelectAll<BoxStream<'static, (u32, Option<GenerationEvent>)>>,
    deadline: Option<Deadline>,
    reply: Reply,
    observers: Observers,
    choices: Vec<ChoiceStream>,
    usages: Vec<Usage>,
    include_usage: bool,
}

/// The SSE body: each choice's opening chunk, then one chunk per text piece
/// or tool call of whichever choice produced it, each choice's finishing
/// chunk, the usage chunk if asked for, then `[DONE]`. Dropping the stream
/// (client gone) drops the generations, which cancels them at the next step.
fn sse_events(
    choices: Choices,
    reply: Reply,
    include_usage: bool,
    logprobs: bool,
    observers: Observers,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let n = choices.generations.len() as u32;
    let opening: Vec<Event> = (0..n)
        .filter_map(|i| reply.opening(i))
        .map(json_event)
        .collect();
    let events = stream::select_all(choices.generations.into_iter().zip(0u32..).map(
        |(generation, index)| {
            // `None` after the last event: the producer went away.
            stream::unfold(Some(generation), move |generation| async move {
                let mut generation = generation?;
                let event = generation.next().await;
                let more = matches!(
                    event,
                    Some(
                        GenerationEvent::Text(_)
                            | GenerationEvent::ToolCall(_)
                            | GenerationEvent::Logprob(_)
                    )
                );
                Some(((index, event), more.then_some(generation)))
            })
            .boxed()
        },
    ));
    let state = Streaming {
        events,
        deadline: choices.deadline,
        reply,
        observers,
        choices: (0..n)
            .map(|_| ChoiceStream {
                calls: 0,
                logprobs: StreamedLogprobs::new(logprobs),
            })
            .collect(),
        usages: Vec::new(),
        include_usage,
    };
    // The stream holds the request's audit record and quota charge until it
    // ends or the client goes away, so both count what was actually sent.
    let body = stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        let next = state.events.next();
        let next = match state.deadline {
            None => next.await,
            Some(d) => match timeout_at(d.at().into(), next).await {
                Ok(next) => next,
                Err(_) => return Some((vec![json_event(d.error().to_json())], None)),
            },
        };
        let Some((index, event)) = next else {
            return Some((vec![json_event(ApiError::unavailable().to_json())], None));
        };
        let (events, go_on) = state.handle(index, event);
        Some((events, go_on.then_some(state)))
    });
    stream::iter(opening)
        .chain(body.flat_map(stream::iter))
        .map(Ok)
}

impl Streaming {
    /// The chunks one event of choice `index` makes, and whether the
    /// stream goes on.
    fn handle(&mut self, index: u32, event: Option<GenerationEvent>) -> (Vec<Event>, bool) {
        let choice = &mut self.choices[index as usize];
        match event {
            Some(GenerationEvent::Logprob(token)) => {
                choice.logprobs.push(token);
                (Vec::new(), true)
            }
            Some(GenerationEvent::Text(piece)) => {
                self.observers.piece(&piece);
                let chunk = self.reply.piece(index, piece, &mut choice.logprobs);
                (vec![json_event(chunk)], true)
            }
            Some(GenerationEvent::ToolCall(call)) => {
                self.observers.piece(&call.arguments);
                let chunk = self.reply.tool_call(index, choice.calls, call);
                choice.calls += 1;
                (vec![json_event(chunk)], true)
            }
            Some(GenerationEvent::Done(done)) => {
                let mut events = vec![json_event(self.reply.finish(
                    index,
                    &done,
                    &mut choice.logprobs,
                ))];
                self.usages.push(done.usage);
                if self.usages.len() < self.choices.len() {
                    return (events, true);
                }
                let usage = exchange::total_usage(self.usages.iter().copied());
                self.observers.usage(&usage);
                if self.include_usage {
                    events.push(json_event(self.reply.usage(usage)));
                }
                events.push(Event::default().data("[DONE]"));
                (events, false)
            }
            Some(GenerationEvent::Failed(err)) => {
                (vec![json_event(ApiError::from(err).to_json())], false)
            }
            None => (vec![json_event(ApiError::unavailable().to_json())], false),
        }
    }
}

fn json_event(value: serde_json::Value) -> Event {
    Event::default().data(value.to_string())
}
