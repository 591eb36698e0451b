//! Hearth's HTTP APIs: OpenAI's and Anthropic's.
//!
//! Only this crate knows about HTTP and JSON. It turns API requests into
//! [`types::GenerationRequest`]s, hands them to a [`types::TextGenerator`],
//! and turns generations back into JSON or server-sent events. It does not
//! know what produces the text: the binary plugs the engine in.

mod access;
mod admin;
mod anthropic;
mod audit;
mod completion;
mod embeddings;
mod error;
mod exchange;
mod jwks;
mod logprobs;
mod metrics;
mod models;
mod ollama;
mod quota;
mod reply;
mod responses;
mod routes;
mod tls;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use types::{ModelInfo, ModelLibrary, SamplingParams, TextGenerator};

pub use access::authenticated;
pub use audit::Auditor;
pub use error::ApiError;
pub use jwks::JwksRefresher;
pub use metrics::Metrics;
pub use responses::{ResponseStore, ResponseStoreError, RETENTION as RESPONSE_RETENTION};
pub use routes::{
    api_router, compose, metrics_router, ops_router, probes_router, ApiRoute, ResourceFrom,
    API_ROUTES,
};
pub use tls::{serve_tls, Tls, TlsClient, TlsError, TlsFiles};

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
    metrics: Arc<Metrics>,
    /// Set once shutdown begins: not ready, and no new generations.
    draining: AtomicBool,
    /// Each model's attributes for policies (department, sensitivity...).
    model_attrs: HashMap<String, BTreeMap<String, String>>,
    /// What is known about each served model's file, by id.
    model_info: HashMap<String, ModelInfo>,
    /// The store, for the routes that list, pull and delete models.
    library: Option<Arc<dyn ModelLibrary>>,
    /// Stored Responses API responses (in memory unless given a file).
    responses: Arc<ResponseStore>,
}

impl AppState {
    /// `models` must not be empty; the first is used when a request names none.
    /// `metrics` should watch the same generators (see [`Metrics::new`]).
    pub fn new(models: Vec<ServedModel>, metrics: Arc<Metrics>) -> Self {
        assert!(!models.is_empty(), "a server needs at least one model");
        Self {
            models,
            defaults: SamplingParams::default(),
            metrics,
            draining: AtomicBool::new(false),
            model_attrs: HashMap::new(),
            model_info: HashMap::new(),
            library: None,
            responses: Arc::new(
                ResponseStore::in_memory(responses::RETENTION)
                    .expect("an in-memory SQLite database opens"),
            ),
        }
    }

    /// Where `store: true` responses are kept (`hearth serve`: a file
    /// beside the key store, so they survive restarts).
    pub fn with_response_store(mut self, store: ResponseStore) -> Self {
        self.responses = Arc::new(store);
        self
    }

    /// Describes a served model's file (Ollama's `/api/show`, `/api/ps`).
    pub fn with_model_info(mut self, id: &str, info: ModelInfo) -> Self {
        self.model_info.insert(id.to_string(), info);
        self
    }

    /// The store behind `/api/tags`, `/api/pull` and `/api/delete`.
    pub fn with_library(mut self, library: Arc<dyn ModelLibrary>) -> Self {
        self.library = Some(library);
        self
    }

    /// Attributes policies see on a model, by its id.
    pub fn with_model_attrs(mut self, id: &str, attrs: BTreeMap<String, String>) -> Self {
        self.model_attrs.insert(id.to_string(), attrs);
        self
    }

    fn model_attrs(&self, id: &str) -> BTreeMap<String, String> {
        self.model_attrs.get(id).cloned().unwrap_or_default()
    }

    /// A state whose metrics watch exactly `models`.
    pub fn with_metrics(models: Vec<ServedModel>) -> Self {
        let watched = models
            .iter()
            .map(|m| (m.id.clone(), Arc::clone(&m.generator)))
            .collect();
        Self::new(models, Metrics::new(watched))
    }

    /// Readiness turns false and new generations are refused; requests in
    /// flight go on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Seed for requests that bring none (`hearth serve --seed`).
    pub fn with_default_seed(mut self, seed: u32) -> Self {
        self.defaults.seed = Some(seed);
        self
    }

    /// The model a request names, or the default when it names none.
    fn find(&self, requested: Option<&str>) -> Result<&ServedModel, ApiError> {
        let Some(requested) = requested.filter(|n| !n.is_empty()) else {
            return Ok(&self.models[0]);
        };
        // Ollama's clients name an untagged model `name:latest`.
        let name = requested.strip_suffix(":latest").unwrap_or(requested);
        self.models
            .iter()
            .find(|m| m.id == name || m.aliases.iter().any(|a| a == name))
            .ok_or_else(|| ApiError::model_not_found(requested))
    }

    /// The model new work goes to: as [`AppState::find`], but refused
    /// once draining has begun.
    fn admit(&self, requested: Option<&str>) -> Result<&ServedModel, ApiError> {
        let served = self.find(requested)?;
        if self.is_draining() {
            return Err(ApiError::unavailable());
        }
        Ok(served)
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

/// Every route with its default composition: API and operations together,
/// nothing authenticated.
pub fn router(state: Arc<AppState>, options: &ServerOptions) -> Router {
    secured_router(state, options, &Access::open())
}

/// Who may reach which part of the router.
#[derive(Clone, Default)]
pub struct Access {
    /// Checks every API route (and `/metrics` unless open); `None` serves
    /// everyone.
    pub authenticator: Option<Arc<auth::Authenticator>>,
    /// `/metrics` without credentials.
    pub open_metrics: bool,
    /// Decide every authenticated API request; `None` lets every
    /// authenticated principal do everything.
    pub policies: Option<Arc<auth::LivePolicies>>,
    /// Fetches JWT issuers' keys when a token names one not yet cached.
    pub jwks: Option<Arc<JwksRefresher>>,
    /// Records every API request and failed authentication.
    pub audit: Option<Arc<Auditor>>,
    /// Counts each principal's requests and tokens against its limits.
    pub quotas: Option<Arc<auth::Quotas>>,
}

impl Access {
    /// No credentials anywhere.
    pub fn open() -> Access {
        Access {
            authenticator: None,
            open_metrics: true,
            policies: None,
            jwks: None,
            audit: None,
            quotas: None,
        }
    }
}

/// Every route, the API (and `/metrics` unless open) behind `access`'s
/// authenticator; `/health` and `/ready` always open.
pub fn secured_router(state: Arc<AppState>, options: &ServerOptions, access: &Access) -> Router {
    let api = api_router(Arc::clone(&state), options, access);
    let metrics = metrics_router(Arc::clone(&state));
    let probes = probes_router(Arc::clone(&state));
    let guarded = match &access.authenticator {
        None => api.merge(metrics),
        Some(a) if access.open_metrics => authenticated(api, a, access).merge(metrics),
        Some(a) => authenticated(api.merge(metrics), a, access),
    };
    compose(guarded, probes, state)
}

/// Serves `app` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Connection addresses feed policies' `context.source_ip`.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
