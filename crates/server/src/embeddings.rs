//! OpenAI's `POST /v1/embeddings`, and llama-server's `POST /tokenize` and
//! `POST /detokenize`, which clients of local servers use to count and
//! split text.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use types::{EmbedInput, EmbeddingRequest, GenerateError, Usage};

use crate::audit::RequestAudit;
use crate::error::ApiError;
use crate::exchange::Observers;
use crate::quota::QuotaCharge;
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct EmbeddingsBody {
    pub model: Option<String>,
    pub input: Input,
    /// `float` (the default) or `base64`: little-endian f32s, as OpenAI
    /// sends them (its Python client asks for base64 by default).
    pub encoding_format: Option<String>,
    pub dimensions: Option<u32>,
    // `user` is accepted and ignored: the audit log records the principal.
}

/// OpenAI accepts a text, texts, tokens, or lists of tokens.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl Input {
    fn into_domain(self) -> Vec<EmbedInput> {
        match self {
            Input::Text(t) => vec![EmbedInput::Text(t)],
            Input::Texts(v) => v.into_iter().map(EmbedInput::Text).collect(),
            Input::Tokens(t) => vec![EmbedInput::Tokens(t)],
            Input::TokenLists(v) => v.into_iter().map(EmbedInput::Tokens).collect(),
        }
    }
}

#[derive(Serialize)]
struct EmbeddingObject {
    object: &'static str,
    index: usize,
    embedding: Value,
}

/// An embedding failure names OpenAI's `input` field, not `messages`.
pub(crate) fn input_error(err: GenerateError) -> ApiError {
    let is_input = matches!(
        err,
        GenerateError::ContextOverflow { .. }
            | GenerateError::EmptyPrompt
            | GenerateError::InvalidToken { .. }
    );
    let api = ApiError::from(err);
    if is_input {
        api.with_param("input")
    } else {
        api
    }
}

/// Embeds `request` with the model named (`None`: the default), charging
/// its tokens to `observers`; answers the model's id and the vectors.
/// Shared by every family's embedding route.
pub(crate) async fn run(
    app: &AppState,
    model: Option<&str>,
    mut request: EmbeddingRequest,
    observers: &Observers,
) -> Result<(String, types::Embeddings), ApiError> {
    let served = app.admit(model)?;
    let id = format!("emb-{}", uuid::Uuid::new_v4().simple());
    observers.started(&id, &served.id);
    request.request_id = id;
    let generator = Arc::clone(&served.generator);
    // Tokenising many inputs is CPU work: keep it off the async workers.
    let pending = tokio::task::spawn_blocking(move || generator.embed(request))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(input_error)?;
    let out = pending.wait().await.map_err(input_error)?;
    observers.usage(&Usage {
        prompt_tokens: out.prompt_tokens,
        ..Usage::default()
    });
    Ok((served.id.clone(), out))
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(app): State<Arc<AppState>>,
    audit: Option<Extension<Arc<RequestAudit>>>,
    quota: Option<Extension<QuotaCharge>>,
    body: Result<Json<EmbeddingsBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let observers = Observers::new(audit, quota);
    let Json(body) = body?;
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_value",
                format!("`encoding_format` is `{other}`; use `float` or `base64`"),
            )
            .with_param("encoding_format"))
        }
    };
    let request = EmbeddingRequest {
        dimensions: body.dimensions,
        ..EmbeddingRequest::new(body.input.into_domain())
    };
    let (model, out) = run(&app, body.model.as_deref(), request, &observers).await?;
    let data: Vec<EmbeddingObject> = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(v)
            },
        })
        .collect();
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
    })))
}

#[derive(Debug, Deserialize)]
pub struct TokenizeBody {
    pub model: Option<String>,
    pub content: String,
    /// Add BOS where the model wants one and parse special tokens written
    /// out in the text, as a prompt is tokenised. llama-server's default.
    #[serde(default = "yes")]
    pub add_special: bool,
    /// Each token with its text.
    #[serde(default)]
    pub with_pieces: bool,
}

fn yes() -> bool {
    true
}

/// `POST /tokenize`: `{"tokens": [...]}`, or with pieces `[{"id", "piece"}]`.
pub async fn tokenize(
    State(app): State<Arc<AppState>>,
    body: Result<Json<TokenizeBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let generator = Arc::clone(&app.find(body.model.as_deref())?.generator);
    let (with_pieces, content, special) = (body.with_pieces, body.content, body.add_special);
    let tokens = tokio::task::spawn_blocking(move || {
        let tokens = generator.tokenize(&content, special)?;
        if !with_pieces {
            return Ok::<_, GenerateError>(serde_json::json!(tokens));
        }
        let pieces = tokens
            .iter()
            .map(|&id| Ok(serde_json::json!({"id": id, "piece": generator.detokenize(&[id])?})))
            .collect::<Result<Vec<_>, GenerateError>>()?;
        Ok(Value::Array(pieces))
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    Ok(Json(serde_json::json!({ "tokens": tokens })))
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeBody {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

/// `POST /detokenize`: `{"content": "..."}`.
pub async fn detokenize(
    State(app): State<Arc<AppState>>,
    body: Result<Json<DetokenizeBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let generator = Arc::clone(&app.find(body.model.as_deref())?.generator);
    let content = tokio::task::spawn_blocking(move || generator.detokenize(&body.tokens))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::from(e).with_param("tokens"))?;
    Ok(Json(serde_json::json!({ "content": content })))
}
