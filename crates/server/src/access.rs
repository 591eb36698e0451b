//! Authentication as one layer over a router part: every route in it, now
//! or added later, needs credentials once the server requires them.
//!
//! The check reads the key store (SQLite, by primary key) on the request's
//! own task: a few microseconds, cheaper than a hop to the blocking pool.

use std::sync::Arc;

use std::net::SocketAddr;

use auth::{
    AuthError, Authenticator, Credential, LivePolicies, Principal, Quotas, RequestContext, Resource,
};
use axum::body::Body;
use axum::extract::{ConnectInfo, RawPathParams, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::RequestPartsExt;
use axum::Router;

use crate::audit::{Auditor, RequestAudit};
use crate::error::ApiError;
use crate::jwks::JwksRefresher;
use crate::quota;
use crate::routes::{ApiRoute, ResourceFrom};
use crate::tls::TlsClient;
use crate::{Access, AppState};

/// Header Anthropic-style clients send their key in.
const X_API_KEY: &str = "x-api-key";

/// `router` with every route behind `authenticator`. Authenticated requests
/// carry their [`auth::Principal`] as an extension. With `access.jwks`, a
/// token signed by a key not yet cached triggers one fetch of its issuer's
/// keys and one more try; with `access.audit`, every refusal is recorded.
pub fn authenticated(
    router: Router,
    authenticator: &Arc<Authenticator>,
    access: &Access,
) -> Router {
    let layer = Arc::new(AuthLayer {
        authenticator: Arc::clone(authenticator),
        jwks: access.jwks.clone(),
        audit: access.audit.clone(),
    });
    router.layer(middleware::from_fn_with_state(layer, check))
}

struct AuthLayer {
    authenticator: Arc<Authenticator>,
    jwks: Option<Arc<JwksRefresher>>,
    audit: Option<Arc<Auditor>>,
}

async fn check(State(layer): State<Arc<AuthLayer>>, mut request: Request, next: Next) -> Response {
    let authenticator = &layer.authenticator;
    if !authenticator.required() {
        return next.run(request).await;
    }
    let headers = request.headers();
    let credential = Credential::from_headers(
        headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
        headers.get(X_API_KEY).map(|v| v.as_bytes()),
    );
    let mut principal = credential
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|c| authenticator.authenticate(c, auth::unix_now()));
    if let (Err(AuthError::UnknownSigningKey { issuer }), Some(jwks), Ok(c)) =
        (&principal, &layer.jwks, &credential)
    {
        if jwks.refresh_now(issuer).await {
            principal = authenticator.authenticate(c, auth::unix_now());
        }
    }
    match principal {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(err) => {
            tracing::info!(reason = %err, path = %request.uri().path(), "authentication failed");
            if let Some(auditor) = &layer.audit {
                auditor.log.record(audit::Event::AuthFailure {
                    reason: err.to_string(),
                    method: request.method().to_string(),
                    path: request.uri().path().to_string(),
                    source_ip: crate::audit::source_ip(&request),
                });
            }
            ApiError::from(err).into_response()
        }
    }
}

/// What one API route's admission needs.
pub(crate) struct Gate {
    pub app: Arc<AppState>,
    /// `None` lets every authenticated principal do everything.
    pub policies: Option<Arc<LivePolicies>>,
    /// `None` counts nothing.
    pub quotas: Option<Arc<Quotas>>,
    pub route: ApiRoute,
    pub max_body_bytes: usize,
}

