//! Object storage against a real S3-compatible server on loopback (moto in
//! its server mode, from PyPI; see `testkit::s3`): push a model, push it
//! again and upload nothing, push a second version and upload only its
//! changed chunk, pull into a fresh home and run it; a plain GGUF object
//! pulls too, a bad chunk on a node is repaired from the bucket, keys may
//! come from a profile in the shared credentials file,
//! and a model the bucket lacks is a clear error; an encrypted store
//! pushes its plaintext only when asked, and only with its key; a push
//! that fails halfway is audited with what went up; `sync` takes a model
//! from a peer before the bucket.

use std::path::Path;
use std::process::Command;

use testkit::s3::S3Server;

mod support;

use support::{failed, ok};

const CHUNK: u64 = 8 << 20;

/// `hearth` pointed at `server` with the standard AWS variables.
fn hearth(home: &Path, server: &S3Server) -> Command {
    let mut cmd = support::hearth(home);
    cmd.env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("AWS_ACCESS_KEY_ID", "hearth-test")
        .env("AWS_SECRET_ACCESS_KEY", "hearth-test-secret")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        cmd.env_remove(var);
    }
    cmd
}

/// The numbers of `hearth push`'s report: (chunks uploaded, bytes
/// uploaded, chunks reused).
fn pushed(out: &str) -> (u64, u64, u64) {
    let report = out.split_once(": ").map_or(out, |(_, r)| r);
    let n: Vec<u64> = report
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(out.contains("uploaded") && n.len() >= 4, "{out}");
    (n[0], n[1], n[2])
}

/// A home with 8 MiB chunks holding the default model as `smol`.
fn site_with_smol(server: &S3Server, model: &Path) -> tempfile::TempDir {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("config.toml"), "[pull]\nchunk_mb = 8\n").unwrap();
    ok(hearth(site.path(), server)
        .args(["pull", model.to_str().unwrap(), "--name", "smol"])
        .output()
        .unwrap());
    site
}

