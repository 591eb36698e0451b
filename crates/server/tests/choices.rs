//! `n` choices and `logprobs` over HTTP, on the real engine: what each choice
//! and each token reports, streamed or not.

mod support;

use std::sync::{Arc, OnceLock};

use engine::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::openai::*;
use support::with;

/// Without the prefix cache: a request's cells never depend on an earlier
/// one, so equal requests decode with equal numbers, provided the steps
/// they decode in hold the same rows. Tests therefore take turns with it:
/// llama.cpp's numbers shift with a batch's shape, enough to change a
/// sampled token.
async fn uncached() -> (Arc<Engine>, tokio::sync::MutexGuard<'static, ()>) {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let turn = TURN.lock().await;
    (ENGINE.get_or_init(|| load(false)).clone(), turn)
}

/// The data chunks of a stream, checked to end with `[DONE]`.
fn chunks(events: &[String]) -> Vec<Value> {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn bytes_of(entries: &[Value]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|e| {
            e["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
        })
        .collect()
}

#[tokio::test]
async fn chat_logprobs_cover_every_token_and_agree_streamed_or_not() {
    let (engine, _turn) = uncached().await;
    let base = start_with(engine).await;
    let body = chat_body(
        "Name three colours.",
        json!({"temperature": 0, "max_tokens": 12, "ignore_eos": true,
               "logprobs": true, "top_logprobs": 3}),
    );
    let (s, whole) = post(&base, "/v1/chat/completions", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{whole}");
    let choice = &whole["choices"][0];
    let content = choice["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 12, "one entry per generated token: {whole}");
    assert_eq!(whole["usage"]["completion_tokens"], 12);
    // The tokens spell the reply, byte for byte.
    let text = choice["message"]["content"].as_str().unwrap();
    assert_eq!(bytes_of(content), text.as_bytes());
    for entry in content {
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{entry}");
        let lps: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]), "best first: {entry}");
        assert!(lps[0] <= 0.0, "{entry}");
        assert!(
            lps.iter().map(|l| l.exp()).sum::<f64>() <= 1.0 + 1e-4,
            "{entry}"
        );
        // Greedy decoding picks the likeliest token.
        assert_eq!(entry["token"], top[0]["token"], "{entry}");
        assert_eq!(entry["logprob"], top[0]["logprob"], "{entry}");
        assert!(entry["token"].is_string());
    }

    let streamed = chunks(
        &post_stream(
            &base,
            "/v1/chat/completions",
            with(body, "stream", json!(true)),
        )
        .await,
    );
    let mut entries: Vec<Value> = Vec::new();
    for chunk in &streamed {
        if let Some(list) = chunk["choices"][0]["logprobs"]["content"].as_array() {
            entries.extend(list.iter().cloned());
        }
    }
    assert_eq!(entries.len(), 12);
    let tokens = |list: &[Value]| list.iter().map(|e| e["token"].clone()).collect::<Vec<_>>();
    assert_eq!(tokens(&entries), tokens(content));
    for (a, b) in entries.iter().zip(content) {
        let (a, b) = (
            a["logprob"].as_f64().unwrap(),
            b["logprob"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
    // Without logprobs asked for, none are sent.
    let (_, plain) = post(
        &base,
        "/v1/chat/completions",
        chat_body("Hi", json!({"max_tokens": 3})),
    )
    .await;
    assert!(plain["choices"][0]["logprobs"].is_null(), "{plain}");
}

#[tokio::test]
async fn completion_logprobs_take_the_legacy_shape() {
    let (engine, _turn) = uncached().await;
    let base = start_with(engine).await;
    let body = json!({"prompt": "The capital of France is", "max_tokens": 8,
                      "temperature": 0, "ignore_eos": true, "logprobs": 2});
    let (s, whole) = post(&base, "/v1/completions", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{whole}");
    let choice = &whole["choices"][0];
    let lp = &choice["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.len(), 8, "{whole}");
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), 8);
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    let mut at = 0;
    for (token, offset) in tokens.iter().zip(&offsets) {
        assert_eq!(*offset, at, "{lp}");
        at += token.chars().count() as u64;
    }
    if tokens.iter().all(|t| !t.contains('\u{FFFD}')) {
        assert_eq!(tokens.concat(), choice["text"].as_str().unwrap());
    }
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 2, "{top:?}");
        // Greedy: the chosen token is among the likeliest, with the best logprob.
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert_eq!(lp["token_logprobs"][i].as_f64().unwrap(), best, "{lp}");
    }

    let streamed =
        chunks(&post_stream(&base, "/v1/completions", with(body, "stream", json!(true))).await);
    let mut streamed_offsets = Vec::new();
    for chunk in &streamed {
        if let Some(list) = chunk["choices"][0]["logprobs"]["text_offset"].as_array() {
            streamed_offsets.extend(list.iter().map(|o| o.as_u64().unwrap()));
        }
    }
    assert_eq!(streamed_offsets, offsets, "offsets run on across chunks");
}

fn texts(reply: &Value) -> Vec<String> {
    let choices = reply["choices"].as_array().unwrap();
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i as u64, "{reply}");
    }
    choices
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn n_choices_differ_from_each_other_and_repeat_for_the_same_seed() {
    let (engine, _turn) = uncached().await;
    let base = start_with(engine).await;
    let body = chat_body(
        "Write one sentence about the sea.",
        json!({"n": 3, "seed": 7, "temperature": 1.0, "max_tokens": 16, "ignore_eos": true}),
    );
    let (s, first) = post(&base, "/v1/chat/completions", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let first_texts = texts(&first);
    assert_eq!(first_texts.len(), 3);
    assert!(
        first_texts[0] != first_texts[1] && first_texts[1] != first_texts[2],
        "each choice is its own draw: {first_texts:?}"
    );
    // The prompt is counted once; every choice's tokens are.
    let (_, one) = post(
        &base,
        "/v1/chat/completions",
        with(body.clone(), "n", json!(1)),
    )
    .await;
    assert_eq!(
        first["usage"]["prompt_tokens"],
        one["usage"]["prompt_tokens"]
    );
    assert_eq!(first["usage"]["completion_tokens"], 48);

    let (_, again) = post(&base, "/v1/chat/completions", body.clone()).await;
    assert_eq!(
        texts(&again),
        first_texts,
        "seeded choices are reproducible"
    );

    // Streamed: interleaved chunks, each choice finished once, usage for all.
    let stream_body = with(
        with(body, "stream", json!(true)),
        "stream_options",
        json!({"include_usage": true}),
    );
    let streamed = chunks(&post_stream(&base, "/v1/chat/completions", stream_body).await);
    let mut joined = vec![String::new(); 3];
    let mut finished = [0; 3];
    for chunk in &streamed {
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else {
            continue;
        };
        let i = choice["index"].as_u64().unwrap() as usize;
        joined[i].push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        if choice["finish_reason"].is_string() {
            finished[i] += 1;
        }
    }
    assert_eq!(finished, [1, 1, 1]);
    assert_eq!(joined, first_texts);
    let usage = &streamed.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 48, "{usage}");
    assert_eq!(usage["prompt_tokens"], first["usage"]["prompt_tokens"]);
}

/// The prefix-cache hit counter from `/metrics`.
async fn prefix_hits(base: &str) -> f64 {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("hearth_prefix_cache_hits_total"))
        .unwrap_or_else(|| panic!("no prefix-cache counter in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn n_choices_compute_the_prompt_once() {
    // An engine of its own: no other test's requests move its counters.
    let base = start_with(load(true)).await;
    let question = "List the planets of the solar system in order from the sun, \
                    with one fact about each of them.";
    let before = prefix_hits(&base).await;
    let body = chat_body(question, json!({"n": 4, "max_tokens": 4}));
    let (s, reply) = post(&base, "/v1/chat/completions", body).await;
    assert_eq!(s, StatusCode::OK, "{reply}");
    let prompt = reply["usage"]["prompt_tokens"].as_f64().unwrap();
    let hits = prefix_hits(&base).await - before;
    // The first choice computes the prompt; the other three start from its
    // cells (all but the last token, whose logits each needs).
    assert!(
        hits >= 3.0 * (prompt - 1.0),
        "{hits} cached tokens for a {prompt}-token prompt"
    );
}
