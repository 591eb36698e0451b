//! Ollama's API: `/api/chat` and `/api/generate` (NDJSON streams by
//! default), `/api/embed` and `/api/embeddings`, and the model routes
//! (`/api/tags`, `/api/show`, `/api/ps`, `/api/pull` with streamed
//! progress, `/api/delete`, `/api/version`). Generation goes through the
//! same submission, limits and observers as the other families; errors
//! take Ollama's `{"error": "..."}` shape through [`crate::error::reshape`].

mod reply;
mod wire;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use auth::Principal;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use types::{
    EmbedInput, EmbeddingRequest, GenerationEvent, GenerationOutput, LibraryError, ModelInfo,
    Progress,
};

use crate::audit::RequestAudit;
use crate::error::ApiError;
use crate::exchange::{self, Deadline, Observers, Submitted};
use crate::quota::QuotaCharge;
use crate::{embeddings, untagged, AppState, Retire, ServedModel};
use reply::{Reply, Route};
use wire::{ChatBody, EmbedBody, EmbeddingsBody, GenerateBody, KeepAlive, ModelBody};

/// Ollama's `/api/version`; Hearth answers with its own version.
pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

pub async fn chat(
    State(app): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    audit: Option<Extension<Arc<RequestAudit>>>,
    quota: Option<Extension<QuotaCharge>>,
    body: Result<Json<ChatBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let keep_alive = body.common.check()?;
    let keep = wire::requested_keep_alive(body.common.keep_alive.as_ref())?;
    let (reply, stream, logprobs) = begin(&body.common, Route::Chat);
    let Some(request) = body.into_domain(&app.defaults)? else {
        return load_or_unload(&app, &reply, keep_alive, keep).await;
    };
    let observers = Observers::new(audit, quota);
    let model = reply.model.clone();
    let answer = run(
        &app,
        principal,
        observers,
        reply,
        (stream, logprobs),
        request,
    )
    .await?;
    apply_keep_alive(&app, &model, keep).await;
    Ok(answer)
}

/// Passes a request's `keep_alive` on to its model.
async fn apply_keep_alive(app: &AppState, model: &str, keep: Option<KeepAlive>) {
    let (Some(keep), Ok(served)) = (keep, app.find(Some(model))) else {
        return;
    };
    let generator = Arc::clone(&served.generator);
    let _ = tokio::task::spawn_blocking(move || generator.keep_alive(keep.duration())).await;
}

/// A request without a prompt or messages: Ollama's way to load a model
/// (or, with `keep_alive: 0`, unload it).
async fn load_or_unload(
    app: &AppState,
    reply: &Reply,
    keep_alive: KeepAlive,
    keep: Option<KeepAlive>,
) -> Result<Response, ApiError> {
    let generator = Arc::clone(&app.admit(Some(&reply.model))?.generator);
    let reason = match keep_alive {
        KeepAlive::For(d) if d.is_zero() => "unload",
        _ => {
            tokio::task::spawn_blocking(move || generator.warm())
                .await
                .map_err(|e| ApiError::internal(&e))??;
            "load"
        }
    };
    apply_keep_alive(app, &reply.model, keep).await;
    Ok(Json(reply.loaded(reason)).into_response())
}

pub async fn generate(
    State(app): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    audit: Option<Extension<Arc<RequestAudit>>>,
    quota: Option<Extension<QuotaCharge>>,
    body: Result<Json<GenerateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let keep_alive = body.common.check()?;
    let keep = wire::requested_keep_alive(body.common.keep_alive.as_ref())?;
    let (reply, stream, logprobs) = begin(&body.common, Route::Generate);
    let Some(request) = body.into_domain(&app.defaults)? else {
        return load_or_unload(&app, &reply, keep_alive, keep).await;
    };
    let observers = Observers::new(audit, quota);
    let model = reply.model.clone();
    let answer = run(
        &app,
        principal,
        observers,
        reply,
        (stream, logprobs),
        request,
    )
    .await?;
    apply_keep_alive(&app, &model, keep).await;
    Ok(answer)
}

/// The reply's identity, whether it streams (Ollama's default) and
/// whether it reports logprobs.
fn begin(common: &wire::Common, route: Route) -> (Reply, bool, bool) {
    let reply = Reply {
        route,
        model: common.model.clone(),
    };
    (reply, common.stream.unwrap_or(true), common.logprobs)
}

