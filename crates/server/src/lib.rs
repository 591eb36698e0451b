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
mod peer;
mod quota;
mod reply;
mod responses;
mod roster;
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
use types::{ModelLibrary, SamplingParams, SharedModels};

pub use access::authenticated;
pub use audit::Auditor;
pub use error::ApiError;
pub use jwks::JwksRefresher;
pub use metrics::Metrics;
pub use responses::{ResponseStore, ResponseStoreError, RETENTION as RESPONSE_RETENTION};
pub use roster::{ModelDirectory, Reload, Retire, ServedModel};
pub use routes::{
    api_router, compose, metrics_router, ops_router, probes_router, ApiRoute, ResourceFrom,
    API_ROUTES,
};
pub use tls::{serve_tls, Tls, TlsClient, TlsError, TlsFiles};

/// Shared state of all handlers.
pub struct AppState {
    models: roster::Roster,
    /// What a request gets for every sampling field it leaves out.
    defaults: SamplingParams,
    metrics: Arc<Metrics>,
    /// Set once shutdown begins: not ready, and no new generations.
    draining: AtomicBool,
    /// Each model's attributes for policies (department, sensitivity...).
    model_attrs: HashMap<String, BTreeMap<String, String>>,
    /// The store, for the routes that list, pull and delete models.
    library: Option<Arc<dyn ModelLibrary>>,
    /// Stored Responses API responses (in memory unless given a file).
    responses: Arc<ResponseStore>,
    /// What other nodes may copy (`hearth serve --share`); `None` shares
    /// nothing.
    shared: Option<Arc<dyn SharedModels>>,
}

impl AppState {
    /// `models` must not be empty; the first is used when a request names none.
    /// `metrics` should watch the same generators (see [`Metrics::new`]).
    pub fn new(models: Vec<ServedModel>, metrics: Arc<Metrics>) -> Self {
        assert!(!models.is_empty(), "a server needs at least one model");
        Self {
            models: roster::Roster::new(models, Arc::clone(&metrics)),
            defaults: SamplingParams::default(),
            metrics,
            draining: AtomicBool::new(false),
            model_attrs: HashMap::new(),
            library: None,
            responses: Arc::new(
                ResponseStore::in_memory(responses::RETENTION)
                    .expect("an in-memory SQLite database opens"),
            ),
            shared: None,
        }
    }

    /// Where `store: true` responses are kept (`hearth serve`: a file
    /// beside the key store, so they survive restarts).
    pub fn with_response_store(mut self, store: ResponseStore) -> Self {
        self.responses = Arc::new(store);
        self
    }

    /// Serves models added to the store while the server runs, and lets
    /// `/api/delete` retire served ones.
    pub fn with_directory(mut self, directory: Arc<dyn ModelDirectory>) -> Self {
        self.models.set_directory(directory);
        self
    }

    /// The store behind `/api/tags`, `/api/pull` and `/api/delete`.
    pub fn with_library(mut self, library: Arc<dyn ModelLibrary>) -> Self {
        self.library = Some(library);
        self
    }

    /// Lends stored models to other nodes over the peer routes.
    pub fn with_shared(mut self, shared: Arc<dyn SharedModels>) -> Self {
        self.shared = Some(shared);
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

    /// Serves the stored version of model `name` if it changed (see
    /// [`ModelDirectory::reload`]). Blocks: it may load a model.
    pub fn reload_model(&self, name: &str, automatic: bool) -> Reload {
        self.models.reload(untagged(name), automatic)
    }

    /// The ids of the models served now.
    pub fn model_ids(&self) -> Vec<String> {
        self.models.all().iter().map(|m| m.id.clone()).collect()
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
    /// A stored model the server does not serve yet (pulled since it
    /// started) is served from now on.
    fn find(&self, requested: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
        let Some(requested) = requested.filter(|n| !n.is_empty()) else {
            return self
                .models
                .default_model()
                .ok_or_else(|| ApiError::model_not_found(""));
        };
        self.models
            .find(untagged(requested))
            .ok_or_else(|| ApiError::model_not_found(requested))
    }

    /// Every model served now, after adding the ones stored since the
    /// last look and dropping deleted ones.
    async fn current_models(self: &Arc<Self>) -> Vec<Arc<ServedModel>> {
        let app = Arc::clone(self);
        // The directory reads the store: off the async workers.
        let _ = tokio::task::spawn_blocking(move || app.models.refresh()).await;
        self.models.all()
    }

    /// The model new work goes to: as [`AppState::find`], but refused
    /// once draining has begun.
    fn admit(&self, requested: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
        let served = self.find(requested)?;
        if self.is_draining() {
            return Err(ApiError::unavailable());
        }
        Ok(served)
    }
}

/// Ollama's clients name an untagged model `name:latest`.
fn untagged(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
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
