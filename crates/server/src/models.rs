//! Model listing and health: what this server serves, and whether it can.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

use crate::error::ApiError;
use crate::wire::{ModelList, ModelObject};
use crate::{AppState, ServedModel};

fn object(model: &ServedModel) -> ModelObject {
    ModelObject {
        id: model.id.clone(),
        object: "model",
        created: model.created,
        owned_by: "hearth",
        loaded: model.generator.is_loaded(),
    }
}

pub async fn list(State(app): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: app
            .current_models()
            .await
            .iter()
            .map(|m| object(m))
            .collect(),
    })
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    app.find(Some(&id)).map(|m| Json(object(&m)))
}

/// Liveness: 200 whenever the process can answer at all. Readiness is `/ready`.
pub async fn health(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let models: Vec<_> = app
        .models
        .all()
        .iter()
        .map(|m| serde_json::json!({"id": m.id, "ready": m.generator.is_ready()}))
        .collect();
    Json(serde_json::json!({"status": "ok", "models": models}))
}

/// Which model `/ready` asks about.
#[derive(Debug, serde::Deserialize)]
pub struct ReadyQuery {
    model: Option<String>,
}

/// Readiness: 200 once every served model (or, with `?model=NAME`, that
/// one) is loaded and its engine thread runs, 503 before that and again
/// while draining, so load balancers and orchestrators send traffic only
/// where it can be served. An unknown `model` is a 404.
pub async fn ready(
    State(app): State<Arc<AppState>>,
    Query(query): Query<ReadyQuery>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let loaded = match query.model.as_deref() {
        Some(name) => app.find(Some(name))?.generator.is_ready(),
        None => app.models.all().iter().all(|m| m.generator.is_ready()),
    };
    let (status, word) = if app.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if loaded {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading")
    };
    Ok((status, Json(serde_json::json!({"status": word}))))
}
