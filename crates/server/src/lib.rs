//! Hearth's OpenAI-compatible HTTP API.
//!
//! Only this crate knows about HTTP and JSON. It turns OpenAI requests into
//! [`types::GenerationRequest`]s, hands them to a [`types::TextGenerator`],
//! and turns generations back into JSON or server-sent events. It does not
//! know what produces the text: the binary plugs the engine in.

mod completion;
mod error;
mod models;
mod reply;
mod routes;
mod wire;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use types::{SamplingParams, TextGenerator};

pub use error::ApiError;
pub use routes::router;

/// One model this server answers for.
pub struct ServedModel {
    /// The name clients put in `model`, and `/v1/models` lists.
    pub id: String,
    /// Other names accepted for it (catalog aliases).
    pub aliases: Vec<String>,
    /// Unix time the model was loaded.
    pub created: u64,
    pub generator: Arc<dyn TextGenerator>,
}

/// Shared state of all handlers.
pub struct AppState {
    models: Vec<ServedModel>,
    /// What a request gets for every sampling field it leaves out.
    defaults: SamplingParams,
}

impl AppState {
    /// `models` must not be empty; the first is used when a request names none.
    pub fn new(models: Vec<ServedModel>) -> Self {
        assert!(!models.is_empty(), "a server needs at least one model");
        Self {
            models,
            defaults: SamplingParams::default(),
        }
    }

    /// Seed for requests that bring none (`hearth serve --seed`).
    pub fn with_default_seed(mut self, seed: u32) -> Self {
        self.defaults.seed = Some(seed);
        self
    }

    /// The model a request names, or the default when it names none.
    fn find(&self, requested: Option<&str>) -> Result<&ServedModel, ApiError> {
        let Some(name) = requested.filter(|n| !n.is_empty()) else {
            return Ok(&self.models[0]);
        };
        self.models
            .iter()
            .find(|m| m.id == name || m.aliases.iter().any(|a| a == name))
            .ok_or_else(|| ApiError::model_not_found(name))
    }
}

/// HTTP-level limits.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
        }
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(Arc::new(state), options);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
