//! The `hearth` binary end to end: real model, real pip, real server on loopback.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod support;

use support::{failed, ok};

fn hearth() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.env("HEARTH_HOME", testkit::hearth_home())
        .env_remove("HEARTH_CONFIG")
        .env("HEARTH_THREADS", "2");
    for chosen in ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"] {
        cmd.env_remove(chosen);
    }
    cmd
}

#[test]
fn show_describes_the_default_model() {
    testkit::default_model();
    let out = ok(hearth()
        .args(["show", "smollm2", "--json"])
        .output()
        .unwrap());
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["architecture"], "llama");
    assert_eq!(d["quantization"], "Q4_1");
    assert_eq!(d["context_length"], 8192);
    assert_eq!(d["chat_template"], true);
    assert_eq!(d["file_size"], 98_362_432);
    assert_eq!(d["parameters"], 134_515_008);
    assert_eq!(
        d["sha256"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );

    // A path works too, and its hash is computed rather than looked up.
    let path = testkit::default_model();
    let text = ok(hearth().args(["show"]).arg(&path).output().unwrap());
    assert!(
        text.contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        "{text}"
    );
    assert!(
        text.contains("chat format     the model's Jinja template (tool calls: hermes, tools described in the system prompt)"),
        "{text}"
    );
}

#[test]
fn show_and_run_refuse_a_malformed_file_by_name() {
    for file in testkit::malformed_corpus().iter().take(6) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let err = failed(hearth().arg("show").arg(file).output().unwrap());
        assert!(err.contains(&name), "{err}");
        let err = failed(
            hearth()
                .args(["run", "-n", "1"])
                .arg(file)
                .arg("hi")
                .output()
                .unwrap(),
        );
        assert!(err.contains(&name), "{err}");
    }
}

