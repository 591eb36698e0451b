//! `hearth serve` on SIGHUP: new policies take effect without a restart,
//! a request streaming across the reload finishes, and a broken policy file
//! keeps the previous set in force.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::json;

mod support;

use support::{hearth, ok, signal, spawn_server_logging_to, wait_ready};

fn hangup(pid: u32) {
    signal("-HUP", pid);
}

#[test]
fn sighup_reloads_policies_without_dropping_requests() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let key = ok(hearth(h)
        .args(["keys", "create", "--name", "desk"])
        .output()
        .unwrap())
    .trim()
    .to_string();
    let log_path = h.join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = hearth(h);
    cmd.args(["serve", "--port", "0", "--ctx-size", "512", "--model"])
        .arg(testkit::default_model());
    let (mut child, base) = spawn_server_logging_to(cmd, log);
    wait_ready(&base);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let chat = |max_tokens: u32, stream: bool| {
        client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({
                "messages": [{"role": "user", "content": "Tell me a long story"}],
                "max_tokens": max_tokens, "stream": stream, "ignore_eos": true
            }))
            .send()
            .unwrap()
    };
    assert_eq!(chat(1, false).status(), 200);

    // A stream in flight while the policies change under it.
    let streaming = chat(200, true);
    assert_eq!(streaming.status(), 200);
    let mut lines = BufReader::new(streaming).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("data: "), "{first}");
    std::fs::write(
        h.join("policies/closed.cedar"),
        r#"forbid (principal, action == Hearth::Action::"predict", resource);"#,
    )
    .unwrap();
    hangup(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while chat(1, false).status() != 403 {
        assert!(
            Instant::now() < deadline,
            "the new policy never took effect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(
        rest.iter()
            .rev()
            .find(|l| !l.is_empty())
            .map(String::as_str),
        Some("data: [DONE]"),
        "the stream started before the reload finished"
    );
    let pieces = rest.iter().filter(|l| l.contains("\"content\"")).count();
    assert!(pieces > 100, "{pieces} pieces");

    // A broken file: the reload is refused, the last good set stays.
    std::fs::write(h.join("policies/broken.cedar"), "permit (principal,").unwrap();
    hangup(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log_path)
        .unwrap()
        .contains("policies not reloaded")
    {
        assert!(Instant::now() < deadline, "no reload error logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(chat(1, false).status(), 403);
    std::fs::remove_file(h.join("policies/closed.cedar")).unwrap();
    std::fs::remove_file(h.join("policies/broken.cedar")).unwrap();
    hangup(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while chat(1, false).status() != 200 {
        assert!(
            Instant::now() < deadline,
            "the policies were never reopened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A clean stop flushes the audit log.
    signal("-TERM", child.id());
    assert!(child.wait().unwrap().success());

    // Each set put in force is in the audit log: start and two reloads.
    let export = ok(hearth(h)
        .args(["audit", "export", "--since", "1h"])
        .output()
        .unwrap());
    let loaded = export
        .lines()
        .filter(|l| l.contains("\"policy_loaded\""))
        .count();
    assert_eq!(loaded, 3, "{export}");
    for event in ["\"model_load\"", "\"model_unload\""] {
        assert!(export.contains(event), "{event} missing: {export}");
    }
}

/// An issuer's keys from a JWKS file: SIGHUP reads the file again, so a
/// rotated key works and a withdrawn one stops; a file that no longer
/// parses keeps the previous keys in force.
#[test]
fn sighup_reloads_jwks_files() {
    use testkit::jwt::{jwks, Signer};
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (old, new) = (Signer::es256("2026-10"), Signer::eddsa("2026-11"));
    let jwks_file = h.join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[&old])).unwrap();
    std::fs::write(
        h.join("config.toml"),
        format!(
            "[[auth.jwt]]\nissuer = \"https://idp.test\"\naudience = \"hearth\"\nalgorithms = [\"ES256\", \"EdDSA\"]\njwks_file = {jwks_file:?}\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(h.join("serve.log")).unwrap();
    let mut cmd = hearth(h);
    cmd.args(["serve", "--port", "0", "--ctx-size", "256", "--model"])
        .arg(testkit::default_model());
    let (mut child, base) = spawn_server_logging_to(cmd, log);
    wait_ready(&base);
    let client = reqwest::blocking::Client::new();
    let exp = auth::unix_now() + 600;
    let claims = json!({"iss": "https://idp.test", "aud": "hearth", "sub": "u-1", "exp": exp, "roles": ["user"]});
    let status = |signer: &Signer| {
        client
            .get(format!("{base}/v1/models"))
            .bearer_auth(signer.sign(&claims))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Polls across the reload, which happens off the signal's thread.
    let becomes = |signer: &Signer, want: u16| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while status(signer) != want {
            assert!(Instant::now() < deadline, "still not {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!((status(&old), status(&new)), (200, 401));
    std::fs::write(&jwks_file, jwks(&[&new])).unwrap();
    // A file read only at start: nothing changes before the signal.
    assert_eq!((status(&old), status(&new)), (200, 401));
    hangup(child.id());
    becomes(&new, 200);
    assert_eq!(status(&old), 401, "withdrawn from the file");
    std::fs::write(&jwks_file, "{\"keys\": [").unwrap();
    hangup(child.id());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!((status(&old), status(&new)), (401, 200));
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(h.join("serve.log")).unwrap();
    assert!(
        log.contains("JWT key files not reloaded") && log.contains("jwks.json"),
        "{log}"
    );
}
