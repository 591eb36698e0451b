//! A server over the real engine with no access control, and what tests of
//! the OpenAI-shaped endpoints share: posting, reading streams, checking
//! error shapes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use engine::{Engine, EngineConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use server::{AppState, ServedModel, ServerOptions};

pub fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| load(true)).clone()
}

pub fn load(prefix_cache: bool) -> Arc<Engine> {
    let config = EngineConfig {
        threads: 2,
        ctx_size: Some(1024),
        prefix_cache,
        ..EngineConfig::default()
    };
    Arc::new(Engine::load(&testkit::default_model(), &config).expect("load model"))
}

/// Starts a server on 127.0.0.1:0 and returns its base URL.
pub async fn start() -> String {
    start_with(engine()).await
}

pub async fn start_with(generator: Arc<Engine>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::with_metrics(vec![ServedModel {
        id: "smollm2".into(),
        aliases: vec!["smollm2:135m".into()],
        created: 1,
        generator,
        info: None,
    }]);
    let options = ServerOptions {
        max_body_bytes: 64 << 10,
    };
    let app = server::router(Arc::new(state), &options);
    tokio::spawn(async move {
        server::serve(listener, app, std::future::pending())
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

pub async fn post(base: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = client()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// Posts `body` as JSON exactly as written, well-formed or not.
pub async fn post_raw(base: &str, path: &str, body: &'static str) -> (StatusCode, Value) {
    let resp = client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

/// Posts a streaming request; returns the `data:` payloads in order.
pub async fn post_stream(base: &str, path: &str, body: Value) -> Vec<String> {
    let resp = client()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

pub fn assert_openai_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    let err = &body["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(err["type"].is_string(), "{body}");
    assert_eq!(err["code"], code, "{body}");
}

pub fn chat_body(text: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": text}],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// Joins the text of a chat or text completion stream, checking its framing.
pub fn stream_text(events: &[String], chat: bool) -> (String, Value) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let mut text = String::new();
    for c in &chunks {
        let choice = &c["choices"][0];
        if chat {
            assert_eq!(c["object"], "chat.completion.chunk");
            text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        } else {
            assert_eq!(c["object"], "text_completion");
            text.push_str(choice["text"].as_str().unwrap_or(""));
        }
    }
    if chat {
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    }
    let last = chunks
        .iter()
        .rev()
        .find(|c| !c["choices"][0].is_null())
        .unwrap()
        .clone();
    (text, last)
}
