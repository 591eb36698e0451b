//! Every HTTP route, registered in this one place, so cross-cutting layers
//! (authentication, policy, audit, metrics) wrap all of them at once.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::wire::{ChatCompletionRequest, CompletionRequest};
use crate::{completion, models, AppState, ServerOptions};

pub fn router(state: Arc<AppState>, options: &ServerOptions) -> Router {
    Router::new()
        .route("/health", get(models::health))
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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::route_not_found(uri.path())
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
