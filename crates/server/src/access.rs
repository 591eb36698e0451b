//! Authentication as one layer over a router part: every route in it, now
//! or added later, needs credentials once the server requires them.
//!
//! The check reads the key store (SQLite, by primary key) on the request's
//! own task: a few microseconds, cheaper than a hop to the blocking pool.

use std::sync::Arc;

use auth::{Authenticator, Credential};
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::error::ApiError;

/// Header Anthropic-style clients send their key in.
const X_API_KEY: &str = "x-api-key";

/// `router` with every route behind `authenticator`. Authenticated requests
/// carry their [`auth::Principal`] as an extension.
pub fn authenticated(router: Router, authenticator: Arc<Authenticator>) -> Router {
    router.layer(middleware::from_fn_with_state(authenticator, check))
}

async fn check(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !authenticator.required() {
        return next.run(request).await;
    }
    let headers = request.headers();
    let credential = Credential::from_headers(
        headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
        headers.get(X_API_KEY).map(|v| v.as_bytes()),
    );
    let principal = credential.and_then(|c| authenticator.authenticate(&c, auth::unix_now()));
    match principal {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(err) => {
            tracing::info!(reason = %err, path = %request.uri().path(), "authentication failed");
            ApiError::from(err).into_response()
        }
    }
}