/// Submits a chat or generate request and answers it.
async fn run(
    app: &AppState,
    principal: Option<Extension<Principal>>,
    observers: Observers,
    reply: Reply,
    (stream, logprobs): (bool, bool),
    request: types::GenerationRequest,
) -> Result<Response, ApiError> {
    let principal = principal.as_ref().map(|Extension(p)| p);
    let id = format!("ollama-{}", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    let model = reply.model.clone();
    let submitted =
        exchange::submit(app, principal, Some(&model), &id, request, &observers).await?;
    answer(submitted, reply, stream, logprobs, observers, started).await
}

/// The whole reply as one object, or an NDJSON stream.
async fn answer(
    submitted: Submitted,
    reply: Reply,
    stream: bool,
    logprobs: bool,
    observers: Observers,
    started: Instant,
) -> Result<Response, ApiError> {
    if stream {
        let lines = ndjson_lines(submitted, reply, logprobs, observers, started);
        return Ok(ndjson(lines));
    }
    let out: GenerationOutput = submitted.collect().await?;
    observers.output(std::slice::from_ref(&out));
    let done = types::Completion {
        finish_reason: out.finish_reason,
        stop_index: out.stop_index,
        usage: out.usage,
        timings: out.timings,
    };
    let logprobs = logprobs.then_some(out.logprobs);
    Ok(Json(reply.done(
        &out.text,
        &out.tool_calls,
        logprobs,
        &done,
        started.elapsed(),
    ))
    .into_response())
}

/// An NDJSON body, one JSON value per line, as Ollama streams.
fn ndjson(lines: impl Stream<Item = Value> + Send + 'static) -> Response {
    let body = lines.map(|line| {
        let mut bytes = serde_json::to_vec(&line).expect("a JSON value serialises");
        bytes.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(bytes))
    });
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// A streamed generation as lines: one per text piece or tool call, then
/// the summary. A failure after the start is an `{"error": ...}` line.
/// Dropping the stream (client gone) drops the generation, which cancels it.
fn ndjson_lines(
    submitted: Submitted,
    reply: Reply,
    logprobs: bool,
    observers: Observers,
    started: Instant,
) -> impl Stream<Item = Value> {
    struct Streaming {
        generation: types::Generation,
        deadline: Option<Deadline>,
        reply: Reply,
        observers: Observers,
        pending: Option<Vec<types::TokenLogprob>>,
        calls: usize,
        started: Instant,
    }
    let state = Streaming {
        generation: submitted.generation,
        deadline: submitted.deadline,
        reply,
        observers,
        pending: logprobs.then(Vec::new),
        calls: 0,
        started,
    };
    let error = |e: ApiError| vec![e.to_json_in(crate::error::Dialect::Ollama)];
    stream::unfold(Some(state), move |state| async move {
        let mut s = state?;
        let next = match exchange::next_event(&mut s.generation, s.deadline).await {
            Ok(next) => next,
            Err(timed_out) => return Some((error(timed_out), None)),
        };
        let lines = match next {
            Some(GenerationEvent::Logprob(token)) => {
                if let Some(p) = &mut s.pending {
                    p.push(token);
                }
                Vec::new()
            }
            Some(GenerationEvent::Text(piece)) => {
                s.observers.piece(&piece);
                let tokens = s.pending.as_mut().map(std::mem::take);
                vec![s.reply.piece(&piece, tokens)]
            }
            Some(GenerationEvent::ToolCall(call)) => {
                s.observers.piece(&call.arguments);
                s.calls += 1;
                vec![s.reply.tool_call(s.calls - 1, &call)]
            }
            Some(GenerationEvent::Done(done)) => {
                s.observers.usage(&done.usage);
                let tokens = s.pending.take();
                let line = s.reply.done("", &[], tokens, &done, s.started.elapsed());
                return Some((vec![line], None));
            }
            Some(GenerationEvent::Failed(err)) => return Some((error(ApiError::from(err)), None)),
            None => return Some((error(ApiError::unavailable()), None)),
        };
        Some((lines, Some(s)))
    })
    .flat_map(stream::iter)
}

pub async fn embed(
    State(app): State<Arc<AppState>>,
    audit: Option<Extension<Arc<RequestAudit>>>,
    quota: Option<Extension<QuotaCharge>>,
    body: Result<Json<EmbedBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    if body.model.is_empty() {
        return Err(wire::model_required());
    }
    let keep = wire::requested_keep_alive(body.keep_alive.as_ref())?;
    let inputs = match body.input {
        wire::EmbedInput::One(text) => vec![text],
        wire::EmbedInput::Many(texts) => texts,
    };
    let request = EmbeddingRequest {
        // Ollama cuts an over-long input unless told not to.
        truncate: body.truncate.unwrap_or(true),
        dimensions: body.dimensions,
        ..EmbeddingRequest::new(inputs.into_iter().map(EmbedInput::Text).collect())
    };
    let started = Instant::now();
    let observers = Observers::new(audit, quota);
    let (_, out) = embeddings::run(&app, Some(&body.model), request, &observers).await?;
    apply_keep_alive(&app, &body.model, keep).await;
    Ok(Json(json!({
        "model": body.model,
        "embeddings": out.vectors,
        "total_duration": started.elapsed().as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": out.prompt_tokens,
    })))
}

/// The older route: one prompt, one vector.
pub async fn embeddings(
    State(app): State<Arc<AppState>>,
    audit: Option<Extension<Arc<RequestAudit>>>,
    quota: Option<Extension<QuotaCharge>>,
    body: Result<Json<EmbeddingsBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    if body.model.is_empty() {
        return Err(wire::model_required());
    }
    wire::keep_alive(body.keep_alive.as_ref())?;
    let request = EmbeddingRequest {
        truncate: true,
        ..EmbeddingRequest::new(vec![EmbedInput::Text(body.prompt)])
    };
    let observers = Observers::new(audit, quota);
    let (_, mut out) = embeddings::run(&app, Some(&body.model), request, &observers).await?;
    Ok(Json(
        json!({"embedding": out.vectors.pop().unwrap_or_default()}),
    ))
}

/// What is known about a served model: the file's description when the
/// server was given one, else its name alone.
fn served_info(served: &ServedModel) -> ModelInfo {
    served.info.clone().unwrap_or_else(|| ModelInfo {
        name: served.id.clone(),
        size: 0,
        sha256: None,
        modified: served.created,
        details: types::ModelDetails::default(),
    })
}

/// Every stored model, plus served ones the store does not hold (a file
/// given by path).
pub async fn tags(State(app): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let mut models = match &app.library {
        Some(library) => {
            let library = Arc::clone(library);
            blocking(move || library.list()).await?
        }
        None => Vec::new(),
    };
    for served in app.current_models().await {
        if !models.iter().any(|m| m.name == served.id) {
            models.push(served_info(&served));
        }
    }
    let entries: Vec<Value> = models.iter().map(reply::tag).collect();
    Ok(Json(json!({"models": entries})))
}

/// Loaded models. Models given to `hearth serve` stay loaded until it
/// stops, so they carry no expiry.
pub async fn ps(State(app): State<Arc<AppState>>) -> Json<Value> {
    let entries: Vec<Value> = app
        .models
        .all()
        .iter()
        .filter(|m| m.generator.is_loaded())
        .map(|m| reply::running(&served_info(m), m.generator.unloads_at()))
        .collect();
    Json(json!({"models": entries}))
}

pub async fn show(
    State(app): State<Arc<AppState>>,
    body: Result<Json<ModelBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let name = body.model()?.to_string();
    let info = match app.find(Some(&name)) {
        Ok(served) => served_info(&served),
        Err(_) => stored(&app, &name).await?,
    };
    let capabilities: &[&str] = if info.details.embedding_only {
        &["embedding"]
    } else {
        // Every chat model takes tools: a template that renders none gets
        // them described in its system prompt.
        &["completion", "tools"]
    };
    Ok(Json(reply::show(&info, capabilities)))
}

/// A stored model that is not being served, or Ollama's 404.
async fn stored(app: &AppState, name: &str) -> Result<ModelInfo, ApiError> {
    let library = app.library.clone().ok_or_else(|| not_found(name))?;
    let lookup = name.to_string();
    blocking(move || library.find(&lookup))
        .await?
        .ok_or_else(|| not_found(name))
}

fn not_found(name: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::invalid("model_not_found", format!("model '{name}' not found"))
    }
    .with_param("model")
}

