//! Every HTTP route, registered in this one place, in two parts the binary can
//! wrap separately: the API (generation, models), which later layers
//! authenticate, and operations (health, readiness, metrics) for probes and
//! scrapers.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::wire::{ChatCompletionRequest, CompletionRequest};
use crate::{completion, metrics, models, AppState, ServerOptions};

/// The OpenAI-compatible API.
pub fn api_router(state: Arc<AppState>, options: &ServerOptions) -> Router {
    Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::get))
        .route(
            "/v1/chat/completions",
            post(completion::complete::<ChatCompletionRequest>),
        )
        .route(
            "/v1/completions",
            post(completion::complete::<CompletionRequest>),
        )
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(state)
}

/// Liveness, readiness and metrics.
pub fn ops_router(state: Arc<AppState>) -> Router {
    probes_router(Arc::clone(&state)).merge(metrics_router(state))
}

/// Liveness and readiness: always open, so orchestrators need no secret.
pub fn probes_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(models::health))
        .route("/ready", get(models::ready))
        .with_state(state)
}

/// The Prometheus exposition, which the binary may put behind credentials.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::exposition))
        .with_state(state)
}

/// Joins the parts, answers unknown routes and methods in OpenAI's error
/// shape, counts every response by status and traces every request.
pub fn compose(api: Router, ops: Router, state: Arc<AppState>) -> Router {
    api.merge(ops)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state,
            metrics::count_responses,
        ))
        .layer(TraceLayer::new_for_http())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::route_not_found(uri.path())
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