#[test]
fn push_pull_and_versions_move_only_new_chunks() {
    let server = S3Server::start("models");
    let model = testkit::default_model();
    let size = std::fs::metadata(&model).unwrap().len();
    let chunks = size.div_ceil(CHUNK);
    let site = site_with_smol(&server, &model);
    let a = site.path();

    let first = ok(hearth(a, &server)
        .args(["push", "smol", "s3://models/site"])
        .output()
        .unwrap());
    assert_eq!(pushed(&first), (chunks, size, 0), "{first}");
    assert!(
        first.contains("s3://models/site/models/smol.json"),
        "{first}"
    );
    // Again: the bucket has every chunk.
    let again = ok(hearth(a, &server)
        .args(["push", "smol", "s3://models/site"])
        .output()
        .unwrap());
    assert_eq!(pushed(&again), (0, 0, chunks), "{again}");
    // The keys from a profile in the shared credentials file instead.
    let shared = a.join("aws-credentials");
    std::fs::write(
        &shared,
        "[default]\naws_access_key_id = nobody\n[site]\naws_access_key_id = from-profile\naws_secret_access_key = profile-secret\n",
    )
    .unwrap();
    let profiled = ok(hearth(a, &server)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &shared)
        .env("AWS_PROFILE", "site")
        .args(["push", "smol", "s3://models/site"])
        .output()
        .unwrap());
    assert_eq!(pushed(&profiled), (0, 0, chunks), "{profiled}");
    // A second version differing in one byte of its third chunk uploads
    // that chunk only.
    let v2 = a.join("smol-v2.gguf");
    std::fs::copy(&model, &v2).unwrap();
    support::flip_byte(&v2, 2 * CHUNK + 4321, 1);
    ok(hearth(a, &server)
        .args(["pull", v2.to_str().unwrap(), "--name", "smol-v2"])
        .output()
        .unwrap());
    // Under a 4 MiB/s cap its 8 MiB take at least 2 s (a lower bound: the
    // cap holds, however slow the machine).
    let started = std::time::Instant::now();
    let second = ok(hearth(a, &server)
        .args(["push", "smol-v2", "s3://models/site", "--limit-rate", "4M"])
        .output()
        .unwrap());
    assert_eq!(pushed(&second), (1, CHUNK, chunks - 1), "{second}");
    assert!(
        started.elapsed().as_secs_f64() >= 1.9,
        "{:?}",
        started.elapsed()
    );

    // Another site pulls it from the bucket, verified chunk by chunk, and
    // runs it.
    let node = tempfile::tempdir().unwrap();
    let b = node.path();
    let said = ok(hearth(b, &server)
        .args(["pull", "s3://models/site/smol"])
        .output()
        .unwrap());
    assert!(said.contains("smol"), "{said}");
    ok(hearth(b, &server)
        .args(["verify", "smol"])
        .output()
        .unwrap());
    let answer = ok(hearth(b, &server)
        .args([
            "run",
            "smol",
            "--temperature",
            "0",
            "-n",
            "24",
            "What is the capital of Japan?",
        ])
        .output()
        .unwrap());
    assert!(answer.contains("Tokyo"), "{answer}");
    // A byte gone bad on the node: repair fetches that chunk alone from
    // the bucket's chunk object.
    support::flip_byte(&b.join("models/smol/model.gguf"), 5 * CHUNK + 99, 0x10);
    failed(
        hearth(b, &server)
            .args(["verify", "smol"])
            .output()
            .unwrap(),
    );
    let repaired = ok(hearth(b, &server)
        .args(["repair", "smol"])
        .output()
        .unwrap());
    assert!(
        repaired.contains("repaired 1 chunk")
            && repaired.contains(&format!("offset {}", 5 * CHUNK)),
        "{repaired}"
    );
    ok(hearth(b, &server)
        .args(["verify", "smol"])
        .output()
        .unwrap());

    // The second version, pulled over the first: only about the changed
    // byte's content-defined chunk comes from the bucket.
    let out = hearth(b, &server)
        .args([
            "pull",
            "s3://models/site/smol-v2",
            "--name",
            "smol",
            "--force",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    let size = std::fs::metadata(&v2).unwrap().len();
    let counts: Vec<u64> = said
        .lines()
        .find_map(|l| l.strip_prefix("reused "))
        .unwrap_or_else(|| panic!("no counts: {said}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(counts.len(), 2, "{said}");
    assert_eq!(counts[0] + counts[1], size, "{said}");
    assert!(counts[1] < size / 10, "{said}");
    assert_eq!(
        std::fs::read(b.join("models/smol/model.gguf")).unwrap(),
        std::fs::read(&v2).unwrap()
    );

    // A model the bucket lacks: an error naming it; nothing stored.
    let err = failed(
        hearth(b, &server)
            .args(["pull", "s3://models/site/none"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("s3://models/site/models/none.json"), "{err}");

    // Over the API as well: a running server pulls it from the bucket and
    // serves it.
    let served = tempfile::tempdir().unwrap();
    let mut serve = hearth(served.path(), &server);
    serve
        .args(["serve", "--port", "0", "--ctx-size", "512", "--model"])
        .arg(&model);
    let (api, base) = support::spawn_server(serve);
    support::wait_ready(&base);
    let client = reqwest::blocking::Client::new();
    let pulled = client
        .post(format!("{base}/api/pull"))
        .json(&serde_json::json!({"model": "s3://models/site/smol", "stream": false}))
        .send()
        .unwrap();
    assert_eq!(pulled.status().as_u16(), 200, "{}", pulled.text().unwrap());
    let reply: serde_json::Value = client
        .post(format!("{base}/v1/completions"))
        .json(&serde_json::json!({"model": "smol", "prompt": "One, two,", "max_tokens": 4}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(reply["choices"][0]["text"].is_string(), "{reply}");
    drop(api);

    // A manifest under another model's key is refused, not stored under
    // the name inside it.
    let copy = node.path().join("evil.json");
    std::fs::write(
        &copy,
        std::fs::read(b.join("models/smol/manifest.json")).unwrap(),
    )
    .unwrap();
    server.put_object("models", "site/models/evil.json", &copy);
    let err = failed(
        hearth(b, &server)
            .args(["pull", "s3://models/site/evil"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("names model `smol`"), "{err}");

    // A GGUF a site copied into the bucket with its own tools.
    server.put_object("models", "plain/SmolLM2.gguf", &model);
    ok(hearth(b, &server)
        .args(["pull", "s3://models/plain/SmolLM2.gguf", "--name", "plain"])
        .output()
        .unwrap());
    ok(hearth(b, &server)
        .args(["verify", "plain"])
        .output()
        .unwrap());
}

#[test]
fn an_encrypted_store_pushes_plaintext_only_when_asked() {
    let server = S3Server::start("sealed");
    let model = testkit::default_model();
    let size = std::fs::metadata(&model).unwrap().len();
    let site = site_with_smol(&server, &model);
    let a = site.path();
    let keys = tempfile::tempdir().unwrap();
    let (key, other) = (keys.path().join("store.key"), keys.path().join("other.key"));
    for k in [&key, &other] {
        ok(hearth(a, &server)
            .args(["store", "keygen"])
            .arg(k)
            .output()
            .unwrap());
    }
    let sealed = |k: &Path| {
        let mut cmd = hearth(a, &server);
        cmd.env("HEARTH_STORE_KEY_FILE", k);
        cmd
    };
    ok(sealed(&key).args(["store", "encrypt"]).output().unwrap());

    // Without consent: refused, saying how, and nothing reaches the bucket.
    let refused = failed(
        sealed(&key)
            .args(["push", "smol", "s3://sealed/site"])
            .output()
            .unwrap(),
    );
    assert!(
        refused.contains("encrypted") && refused.contains("--plaintext"),
        "{refused}"
    );
    // With the wrong key: refused by the key, nothing uploaded either.
    let wrong = failed(
        sealed(&other)
            .args(["push", "smol", "s3://sealed/site", "--plaintext"])
            .output()
            .unwrap(),
    );
    assert!(wrong.contains("not with the configured key"), "{wrong}");
    let empty = tempfile::tempdir().unwrap();
    failed(
        hearth(empty.path(), &server)
            .args(["pull", "s3://sealed/site/smol"])
            .output()
            .unwrap(),
    );

    // With it: every chunk goes up decrypted, and another node pulls the
    // original bytes, verified against the manifest's digests.
    let first = ok(sealed(&key)
        .args(["push", "smol", "s3://sealed/site", "--plaintext"])
        .output()
        .unwrap());
    assert_eq!(pushed(&first), (size.div_ceil(CHUNK), size, 0), "{first}");
    assert!(
        first.contains("(decrypted from the encrypted store)"),
        "{first}"
    );
    let node = tempfile::tempdir().unwrap();
    let b = node.path();
    ok(hearth(b, &server)
        .args(["pull", "s3://sealed/site/smol"])
        .output()
        .unwrap());
    ok(hearth(b, &server)
        .args(["verify", "smol"])
        .output()
        .unwrap());
    assert_eq!(
        std::fs::read(b.join("models/smol/model.gguf")).unwrap(),
        std::fs::read(&model).unwrap()
    );
}

/// A push that stops after some chunks went up (here the last chunk is
/// found damaged, its stamp left intact so nothing checked it earlier)
/// fails, writes no manifest, and records in the audit log what left the
/// node; repaired, the push goes on from the chunks already there.
#[test]
fn a_push_that_fails_halfway_is_audited_with_what_went_up() {
    let server = S3Server::start("halfway");
    let model = testkit::default_model();
    let size = std::fs::metadata(&model).unwrap().len();
    let chunks = size.div_ceil(CHUNK);
    let site = site_with_smol(&server, &model);
    let a = site.path();
    // A first push indexes the model's content-defined chunks while its
    // bytes are whole.
    ok(hearth(a, &server)
        .args(["push", "smol", "s3://halfway/one"])
        .output()
        .unwrap());
    let file = a.join("models/smol/model.gguf");
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    support::flip_byte(&file, size - 1000, 0x10);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(modified)
        .unwrap();

    let err = failed(
        hearth(a, &server)
            .args(["push", "smol", "s3://halfway/two"])
            .output()
            .unwrap(),
    );
    let went_up = (chunks - 1) * CHUNK;
    assert!(
        err.contains("does not match its SHA-256")
            && err.contains(&format!(
                "after uploading {} chunk(s), {went_up} bytes",
                chunks - 1
            )),
        "{err}"
    );
    let export = ok(hearth(a, &server)
        .args(["audit", "export", "--since", "1h"])
        .output()
        .unwrap());
    let event: serde_json::Value = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "model_push_failed")
        .expect("the failed push is audited");
    assert_eq!(event["model"], "smol", "{event}");
    assert_eq!(event["chunks_uploaded"], chunks - 1, "{event}");
    assert_eq!(event["bytes_uploaded"], went_up, "{event}");
    assert_eq!(event["destination"], "s3://halfway/two/models/smol.json");
    assert!(
        event["reason"].as_str().unwrap().contains("SHA-256"),
        "{event}"
    );
    // No manifest: the model is not there for other nodes.
    let node = tempfile::tempdir().unwrap();
    failed(
        hearth(node.path(), &server)
            .args(["pull", "s3://halfway/two/smol"])
            .output()
            .unwrap(),
    );
    // Repaired, the push sends only the chunk that did not go up.
    ok(hearth(a, &server)
        .args(["repair", "smol"])
        .output()
        .unwrap());
    let rest = ok(hearth(a, &server)
        .args(["push", "smol", "s3://halfway/two"])
        .output()
        .unwrap());
    assert_eq!(pushed(&rest), (1, size - went_up, chunks - 1), "{rest}");
}

/// `hearth sync` asks the configured peers first: from a prefix that holds
/// the model's manifest and none of its chunks, a node still syncs the
/// model, from a peer that holds that version, verified against the
/// manifest's digests and recorded as from the bucket.
#[test]
fn sync_takes_a_model_from_a_peer_before_the_bucket() {
    let server = S3Server::start("peered");
    let model = testkit::default_model();
    let site = site_with_smol(&server, &model);
    let a = site.path();
    server.put_object(
        "peered",
        "prod/models/smol.json",
        &a.join("models/smol/manifest.json"),
    );
    let key = ok(hearth(a, &server)
        .args(["keys", "create", "--name", "fleet", "--role", "admin"])
        .output()
        .unwrap())
    .trim()
    .to_string();
    let mut lend = hearth(a, &server);
    lend.args([
        "serve",
        "--share",
        "--port",
        "0",
        "--ctx-size",
        "256",
        "--model",
        "smol",
    ]);
    let (_lender, base) = support::spawn_server(lend);
    support::wait_ready(&base);

    let node = tempfile::tempdir().unwrap();
    let b = node.path();
    // Without peers, the bucket alone cannot give the model.
    failed(
        hearth(b, &server)
            .args(["sync", "s3://peered/prod"])
            .output()
            .unwrap(),
    );
    std::fs::write(
        b.join("config.toml"),
        format!(
            "[pull]\nchunk_mb = 8\n[peers]\nnodes = [{:?}]\n",
            base.trim_start_matches("http://")
        ),
    )
    .unwrap();
    let out = ok(hearth(b, &server)
        .env("HEARTH_PEER_KEY", &key)
        .args(["sync", "s3://peered/prod"])
        .output()
        .unwrap());
    assert!(out.contains("smol: pulled"), "{out}");
    assert_eq!(
        std::fs::read(b.join("models/smol/model.gguf")).unwrap(),
        std::fs::read(&model).unwrap()
    );
    ok(hearth(b, &server)
        .args(["verify", "smol"])
        .output()
        .unwrap());
    // Recorded as the bucket's: the next round finds it unchanged.
    let again = ok(hearth(b, &server)
        .env("HEARTH_PEER_KEY", &key)
        .args(["sync", "s3://peered/prod"])
        .output()
        .unwrap());
    assert!(again.contains("0 pulled, 1 unchanged"), "{again}");
}

/// The digest `hearth list --json` on `home` shows for `name`, if listed.
fn listed_digest(home: &Path, server: &S3Server, name: &str) -> Option<String> {
    let out = ok(hearth(home, server)
        .args(["list", "--json"])
        .output()
        .unwrap());
    let models: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    models
        .iter()
        .find(|m| m["name"] == name)
        .map(|m| m["sha256"].as_str().unwrap().to_string())
}

/// Waits up to a minute for `home` to list `name` with `digest` (any
/// digest, with `None`).
fn wait_for(home: &Path, server: &S3Server, name: &str, digest: Option<&str>) {
    for _ in 0..120 {
        match listed_digest(home, server, name) {
            Some(d) if digest.is_none_or(|want| want == d) => return,
            _ => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
    panic!("{name} ({digest:?}) never arrived");
}

#[test]
fn sync_watch_brings_new_models_and_new_versions() {
    let server = S3Server::start("fleet");
    let model = testkit::default_model();
    let site = tempfile::tempdir().unwrap();
    let a = site.path();
    // Default 64 MiB chunks here: each goes up in multipart uploads.
    ok(hearth(a, &server)
        .args(["pull", model.to_str().unwrap(), "--name", "smol"])
        .output()
        .unwrap());
    ok(hearth(a, &server)
        .args(["push", "smol", "s3://fleet/prod"])
        .output()
        .unwrap());

    let node = tempfile::tempdir().unwrap();
    let b = node.path();
    let log = b.join("sync.log");
    let watcher = support::Server::new(
        hearth(b, &server)
            .args(["sync", "s3://fleet/prod", "--watch", "1"])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let first = listed_digest(a, &server, "smol").unwrap();
    wait_for(b, &server, "smol", Some(&first));

    // A new model pushed while it watches arrives.
    ok(hearth(a, &server)
        .args(["pull", model.to_str().unwrap(), "--name", "smol-two"])
        .output()
        .unwrap());
    ok(hearth(a, &server)
        .args(["push", "smol-two", "s3://fleet/prod"])
        .output()
        .unwrap());
    wait_for(b, &server, "smol-two", None);

    // A new version of smol replaces the node's.
    let v2 = a.join("v2.gguf");
    std::fs::copy(&model, &v2).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&v2)
            .unwrap();
        f.write_all_at(b"\x01\x02\x03", 3 * CHUNK + 77).unwrap();
    }
    ok(hearth(a, &server)
        .args(["pull", v2.to_str().unwrap(), "--name", "smol", "--force"])
        .output()
        .unwrap());
    let second = listed_digest(a, &server, "smol").unwrap();
    assert_ne!(first, second);
    ok(hearth(a, &server)
        .args(["push", "smol", "s3://fleet/prod"])
        .output()
        .unwrap());
    wait_for(b, &server, "smol", Some(&second));
    drop(watcher);
    ok(hearth(b, &server).args(["verify"]).output().unwrap());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("smol: pulled") && said.contains("smol-two: pulled"),
        "{said}"
    );
}