/// Runs a blocking store call off the async workers; its failures
/// become API errors.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LibraryError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(library_error)
}

fn library_error(err: LibraryError) -> ApiError {
    match err {
        LibraryError::NotStored { name } => not_found(&name),
        LibraryError::NotInCatalog { name, known } => ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid(
                "model_not_found",
                format!("pull model manifest: `{name}` is not in the catalog (known: {known})"),
            )
        }
        .with_param("model"),
        LibraryError::Refused { reason } => {
            ApiError::invalid("invalid_request_error", reason).with_param("model")
        }
        LibraryError::Failed(detail) => ApiError::internal(&detail),
    }
}

/// `/api/delete`. A model loaded on demand is unloaded first; one given
/// to `hearth serve`, or one with requests running, stays (409).
pub async fn delete(
    State(app): State<Arc<AppState>>,
    body: Result<Json<ModelBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let name = untagged(body.model()?).to_string();
    if let Some(served) = app.models.served(&name) {
        let retiring = Arc::clone(&app);
        let id = served.id.clone();
        let retired = tokio::task::spawn_blocking(move || retiring.models.retire(&id))
            .await
            .map_err(|e| ApiError::internal(&e))?;
        if let Err(why) = retired {
            let message = match why {
                Retire::Pinned => format!(
                    "model '{}' was given to `hearth serve`; restart the server without it to delete it",
                    served.id
                ),
                Retire::Busy => format!(
                    "model '{}' is answering requests; delete it once they finish",
                    served.id
                ),
            };
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                ..ApiError::invalid("model_in_use", message)
            }
            .with_param("model"));
        }
    }
    let library = app.library.clone().ok_or_else(|| not_found(&name))?;
    blocking(move || library.remove(&name)).await?;
    Ok(StatusCode::OK.into_response())
}

