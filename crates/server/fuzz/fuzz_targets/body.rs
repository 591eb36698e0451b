//! Fuzzes the request-body parsers through the real router, with keys,
//! policies and quotas on: any bytes posted to a generation, embedding or
//! token endpoint of any API family (OpenAI, Anthropic, Ollama, Responses)
//! must get an answer, never a panic, and never a 5xx (the generator behind
//! the router always succeeds, so a 5xx would be a parser's fault).
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use types::{
    Completion, FinishReason, GenerateError, Generation, GenerationEvent, GenerationRequest,
    TextGenerator, Timings, Usage,
};

/// Answers every request with one piece of text, at once.
struct Echo;

impl TextGenerator for Echo {
    fn submit(&self, _: GenerationRequest) -> Result<Generation, GenerateError> {
        let (tx, _cancel, generation) = Generation::channel(1);
        let _ = tx.send(GenerationEvent::Text("ok".into()));
        let _ = tx.send(GenerationEvent::Done(Completion {
            finish_reason: FinishReason::Stop,
            stop_index: None,
            usage: Usage::default(),
            timings: Timings::default(),
        }));
        Ok(generation)
    }

    fn count_tokens(&self, _: &GenerationRequest) -> Result<u32, GenerateError> {
        Ok(1)
    }

    fn embed(
        &self,
        request: types::EmbeddingRequest,
    ) -> Result<types::PendingEmbeddings, GenerateError> {
        let (tx, pending) = types::PendingEmbeddings::channel();
        let vectors = request.inputs.iter().map(|_| vec![1.0, 0.0]).collect();
        let _ = tx.send(Ok(types::Embeddings {
            vectors,
            prompt_tokens: 1,
        }));
        Ok(pending)
    }

    fn tokenize(&self, text: &str, _: bool) -> Result<Vec<u32>, GenerateError> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, GenerateError> {
        Ok(tokens.iter().filter_map(|&t| char::from_u32(t)).collect())
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    bearer: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hearth-fuzz-{}", std::process::id()));
        let keys = auth::KeyStore::open(&dir.join("auth.db")).unwrap();
        let mut key = auth::NewKey {
            name: "fuzz".into(),
            roles: ["user".to_string()].into(),
            ..auth::NewKey::default()
        };
        // Generous limits: quota parsing runs, refusals do not end the run.
        key.limits.requests_per_minute = Some(u32::MAX);
        key.limits.tokens_per_minute = Some(u64::MAX / 4);
        let (_, secret) = keys.create(&key, auth::unix_now()).unwrap();
        let policies = auth::Policies::from_sources(vec![(
            "default.cedar".into(),
            auth::policy::DEFAULT_POLICIES.to_string(),
        )])
        .unwrap();
        let state = Arc::new(server::AppState::with_metrics(vec![server::ServedModel {
            id: "smollm2".into(),
            aliases: vec!["smol".into()],
            created: 0,
            generator: Arc::new(Echo),
            info: None,
        }]));
        let access = server::Access {
            authenticator: Some(Arc::new(auth::Authenticator::new(keys))),
            policies: Some(Arc::new(auth::LivePolicies::new(policies))),
            quotas: Some(auth::Quotas::new()),
            ..server::Access::open()
        };
        let app = server::secured_router(state, &server::ServerOptions::default(), &access);
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            app,
            bearer: format!("Bearer {secret}"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let path = match which % 13 {
        0 => "/v1/chat/completions",
        1 => "/v1/completions",
        2 => "/v1/messages",
        3 => "/v1/messages/count_tokens",
        4 => "/v1/embeddings",
        5 => "/tokenize",
        6 => "/detokenize",
        7 => "/api/chat",
        8 => "/api/generate",
        9 => "/api/embed",
        10 => "/api/show",
        11 => "/v1/responses",
        _ => "/api/embeddings",
    };
    let f = fixture();
    let request = Request::post(path)
        .header("authorization", &f.bearer)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    f.runtime.block_on(async {
        let response = f.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        // Streams too: the whole answer is produced.
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            !status.is_server_error(),
            "{status} for {:?}: {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&bytes)
        );
    });
});