#[test]
fn run_streams_a_greedy_reply_deterministically() {
    testkit::default_model();
    let run = || {
        let out = ok(hearth()
            .args([
                "run",
                "--json",
                "--temperature",
                "0",
                "-n",
                "48",
                "What is the capital of Japan?",
            ])
            .output()
            .unwrap());
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(a["text"], b["text"]);
    assert!(a["text"].as_str().unwrap().contains("Tokyo"), "{a}");
    assert!(a["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(a["timings"]["decode_tokens_per_second"].as_f64().unwrap() > 0.0);

    // Plain mode prints the same text, streamed, with a trailing newline.
    let plain = ok(hearth()
        .args([
            "run",
            "smollm2",
            "--temperature",
            "0",
            "-n",
            "48",
            "What is the capital of Japan?",
        ])
        .output()
        .unwrap());
    assert_eq!(plain.trim_end_matches('\n'), a["text"].as_str().unwrap());
}

#[test]
fn chat_keeps_the_conversation() {
    testkit::default_model();
    let mut child = hearth()
        .args(["chat", "--temperature", "0", "-n", "40", "--verbose"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "What is the capital of Japan?").unwrap();
        writeln!(stdin, "What is the capital of Japan?").unwrap();
        writeln!(stdin, "/reset").unwrap();
        writeln!(stdin, "What is the capital of Japan?").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = ok(out);
    assert!(stdout.contains("Tokyo"), "{stdout}");
    // `[P prompt tokens, G generated, ...]` after each reply.
    let turns: Vec<(u32, u32)> = stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('[')?;
            let (p, rest) = rest.split_once(" prompt tokens, ")?;
            let (g, _) = rest.split_once(" generated")?;
            Some((p.parse().ok()?, g.parse().ok()?))
        })
        .collect();
    assert_eq!(turns.len(), 3, "{stderr}");
    assert!(
        turns[1].0 > turns[0].0 + turns[0].1,
        "the second turn carries the first exchange: {turns:?}"
    );
    assert_eq!(
        turns[2].0, turns[0].0,
        "after /reset the history is gone: {turns:?}"
    );
    assert!(stderr.contains("(conversation cleared)"), "{stderr}");
}

/// Regression: with the prefix cache on, every pp repetition after the
/// warm-up reused its whole prompt and reported one token's rate.
#[test]
fn bench_computes_every_prompt_it_times() {
    testkit::default_model();
    let out = ok(hearth()
        .args([
            "bench",
            "--reps",
            "2",
            "--prompt-tokens",
            "128",
            "--gen-tokens",
            "4",
            "--json",
        ])
        .output()
        .unwrap());
    let r: Value = serde_json::from_str(&out).unwrap();
    let tests: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["test"].as_str().unwrap())
        .collect();
    assert_eq!(tests, ["pp128", "tg4"]);
    for t in r["results"].as_array().unwrap() {
        assert_eq!(t["samples_tokens_per_second"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn unknown_models_and_bad_settings_fail_clearly() {
    let err = failed(
        hearth()
            .args(["run", "no-such-model", "hi"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("no-such-model"), "{err}");
    let err = failed(
        hearth()
            .args(["run", "--threads", "0", "hi"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("threads"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hearth.toml");
    std::fs::write(&config, "[server]\nprot = 1\n").unwrap();
    let err = failed(
        hearth()
            .arg("--config")
            .arg(&config)
            .arg("list")
            .output()
            .unwrap(),
    );
    assert!(err.contains("prot"), "{err}");
}

/// The environment a `hearth serve` started by `cmd` runs with.
fn served_environment(mut cmd: Command) -> Vec<String> {
    cmd.args(["serve", "--port", "0", "--ctx-size", "512"]);
    let (child, _base) = support::spawn_server(cmd);
    let raw = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    raw.split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn openmp_keeps_spinning_when_several_models_are_loaded() {
    // Regression: once a second model had answered a request, libgomp
    // managed more threads than there are CPUs and spun only 100 times at
    // each barrier, and the first model decoded at 46-52 tok/s instead of
    // 95-100 (bench/two-models.sh). hearth re-executes itself with the
    // wait policy that keeps the spin, unless the operator chose one.
    testkit::default_model();
    let env = served_environment(hearth());
    assert!(env.iter().any(|v| v == "OMP_WAIT_POLICY=ACTIVE"), "{env:?}");
    assert!(env.iter().any(|v| v == "GOMP_SPINCOUNT=300000"), "{env:?}");
    assert!(env.iter().any(|v| v == "KMP_BLOCKTIME=200"), "{env:?}");
    let mut chosen = hearth();
    chosen.env("OMP_WAIT_POLICY", "PASSIVE");
    let env = served_environment(chosen);
    assert!(
        env.iter().any(|v| v == "OMP_WAIT_POLICY=PASSIVE"),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|v| v.starts_with("GOMP_SPINCOUNT=")),
        "{env:?}"
    );
}

#[test]
fn serve_answers_over_http_and_refuses_bad_requests() {
    testkit::default_model();
    let mut cmd = hearth();
    cmd.args(["serve", "--port", "0", "--ctx-size", "512"]);
    let (mut child, base) = support::spawn_server(cmd);

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // The port opens before the model is loaded; readiness says when it is.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client.get(format!("{base}/ready")).send().unwrap();
        if ready.status().as_u16() == 200 {
            break;
        }
        assert_eq!(ready.status().as_u16(), 503);
        assert!(std::time::Instant::now() < deadline, "never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let reply: Value = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": "smollm2",
            "messages": [{"role": "user", "content": "What is the capital of Japan?"}],
            "temperature": 0, "max_tokens": 48,
        }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Tokyo"), "{reply}");

    let long = "tokens ".repeat(600);
    let resp = client
        .post(format!("{base}/v1/completions"))
        .json(&serde_json::json!({"model": "smollm2", "prompt": long}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded");

    child.kill().unwrap();
    child.wait().unwrap();
}

/// Pulls into a fresh home, killing the pull at several moments first. After
/// every interruption the store must hold a complete model or none at all.
#[test]
fn pull_is_atomic_even_when_killed() {
    testkit::default_model(); // warms pip's cache, so the kills land at varied stages
    let home = tempfile::tempdir().unwrap();
    let in_home = |args: &[&str]| {
        let mut cmd = hearth();
        cmd.env("HEARTH_HOME", home.path()).args(args);
        cmd
    };
    // Kills at fixed moments, then one as soon as the temporary file exists,
    // so at least one lands after pip is done, while Hearth writes the store.
    let mut after_download = false;
    for delay_ms in [200, 1500, 3000, 0] {
        let mut child = in_home(&["pull", "smollm2", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(delay_ms));
        } else {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !writing(home.path()) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            after_download = writing(home.path());
        }
        let _ = child.kill();
        child.wait().unwrap();
        assert_consistent(home.path());
    }
    assert!(
        after_download,
        "no kill landed while the model was being written"
    );
    let out = ok(in_home(&["pull", "smollm2"]).output().unwrap());
    assert!(
        out.contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        "{out}"
    );
    let listed = ok(in_home(&["list", "--json"]).output().unwrap());
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["name"], "smollm2");
    assert_eq!(listed[0]["size"], 98_362_432);

    let removed = ok(in_home(&["rm", "smollm2:135m"]).output().unwrap());
    assert!(removed.contains("removed smollm2"), "{removed}");
    assert_eq!(
        ok(in_home(&["list", "--json"]).output().unwrap()).trim(),
        "[]"
    );
    let err = failed(in_home(&["rm", "smollm2"]).output().unwrap());
    assert!(err.contains("not in the store"), "{err}");
}

/// Whether a pull is past pip, writing the model's `.partial` file.
fn writing(home: &Path) -> bool {
    std::fs::read_dir(home.join("tmp")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
    })
}

/// Either the model is listed and its file matches the manifest, or it is not listed.
fn assert_consistent(home: &Path) {
    let dir = home.join("models/smollm2");
    let manifest = dir.join("manifest.json");
    if manifest.exists() {
        let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        let len = std::fs::metadata(dir.join("model.gguf")).unwrap().len();
        assert_eq!(Some(len), m["size"].as_u64());
    }
    // Nothing half-written sits under a final name.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            assert!(
                ["model.gguf", "manifest.json", "verified.json"].contains(&name.as_str())
                    || name.starts_with(".tmp"),
                "{name}"
            );
        }
    }
}

#[test]
fn embed_prints_one_unit_vector_per_text() {
    testkit::default_model();
    let mut child = hearth()
        .args(["embed", "The cat sat.", "-", "--dimensions", "48"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"A kitten rested.\nInterest rates rose.\n")
        .unwrap();
    let out = ok(child.wait_with_output().unwrap());
    let vectors: Vec<Vec<f64>> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(vectors.len(), 3, "{out}");
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for v in &vectors {
        assert_eq!(v.len(), 48);
        assert!((dot(v, v) - 1.0).abs() < 1e-4);
    }
    assert!(dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]));

    let err = failed(
        hearth()
            .args(["embed", "x", "--dimensions", "0"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("dimensions"), "{err}");
}

/// `hearth verify` re-hashes every chunk: a stored model verifies, a
/// manifest from before chunk lists gets one, and one flipped byte is named
/// by chunk and offset, fails the command and reaches the audit log.
#[test]
fn verify_names_the_chunk_with_a_flipped_byte() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(support::hearth(h)
        .args(["pull", "smollm2"])
        .output()
        .unwrap());
    let out = ok(support::hearth(h).args(["verify"]).output().unwrap());
    assert_eq!(out.trim(), "smollm2: ok (2 chunks)");

    // A manifest written before chunk lists existed.
    let manifest_path = h.join("models/smollm2/manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let chunks = manifest["chunks"].clone();
    assert_eq!(chunks[1]["offset"], 64 << 20);
    let object = manifest.as_object_mut().unwrap();
    object.remove("chunks");
    object.remove("chunk_size");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = ok(support::hearth(h)
        .args(["verify", "smollm2"])
        .output()
        .unwrap());
    assert!(out.contains("chunk list recorded"), "{out}");
    let upgraded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(upgraded["chunks"], chunks);

    // One byte flipped in the second chunk.
    let file = h.join("models/smollm2/model.gguf");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[(64 << 20) + 1000] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let out = support::hearth(h)
        .args(["verify", "smollm2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let err = failed(out);
    assert!(
        stdout.contains("chunk 2 of 2") && stdout.contains("offset 67108864"),
        "{stdout}"
    );
    assert!(!stdout.contains("chunk 1 "), "{stdout}");
    assert!(err.contains("damaged: smollm2"), "{err}");
    let export = ok(support::hearth(h)
        .args(["audit", "export", "--since", "1h"])
        .output()
        .unwrap());
    let failure: serde_json::Value = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "model_verify_failed")
        .expect("the failure is audited");
    assert_eq!(failure["bad_chunk_offsets"], serde_json::json!([67108864]));

    // The damaged model refuses to load, naming the chunk; restored, it runs.
    let run = |h: &Path| {
        support::hearth(h)
            .args(["run", "smollm2", "-n", "2", "Hi"])
            .output()
            .unwrap()
    };
    let err = failed(run(h));
    assert!(
        err.contains("chunk 2 of 2") && err.contains("offset 67108864"),
        "{err}"
    );
    bytes[(64 << 20) + 1000] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    ok(run(h));
}
