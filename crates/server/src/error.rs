//! The one mapping from failures to HTTP status plus each API family's error body.
//!
//! Every failure is an [`ApiError`], answered in OpenAI's shape
//! (`{"error": {"message", "type", "param", "code"}}`) and reshaped on the
//! way out for routes of another family ([`Dialect`]), so client libraries
//! raise their usual exceptions whichever layer refused the request. 5xx
//! responses carry a generic message; the details go to the log only.

use axum::extract::rejection::JsonRejection;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use types::GenerateError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error`, `server_error`, ...
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

/// What a 401 asks for (RFC 6750).
const BEARER_CHALLENGE: &str = "Bearer realm=\"hearth\"";

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn unsupported(param: &'static str, what: &str) -> Self {
        Self::invalid("unsupported_parameter", format!("{what} is not supported")).with_param(param)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::not_found(
            "model_not_found",
            format!("The model `{model}` does not exist or is not served here"),
        )
        .with_param("model")
    }

    /// Something the request names does not exist (`code` says what).
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code,
            ..Self::invalid("", message)
        }
    }

    pub fn route_not_found(path: &str) -> Self {
        Self::not_found("not_found", format!("No route for {path}"))
    }

    pub fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            ..Self::invalid("", "This method is not allowed on this route")
        }
    }

    /// An authenticated principal whom the policies do not allow this.
    pub fn forbidden(action: &str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "permission_denied",
            ..Self::invalid(
                "",
                format!("Your credentials do not allow `{action}` on this resource"),
            )
        }
    }

    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "request_too_large",
            ..Self::invalid("", format!("The request body exceeds {limit} bytes"))
        }
    }

    /// A server-side failure: the caller sees a generic message, the log sees `detail`.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error while serving a request");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: "internal_error",
            message: "The server had an error while processing your request".into(),
            param: None,
            retry_after: None,
        }
    }

    pub fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: "unavailable",
            message: "The model is not available right now; try again shortly".into(),
            param: None,
            retry_after: None,
        }
    }

    /// The wait queue is full: 429 with `Retry-After`, which OpenAI clients honour.
    pub fn overloaded(waiting: u32, retry_after_secs: u32) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate_limit_error",
            code: "server_overloaded",
            message: format!(
                "The server is at capacity ({waiting} requests waiting); retry after {retry_after_secs} s"
            ),
            param: None,
            retry_after: Some(retry_after_secs),
        }
    }

    /// The request's own `timeout` passed before it finished.
    pub fn timed_out(timeout_ms: u64) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "timeout",
            ..Self::invalid(
                "",
                format!("The request did not finish within its timeout of {timeout_ms} ms"),
            )
        }
        .with_param("timeout")
    }

    /// The body alone, for errors that happen after a stream has started.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).expect("error body serialises")
    }

    fn body(&self) -> Body<'_> {
        Body {
            error: Detail {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        }
    }
}

/// The API family a route belongs to, which decides its error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    /// Ollama's `/api/*`: `{"error": "message"}`.
    Ollama,
}

impl Dialect {
    /// The family that owns `path`; OpenAI's unless another claims it.
    pub fn of_path(path: &str) -> Dialect {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Dialect::Anthropic
        } else if path.starts_with("/api/") {
            Dialect::Ollama
        } else {
            Dialect::OpenAi
        }
    }
}

impl ApiError {
    /// Anthropic's error `type` for this failure, by status as Anthropic
    /// assigns them.
    fn anthropic_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            408 | 504 => "timeout_error",
            503 | 529 => "overloaded_error",
            s if s >= 500 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The body in `dialect`'s shape, also what a stream sends when it
    /// fails after it started.
    pub fn to_json_in(&self, dialect: Dialect) -> serde_json::Value {
        match dialect {
            Dialect::OpenAi => self.to_json(),
            Dialect::Anthropic => serde_json::json!({
                "type": "error",
                "error": {"type": self.anthropic_type(), "message": self.message},
            }),
            Dialect::Ollama => serde_json::json!({"error": self.message}),
        }
    }
}

/// Rewrites error bodies for routes outside OpenAI's family, keeping the
/// status and headers (`Retry-After`, `WWW-Authenticate`, rate-limit
/// headers): every layer can answer with [`ApiError`] and the client still
/// sees its own API's shape.
pub(crate) async fn reshape(request: Request, next: Next) -> Response {
    let dialect = Dialect::of_path(request.uri().path());
    let response = next.run(request).await;
    if dialect == Dialect::OpenAi {
        return response;
    }
    let Some(err) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    let body = err.to_json_in(dialect).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(BEARER_CHALLENGE));
        }
        // For `reshape`, which answers other API families in their shape.
        response.extensions_mut().insert(self);
        response
    }
}

impl From<GenerateError> for ApiError {
    fn from(err: GenerateError) -> Self {
        match err {
            GenerateError::ContextOverflow { .. } => {
                ApiError::invalid("context_length_exceeded", err.to_string()).with_param("messages")
            }
            GenerateError::EmptyPrompt => ApiError::invalid("empty_prompt", err.to_string()),
            GenerateError::InvalidToken { .. } => {
                ApiError::invalid("invalid_token", err.to_string()).with_param("prompt")
            }
            GenerateError::InvalidSampling(ref e) => {
                ApiError::invalid("invalid_value", err.to_string()).with_param(e.field)
            }
            GenerateError::Template(_) => {
                ApiError::invalid("invalid_messages", err.to_string()).with_param("messages")
            }
            GenerateError::InvalidConstraint { field, message } => {
                ApiError::invalid("invalid_value", message).with_param(field)
            }
            GenerateError::Unavailable => ApiError::unavailable(),
            GenerateError::NotLoaded { retry_after_secs } => ApiError {
                message: format!(
                    "The model cannot be loaded right now; retry after {retry_after_secs} s"
                ),
                retry_after: Some(retry_after_secs),
                ..ApiError::unavailable()
            },
            GenerateError::QueueFull {
                waiting,
                retry_after_secs,
            } => ApiError::overloaded(waiting, retry_after_secs),
            GenerateError::Timeout { timeout_ms } => ApiError::timed_out(timeout_ms),
            GenerateError::Internal(detail) => ApiError::internal(&detail),
        }
    }
}

/// Every authentication failure is 401 with OpenAI's `invalid_api_key`
/// code, which client libraries turn into their authentication error. The
/// message says what was wrong, never what was sent.
impl From<auth::AuthError> for ApiError {
    fn from(err: auth::AuthError) -> Self {
        match err {
            auth::AuthError::Unavailable => ApiError::internal(&err),
            _ => Self {
                status: StatusCode::UNAUTHORIZED,
                code: "invalid_api_key",
                ..ApiError::invalid("", err.to_string())
            },
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let (code, message) = match &rejection {
            JsonRejection::JsonSyntaxError(_) => (
                "invalid_json",
                format!(
                    "The request body is not valid JSON: {}",
                    rejection.body_text()
                ),
            ),
            JsonRejection::JsonDataError(_) => ("invalid_request", rejection.body_text()),
            JsonRejection::MissingJsonContentType(_) => (
                "invalid_content_type",
                "Send the body as JSON with `Content-Type: application/json`".to_string(),
            ),
            _ => ("invalid_body", rejection.body_text()),
        };
        Self {
            // axum says 422 for well-formed JSON of the wrong shape; OpenAI says 400.
            status: if status == StatusCode::UNPROCESSABLE_ENTITY {
                StatusCode::BAD_REQUEST
            } else {
                status
            },
            ..ApiError::invalid(code, message)
        }
    }
}
