//! Ollama's API over HTTP on the real engine: NDJSON streams, field names,
//! options, the model routes, and errors in Ollama's `{"error": ...}` shape.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::openai::{client, start};

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = client().request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

async fn post(base: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, text) = call(base, reqwest::Method::POST, path, Some(body)).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

/// A streamed reply's lines, each a JSON object.
async fn lines(base: &str, path: &str, body: Value) -> Vec<Value> {
    let resp = client()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_ollama_error(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not Ollama's shape: {body}"));
    assert!(!message.is_empty());
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn chat_streams_ndjson_by_default_and_answers_whole_when_asked() {
    let base = start().await;
    let ask = json!({"model": "smollm2:latest", "messages": [{"role": "user", "content": "Name a colour."}],
                     "options": {"temperature": 0, "num_predict": 12}});
    let streamed = lines(&base, "/api/chat", ask.clone()).await;
    let (last, pieces) = streamed.split_last().unwrap();
    assert!(!pieces.is_empty());
    let mut text = String::new();
    for line in pieces {
        assert_eq!(line["done"], false, "{line}");
        assert_eq!(line["model"], "smollm2:latest");
        assert_eq!(line["message"]["role"], "assistant");
        assert!(line["created_at"].as_str().unwrap().ends_with('Z'));
        text.push_str(line["message"]["content"].as_str().unwrap());
    }
    assert_eq!(last["done"], true);
    assert!(
        ["stop", "length"].contains(&last["done_reason"].as_str().unwrap()),
        "{last}"
    );
    let evals = last["eval_count"].as_u64().unwrap();
    assert!((1..=12).contains(&evals), "{last}");
    assert!(last["prompt_eval_count"].as_u64().unwrap() > 5);
    assert!(last["total_duration"].as_u64().unwrap() >= last["eval_duration"].as_u64().unwrap());

    let (s, whole) = post(&base, "/api/chat", json!({"stream": false, "model": "smollm2", "messages": ask["messages"], "options": ask["options"]})).await;
    assert_eq!(s, StatusCode::OK, "{whole}");
    assert_eq!(whole["done"], true);
    assert!(
        !whole["message"]["content"].as_str().unwrap().is_empty(),
        "{whole}"
    );
    assert!(!text.is_empty());
    assert!(whole["eval_duration"].as_u64().unwrap() > 0, "{whole}");
}

#[tokio::test]
async fn chat_honours_format_options_and_logprobs() {
    let base = start().await;
    let schema = json!({"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
                        "required": ["colour"], "additionalProperties": false});
    let (s, reply) = post(&base, "/api/chat", json!({"model": "smollm2", "stream": false, "format": schema,
        "messages": [{"role": "user", "content": "Pick a colour as JSON."}], "options": {"seed": 3}})).await;
    assert_eq!(s, StatusCode::OK, "{reply}");
    let answer: Value =
        serde_json::from_str(reply["message"]["content"].as_str().unwrap()).unwrap();
    assert!(
        ["red", "green", "blue"].contains(&answer["colour"].as_str().unwrap()),
        "{answer}"
    );

    let (_, reply) = post(
        &base,
        "/api/chat",
        json!({"model": "smollm2", "stream": false,
        "messages": [{"role": "user", "content": "Write a long story."}],
        "options": {"num_predict": 5, "stop": ["zzz"]}, "logprobs": true, "top_logprobs": 2}),
    )
    .await;
    assert_eq!(reply["done_reason"], "length");
    assert_eq!(reply["eval_count"], 5);
    let logprobs = reply["logprobs"].as_array().unwrap();
    assert_eq!(logprobs.len(), 5);
    assert_eq!(logprobs[0]["top_logprobs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn generate_uses_the_template_unless_raw_and_loads_on_an_empty_prompt() {
    let base = start().await;
    let (s, reply) = post(
        &base,
        "/api/generate",
        json!({"model": "smollm2", "prompt": "Say hi.", "system": "Be brief.",
        "stream": false, "options": {"num_predict": 8, "temperature": 0}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{reply}");
    assert!(!reply["response"].as_str().unwrap().is_empty());
    let templated = reply["prompt_eval_count"].as_u64().unwrap();
    let (_, raw) = post(
        &base,
        "/api/generate",
        json!({"model": "smollm2", "prompt": "Say hi.", "raw": true,
        "stream": false, "options": {"num_predict": 8}}),
    )
    .await;
    assert!(
        raw["prompt_eval_count"].as_u64().unwrap() < templated,
        "{raw} vs {reply}"
    );

    let streamed = lines(
        &base,
        "/api/generate",
        json!({"model": "smollm2", "prompt": "Count to five.", "options": {"num_predict": 6}}),
    )
    .await;
    assert!(streamed
        .iter()
        .rev()
        .skip(1)
        .all(|l| l["response"].is_string() && l["done"] == false));
    assert_eq!(streamed.last().unwrap()["done"], true);

    let (_, load) = post(&base, "/api/generate", json!({"model": "smollm2"})).await;
    assert_eq!(
        (load["done"].clone(), load["done_reason"].clone()),
        (json!(true), json!("load"))
    );
    let (_, unload) = post(
        &base,
        "/api/generate",
        json!({"model": "smollm2", "keep_alive": 0}),
    )
    .await;
    assert_eq!(unload["done_reason"], "unload");
    // The same on /api/chat, with no messages: a chat-shaped answer.
    let (s, load) = post(
        &base,
        "/api/chat",
        json!({"model": "smollm2", "messages": []}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{load}");
    assert_eq!(load["done_reason"], "load");
    assert_eq!(load["message"]["content"], "");
    let (_, unload) = post(
        &base,
        "/api/chat",
        json!({"model": "smollm2", "keep_alive": 0}),
    )
    .await;
    assert_eq!(unload["done_reason"], "unload");
}

#[tokio::test]
async fn embed_returns_unit_vectors_and_the_old_route_one_vector() {
    let base = start().await;
    let (s, reply) = post(&base, "/api/embed", json!({"model": "smollm2", "input": [
        "The doctor examined the X-ray.", "A physician looked at the radiograph.", "The train leaves at noon."]})).await;
    assert_eq!(s, StatusCode::OK, "{reply}");
    let vectors: Vec<Vec<f64>> = serde_json::from_value(reply["embeddings"].clone()).unwrap();
    assert_eq!(vectors.len(), 3);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for v in &vectors {
        assert!((dot(v, v) - 1.0).abs() < 1e-3);
    }
    assert!(dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]));
    assert!(reply["prompt_eval_count"].as_u64().unwrap() > 10);
    // Ollama cuts an over-long input by default.
    let long = "word ".repeat(3000);
    let (s, cut) = post(
        &base,
        "/api/embed",
        json!({"model": "smollm2", "input": long}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{cut}");
    let (s, refused) = post(
        &base,
        "/api/embed",
        json!({"model": "smollm2", "input": long, "truncate": false}),
    )
    .await;
    assert_ollama_error(s, &refused, StatusCode::BAD_REQUEST);

    let (_, old) = post(
        &base,
        "/api/embeddings",
        json!({"model": "smollm2", "prompt": "hello"}),
    )
    .await;
    assert_eq!(old["embedding"].as_array().unwrap().len(), vectors[0].len());
}

#[tokio::test]
async fn model_routes_describe_the_served_model() {
    let base = start().await;
    let (s, version) = call(&base, reqwest::Method::GET, "/api/version", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&version).unwrap()["version"].is_string());
    let (_, tags) = call(&base, reqwest::Method::GET, "/api/tags", None).await;
    let tags: Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["models"][0]["name"], "smollm2");
    let (_, ps) = call(&base, reqwest::Method::GET, "/api/ps", None).await;
    let ps: Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(ps["models"][0]["model"], "smollm2");
    assert_eq!(ps["models"][0]["size_vram"], 0);
    let (s, show) = post(&base, "/api/show", json!({"model": "smollm2"})).await;
    assert_eq!(s, StatusCode::OK, "{show}");
    assert_eq!(show["capabilities"], json!(["completion", "tools"]));
    // The served model cannot be deleted from under the server.
    let (s, text) = call(
        &base,
        reqwest::Method::DELETE,
        "/api/delete",
        Some(json!({"model": "smollm2"})),
    )
    .await;
    assert_ollama_error(
        s,
        &serde_json::from_str(&text).unwrap(),
        StatusCode::CONFLICT,
    );
}

#[tokio::test]
async fn bad_requests_get_ollama_shaped_errors_and_the_server_stays_healthy() {
    let base = start().await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            "/api/chat",
            json!({"messages": user}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/chat",
            json!({"model": "nope", "messages": user}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/chat",
            json!({"model": "smollm2", "messages": [{"role": "wizard", "content": "hi"}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/chat",
            json!({"model": "smollm2", "messages": user, "think": true}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/chat",
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/chat",
            json!({"model": "smollm2", "messages": user, "keep_alive": "soon"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/chat",
            json!({"model": "smollm2", "messages": user, "options": {"mirostat": 2}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/chat",
            json!({"model": "smollm2", "messages": user, "options": {"temperature": "hot"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/chat",
            json!({"model": "smollm2", "messages": user, "format": "yaml"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/chat",
            json!({"model": "smollm2", "messages": user, "format": {"type": "string", "minLength": 5, "maxLength": 2}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/chat",
            json!({"model": "smollm2", "messages": [{"role": "tool", "content": "42", "tool_name": "f"}]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/generate",
            json!({"model": "smollm2", "prompt": "hi", "suffix": "end"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/generate",
            json!({"model": "smollm2", "prompt": "hi", "context": [1, 2]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/generate",
            json!({"model": "smollm2", "prompt": "word ".repeat(3000)}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/embed",
            json!({"model": "smollm2"}),
            StatusCode::BAD_REQUEST,
        ),
        ("/api/show", json!({}), StatusCode::BAD_REQUEST),
        ("/api/show", json!({"model": "nope"}), StatusCode::NOT_FOUND),
        (
            "/api/pull",
            json!({"model": "smollm2"}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, body, expected) in cases {
        let (s, reply) = post(&base, path, body.clone()).await;
        assert_ollama_error(s, &reply, expected);
        assert!(
            !reply["error"].as_str().unwrap().contains("internal"),
            "{path} {body}: {reply}"
        );
    }
    let (s, text) = call(&base, reqwest::Method::POST, "/api/chat", None).await;
    assert!(s.is_client_error(), "{text}");
    assert!(
        serde_json::from_str::<Value>(&text).unwrap()["error"].is_string(),
        "{text}"
    );
    let (s, _) = post(&base, "/api/chat", json!({"model": "smollm2", "messages": user, "stream": false, "options": {"num_predict": 2}})).await;
    assert_eq!(s, StatusCode::OK);
}
