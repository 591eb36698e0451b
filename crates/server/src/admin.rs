//! The admin API: key management (`manage_keys`), reading the audit log
//! (`read_audit`) and moving a served model to its newly stored version
//! (`admin`), with its own wire types. Which principals may call it is
//! the policies' decision, made before these handlers run (by default only
//! the `admin` role); an anonymous caller never gets here with an answer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use auth::{Authenticator, KeyInfo, Limits, NewKey, Principal, StoreError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use types::Priority;

use crate::audit::Auditor;
use crate::error::ApiError;

/// What the admin handlers work on, when the server has it.
#[derive(Clone, Default)]
pub(crate) struct Admin {
    pub authenticator: Option<Arc<Authenticator>>,
    pub audit: Option<Arc<Auditor>>,
}

/// Entries `/admin/audit` returns when the request sets no limit, and the
/// most it may ask for.
const DEFAULT_AUDIT_LIMIT: usize = 1000;
const MAX_AUDIT_LIMIT: usize = 100_000;

/// The admin API acts only for an authenticated principal: on a server
/// without credentials there is nobody to hold responsible.
fn caller(principal: Option<Extension<Principal>>) -> Result<Principal, ApiError> {
    principal
        .map(|Extension(p)| p)
        .ok_or_else(|| ApiError::forbidden("admin"))
}

fn keys(admin: &Admin) -> Result<&Authenticator, ApiError> {
    admin
        .authenticator
        .as_deref()
        .ok_or_else(|| ApiError::forbidden("manage_keys"))
}

fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::NoSuchKey(id) => {
            ApiError::not_found("key_not_found", format!("No API key has id `{id}`"))
        }
        StoreError::Invalid { field, reason } => {
            ApiError::invalid("invalid_value", format!("Invalid {field}: {reason}"))
        }
        other => ApiError::internal(&other),
    }
}

pub(crate) async fn list_keys(
    Extension(admin): Extension<Admin>,
    principal: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    caller(principal)?;
    let list = keys(&admin)?.keys().list().map_err(store_error)?;
    Ok(Json(json!({"object": "list", "data": list})).into_response())
}

/// `POST /admin/keys`, shaped like `hearth keys create`'s flags.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    name: String,
    #[serde(default)]
    roles: Option<BTreeSet<String>>,
    #[serde(default)]
    attrs: BTreeMap<String, String>,
    priority: Option<String>,
    /// A lifetime such as `90d` or `12h`.
    expires_in: Option<String>,
    #[serde(default)]
    limits: Limits,
}

pub(crate) async fn create_key(
    Extension(admin): Extension<Admin>,
    principal: Option<Extension<Principal>>,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    caller(principal)?;
    let Json(req) = body?;
    let now = auth::unix_now();
    let priority = req
        .priority
        .as_deref()
        .map(|p| {
            Priority::parse(p).ok_or_else(|| {
                ApiError::invalid("invalid_value", "priority must be `interactive` or `batch`")
                    .with_param("priority")
            })
        })
        .transpose()?;
    let expires_at = req
        .expires_in
        .as_deref()
        .map(|e| {
            humantime::parse_duration(e)
                .map(|d| now.saturating_add(d.as_secs()))
                .map_err(|_| {
                    ApiError::invalid(
                        "invalid_value",
                        "expires_in must be a duration like 90d or 12h",
                    )
                    .with_param("expires_in")
                })
        })
        .transpose()?;
    let new = NewKey {
        name: req.name,
        // As `hearth keys create`: the default policies let `user` use models.
        roles: req
            .roles
            .unwrap_or_else(|| BTreeSet::from(["user".to_string()])),
        attrs: req.attrs,
        priority,
        expires_at,
        limits: req.limits,
    };
    let (info, secret) = keys(&admin)?
        .keys()
        .create(&new, now)
        .map_err(store_error)?;
    if let Some(a) = &admin.audit {
        a.log.record(audit::Event::KeyCreated {
            key_id: info.id.clone(),
            name: info.name.clone(),
            roles: info.roles.iter().cloned().collect(),
        });
    }
    let mut body = serde_json::to_value(&info).map_err(|e| ApiError::internal(&e))?;
    // Shown once, here; only its hash is kept.
    body["key"] = secret.into();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) async fn revoke_key(
    Extension(admin): Extension<Admin>,
    principal: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    caller(principal)?;
    // Ids are hex; anything with `_` may be a whole key pasted by mistake,
    // and must not come back in the answer.
    if id.trim_start_matches(auth::KEY_PREFIX).contains('_') {
        return Err(ApiError::invalid(
            "invalid_value",
            "Give the key's id (as listed), not the key itself",
        ));
    }
    let info = keys(&admin)?
        .keys()
        .revoke(&id, auth::unix_now())
        .map_err(store_error)?;
    if let Some(a) = &admin.audit {
        a.log.record(audit::Event::KeyRevoked {
            key_id: info.id.clone(),
        });
    }
    Ok(Json(info))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// A time (`2026-11-01T00:00:00Z`) or an age (`24h`).
    since: Option<String>,
    /// Only entries with a higher sequence number: page on from the last
    /// `seq` seen.
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /admin/audit`: entries as JSON lines, exactly as written, so a
/// reader can check their hashes.
pub(crate) async fn read_audit(
    Extension(admin): Extension<Admin>,
    principal: Option<Extension<Principal>>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller(principal)?;
    let Query(q) = query.map_err(|e| ApiError::invalid("invalid_value", e.body_text()))?;
    let auditor = admin.audit.clone().ok_or_else(|| {
        ApiError::not_found(
            "audit_disabled",
            "The audit log is turned off on this server",
        )
    })?;
    let since = q
        .since
        .as_deref()
        .map(|s| {
            audit::parse_since(s, SystemTime::now()).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_value",
                    "since must be a time like 2026-11-01T00:00:00Z or an age like 24h",
                )
                .with_param("since")
            })
        })
        .transpose()?;
    let query = audit::Query {
        since,
        after_seq: q.after_seq,
        limit: Some(q.limit.unwrap_or(DEFAULT_AUDIT_LIMIT).min(MAX_AUDIT_LIMIT)),
    };
    // Entries recorded just before this request should be readable by it.
    let lines = tokio::task::spawn_blocking(move || {
        auditor.log.sync();
        let mut out = Vec::new();
        audit::export(auditor.log.dir(), &query, &mut out).map(|_| out)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))?;
    Ok(([(CONTENT_TYPE, "application/x-ndjson")], lines).into_response())
}

/// `POST /admin/models/{name}/reload`: serve the version of the model
/// stored now. New requests go to it at once; requests already running
/// finish on the version they started on.
pub(crate) async fn reload_model(
    axum::extract::State(app): axum::extract::State<Arc<crate::AppState>>,
    Path(name): Path<String>,
    principal: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    caller(principal)?;
    let asked = name.clone();
    let reloaded = tokio::task::spawn_blocking(move || app.reload_model(&asked, false))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let body = match reloaded {
        crate::Reload::NotServed => return Err(ApiError::model_not_found(&name)),
        crate::Reload::Unchanged { digest } => {
            json!({"model": name, "status": "unchanged", "sha256": digest})
        }
        crate::Reload::Swapped { from, to } => {
            json!({"model": name, "status": "swapped", "from": from, "to": to})
        }
        crate::Reload::Failed { reason } => {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                code: "reload_failed",
                ..ApiError::invalid(
                    "",
                    format!("`{name}` stays on the version it serves: {reason}"),
                )
            })
        }
    };
    Ok(Json(body).into_response())
}
