//! Live model swap: a served model's new version, stored beside the running
//! server, replaces it under streaming load without losing a request, and
//! every response comes wholly from one version (its chunks all carry that
//! version's `system_fingerprint`); with `--model-swap manual` only the
//! admin route swaps. Both versions are real models: the default one, then
//! Gemma 3 270M, stored under the same name.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;

use support::{hearth, ok, spawn_server_logging_to, wait_ready};

/// One streamed response as the client saw it.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    fingerprints: Vec<String>,
    finished: bool,
    done: bool,
    started: Instant,
    ended: Instant,
}

fn stream_once(client: &reqwest::blocking::Client, base: &str, key: &str) -> Seen {
    let started = Instant::now();
    let body = json!({"model": "assistant", "stream": true, "max_tokens": 24, "temperature": 0,
                      "messages": [{"role": "user", "content": "Name three colours."}]});
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    let mut seen = Seen {
        status,
        fingerprints: Vec::new(),
        finished: false,
        done: false,
        started,
        ended: Instant::now(),
    };
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            seen.done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        if let Some(fp) = chunk["system_fingerprint"].as_str() {
            seen.fingerprints.push(fp.to_string());
        }
        if chunk["choices"][0]["finish_reason"].is_string() {
            seen.finished = true;
        }
    }
    seen
}

fn fingerprint(digest: &str) -> String {
    format!("fp_{}", &digest[..12])
}

fn digest(home: &Path) -> String {
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(home.join("models/assistant/manifest.json")).unwrap(),
    )
    .unwrap();
    manifest["sha256"].as_str().unwrap().to_string()
}

fn store_version(home: &Path, file: &Path) {
    ok(hearth(home)
        .arg("pull")
        .arg(file)
        .args(["--name", "assistant", "--force"])
        .output()
        .unwrap());
}

fn admin_key(home: &Path) -> String {
    ok(hearth(home)
        .args(["keys", "create", "--name", "ops", "--role", "admin"])
        .output()
        .unwrap())
    .trim()
    .to_string()
}

/// The first version stored as `assistant`, and an admin key: its digest
/// and the key.
fn prepare(home: &Path) -> (String, String) {
    store_version(home, &testkit::default_model());
    (digest(home), admin_key(home))
}

/// `hearth serve` of `assistant`, logging to `serve.log` in the home.
fn serve(home: &Path, extra: &[&str]) -> (support::Server, String) {
    let mut cmd = hearth(home);
    cmd.args([
        "serve",
        "--port",
        "0",
        "--ctx-size",
        "512",
        "--model",
        "assistant",
    ])
    .args(extra);
    let log = std::fs::File::create(home.join("serve.log")).unwrap();
    let (server, base) = spawn_server_logging_to(cmd, log);
    wait_ready(&base);
    (server, base)
}

#[test]
fn a_new_version_replaces_a_served_model_under_load_without_losing_a_request() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (old, key) = prepare(h);
    let (_server, base) = serve(h, &[]);

    // Four clients stream one request after another until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, seen, base, key) = (
                Arc::clone(&stop),
                Arc::clone(&seen),
                base.clone(),
                key.clone(),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let one = stream_once(&client, &base, &key);
                    seen.lock().unwrap().push(one);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    // The new version arrives beside the running server.
    store_version(h, &testkit::second_model());
    let new = digest(h);
    assert_ne!(old, new);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let swapped = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.fingerprints.first() == Some(&fingerprint(&new)))
            .count();
        if swapped >= 4 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let (fp_old, fp_new) = (fingerprint(&old), fingerprint(&new));
    for s in &seen {
        assert_eq!(s.status, 200, "{s:?}");
        assert!(s.finished && s.done, "a response was cut short: {s:?}");
        assert!(!s.fingerprints.is_empty(), "{s:?}");
        let first = &s.fingerprints[0];
        assert!(
            s.fingerprints.iter().all(|f| f == first),
            "a response mixed versions: {s:?}"
        );
        assert!(first == &fp_old || first == &fp_new, "{s:?}");
    }
    let on = |fp: &str| seen.iter().filter(|s| s.fingerprints[0] == fp).count();
    assert!(
        on(&fp_old) > 0 && on(&fp_new) >= 4,
        "old {} new {}",
        on(&fp_old),
        on(&fp_new)
    );
    // Requests running at the swap finished on the old version after new
    // ones had started on the new.
    let first_new = seen
        .iter()
        .filter(|s| s.fingerprints[0] == fp_new)
        .map(|s| s.started)
        .min()
        .unwrap();
    assert!(
        seen.iter()
            .any(|s| s.fingerprints[0] == fp_old && s.ended > first_new),
        "no request ran across the swap"
    );
    let audit: String = std::fs::read_dir(h.join("audit"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect();
    let swap = audit
        .lines()
        .find(|l| l.contains("\"model_swap\""))
        .unwrap_or_else(|| panic!("no model_swap entry: {audit}"));
    assert!(swap.contains(&old) && swap.contains(&new), "{swap}");
}

#[test]
fn with_manual_swaps_only_the_admin_route_moves_a_model() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (old, key) = prepare(h);
    let (_server, base) = serve(h, &["--model-swap", "manual"]);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    store_version(h, &testkit::second_model());
    let new = digest(h);
    // Longer than the automatic watcher's period: nothing moves.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        stream_once(&client, &base, &key).fingerprints[0],
        fingerprint(&old)
    );
    let reload = |who: Option<&str>| {
        let request = client.post(format!("{base}/admin/models/assistant/reload"));
        let request = match who {
            Some(k) => request.bearer_auth(k),
            None => request,
        };
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap())
    };
    assert_eq!(reload(None).0, 401);
    let (status, body) = reload(Some(&key));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "swapped", "{body}");
    assert_eq!(
        (body["from"].as_str(), body["to"].as_str()),
        (Some(old.as_str()), Some(new.as_str()))
    );
    assert_eq!(
        stream_once(&client, &base, &key).fingerprints[0],
        fingerprint(&new)
    );
    let (status, body) = reload(Some(&key));
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("unchanged")),
        "{body}"
    );
    let missing = client
        .post(format!("{base}/admin/models/nothing/reload"))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
}
