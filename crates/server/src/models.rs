//! Model listing and health: what this server serves, and whether it can.

use std::sync::Arc;

use axum::extract::{Path, State};
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
    }
}

pub async fn list(State(app): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: app.models.iter().map(object).collect(),
    })
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    app.find(Some(&id)).map(|m| Json(object(m)))
}

/// 200 while every served model can take requests, 503 otherwise, so load
/// balancers and orchestrators route around a broken instance.
pub async fn health(State(app): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    let models: Vec<_> = app
        .models
        .iter()
        .map(|m| serde_json::json!({"id": m.id, "ready": m.generator.is_ready()}))
        .collect();
    let ready = app.models.iter().all(|m| m.generator.is_ready());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ok" } else { "unavailable" },
        "models": models,
    });
    (status, Json(body))
}
