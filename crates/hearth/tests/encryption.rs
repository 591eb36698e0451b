//! Encryption at rest, through the binary: `hearth store encrypt` leaves
//! no plaintext tensor bytes in any file of the home; the model answers as
//! before (its plaintext reaches llama.cpp in memory); a wrong key or no
//! key is refused by name; a flipped ciphertext byte is caught and repaired
//! from the origin, sealed in place; a new pull
//! is stored sealed; a bundle from it travels sealed (unless asked for the
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
    assert!(said.contains("decrypted 2 file"), "{said}");
    assert_eq!(
        std::fs::read(h.join("models/smol/model.gguf")).unwrap(),
        std::fs::read(&model).unwrap()
    );
    assert!(!h.join("encryption.json").exists());
    assert_eq!(answer(h), before);
}
