//! `hearth verify-deploy`: a recorded deployment passes unchanged, and fails
//! with a diff when its model file is swapped for another quantization or
//! decode is slower than expected; the same check runs against a server.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod support;
use support::{failed, ok, spawn_server, wait_ready};

fn hearth(home: &Path) -> Command {
    support::hearth(home)
}

#[test]
fn a_swapped_model_file_fails_with_a_diff_and_an_unchanged_one_passes() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let deployed = home.join("deployed.gguf");
    std::fs::copy(testkit::default_model(), &deployed).unwrap();
    let golden = home.join("golden.json");
    let verify = |extra: &[&str]| {
        let mut cmd = hearth(home);
        cmd.arg("verify-deploy")
            .arg(&deployed)
            .arg("--golden")
            .arg(&golden)
            .args(extra);
        cmd.output().unwrap()
    };
    let recorded = ok(verify(&["--record", "--max-tokens", "24"]));
    assert!(recorded.contains("recorded 8 outputs"), "{recorded}");
    let record: Value = serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
    assert_eq!(record["cases"].as_array().unwrap().len(), 8);
    assert!(record["decode_tps"].as_f64().unwrap() > 0.0);

    // Unchanged: every output matches, and decode keeps up with the plan
    // (a wide tolerance: other tests share CI's two cores).
    let passed = ok(verify(&["--speed-tolerance", "90", "--json"]));
    let report: Value = serde_json::from_str(&passed).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["outputs_differing"], 0);
    assert!(report["speed"]["source"]
        .as_str()
        .unwrap()
        .starts_with("the plan"));

    // Slower than a stated expectation: fails on speed alone.
    let err = failed(verify(&["--expect-decode-tps", "1000000"]));
    assert!(err.contains("decode is too slow"), "{err}");
    assert!(!err.contains("outputs differ"), "{err}");

    // The same file at a different quantization.
    let q4_0 = home.join("q4_0.gguf");
    ok(hearth(home)
        .args(["quantize"])
        .arg(&deployed)
        .args(["--type", "Q4_0", "--allow-requantize", "--name", "q4"])
        .output()
        .unwrap());
    let show: Value = serde_json::from_str(&ok(hearth(home)
        .args(["show", "q4", "--json"])
        .output()
        .unwrap()))
    .unwrap();
    std::fs::copy(show["path"].as_str().unwrap(), &q4_0).unwrap();
    std::fs::copy(&q4_0, &deployed).unwrap();
    let out = verify(&["--skip-speed"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let err = failed(out);
    assert!(err.contains("the model file changed"), "{err}");
    // Beyond near-ties: measured, all 8 part at 0.31 nats or more.
    let differing: u32 = err
        .split(" of 8 outputs differ")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(differing >= 3, "{err}");
    assert!(
        stdout.contains("model file changed: recorded sha256"),
        "{stdout}"
    );
    assert!(stdout.contains("differs (from token"), "{stdout}");
    for side in ["  recorded: ", "  deployed: "] {
        assert!(stdout.contains(side), "no readable diff: {stdout}");
    }
}

#[test]
fn a_deployed_server_is_checked_over_http() {
    let mut cmd = hearth(&testkit::hearth_home());
    // No prefix cache: every sequence then takes the same cells, and a
    // greedy answer is the same every time. With the cache, kept sequences
    // move new ones to other cells and the sums round differently (the
    // tie margin's business; see `--tie-nats`).
    cmd.args([
        "serve",
        "--port",
        "0",
        "--ctx-size",
        "1024",
        "--no-prefix-cache",
    ]);
    let (_server, base) = spawn_server(cmd);
    wait_ready(&base);
    let dir = tempfile::tempdir().unwrap();
    let golden = dir.path().join("golden.json");
    let verify = |extra: &[&str]| {
        hearth(&testkit::hearth_home())
            .args(["verify-deploy", "smollm2", "--url", &base, "--golden"])
            .arg(&golden)
            .args(extra)
            .output()
            .unwrap()
    };
    ok(verify(&["--record", "--max-tokens", "16", "--skip-speed"]));
    let out = ok(verify(&["--skip-speed"]));
    assert!(out.contains("8 of 8 outputs match"), "{out}");

    // A record the deployment does not match: one output edited.
    let mut record: Value =
        serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
    record["cases"][2]["output"] = Value::from("something else entirely");
    // As an older record, without tokens, would hold it.
    record["cases"][2]["tokens"] = Value::Array(Vec::new());
    std::fs::write(&golden, record.to_string()).unwrap();
    let out = verify(&["--skip-speed"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let err = failed(out);
    assert!(err.contains("1 of 8 outputs differ"), "{err}");
    assert!(
        stdout.contains("recorded: \"something else entirely\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("record again to tell near-ties"),
        "{stdout}"
    );

    // No record yet: says how to make one.
    let err = failed(
        hearth(&testkit::hearth_home())
            .args(["verify-deploy", "smollm2", "--url", &base, "--golden"])
            .arg(dir.path().join("none.json"))
            .output()
            .unwrap(),
    );
    assert!(err.contains("--record"), "{err}");
}

#[test]
fn cache_prompt_false_computes_the_whole_prompt() {
    // The prefix cache on: a repeated prompt is served from it, unless the
    // request asks otherwise (what verify-deploy --url sends).
    let cmd = {
        let mut cmd = hearth(&testkit::hearth_home());
        cmd.args(["serve", "--port", "0", "--ctx-size", "1024"]);
        cmd
    };
    let (_server, base) = spawn_server(cmd);
    wait_ready(&base);
    let client = reqwest::blocking::Client::new();
    // Longer than the 64 tokens below which a prefix is not reused.
    let prompt = "Name three rivers of Europe and say where each rises. ".repeat(8);
    let cached = |cache_prompt: Option<bool>| {
        let mut body = serde_json::json!({
            "model": "smollm2",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 2,
            "temperature": 0,
        });
        if let Some(c) = cache_prompt {
            body["cache_prompt"] = Value::from(c);
        }
        let reply: Value = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        reply["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or_else(|| panic!("{reply}"))
    };
    cached(None);
    assert_eq!(cached(Some(false)), 0, "the whole prompt computed");
    assert!(
        cached(None) > 0,
        "the same prompt again comes from the cache"
    );
}
