//! Encryption at rest, through the binary: `hearth store encrypt` leaves
//! no plaintext tensor bytes in any file of the home; the model answers as
//! before (its plaintext reaches llama.cpp in memory); a wrong key or no
//! key is refused by name; a flipped ciphertext byte is caught and repaired
//! from the origin, sealed in place; a new pull
//! is stored sealed, and so is a quantization (made in memory); a pull cut
//! off halfway leaves only sealed bytes and resumes from them; a bundle from it travels sealed (unless asked for the
//! plaintext) and needs the key to import; `hearth store decrypt` gives
//! the original bytes back.

use std::path::{Path, PathBuf};

mod support;

use support::{failed, flip_byte, hearth, ok, spawn_server, wait_ready};

const ASK: &[&str] = &[
    "--temperature",
    "0",
    "-n",
    "12",
    "What is the capital of Japan?",
];

fn answer(home: &Path) -> String {
    ok(hearth(home)
        .args(["run", "smol"])
        .args(ASK)
        .output()
        .unwrap())
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out
}

/// 64 bytes of tensor data from each of a few tensors of the model.
fn known_plaintext(model: &Path) -> Vec<Vec<u8>> {
    let header = gguf::read_model(model).unwrap();
    let bytes = std::fs::read(model).unwrap();
    header
        .tensors
        .iter()
        .filter(|t| t.n_bytes >= 4096)
        .step_by(20)
        .map(|t| {
            let at = (header.data_offset + t.offset + 1024) as usize;
            bytes[at..at + 64].to_vec()
        })
        .collect()
}

fn contains(file: &Path, needles: &[Vec<u8>]) -> bool {
    let bytes = std::fs::read(file).unwrap_or_default();
    needles
        .iter()
        .any(|n| memchr::memmem::find(&bytes, n).is_some())
}

fn holding(home: &Path, needles: &[Vec<u8>]) -> Vec<PathBuf> {
    files(home)
        .into_iter()
        .filter(|f| contains(f, needles))
        .collect()
}

fn sealed(path: &Path) -> bool {
    std::fs::read(path).unwrap()[..8] == *b"HTHSEAL1"
}

