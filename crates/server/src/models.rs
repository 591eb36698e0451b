//! Model listing and health: what this server serves, and whether it can.

use std::sync::Arc;

use axum::extract::{Path, State};
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

pub async fn health(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "models": app.models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
    }))
}
