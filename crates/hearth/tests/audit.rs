//! The audit log through the binary: what `hearth serve` and `hearth keys`
//! record, `hearth audit verify` on a clean and a tampered log, and export.

use std::time::Duration;

use serde_json::{json, Value};

mod support;

use support::{failed, hearth, ok, spawn_server, wait_ready};

#[test]
fn serve_and_keys_record_what_happened_and_verify_finds_tampering() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let user = ok(hearth(h)
        .args(["keys", "create", "--name", "desk"])
        .output()
        .unwrap())
    .trim()
    .to_string();
    let visitor = ok(hearth(h)
        .args(["keys", "create", "--name", "guest", "--role", "visitor"])
        .output()
        .unwrap())
    .trim()
    .to_string();
    let visitor_id = visitor.split('_').nth(1).unwrap().to_string();
    ok(hearth(h)
        .args(["keys", "revoke", &visitor_id])
        .output()
        .unwrap());

    let mut cmd = hearth(h);
    cmd.args(["serve", "--port", "0", "--ctx-size", "256", "--model"])
        .arg(testkit::default_model());
    let (mut child, base) = spawn_server(cmd);
    wait_ready(&base);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let chat =
        json!({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "seed": 1});
    let reply: Value = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&user)
        .json(&chat)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let streamed = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&user)
        .json(&json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": true}))
        .send()
        .unwrap();
    assert_eq!(streamed.status(), 200);
    streamed.text().unwrap();
    let revoked = client
        .get(format!("{base}/v1/models"))
        .bearer_auth(&visitor)
        .send()
        .unwrap();
    assert_eq!(revoked.status(), 401);
    // Entries are fsynced within 200 ms; then the server dies without a
    // chance to sign its tail.
    std::thread::sleep(Duration::from_millis(600));
    child.kill().unwrap();
    child.wait().unwrap();

    let out = ok(hearth(h).args(["audit", "verify"]).output().unwrap());
    assert!(out.starts_with("OK:"), "{out}");
    let export = ok(hearth(h)
        .args(["audit", "export", "--since", "1h"])
        .output()
        .unwrap());
    let entries: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of =
        |kind: &str| -> Vec<&Value> { entries.iter().filter(|e| e["event"] == kind).collect() };
    assert_eq!(of("key_created").len(), 2);
    assert_eq!(of("key_revoked")[0]["key_id"], visitor_id.as_str());
    assert_eq!(of("policy_loaded").len(), 1);
    assert_eq!(of("model_load").len(), 1);
    let failures = of("auth_failure");
    assert_eq!(failures.len(), 1);
    assert!(failures[0]["reason"].as_str().unwrap().contains("revoked"));
    let requests = of("api_request");
    assert_eq!(requests.len(), 2, "{export}");
    let user_id = format!("key:{}", user.split('_').nth(1).unwrap());
    let whole = requests
        .iter()
        .find(|r| r["request_id"] == reply["id"])
        .expect("the entry carries the response's id");
    assert_eq!(whole["principal"], user_id.as_str());
    assert_eq!(whole["action"], "predict");
    assert_eq!(whole["model"], "model");
    assert_eq!(whole["decision"], "allow");
    assert_eq!(whole["status"], 200);
    assert_eq!(whole["prompt_tokens"], reply["usage"]["prompt_tokens"]);
    assert_eq!(
        whole["completion_tokens"],
        reply["usage"]["completion_tokens"]
    );
    assert_eq!(whole["prompt_sha256"].as_str().unwrap().len(), 64);
    let text = reply["choices"][0]["message"]["content"].as_str().unwrap();
    use sha2::Digest as _;
    assert_eq!(
        whole["response_sha256"],
        hex::encode(sha2::Sha256::digest(text.as_bytes())).as_str()
    );
    assert!(whole.get("prompt").is_none(), "texts only when configured");
    let stream = requests
        .iter()
        .find(|r| r["request_id"] != reply["id"])
        .unwrap();
    assert_eq!(stream["completion_tokens"], 3);
    assert!(
        !export.contains(user.rsplit('_').next().unwrap()),
        "a secret reached the log"
    );

    // Tampering is found and located.
    let file = h.join("audit/audit-000001.jsonl");
    let original = std::fs::read_to_string(&file).unwrap();
    let n = original
        .lines()
        .position(|l| l.contains("auth_failure"))
        .unwrap();
    let tampered = original.replacen("has been revoked", "is fine", 1);
    std::fs::write(&file, tampered).unwrap();
    let err = failed(hearth(h).args(["audit", "verify"]).output().unwrap());
    assert!(
        err.contains("audit-000001.jsonl") && err.contains(&format!("line {}", n + 1)),
        "{err}"
    );
}

/// With `record_text`, the entry keeps the request body and the generated
/// text beside their hashes; a request the policies refuse is recorded as
/// a denial; `verify --from` starts at the file named and refuses a name
/// that is not a log file.
#[test]
fn recorded_texts_denials_and_verify_from() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(h.join("config.toml"), "[audit]\nrecord_text = true\n").unwrap();
    let user = ok(hearth(h)
        .args(["keys", "create", "--name", "desk"])
        .output()
        .unwrap())
    .trim()
    .to_string();
    let visitor = ok(hearth(h)
        .args(["keys", "create", "--name", "guest", "--role", "visitor"])
        .output()
        .unwrap())
    .trim()
    .to_string();
    let mut cmd = hearth(h);
    cmd.args(["serve", "--port", "0", "--ctx-size", "256", "--model"])
        .arg(testkit::default_model());
    let (mut child, base) = spawn_server(cmd);
    wait_ready(&base);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let chat =
        json!({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "seed": 1});
    let body = serde_json::to_string(&chat).unwrap();
    let reply: Value = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&user)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let denied = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&visitor)
        .json(&chat)
        .send()
        .unwrap();
    assert_eq!(denied.status(), 403);
    std::thread::sleep(Duration::from_millis(600));
    child.kill().unwrap();
    child.wait().unwrap();

    let export = ok(hearth(h)
        .args(["audit", "export", "--since", "1h"])
        .output()
        .unwrap());
    let requests: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "api_request")
        .collect();
    assert_eq!(requests.len(), 2, "{export}");
    let allowed = requests
        .iter()
        .find(|r| r["request_id"] == reply["id"])
        .unwrap();
    assert_eq!(allowed["prompt"], body.as_str());
    assert_eq!(
        allowed["response"],
        reply["choices"][0]["message"]["content"]
    );
    let refused = requests
        .iter()
        .find(|r| r["request_id"] != reply["id"])
        .unwrap();
    let visitor_id = format!("key:{}", visitor.split('_').nth(1).unwrap());
    assert_eq!(refused["principal"], visitor_id.as_str());
    assert_eq!(refused["decision"], "deny");
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["action"], "predict");
    assert_eq!(refused["completion_tokens"], 0);
    assert!(refused.get("response").is_none(), "{refused}");

    let from = ok(hearth(h)
        .args(["audit", "verify", "--from"])
        .arg(h.join("audit/audit-000001.jsonl"))
        .output()
        .unwrap());
    assert!(from.starts_with("OK:"), "{from}");
    let err = failed(
        hearth(h)
            .args(["audit", "verify", "--from", "audit-000009.jsonl"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("audit-000009.jsonl"), "{err}");
}
