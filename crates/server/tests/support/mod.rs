//! Shared by the server's HTTP tests: a server over the real engine, a real
//! key store and default policies on loopback, a JWKS provider, a client.
#![allow(dead_code)] // each test file uses a part

pub mod openai;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth::{Authenticator, KeyStore, NewKey};
use engine::{Engine, EngineConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use server::{Access, AppState, ServedModel, ServerOptions};
use testkit::jwt::Signer;
use types::{GenerateError, Generation, GenerationRequest, Priority, TextGenerator};

pub fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

pub struct Served {
    pub base: String,
    pub authenticator: Arc<Authenticator>,
    pub seen: Arc<Mutex<Vec<Priority>>>,
    /// Signs tokens for tests that set a provider up.
    pub signer: Signer,
    pub _dir: tempfile::TempDir,
}

/// The real engine, noting the class each request is submitted in.
struct Recording {
    engine: Arc<Engine>,
    seen: Arc<Mutex<Vec<Priority>>>,
}

impl TextGenerator for Recording {
    fn submit(&self, request: GenerationRequest) -> Result<Generation, GenerateError> {
        self.seen.lock().unwrap().push(request.priority);
        self.engine.submit(request)
    }

    fn count_tokens(&self, request: &GenerationRequest) -> Result<u32, GenerateError> {
        self.engine.count_tokens(request)
    }

    fn embed(
        &self,
        request: types::EmbeddingRequest,
    ) -> Result<types::PendingEmbeddings, GenerateError> {
        self.engine.embed(request)
    }

    fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, GenerateError> {
        self.engine.tokenize(text, special)
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, GenerateError> {
        self.engine.detokenize(tokens)
    }
}

pub async fn start(open_metrics: bool) -> Served {
    start_with(open_metrics, Vec::new()).await
}

pub const ISS: &str = "https://idp.hospital.test/realms/staff";

/// A JWKS endpoint on loopback whose document the test can change.
pub struct Provider {
    pub url: String,
    pub document: Arc<Mutex<String>>,
    pub fetches: Arc<std::sync::atomic::AtomicUsize>,
}

pub async fn provider(document: String) -> Provider {
    use axum::extract::State;
    let document = Arc::new(Mutex::new(document));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let state = (Arc::clone(&document), Arc::clone(&fetches));
    let app = axum::Router::new()
        .route(
            "/certs",
            axum::routing::get(
                |State((doc, n)): State<(
                    Arc<Mutex<String>>,
                    Arc<std::sync::atomic::AtomicUsize>,
                )>| async move {
                    n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    doc.lock().unwrap().clone()
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Provider {
        url,
        document,
        fetches,
    }
}

pub fn issuer(jwks_url: &str) -> auth::JwtIssuerConfig {
    toml::from_str(&format!(
        "issuer = \"{ISS}\"\naudience = \"hearth\"\nalgorithms = [\"ES256\", \"EdDSA\"]\njwks_url = \"{jwks_url}\"\n"
    ))
    .unwrap()
}

/// Claims a provider would put in a staff member's token, `roles` theirs.
pub fn staff(roles: &[&str]) -> Value {
    let now = auth::unix_now();
    json!({"iss": ISS, "aud": "hearth", "sub": "u-42", "exp": now + 600, "iat": now, "roles": roles})
}

pub async fn start_with(open_metrics: bool, jwt: Vec<auth::JwtIssuerConfig>) -> Served {
    start_full(open_metrics, jwt, false).await
}

/// The name the engine is served under by [`start_full`] with a store.
pub const SERVED_BESIDE_A_STORE: &str = "local";

/// With `store`, the server also manages a real store in the test's
/// directory (pulls through the machine's pip), and serves the engine as
/// [`SERVED_BESIDE_A_STORE`] so the catalog's `smollm2` can be pulled and
/// deleted beside it.
pub async fn start_full(
    open_metrics: bool,
    jwt: Vec<auth::JwtIssuerConfig>,
    store: bool,
) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(&dir.path().join("auth.db")).unwrap();
    let verifier = auth::JwtVerifier::new(jwt).unwrap();
    let authenticator = Arc::new(Authenticator::with_jwt(keys, verifier));
    let jwks = server::JwksRefresher::start(Arc::clone(&authenticator)).await;
    let config = EngineConfig {
        threads: 2,
        ctx_size: Some(512),
        ..EngineConfig::default()
    };
    let engine = tokio::task::spawn_blocking(move || {
        Arc::new(Engine::load(&testkit::default_model(), &config).expect("load model"))
    })
    .await
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let generator = Arc::new(Recording {
        engine,
        seen: Arc::clone(&seen),
    });
    let id = if store {
        SERVED_BESIDE_A_STORE
    } else {
        "smollm2"
    };
    let mut state = AppState::with_metrics(vec![ServedModel {
        id: id.into(),
        aliases: vec![],
        created: 1,
        generator,
        info: None,
    }]);
    if store {
        let home = store::Store::open(&dir.path().join("home")).unwrap();
        let library = Arc::new(store::Library::new(home, store::PullOptions::default()));
        state = state
            .with_library(Arc::clone(&library) as Arc<dyn types::ModelLibrary>)
            .with_shared(library);
    }
    let state = Arc::new(state);
    let policies = auth::Policies::from_sources(vec![(
        "default.cedar".into(),
        auth::policy::DEFAULT_POLICIES.to_string(),
    )])
    .unwrap();
    let access = Access {
        authenticator: Some(Arc::clone(&authenticator)),
        open_metrics,
        policies: Some(Arc::new(auth::LivePolicies::new(policies))),
        jwks,
        audit: Some(Arc::new(server::Auditor {
            log: Arc::new(
                audit::AuditLog::open(audit::AuditConfig::new(
                    dir.path().join("audit"),
                    dir.path().join("audit.key"),
                ))
                .unwrap(),
            ),
            record_text: false,
        })),
        quotas: Some(auth::Quotas::new()),
    };
    let app = server::secured_router(state, &ServerOptions::default(), &access);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        server::serve(listener, app, std::future::pending())
            .await
            .unwrap()
    });
    Served {
        base,
        authenticator,
        seen,
        signer: Signer::es256("unset"),
        _dir: dir,
    }
}

pub async fn call(
    base: &str,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut req = client.request(method.clone(), format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

pub fn new_key(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        roles: BTreeSet::from(["user".to_string()]),
        ..NewKey::default()
    }
}
