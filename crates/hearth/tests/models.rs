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
    // The two given first; other stored models (served on demand) after.
    assert_eq!(ids[..2], ["smollm2", "gemma3"]);
    assert_eq!(listed["data"][1]["loaded"], true);
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

    // The two decode at the same time, sharing the threads: a short reply
    // from one is not held back until a long one from the other ends.
    std::thread::scope(|s| {
        let long = s.spawn(|| {
            let reply = post(
                "/v1/completions",
                json!({"model": "gemma3", "prompt": "Once", "max_tokens": 200, "ignore_eos": true}),
            );
            (reply, std::time::Instant::now())
        });
        std::thread::sleep(Duration::from_millis(500));
        post(
            "/v1/completions",
            json!({"model": "smollm2", "prompt": "Hi", "max_tokens": 4, "ignore_eos": true}),
        );
        let short_done = std::time::Instant::now();
        let (reply, long_done) = long.join().unwrap();
        assert_eq!(reply["usage"]["completion_tokens"], 200);
        assert!(
            short_done < long_done,
            "smollm2 waited for gemma3 to finish"
        );
    });
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

/// Loaded models in `/api/ps`, by name.
fn loaded(client: &reqwest::blocking::Client, base: &str) -> Vec<String> {
    let ps: Value = client
        .get(format!("{base}/api/ps"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn stored_models_load_on_demand_swap_within_the_budget_and_never_cut_a_request() {
    testkit::default_model();
    testkit::second_model();
    // The pinned model is the default model's file under another name, so
    // both stored models (smollm2, gemma3) are served on demand. Estimated
    // at ctx 1024: smol and smollm2 ~193 MB each, gemma3 ~329 MB; 600 MB
    // holds the pinned one and either other, never both.
    let dir = tempfile::tempdir().unwrap();
    let smol = dir.path().join("smol.gguf");
    std::os::unix::fs::symlink(testkit::default_model(), &smol).unwrap();
    let mut cmd = support::hearth(&testkit::hearth_home());
    cmd.args([
        "serve",
        "--port",
        "0",
        "--ctx-size",
        "1024",
        "--memory-budget",
        "600000000",
        "--keep-alive",
        "300",
        "--model",
    ])
    .arg(&smol);
    let (server, base) = support::spawn_server(cmd);
    support::wait_ready(&base);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    assert_eq!(loaded(&client, &base), ["smol"]);
    let complete = |model: &str, tokens: u32| -> Value {
        let resp = client
            .post(format!("{base}/v1/completions"))
            .json(&json!({"model": model, "prompt": "Once upon a time", "max_tokens": tokens, "ignore_eos": true}))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{model}");
        resp.json().unwrap()
    };
    for model in ["smollm2", "gemma3", "smollm2", "gemma3"] {
        let reply = complete(model, 4);
        assert_eq!(reply["model"], model);
        let mut now = loaded(&client, &base);
        now.sort();
        let mut expected = vec!["smol".to_string(), model.to_string()];
        expected.sort();
        assert_eq!(now, expected, "the other on-demand model made room");
    }

    // A long generation on gemma3 holds it: smollm2 waits for room instead
    // of unloading it mid-reply, and both finish whole.
    std::thread::scope(|s| {
        let long = s.spawn(|| complete("gemma3", 300));
        std::thread::sleep(Duration::from_millis(1500));
        let short = complete("smollm2", 4);
        let long = long.join().unwrap();
        assert_eq!(long["usage"]["completion_tokens"], 300, "{long}");
        assert_eq!(long["choices"][0]["finish_reason"], "length");
        assert_eq!(short["usage"]["completion_tokens"], 4);
    });
    drop(server);
}

#[test]
fn a_model_loaded_on_demand_leaves_after_its_keep_alive() {
    testkit::default_model();
    testkit::second_model();
    let mut cmd = support::hearth(&testkit::hearth_home());
    cmd.args([
        "serve",
        "--port",
        "0",
        "--ctx-size",
        "512",
        "--keep-alive",
        "1",
        "--model",
        "smollm2",
    ]);
    let (server, base) = support::spawn_server(cmd);
    support::wait_ready(&base);
    let client = reqwest::blocking::Client::new();
    let generate = |body: Value| {
        let resp = client
            .post(format!("{base}/api/generate"))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json::<Value>().unwrap()
    };
    let gone = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while loaded(&client, &base).len() > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "gemma3 never left ({what})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            loaded(&client, &base),
            ["smollm2"],
            "the pinned model stays"
        );
    };
    generate(
        json!({"model": "gemma3", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(loaded(&client, &base), ["smollm2", "gemma3"]);
    // Ollama's `expires_at`: when gemma3 leaves; the pinned model stays.
    let expiry = || -> Vec<Value> {
        let ps: Value = client
            .get(format!("{base}/api/ps"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        ps["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.get("expires_at").cloned().unwrap_or(Value::Null))
            .collect()
    };
    let expires = expiry();
    assert!(expires[0].is_null(), "{expires:?}");
    assert!(expires[1].is_string(), "{expires:?}");
    gone("the server's keep-alive of 1 s");

    // Ollama's per-request keep_alive: an empty prompt loads the model and
    // keeps it for ever, another with keep_alive 0 unloads it now.
    let load = generate(json!({"model": "gemma3", "keep_alive": -1}));
    assert_eq!(load["done_reason"], "load");
    assert_eq!(loaded(&client, &base), ["smollm2", "gemma3"]);
    assert!(expiry()[1].is_null(), "kept for ever: no expiry");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        loaded(&client, &base),
        ["smollm2", "gemma3"],
        "kept past the server's keep-alive"
    );
    let unload = generate(json!({"model": "gemma3", "keep_alive": 0}));
    assert_eq!(unload["done_reason"], "unload");
    gone("keep_alive 0");
    drop(server);
}

/// The stored model file of `name` under `home` (wherever the store keeps it).
fn stored_file(home: &std::path::Path) -> std::path::PathBuf {
    let mut dirs = vec![home.join("models")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "gguf") {
                return path;
            }
        }
    }
    panic!("no model file under {}", home.display());
}

#[test]
fn models_stored_while_serving_are_served_and_deleted_ones_leave() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let smol = dir.path().join("smol.gguf");
    std::os::unix::fs::symlink(testkit::default_model(), &smol).unwrap();
    let mut cmd = support::hearth(&home);
    cmd.args(["serve", "--port", "0", "--ctx-size", "512", "--model"])
        .arg(&smol);
    let (server, base) = support::spawn_server(cmd);
    support::wait_ready(&base);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let complete = |model: &str| {
        client
            .post(format!("{base}/v1/completions"))
            .json(&json!({"model": model, "prompt": "Hello", "max_tokens": 2}))
            .send()
            .unwrap()
    };
    let listed = || -> Vec<String> {
        let list: Value = client
            .get(format!("{base}/v1/models"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let delete = |model: &str| {
        client
            .delete(format!("{base}/api/delete"))
            .json(&json!({ "model": model }))
            .send()
            .unwrap()
    };
    let pull = || {
        support::ok(
            support::hearth(&home)
                .args(["pull", "smollm2"])
                .output()
                .unwrap(),
        )
    };
    assert_eq!(complete("smollm2").status().as_u16(), 404);
    assert_eq!(listed(), ["smol"]);
    // Only stored names open a model: never a path on the server's disk.
    let path = smol.to_str().unwrap();
    for name in [path, "../smol", "models/../../smol.gguf"] {
        assert_eq!(complete(name).status().as_u16(), 404, "{name}");
        assert_eq!(delete(name).status().as_u16(), 404, "{name}");
    }
    // Nor does a pull copy a file of the server's into the store.
    for name in [path, "file:///etc/hostname"] {
        let refused = client
            .post(format!("{base}/api/pull"))
            .json(&json!({ "model": name, "stream": false }))
            .send()
            .unwrap();
        assert_eq!(refused.status().as_u16(), 400, "{name}");
        let body: serde_json::Value = refused.json().unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("file path"),
            "{body}"
        );
    }
    assert_eq!(listed(), ["smol"]);

    // Pulled beside the running server: listed (not loaded yet), served
    // from its first mention, under its alias too, with its own metrics.
    pull();
    let list: Value = client
        .get(format!("{base}/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["data"][1]["id"], "smollm2");
    assert_eq!(list["data"][1]["loaded"], false);
    assert_eq!(list["data"][0]["loaded"], true);
    let reply = complete("smollm2");
    assert_eq!(reply.status().as_u16(), 200);
    assert_eq!(reply.json::<Value>().unwrap()["model"], "smollm2");
    assert_eq!(complete("smollm2:latest").status().as_u16(), 200);
    assert_eq!(listed(), ["smol", "smollm2"]);
    assert_eq!(loaded(&client, &base), ["smol", "smollm2"]);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("hearth_e2e_request_latency_seconds_count{model=\"smollm2\"} 2"),
        "requests to a model added later are counted under its name:\n{metrics}"
    );

    // The model given to `hearth serve` stays; one loaded on demand is
    // unloaded and deleted, and is then unknown.
    let refused = delete("smol");
    assert_eq!(refused.status().as_u16(), 409);
    assert!(refused.text().unwrap().contains("hearth serve"));
    assert_eq!(delete("smollm2").status().as_u16(), 200);
    assert_eq!(loaded(&client, &base), ["smol"]);
    assert_eq!(complete("smollm2").status().as_u16(), 404);
    assert_eq!(listed(), ["smol"]);

    // A stored file that cannot load: 503 with Retry-After, and no new try
    // before that time is up, even once the file is good again. (Pulled
    // over the API this time.)
    let pulled = client
        .post(format!("{base}/api/pull"))
        .json(&json!({"model": "smollm2", "stream": false}))
        .send()
        .unwrap();
    assert_eq!(pulled.status().as_u16(), 200);
    let file = stored_file(&home);
    // As in a store from before chunk lists: the chunk check before use
    // would otherwise refuse the damaged file before any load is tried.
    let manifest_path = file.with_file_name("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest.as_object_mut().unwrap().remove("chunks");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"XXXX");
    std::fs::write(&file, &bad).unwrap();
    let failed = complete("smollm2");
    assert_eq!(failed.status().as_u16(), 503);
    let retry: u64 = failed.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    let body: Value = failed.json().unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    std::fs::write(&file, &good).unwrap();
    assert_eq!(
        complete("smollm2").status().as_u16(),
        503,
        "retried too soon"
    );
    std::thread::sleep(Duration::from_secs(retry));
    // Two at once: the second waits for the first one's load (one
    // model_load below) and both are answered.
    std::thread::scope(|s| {
        let both = [
            s.spawn(|| complete("smollm2")),
            s.spawn(|| complete("smollm2")),
        ];
        for reply in both {
            assert_eq!(reply.join().unwrap().status().as_u16(), 200);
        }
    });

    // Removed with `hearth rm` beside the server: it leaves the list.
    // (After the server's audit batch of the load is written: the log is
    // in the order entries reach it, and the server writes every 200 ms.)
    std::thread::sleep(Duration::from_millis(600));
    support::ok(
        support::hearth(&home)
            .args(["rm", "smollm2"])
            .output()
            .unwrap(),
    );
    assert_eq!(listed(), ["smol"]);
    assert_eq!(loaded(&client, &base), ["smol"]);

    // Every pull, load, unload and delete is in the audit log, through the
    // API or beside the server (entries are synced within 200 ms).
    std::thread::sleep(Duration::from_millis(600));
    let export = support::ok(
        support::hearth(&home)
            .args(["audit", "export", "--since", "1h"])
            .output()
            .unwrap(),
    );
    let events: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["model"] == "smollm2" && e["event"] != "api_request")
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "model_pull",   // hearth pull
            "model_load",   // first request
            "model_unload", // DELETE /api/delete
            "model_delete",
            "model_pull", // POST /api/pull
            "model_load",
            "model_delete", // hearth rm
            "model_unload", // the server notices
        ],
        "{export}"
    );
    assert_eq!(events[4]["sha256"].as_str().map(str::len), Some(64));
    let verified = support::ok(
        support::hearth(&home)
            .args(["audit", "verify"])
            .output()
            .unwrap(),
    );
    assert!(verified.starts_with("OK:"), "{verified}");
    drop(server);
}