#[test]
fn an_encrypted_store_keeps_no_plaintext_and_refuses_wrong_keys_and_tampering() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let model = testkit::default_model();
    ok(hearth(h)
        .arg("pull")
        .arg(&model)
        .args(["--name", "smol"])
        .output()
        .unwrap());
    let before = answer(h);
    let needles = known_plaintext(&model);
    assert!(needles.len() >= 3);
    assert!(
        !holding(h, &needles).is_empty(),
        "the needles are found in plaintext"
    );

    let keys = tempfile::tempdir().unwrap();
    let (key, other) = (keys.path().join("store.key"), keys.path().join("other.key"));
    for k in [&key, &other] {
        ok(hearth(h).args(["store", "keygen"]).arg(k).output().unwrap());
    }
    std::fs::write(
        h.join("config.toml"),
        format!("[store]\nkey_file = {key:?}\n"),
    )
    .unwrap();
    let said = ok(hearth(h).args(["store", "encrypt"]).output().unwrap());
    assert!(said.contains("encrypted 1 file"), "{said}");
    let leaks = holding(h, &needles);
    assert!(leaks.is_empty(), "plaintext tensor bytes in {leaks:?}");
    let blob = std::fs::read_dir(h.join("blobs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(sealed(&blob) && sealed(&h.join("models/smol/model.gguf")));
    // A rerun has nothing left to do.
    let again = ok(hearth(h).args(["store", "encrypt"]).output().unwrap());
    assert!(again.contains("encrypted 0 file"), "{again}");

    // The model answers as before, from memory.
    assert_eq!(answer(h), before);
    ok(hearth(h).args(["verify", "smol"]).output().unwrap());
    // Served: described from its decrypted header, answering, and lent
    // to another node as plaintext decrypted on the way.
    let admin = ok(hearth(h)
        .args(["keys", "create", "--name", "ops", "--role", "admin"])
        .output()
        .unwrap())
    .trim()
    .to_string();
    let mut serve = hearth(h);
    serve.args([
        "serve",
        "--share",
        "--port",
        "0",
        "--ctx-size",
        "256",
        "--model",
        "smol",
    ]);
    let (server, base) = spawn_server(serve);
    wait_ready(&base);
    let client = reqwest::blocking::Client::new();
    let tags: serde_json::Value = client
        .get(format!("{base}/api/tags"))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let listed = &tags["models"][0];
    assert_eq!(listed["name"], "smol", "{tags}");
    assert_eq!(listed["details"]["family"], "llama", "{tags}");
    let reply: serde_json::Value = client
        .post(format!("{base}/v1/completions"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"model": "smol", "prompt": "The capital of Japan is", "max_tokens": 4}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(reply["choices"][0]["text"].is_string(), "{reply}");
    // The plaintext is held once, in the engine's own buffers: the
    // in-memory file it was decrypted into is gone once loaded.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.pid())).unwrap();
    assert!(
        !maps.contains("memfd:"),
        "the model is still mapped from its in-memory file"
    );
    let node = tempfile::tempdir().unwrap();
    let lent = format!("peer://{}/smol", base.trim_start_matches("http://"));
    ok(hearth(node.path())
        .env("HEARTH_PEER_KEY", &admin)
        .args(["pull", &lent])
        .output()
        .unwrap());
    assert_eq!(
        std::fs::read(node.path().join("models/smol/model.gguf")).unwrap(),
        std::fs::read(&model).unwrap()
    );
    drop(server);

    // The wrong key, or none, is refused by name.
    let wrong = failed(
        hearth(h)
            .env("HEARTH_STORE_KEY_FILE", &other)
            .args(["run", "smol"])
            .args(ASK)
            .output()
            .unwrap(),
    );
    assert!(wrong.contains("not with the configured key"), "{wrong}");
    std::fs::write(h.join("config.toml"), "").unwrap();
    let none = failed(hearth(h).args(["run", "smol"]).args(ASK).output().unwrap());
    assert!(none.contains("no key is configured"), "{none}");
    std::fs::write(
        h.join("config.toml"),
        format!("[store]\nkey_file = {key:?}\n"),
    )
    .unwrap();

    // A new pull into the encrypted store is stored sealed.
    let v2 = keys.path().join("v2.gguf");
    testkit::edit::change_tensor(&model, &v2, "blk.0.attn_q.weight");
    ok(hearth(h)
        .arg("pull")
        .arg(&v2)
        .args(["--name", "smol2"])
        .output()
        .unwrap());
    assert!(sealed(&h.join("models/smol2/model.gguf")));
    assert!(holding(h, &needles).is_empty());
    // A quantization is written to memory and sealed into the store.
    ok(hearth(h)
        .args([
            "quantize",
            "smol",
            "--type",
            "Q4_0",
            "--allow-requantize",
            "--name",
            "smol-q4",
        ])
        .output()
        .unwrap());
    assert!(sealed(&h.join("models/smol-q4/model.gguf")));
    ok(hearth(h).args(["verify", "smol-q4"]).output().unwrap());
    let left: Vec<_> = files(&h.join("tmp"))
        .into_iter()
        .filter(|f| !f.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // One flipped ciphertext byte: verify names the chunk, run refuses.
    let modified = std::fs::metadata(&blob).unwrap().modified().unwrap();
    flip_byte(&blob, 64 + 12 + 5000, 0x01);
    let verify = hearth(h).args(["verify", "smol"]).output().unwrap();
    let named = String::from_utf8_lossy(&verify.stdout).into_owned();
    failed(verify);
    assert!(named.contains("chunk 1 of"), "{named}");
    // Even with its stamp intact, the load authenticates every record.
    std::fs::File::options()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let run = failed(hearth(h).args(["run", "smol"]).args(ASK).output().unwrap());
    assert!(run.contains("fails authentication"), "{run}");
    // Repair fetches that chunk from the origin and seals it back in
    // place; no plaintext file appears.
    let repaired = ok(hearth(h).args(["repair", "smol"]).output().unwrap());
    assert!(repaired.contains("repaired 1 chunk"), "{repaired}");
    assert!(sealed(&blob) && holding(h, &needles).is_empty());
    ok(hearth(h).args(["verify", "smol"]).output().unwrap());

    // A bundle from the encrypted store travels sealed; a store with the
    // key (here a plain one) imports it, one without is refused by name.
    let bundle = keys.path().join("smol.tar");
    ok(hearth(h)
        .args(["export", "smol", "-o"])
        .arg(&bundle)
        .output()
        .unwrap());
    assert!(!contains(&bundle, &needles), "plaintext in the bundle");
    let with_key = tempfile::tempdir().unwrap();
    std::fs::write(
        with_key.path().join("config.toml"),
        format!("[store]\nkey_file = {key:?}\n"),
    )
    .unwrap();
    ok(hearth(with_key.path())
        .arg("import")
        .arg(&bundle)
        .output()
        .unwrap());
    ok(hearth(with_key.path())
        .args(["verify", "smol"])
        .output()
        .unwrap());
    let keyless = tempfile::tempdir().unwrap();
    let refused = failed(
        hearth(keyless.path())
            .arg("import")
            .arg(&bundle)
            .output()
            .unwrap(),
    );
    assert!(refused.contains("no key is configured"), "{refused}");
    // Asked otherwise, it carries the plaintext, for any store.
    let open = keys.path().join("open.tar");
    ok(hearth(h)
        .args(["export", "smol", "--plaintext", "-o"])
        .arg(&open)
        .output()
        .unwrap());
    assert!(contains(&open, &needles));
    ok(hearth(keyless.path())
        .arg("import")
        .arg(&open)
        .output()
        .unwrap());
    ok(hearth(keyless.path())
        .args(["verify", "smol"])
        .output()
        .unwrap());

    // Decrypted: the original bytes, and the store is plain again.
    let said = ok(hearth(h).args(["store", "decrypt"]).output().unwrap());
    assert!(said.contains("decrypted 3 file"), "{said}");
    assert_eq!(
        std::fs::read(h.join("models/smol/model.gguf")).unwrap(),
        std::fs::read(&model).unwrap()
    );
    assert!(!h.join("encryption.json").exists());
    assert_eq!(answer(h), before);
}

/// 64-byte windows of `model`'s bytes from `from` to `to`, each varied
/// enough (16 distinct bytes or more) not to match filler such as zeros.
fn windows_between(model: &Path, from: usize, to: usize) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(model).unwrap();
    (from..to)
        .step_by(200_003)
        .map(|at| bytes[at..at + 64].to_vec())
        .filter(|w| w.iter().collect::<std::collections::BTreeSet<_>>().len() >= 16)
        .collect()
}

/// A pull into an encrypted store seals bytes as they land: cut off after
/// four of its chunks, its partial file holds none of their plaintext, and
/// the rerun resumes from those chunks (read back through the key) and
/// publishes the sealed file.
#[test]
fn a_pull_into_an_encrypted_store_stages_no_plaintext_and_resumes() {
    let model = testkit::default_model();
    let served = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&model, served.path().join("m.gguf")).unwrap();
    let origin = testkit::origin::Origin::start(served.path());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("store.key");
    ok(hearth(h)
        .args(["store", "keygen"])
        .arg(&key)
        .output()
        .unwrap());
    // 2 MiB chunks over one connection, so they arrive in order.
    std::fs::write(
        h.join("config.toml"),
        format!(
            "[store]\nkey_file = {key:?}\n[pull]\nconnections = 1\nchunk_mb = 2\nretries = 0\n"
        ),
    )
    .unwrap();
    ok(hearth(h).args(["store", "encrypt"]).output().unwrap());
    // Four chunks whole, then every connection cut 1.5 MiB in: the fifth
    // chunk's first record is whole on disk, its second is not.
    origin.set_faults(testkit::origin::Faults {
        drop_skip: 4,
        drop_times: 1000,
        drop_after: 3 << 19,
        ..testkit::origin::Faults::default()
    });
    let url = origin.url("m.gguf");
    failed(
        hearth(h)
            .args(["pull", &url, "--name", "smol"])
            .output()
            .unwrap(),
    );
    let needles = windows_between(&model, 4096, 9 << 20);
    assert!(needles.len() >= 30, "{}", needles.len());
    let partials: Vec<PathBuf> = files(&h.join("tmp"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "partial"))
        .collect();
    assert_eq!(partials.len(), 1, "{partials:?}");
    assert!(sealed(&partials[0]));
    let leaks = holding(h, &needles);
    assert!(leaks.is_empty(), "plaintext of the model in {leaks:?}");

    origin.set_faults(testkit::origin::Faults::default());
    let before = origin.sent("m.gguf");
    ok(hearth(h)
        .args(["pull", &url, "--name", "smol"])
        .output()
        .unwrap());
    let size = std::fs::metadata(&model).unwrap().len();
    let again = origin.sent("m.gguf") - before;
    assert!(
        again <= size - (8 << 20) + 1,
        "the rerun fetched {again} of {size} bytes: the four sealed chunks were not resumed"
    );
    assert!(sealed(&h.join("models/smol/model.gguf")));
    ok(hearth(h).args(["verify", "smol"]).output().unwrap());
    assert!(holding(h, &needles).is_empty());
    let left: Vec<_> = files(&h.join("tmp"))
        .into_iter()
        .filter(|f| !f.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
