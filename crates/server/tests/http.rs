//! The HTTP API on a loopback port, backed by the real engine and default model.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::openai::*;

#[tokio::test]
async fn chat_completion_answers_in_sensible_english() {
    let base = start().await;
    let (status, body) = post(
        &base,
        "/v1/chat/completions",
        chat_body(
            "What is the capital of Japan?",
            json!({"temperature": 0, "max_tokens": 48}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "smollm2");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let message = &body["choices"][0]["message"];
    assert_eq!(message["role"], "assistant");
    assert!(
        message["content"].as_str().unwrap().contains("Tokyo"),
        "{body}"
    );
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(body["timings"]["predicted_per_second"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn content_parts_are_one_text_and_max_completion_tokens_caps_the_reply() {
    let base = start().await;
    let ask = |content: Value| {
        json!({"messages": [{"role": "user", "content": content}],
               "max_completion_tokens": 3, "max_tokens": 40, "ignore_eos": true})
    };
    let (status, parts) = post(
        &base,
        "/v1/chat/completions",
        ask(json!([{"type": "text", "text": "What is the capital"},
                   {"type": "text", "text": " of Japan?"}])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{parts}");
    let (_, whole) = post(
        &base,
        "/v1/chat/completions",
        ask(json!("What is the capital of Japan?")),
    )
    .await;
    assert_eq!(
        parts["usage"]["prompt_tokens"],
        whole["usage"]["prompt_tokens"]
    );
    // max_completion_tokens wins over the older max_tokens.
    assert_eq!(parts["usage"]["completion_tokens"], 3);
    assert_eq!(parts["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn streaming_matches_non_streaming_for_the_same_seed() {
    // An engine of its own, with nothing else running and no cache entries
    // left behind: each request then gets the same KV cells. llama.cpp's
    // attention sums in an order that depends on how many cells are in use,
    // so elsewhere a seeded request may sample differently in the last bits.
    let base = start_with(load(false)).await;
    for sampling in [
        json!({"temperature": 0}),
        json!({"temperature": 0.9, "seed": 7}),
    ] {
        let mut extra = sampling.clone();
        extra["max_tokens"] = json!(40);
        let (status, full) = post(
            &base,
            "/v1/chat/completions",
            chat_body("Describe a cat in two sentences.", extra.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        extra["stream"] = json!(true);
        let events = post_stream(
            &base,
            "/v1/chat/completions",
            chat_body("Describe a cat in two sentences.", extra),
        )
        .await;
        let (streamed, last) = stream_text(&events, true);
        assert_eq!(
            streamed,
            full["choices"][0]["message"]["content"].as_str().unwrap(),
            "{sampling}"
        );
        assert_eq!(
            last["choices"][0]["finish_reason"],
            full["choices"][0]["finish_reason"]
        );
    }
}

#[tokio::test]
async fn text_completions_stream_and_not() {
    let base = start().await;
    let body = json!({"model": "smollm2:135m", "prompt": "The three primary colours are", "temperature": 0});
    let (status, full) = post(&base, "/v1/completions", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert_eq!(full["object"], "text_completion");
    // OpenAI's default for this endpoint is 16 tokens.
    assert!(full["usage"]["completion_tokens"].as_u64().unwrap() <= 16);
    let mut streaming = body;
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let events = post_stream(&base, "/v1/completions", streaming).await;
    let (text, _) = stream_text(&events, false);
    assert_eq!(text, full["choices"][0]["text"].as_str().unwrap());
    // With include_usage, the last chunk before [DONE] has usage and no choices.
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], full["usage"]);
}

#[tokio::test]
async fn stop_and_max_tokens_over_http() {
    let base = start().await;
    let (_, body) = post(
        &base,
        "/v1/chat/completions",
        chat_body(
            "Count from 1 to 10.",
            json!({"temperature": 0, "max_tokens": 5}),
        ),
    )
    .await;
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let (_, body) = post(
        &base,
        "/v1/chat/completions",
        chat_body(
            "Count from 1 to 20, separated by commas.",
            json!({"temperature": 0, "stop": ["5"], "max_tokens": 80}),
        ),
    )
    .await;
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains('4') && !content.contains('5'), "{content}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn models_and_health() {
    let base = start().await;
    let list: Value = client()
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], "smollm2");
    assert_eq!(list["data"][0]["object"], "model");
    let one = client()
        .get(format!("{base}/v1/models/smollm2:135m"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), StatusCode::OK);
    let missing = client()
        .get(format!("{base}/v1/models/nope"))
        .send()
        .await
        .unwrap();
    let status = missing.status();
    assert_openai_error(
        status,
        &missing.json().await.unwrap(),
        StatusCode::NOT_FOUND,
        "model_not_found",
    );
    let health = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["models"][0], json!({"id": "smollm2", "ready": true}));
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_4xx() {
    let base = start().await;
    let raw = |body| post_raw(&base, "/v1/chat/completions", body);
    let (s, b) = raw("{\"model\": \"smollm2\", \"messages\": [").await;
    assert_openai_error(s, &b, StatusCode::BAD_REQUEST, "invalid_json");
    let (s, b) = raw("{\"model\": \"smollm2\"}").await;
    assert_openai_error(s, &b, StatusCode::BAD_REQUEST, "invalid_request");
    let (s, b) = raw("{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}").await;
    assert_openai_error(s, &b, StatusCode::BAD_REQUEST, "invalid_value");

    let (s, b) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_openai_error(s, &b, StatusCode::NOT_FOUND, "model_not_found");

    let long = "lorem ipsum ".repeat(2000);
    let (s, b) = post(&base, "/v1/chat/completions", chat_body(&long, json!({}))).await;
    assert_openai_error(s, &b, StatusCode::BAD_REQUEST, "context_length_exceeded");
    let (s, b) = post(&base, "/v1/completions", json!({"prompt": long})).await;
    assert_openai_error(s, &b, StatusCode::BAD_REQUEST, "context_length_exceeded");
    // Streaming requests are refused before the stream starts, with a status.
    let (s, b) = post(
        &base,
        "/v1/completions",
        json!({"prompt": long, "stream": true}),
    )
    .await;
    assert_openai_error(s, &b, StatusCode::BAD_REQUEST, "context_length_exceeded");

    let cases = [
        (json!({"n": 0}), "invalid_value"),
        (json!({"n": 17}), "invalid_value"),
        (json!({"top_logprobs": 2}), "invalid_value"),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "invalid_value",
        ),
        (json!({"logprobs": "yes"}), "invalid_type"),
        (json!({"temperature": 3.5}), "invalid_value"),
        (json!({"top_p": 0}), "invalid_value"),
        // A tool without its function is malformed JSON for the endpoint.
        (json!({"tools": [{"type": "function"}]}), "invalid_request"),
        (
            json!({"tools": [{"type": "code_interpreter", "function": {"name": "f"}}]}),
            "invalid_value",
        ),
        (json!({"tool_choice": "sometimes"}), "invalid_value"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            "invalid_value",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "1", "tool_call_id": "c"}]}),
            "invalid_value",
        ),
        (json!({"messages": []}), "invalid_value"),
        (json!({"logit_bias": {"not-a-token": 1}}), "invalid_value"),
        (json!({"logit_bias": {"42": 150}}), "invalid_value"),
        (json!({"logit_bias": {"999999999": 1}}), "invalid_value"),
    ];
    for (extra, code) in cases {
        let (s, b) = post(&base, "/v1/chat/completions", chat_body("hi", extra)).await;
        assert_openai_error(s, &b, StatusCode::BAD_REQUEST, code);
    }

    for logprobs in [json!(21), json!(-1), json!(true)] {
        let body = json!({"prompt": "hi", "logprobs": logprobs});
        let (s, b) = post(&base, "/v1/completions", body).await;
        assert_openai_error(s, &b, StatusCode::BAD_REQUEST, "invalid_value");
        assert_eq!(b["error"]["param"], "logprobs", "{b}");
    }

    let resp = client()
        .post(format!("{base}/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let s = resp.status();
    assert_openai_error(
        s,
        &resp.json().await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_content_type",
    );
    let huge = json!({"prompt": "x".repeat(100 << 10)});
    let (s, b) = post(&base, "/v1/completions", huge).await;
    assert_openai_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "invalid_body");
    let resp = client()
        .get(format!("{base}/v1/nothing"))
        .send()
        .await
        .unwrap();
    let s = resp.status();
    assert_openai_error(
        s,
        &resp.json().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let resp = client()
        .get(format!("{base}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let s = resp.status();
    assert_openai_error(
        s,
        &resp.json().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

fn assert_anthropic_error(status: StatusCode, body: &Value, expected: StatusCode, kind: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn anthropic_messages_stream_as_typed_events() {
    let base = start().await;
    let body = json!({"model": "smollm2", "max_tokens": 12, "temperature": 0,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]});
    let (s, whole) = post(&base, "/v1/messages", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{whole}");
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let resp = client()
        .post(format!("{base}/v1/messages"))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(names.len(), data.len(), "{text}");
    for (name, d) in names.iter().zip(&data) {
        assert_eq!(d["type"], *name, "{text}");
    }
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let joined: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(joined, whole["content"][0]["text"].as_str().unwrap());
    let delta = &data[data.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], whole["stop_reason"]);
    assert_eq!(
        delta["usage"]["output_tokens"],
        whole["usage"]["output_tokens"]
    );
}

#[tokio::test]
async fn anthropic_bad_requests_get_anthropic_shaped_4xx() {
    let base = start().await;
    let raw = |path, body| post_raw(&base, path, body);
    let invalid = "invalid_request_error";
    let (s, b) = raw("/v1/messages", "{\"model\": \"smollm2\", \"messages\": [").await;
    assert_anthropic_error(s, &b, StatusCode::BAD_REQUEST, invalid);
    // `max_tokens` is required, as on Anthropic's API.
    let (s, b) = raw(
        "/v1/messages",
        r#"{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}"#,
    )
    .await;
    assert_anthropic_error(s, &b, StatusCode::BAD_REQUEST, invalid);
    let (s, b) = raw("/v1/messages/count_tokens", r#"{"model": "smollm2"}"#).await;
    assert_anthropic_error(s, &b, StatusCode::BAD_REQUEST, invalid);
    let message = |extra: Value| {
        let mut body = json!({"model": "smollm2", "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let (s, b) = post(&base, "/v1/messages", message(json!({"model": "claude-x"}))).await;
    assert_anthropic_error(s, &b, StatusCode::NOT_FOUND, "not_found_error");
    let long = "lorem ipsum ".repeat(2000);
    for stream in [false, true] {
        let body =
            message(json!({"stream": stream, "messages": [{"role": "user", "content": long}]}));
        let (s, b) = post(&base, "/v1/messages", body).await;
        assert_anthropic_error(s, &b, StatusCode::BAD_REQUEST, invalid);
    }
    let cases = [
        json!({"messages": [{"role": "system", "content": "x"}]}),
        json!({"messages": []}),
        json!({"temperature": 1.5}),
        json!({"stop_sequences": vec!["x"; 17]}),
        json!({"tools": [{"name": "f", "type": "web_search_20250305"}]}),
        json!({"tools": [{"name": "f"}]}),
        json!({"tool_choice": {"type": "tool"}}),
        json!({"tool_choice": {"type": "sometimes"}}),
        json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]}),
        json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Well"}]}),
    ];
    for extra in cases {
        let (s, b) = post(&base, "/v1/messages", message(extra.clone())).await;
        assert_anthropic_error(s, &b, StatusCode::BAD_REQUEST, invalid);
        assert!(
            !b["error"]["message"].as_str().unwrap().is_empty(),
            "{extra}"
        );
    }
    let resp = client()
        .get(format!("{base}/v1/messages"))
        .send()
        .await
        .unwrap();
    let s = resp.status();
    assert_anthropic_error(
        s,
        &resp.json().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        invalid,
    );
    let huge = message(json!({"system": "x".repeat(100 << 10)}));
    let (s, b) = post(&base, "/v1/messages", huge).await;
    assert_anthropic_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    // The server is fine afterwards.
    let (s, b) = post(&base, "/v1/messages", message(json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["type"], "message");
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn embeddings_are_unit_vectors_that_rank_similar_texts_closer() {
    let base = start().await;
    let texts = [
        "The cat sat on the mat.",
        "A cat is sitting on a rug.",
        "Quarterly revenue rose by four percent.",
    ];
    let (s, b) = post(
        &base,
        "/v1/embeddings",
        json!({"model": "smollm2", "input": texts}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["object"], "list");
    assert_eq!(b["model"], "smollm2");
    let data = b["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let v: Vec<Vec<f64>> = data.iter().map(|d| vector(&d["embedding"])).collect();
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["object"], "embedding");
        assert!((cosine(&v[i], &v[i]) - 1.0).abs() < 1e-4, "unit length");
    }
    assert!(
        cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]),
        "cats are closer to cats than to revenue"
    );
    assert!(b["usage"]["prompt_tokens"].as_u64().unwrap() > 10);

    // One input alone gets the vector it got in the batch.
    let (_, one) = post(&base, "/v1/embeddings", json!({"input": texts[2]})).await;
    assert!(cosine(&vector(&one["data"][0]["embedding"]), &v[2]) > 0.999);
    // Tokens give what their text gives.
    let (_, tok) = post(&base, "/tokenize", json!({"content": texts[0]})).await;
    let ids = tok["tokens"].clone();
    let (_, by_ids) = post(&base, "/v1/embeddings", json!({"input": ids})).await;
    assert!(cosine(&vector(&by_ids["data"][0]["embedding"]), &v[0]) > 0.999);
    // base64 carries the same floats, little-endian.
    let (_, b64) = post(
        &base,
        "/v1/embeddings",
        json!({"input": texts[0], "encoding_format": "base64"}),
    )
    .await;
    let text = b64["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64_decode(text);
    let floats: Vec<f64> = bytes
        .chunks(4)
        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
        .collect();
    assert!(cosine(&floats, &v[0]) > 0.999);
    // Fewer dimensions: the leading ones, normalised again.
    let (_, short) = post(
        &base,
        "/v1/embeddings",
        json!({"input": texts[0], "dimensions": 64}),
    )
    .await;
    let short = vector(&short["data"][0]["embedding"]);
    assert_eq!(short.len(), 64);
    assert!((cosine(&short, &short) - 1.0).abs() < 1e-4);
    let head: f64 = v[0][..64].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((short[0] - v[0][0] / head).abs() < 1e-3);
}

/// Standard base64, for checking the server's encoding independently.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[tokio::test]
async fn bad_embedding_requests_name_the_field() {
    let base = start().await;
    let long = "lorem ipsum ".repeat(2000);
    let cases = [
        (json!({"input": []}), "input"),
        (json!({"input": ""}), "input"),
        (json!({"input": [long]}), "input"),
        (json!({"input": [[1, 99_999_999]]}), "input"),
        (json!({"input": "x", "dimensions": 100_000}), "dimensions"),
        (json!({"input": "x", "dimensions": 0}), "dimensions"),
        (
            json!({"input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
    ];
    for (body, param) in cases {
        let (s, b) = post(&base, "/v1/embeddings", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert_eq!(b["error"]["param"], param, "{body}: {b}");
    }
    let (s, b) = post(&base, "/v1/embeddings", json!({"model": "x", "input": "a"})).await;
    assert_openai_error(s, &b, StatusCode::NOT_FOUND, "model_not_found");
    let (s, b) = post(&base, "/detokenize", json!({"tokens": [99_999_999]})).await;
    assert_openai_error(s, &b, StatusCode::BAD_REQUEST, "invalid_token");
}

#[tokio::test]
async fn tokenize_and_detokenize_round_trip() {
    let base = start().await;
    let text = "Hello, world! Ünïcödé 🦀";
    let (s, plain) = post(
        &base,
        "/tokenize",
        json!({"content": text, "add_special": false}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{plain}");
    let (_, back) = post(&base, "/detokenize", json!({"tokens": plain["tokens"]})).await;
    assert_eq!(back["content"], text);
    let (_, pieces) = post(
        &base,
        "/tokenize",
        json!({"content": text, "add_special": false, "with_pieces": true}),
    )
    .await;
    let pieces = pieces["tokens"].as_array().unwrap();
    assert_eq!(pieces.len(), plain["tokens"].as_array().unwrap().len());
    assert_eq!(pieces[0]["id"], plain["tokens"][0]);
    assert_eq!(pieces[0]["piece"], "Hello");
    // Special tokens written in the text are parsed only when asked.
    let marked = "<|im_start|>user";
    let (_, special) = post(&base, "/tokenize", json!({"content": marked})).await;
    let (_, literal) = post(
        &base,
        "/tokenize",
        json!({"content": marked, "add_special": false}),
    )
    .await;
    assert!(
        special["tokens"].as_array().unwrap().len() < literal["tokens"].as_array().unwrap().len()
    );
}
