//! Puts every API request into the audit log: one `api_request` entry,
//! written when the last part of the request lets go of its record (the
//! handler, a streaming body, the middleware), so a request is recorded
//! exactly once whether it finished, failed, was denied or was dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use audit::{ApiRequest, AuditLog, Event};
use auth::Principal;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::routes::ApiRoute;
use crate::tls::TlsClient;

/// The log and whether prompt and response texts go into it.
pub struct Auditor {
    pub log: Arc<AuditLog>,
    pub record_text: bool,
}

/// What is known so far about one request; recorded on drop.
pub(crate) struct RequestAudit {
    log: Arc<AuditLog>,
    record_text: bool,
    fields: Mutex<Fields>,
}

/// The entry as known so far, plus the running hash of the answer.
struct Fields {
    entry: ApiRequest,
    response: Option<Sha256>,
}

impl RequestAudit {
    fn with<R>(&self, f: impl FnOnce(&mut Fields) -> R) -> R {
        f(&mut self.fields.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The policy decision and the model it was about.
    pub fn decided(&self, model: Option<&str>, allowed: bool) {
        self.with(|f| {
            f.entry.model = model.map(str::to_string);
            f.entry.decision = (if allowed { "allow" } else { "deny" }).to_string();
        });
    }

    /// The request body, hashed (and kept, if configured).
    pub fn prompt(&self, body: &[u8]) {
        let text = self
            .record_text
            .then(|| String::from_utf8_lossy(body).into_owned());
        self.with(|f| {
            f.entry.prompt_sha256 = Some(hex::encode(Sha256::digest(body)));
            f.entry.prompt = text;
        });
    }

    pub fn request_id(&self, id: &str) {
        self.with(|f| f.entry.request_id = id.to_string());
    }

    /// The served model's canonical id, when the handler resolved it.
    pub fn model(&self, id: &str) {
        self.with(|f| f.entry.model = Some(id.to_string()));
    }

    /// A piece of generated text, in order.
    pub fn response_piece(&self, piece: &str) {
        let record_text = self.record_text;
        self.with(|f| {
            f.response.get_or_insert_with(Sha256::new).update(piece);
            if record_text {
                f.entry
                    .response
                    .get_or_insert_with(String::new)
                    .push_str(piece);
            }
        });
    }

    pub fn usage(&self, prompt_tokens: u32, completion_tokens: u32) {
        self.with(|f| {
            f.entry.prompt_tokens = prompt_tokens.into();
            f.entry.completion_tokens = completion_tokens.into();
        });
    }
}

impl Drop for RequestAudit {
    fn drop(&mut self) {
        let f = self.fields.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut entry = std::mem::take(&mut f.entry);
        entry.response_sha256 = f.response.take().map(|h| hex::encode(h.finalize()));
        self.log.record(Event::ApiRequest(entry));
    }
}

/// Middleware over the API routes, inside authentication: opens the
/// request's record, lets the route's policy check and handler fill it, and
/// notes the status.
pub(crate) async fn record(
    State((auditor, route)): State<(Arc<Auditor>, ApiRoute)>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = request.extensions().get::<Principal>();
    let entry = ApiRequest {
        request_id: uuid::Uuid::new_v4().simple().to_string(),
        principal: principal.map_or_else(|| "anonymous".to_string(), |p| p.id.clone()),
        issuer: principal.and_then(|p| p.issuer.clone()),
        action: route.action.as_str().to_string(),
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        // Without policies, every authenticated request is allowed.
        decision: "allow".to_string(),
        source_ip: source_ip(&request),
        tls_client: request.extensions().get::<TlsClient>().map(|c| c.0.clone()),
        ..ApiRequest::default()
    };
    let audit = Arc::new(RequestAudit {
        log: Arc::clone(&auditor.log),
        record_text: auditor.record_text,
        fields: Mutex::new(Fields {
            entry,
            response: None,
        }),
    });
    request.extensions_mut().insert(Arc::clone(&audit));
    let response = next.run(request).await;
    audit.with(|f| f.entry.status = response.status().as_u16());
    response
}

pub(crate) fn source_ip(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}