/// Pull progress, sent to the client as it happens.
struct Forward {
    tx: mpsc::UnboundedSender<Value>,
    total: std::sync::atomic::AtomicU64,
    completed: std::sync::atomic::AtomicU64,
    /// The last fraction reported, in thousandths: lines go out when it
    /// moves, not for every chunk read.
    reported: std::sync::atomic::AtomicU64,
    what: std::sync::Mutex<String>,
}

impl Progress for Forward {
    fn start(&self, what: &str, total_bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.total.store(total_bytes, Relaxed);
        self.completed.store(0, Relaxed);
        self.reported.store(0, Relaxed);
        *self.what.lock().unwrap_or_else(|e| e.into_inner()) = what.to_string();
        let _ = self.tx.send(
            json!({"status": format!("pulling {what}"), "total": total_bytes, "completed": 0}),
        );
    }

    fn advance(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let done = self.completed.fetch_add(bytes, Relaxed) + bytes;
        let total = self.total.load(Relaxed).max(1);
        let permille = done.saturating_mul(1000) / total;
        if permille > self.reported.load(Relaxed) {
            self.reported.store(permille, Relaxed);
            let what = self.what.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let _ = self.tx.send(
                json!({"status": format!("pulling {what}"), "total": total, "completed": done}),
            );
        }
    }

    fn finish(&self) {}
}

/// `/api/pull`: fetches a catalog model into the store, streaming progress
/// as NDJSON (or, with `stream: false`, answering when done).
pub async fn pull(
    State(app): State<Arc<AppState>>,
    body: Result<Json<ModelBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let name = body.model()?.trim_end_matches(":latest").to_string();
    let library = app.library.clone().ok_or_else(|| {
        ApiError::unsupported("model", "Pulling on a server without a model store")
    })?;
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(json!({"status": "pulling manifest"}));
    let forward = Forward {
        tx: tx.clone(),
        total: Default::default(),
        completed: Default::default(),
        reported: Default::default(),
        what: Default::default(),
    };
    let pulling = tokio::task::spawn_blocking(move || library.pull(&name, &forward));
    if !body.stream.unwrap_or(true) {
        pulling
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(library_error)?;
        return Ok(Json(json!({"status": "success"})).into_response());
    }
    // The pull goes on if the client leaves: it ends in a complete model
    // or none, and a later pull finds it done.
    tokio::spawn(async move {
        let end = match pulling.await {
            Ok(Ok(_)) => json!({"status": "success"}),
            Ok(Err(err)) => library_error(err).to_json_in(crate::error::Dialect::Ollama),
            Err(e) => ApiError::internal(&e).to_json_in(crate::error::Dialect::Ollama),
        };
        let _ = tx.send(end);
    });
    let lines = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) });
    Ok(ndjson(lines))
}
