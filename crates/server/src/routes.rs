//! Every HTTP route, registered in this one place, in two parts the binary can
//! wrap separately: the API (generation, models), which later layers
//! authenticate, and operations (health, readiness, metrics) for probes and
//! scrapers.

use std::sync::Arc;

use auth::Action;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::middleware;
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Extension, Router};
use tower_http::trace::TraceLayer;

use crate::audit;
use crate::error::ApiError;
use crate::wire::{ChatCompletionRequest, CompletionRequest};
use crate::{
    access, admin, anthropic, completion, embeddings, metrics, models, ollama, peer, responses,
    Access, AppState, ServerOptions,
};

/// Where an API route's resource comes from, for policy decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceFrom {
    /// The server as a whole.
    Server,
    /// The model the JSON body names (the default model when it names none).
    BodyModel,
    /// The model the path's `{name}` names.
    PathModel,
}

/// One API route: what it is and what it asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub action: Action,
    pub resource: ResourceFrom,
    /// Whether it generates tokens, so quotas reserve what it may generate.
    pub generates: bool,
}

/// Every API route. The API router is built from this table alone, so no
/// route exists without an action for the policies to decide on, and tests
/// enumerate it.
pub const API_ROUTES: &[ApiRoute] = &[
    ApiRoute {
        method: "GET",
        path: "/v1/models",
        action: Action::ListModels,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "GET",
        path: "/v1/models/{id}",
        action: Action::ListModels,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/v1/chat/completions",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: true,
    },
    ApiRoute {
        method: "POST",
        path: "/v1/completions",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: true,
    },
    ApiRoute {
        method: "GET",
        path: "/admin/keys",
        action: Action::ManageKeys,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/admin/keys",
        action: Action::ManageKeys,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "DELETE",
        path: "/admin/keys/{id}",
        action: Action::ManageKeys,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/admin/models/{name}/reload",
        action: Action::Admin,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "GET",
        path: "/admin/audit",
        action: Action::ReadAudit,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/v1/messages",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: true,
    },
    ApiRoute {
        method: "POST",
        path: "/v1/messages/count_tokens",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/v1/embeddings",
        action: Action::Embed,
        resource: ResourceFrom::BodyModel,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/tokenize",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/detokenize",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/v1/responses",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: true,
    },
    ApiRoute {
        method: "GET",
        path: "/v1/responses/{id}",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: false,
    },
    ApiRoute {
        method: "DELETE",
        path: "/v1/responses/{id}",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/api/chat",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: true,
    },
    ApiRoute {
        method: "POST",
        path: "/api/generate",
        action: Action::Predict,
        resource: ResourceFrom::BodyModel,
        generates: true,
    },
    ApiRoute {
        method: "POST",
        path: "/api/embed",
        action: Action::Embed,
        resource: ResourceFrom::BodyModel,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/api/embeddings",
        action: Action::Embed,
        resource: ResourceFrom::BodyModel,
        generates: false,
    },
    ApiRoute {
        method: "GET",
        path: "/api/tags",
        action: Action::ListModels,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "GET",
        path: "/api/ps",
        action: Action::ListModels,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/api/show",
        action: Action::ListModels,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "GET",
        path: "/api/version",
        action: Action::ListModels,
        resource: ResourceFrom::Server,
        generates: false,
    },
    ApiRoute {
        method: "POST",
        path: "/api/pull",
        action: Action::Pull,
        resource: ResourceFrom::BodyModel,
        generates: false,
    },
    ApiRoute {
        method: "DELETE",
        path: "/api/delete",
        action: Action::DeleteModel,
        resource: ResourceFrom::BodyModel,
        generates: false,
    },
    ApiRoute {
        method: "GET",
        path: "/peer/v1/models/{name}",
        action: Action::Replicate,
        resource: ResourceFrom::PathModel,
        generates: false,
    },
    ApiRoute {
        method: "GET",
        path: "/peer/v1/models/{name}/files/{file}",
        action: Action::Replicate,
        resource: ResourceFrom::PathModel,
        generates: false,
    },
];

/// The handler behind each row of [`API_ROUTES`].
fn handler(route: &ApiRoute) -> MethodRouter<Arc<AppState>> {
    match (route.method, route.path) {
        ("GET", "/v1/models") => get(models::list),
        ("GET", "/v1/models/{id}") => get(models::get),
        ("POST", "/v1/chat/completions") => post(completion::complete::<ChatCompletionRequest>),
        ("POST", "/v1/completions") => post(completion::complete::<CompletionRequest>),
        ("GET", "/admin/keys") => get(admin::list_keys),
        ("POST", "/admin/keys") => post(admin::create_key),
        ("DELETE", "/admin/keys/{id}") => delete(admin::revoke_key),
        ("POST", "/admin/models/{name}/reload") => post(admin::reload_model),
        ("GET", "/admin/audit") => get(admin::read_audit),
        ("POST", "/v1/messages") => post(anthropic::messages),
        ("POST", "/v1/messages/count_tokens") => post(anthropic::count_tokens),
        ("POST", "/v1/embeddings") => post(embeddings::embeddings),
        ("POST", "/tokenize") => post(embeddings::tokenize),
        ("POST", "/detokenize") => post(embeddings::detokenize),
        ("POST", "/v1/responses") => post(responses::create),
        ("GET", "/v1/responses/{id}") => get(responses::get),
        ("DELETE", "/v1/responses/{id}") => delete(responses::delete),
        ("POST", "/api/chat") => post(ollama::chat),
        ("POST", "/api/generate") => post(ollama::generate),
        ("POST", "/api/embed") => post(ollama::embed),
        ("POST", "/api/embeddings") => post(ollama::embeddings),
        ("GET", "/api/tags") => get(ollama::tags),
        ("GET", "/api/ps") => get(ollama::ps),
        ("POST", "/api/show") => post(ollama::show),
        ("GET", "/api/version") => get(ollama::version),
        ("POST", "/api/pull") => post(ollama::pull),
        ("DELETE", "/api/delete") => delete(ollama::delete),
        ("GET", "/peer/v1/models/{name}") => get(peer::manifest),
        ("GET", "/peer/v1/models/{name}/files/{file}") => get(peer::file),
        (method, path) => unreachable!("API_ROUTES names {method} {path} without a handler"),
    }
}

/// The OpenAI-compatible API. With `access.policies`, every request that
/// carries an authenticated principal asks them first, then (with
/// `access.quotas`) is charged to its principal; with `access.audit`, every
/// request is recorded. Authentication itself is a layer on top
/// ([`crate::authenticated`]).
pub fn api_router(state: Arc<AppState>, options: &ServerOptions, access: &Access) -> Router {
    let mut router = Router::new();
    for route in API_ROUTES {
        let mut method_router = handler(route);
        if access.policies.is_some() || access.quotas.is_some() {
            let gate = Arc::new(access::Gate {
                app: Arc::clone(&state),
                policies: access.policies.clone(),
                quotas: access.quotas.clone(),
                route: *route,
                max_body_bytes: options.max_body_bytes,
            });
            method_router =
                method_router.route_layer(middleware::from_fn_with_state(gate, access::authorize));
        }
        // Outside the policy check, so denials are recorded too.
        if let Some(auditor) = &access.audit {
            method_router = method_router.route_layer(middleware::from_fn_with_state(
                (Arc::clone(auditor), *route),
                audit::record,
            ));
        }
        router = router.route(route.path, method_router);
    }
    let admin = admin::Admin {
        authenticator: access.authenticator.clone(),
        audit: access.audit.clone(),
    };
    router
        .layer(Extension(admin))
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
        .layer(middleware::from_fn(crate::error::reshape))
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