/// Admits a request: asks the policies whether its principal may do the
/// route's action on its resource, then charges the principal's quotas
/// (a denied request costs nothing). Requests without a principal passed
/// an authentication layer that did not require one (no key exists yet).
pub(crate) async fn authorize(
    State(gate): State<Arc<Gate>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(principal) = request.extensions().get::<Principal>().cloned() else {
        return next.run(request).await;
    };
    let source_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (mut request, resource, reserve_tokens) = match gate.route.resource {
        ResourceFrom::Server => (request, Resource::Server, 0),
        ResourceFrom::PathModel => {
            let (mut parts, body) = request.into_parts();
            let name = match parts.extract::<RawPathParams>().await {
                Ok(params) => params
                    .iter()
                    .find(|(key, _)| *key == "name")
                    .map(|(_, value)| value.to_string())
                    .unwrap_or_default(),
                Err(rejection) => return rejection.into_response(),
            };
            let resource = Resource::Model {
                attrs: gate.app.model_attrs(&name),
                name,
            };
            (Request::from_parts(parts, body), resource, 0)
        }
        ResourceFrom::BodyModel => match body_model(&gate, request).await {
            Ok((request, resource, reserve)) => (
                request,
                resource,
                if gate.route.generates { reserve } else { 0 },
            ),
            Err(err) => return err.into_response(),
        },
    };
    let context = RequestContext {
        time: auth::unix_now(),
        source_ip,
        tls_client: request.extensions().get::<TlsClient>().map(|c| c.0.clone()),
    };
    if let Some(policies) = &gate.policies {
        let decision =
            policies
                .current()
                .decide(&principal, gate.route.action, &resource, &context);
        if let (Some(audit), Ok(d)) = (request.extensions().get::<Arc<RequestAudit>>(), &decision) {
            let model = match &resource {
                Resource::Model { name, .. } => Some(name.as_str()),
                Resource::Server => None,
            };
            audit.decided(model, d.allowed);
        }
        match decision {
            Ok(d) if d.allowed => {}
            Ok(d) => {
                tracing::info!(
                    principal = %principal.id,
                    action = gate.route.action.as_str(),
                    forbidden_by = ?d.reasons,
                    "request denied by policy"
                );
                return ApiError::forbidden(gate.route.action.as_str()).into_response();
            }
            Err(err) => return ApiError::internal(&err).into_response(),
        }
    }
    let Some(quotas) = gate
        .quotas
        .as_ref()
        .filter(|_| !principal.limits.is_unlimited())
    else {
        return next.run(request).await;
    };
    match quota::admit(quotas, &principal, reserve_tokens) {
        Ok((charge, remaining)) => {
            request.extensions_mut().insert(charge);
            let mut response = next.run(request).await;
            quota::headers(&remaining, response.headers_mut());
            response
        }
        Err(err) => err.into_response(),
    }
}

/// Tokens reserved for a request that sets no `max_tokens`: what a
/// generation may reach before the context ends it.
const UNBOUNDED_RESERVE: u64 = 4096;

/// The served model a JSON body names, by its canonical id (an alias must
/// not slip past a policy on the model), the most tokens it asks to
/// generate, and the request rebuilt around the body it read. A body that
/// is not JSON, or names no served model, goes on to the handler, which
/// answers 400 or 404 before anything runs.
async fn body_model(gate: &Gate, request: Request) -> Result<(Request, Resource, u64), ApiError> {
    #[derive(serde::Deserialize)]
    struct Named {
        model: Option<String>,
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, gate.max_body_bytes)
        .await
        .map_err(|_| ApiError::too_large(gate.max_body_bytes))?;
    if let Some(audit) = parts.extensions.get::<Arc<RequestAudit>>() {
        audit.prompt(&bytes);
    }
    // Reserve the most the request may generate: the larger of the two
    // fields (an endpoint may honour either), or, without one, a full
    // context's worth, so leaving `max_tokens` out cannot dodge a limit.
    let (named, reserve) = match serde_json::from_slice::<Named>(&bytes) {
        Ok(n) => (
            n.model,
            n.max_completion_tokens
                .max(n.max_tokens)
                .unwrap_or(UNBOUNDED_RESERVE),
        ),
        Err(_) => (None, UNBOUNDED_RESERVE),
    };
    let model = match gate.app.find(named.as_deref()) {
        Ok(served) => served.id.clone(),
        // Unknown model: the handler answers 404 without running anything,
        // and a name nobody serves reveals nothing.
        Err(_) => named.unwrap_or_default(),
    };
    let resource = Resource::Model {
        attrs: gate.app.model_attrs(&model),
        name: model,
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    Ok((request, resource, reserve))
}
