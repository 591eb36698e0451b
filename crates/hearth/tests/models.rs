//! `hearth serve` with several models: each loaded at start and kept, each
//! answering under its own name through every API family, each with its
//! own readiness.

mod support;

use std::time::Duration;

use serde_json::{json, Value};

#[test]
fn two_models_given_at_start_both_answer_under_their_names() {
    testkit::default_model();
    testkit::second_model();
    let home = testkit::hearth_home();
    let mut cmd = support::hearth(&home);
    cmd.args([
        "serve",
        "--port",
        "0",
        "--ctx-size",
        "1024",
        "--model",
        "smollm2",
        "--model",
        "gemma3:270m",
    ]);
    let (server, base) = support::spawn_server(cmd);
    support::wait_ready(&base);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let get = |path: &str| client.get(format!("{base}{path}")).send().unwrap();
    let post = |path: &str, body: Value| -> Value {
        let resp = client
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        resp.json().unwrap()
    };

    let listed: Value = get("/v1/models").json().unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["smollm2", "gemma3"]);
    let running: Value = get("/api/ps").json().unwrap();
    let names: Vec<&str> = running["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["smollm2", "gemma3"]);
    assert_eq!(running["models"][1]["details"]["family"], "gemma3");
    assert_eq!(get("/ready?model=gemma3").status().as_u16(), 200);
    assert_eq!(get("/ready?model=nope").status().as_u16(), 404);

    // Each answers as itself: the reply names it, and the prompt is counted
    // with its own tokenizer (the same text is a different number of tokens).
    let ask = |model: &str| {
        post(
            "/v1/completions",
            json!({"model": model, "prompt": "The capital of France is", "max_tokens": 4}),
        )
    };
    let (smol, gemma) = (ask("smollm2"), ask("gemma3"));
    assert_eq!(smol["model"], "smollm2");
    assert_eq!(gemma["model"], "gemma3");
    assert_ne!(
        smol["usage"]["prompt_tokens"], gemma["usage"]["prompt_tokens"],
        "{smol} {gemma}"
    );
    // No model named: the first one given.
    let default = post(
        "/v1/completions",
        json!({"prompt": "Hello", "max_tokens": 2}),
    );
    assert_eq!(default["model"], "smollm2");
    // Other families reach the second model too.
    let ollama = post(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "Hello", "stream": false,
                                            "options": {"num_predict": 3}}),
    );
    assert_eq!(ollama["done"], true);
    let anthropic = post(
        "/v1/messages",
        json!({"model": "gemma3", "max_tokens": 3,
                                               "messages": [{"role": "user", "content": "Hello"}]}),
    );
    assert_eq!(anthropic["model"], "gemma3");
    drop(server);
}

#[test]
fn the_same_model_twice_is_refused_before_listening() {
    let home = tempfile::tempdir().unwrap();
    let out = support::hearth(home.path())
        .args([
            "serve", "--port", "0", "--model", "smollm2", "--model", "smollm2",
        ])
        .output()
        .unwrap();
    let err = support::failed(out);
    assert!(err.contains("twice"), "{err}");
}
