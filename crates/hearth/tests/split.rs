//! A split GGUF set (`<name>-00001-of-00003.gguf` …, cut from the default
//! model by testkit the way `gguf-split` lays one out) pulled over http from
//! testkit's loopback origin: its files are fetched, verified and stored
//! together, it answers, a bad chunk in a later file is named and
//! repaired alone, it travels in a bundle, and it leaves with `rm`.

use std::path::Path;

use serde_json::Value;
use testkit::origin::Origin;

mod support;

use support::{failed, hearth, ok};

const ASK: &[&str] = &[
    "--temperature",
    "0",
    "-n",
    "24",
    "What is the capital of Japan?",
];

fn answer(home: &Path, name: &str) -> String {
    ok(hearth(home).args(["run", name]).args(ASK).output().unwrap())
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_split_set_over_http_is_pulled_verified_repaired_bundled_and_removed() {
    let served = tempfile::tempdir().unwrap();
    let files = testkit::split::split_gguf(&testkit::default_model(), served.path(), "Smol", 3);
    // The set's last file is not there yet: the pull fails naming it and
    // stores nothing.
    let last = served.path().join("Smol-00003-of-00003.gguf");
    let held_back = served.path().join("held-back");
    std::fs::rename(&last, &held_back).unwrap();
    let origin = Origin::start(served.path());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(h.join("config.toml"), "[pull]\nchunk_mb = 8\n").unwrap();
    let first = origin.url("Smol-00001-of-00003.gguf");
    let err = failed(hearth(h).args(["pull", &first]).output().unwrap());
    assert!(
        err.contains("Smol-00003-of-00003.gguf") && err.contains("404"),
        "{err}"
    );
    assert!(!h.join("models/smol").exists());

    // With the file back, the rerun fetches only it: files 1 and 2
    // verified before the failure are resumed from their journals.
    std::fs::rename(&held_back, &last).unwrap();
    origin.clear_log();
    let said = ok(hearth(h).args(["pull", &first, "--json"]).output().unwrap());
    let done: Value = serde_json::from_str(said.lines().last().unwrap()).unwrap();
    assert_eq!(done["status"], "success", "{said}");
    assert_eq!(done["files"], 3);
    let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert_eq!(done["size"], total);
    for early in ["Smol-00001-of-00003.gguf", "Smol-00002-of-00003.gguf"] {
        // At most the probe's one byte (`Range: bytes=0-0`), which checks
        // that the file is still the one the journal describes.
        assert!(origin.sent(early) <= 1, "{early} was fetched again");
    }
    let third = origin.sent("Smol-00003-of-00003.gguf");
    let len = files[2].metadata().unwrap().len();
    assert!((len..=len + 1).contains(&third), "{third} bytes for {len}");
    let dir = h.join("models/smol");
    assert_eq!(
        file_names(&dir)
            .into_iter()
            .filter(|n| n.ends_with(".gguf"))
            .collect::<Vec<_>>(),
        [
            "model-00001-of-00003.gguf",
            "model-00002-of-00003.gguf",
            "model-00003-of-00003.gguf"
        ]
    );
    assert_eq!(file_names(&h.join("blobs")).len(), 3);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["source"], first);
    assert_eq!(manifest["parts"].as_array().unwrap().len(), 2);
    let shown = ok(hearth(h).args(["show", "smol"]).output().unwrap());
    assert!(shown.contains("in a split set of 3 files"), "{shown}");
    let whole = answer(h, "smol");
    assert!(whole.contains("Tokyo"), "{whole}");

    // One flipped byte in the second file: verify and run name that file's
    // chunk; repair fetches that one chunk of that one file.
    let second = dir.join("model-00002-of-00003.gguf");
    support::flip_byte(&second, 8 << 20, 0x20);
    let out = hearth(h).args(["verify", "smol"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        said.contains("chunk 2 of ") && said.contains(&second.display().to_string()),
        "{said}"
    );
    let refused = failed(hearth(h).args(["run", "smol"]).args(ASK).output().unwrap());
    assert!(
        refused.contains(&second.display().to_string()) && refused.contains("hearth repair smol"),
        "{refused}"
    );
    origin.clear_log();
    let repaired = ok(hearth(h).args(["repair", "smol"]).output().unwrap());
    assert!(repaired.contains("repaired 1 chunk"), "{repaired}");
    let log = origin.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].path.ends_with("Smol-00002-of-00003.gguf"), "{log:?}");
    assert_eq!((log[0].start, log[0].sent()), (8 << 20, 8 << 20));
    assert_eq!(answer(h, "smol"), whole);

    // Only the first file names a set; a pin of one file's digest cannot
    // check a set.
    let err = failed(
        hearth(h)
            .args(["pull", &origin.url("Smol-00002-of-00003.gguf")])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("file 2 of a split set of 3") && err.contains("Smol-00001-of-00003.gguf"),
        "{err}"
    );
    let err = failed(
        hearth(h)
            .args(["pull", &first, "--name", "pinned", "--sha256"])
            .arg("0".repeat(64))
            .output()
            .unwrap(),
    );
    assert!(err.contains("--sha256 pins one file"), "{err}");

    // Exported, imported into a fresh home, answered the same.
    let bundle = h.join("smol.tar");
    ok(hearth(h)
        .args(["export", "smol", "-o"])
        .arg(&bundle)
        .output()
        .unwrap());
    let fresh = tempfile::tempdir().unwrap();
    let said = ok(hearth(fresh.path())
        .arg("import")
        .arg(&bundle)
        .output()
        .unwrap());
    assert!(said.contains("imported smol"), "{said}");
    assert_eq!(answer(fresh.path(), "smol"), whole);
    ok(hearth(fresh.path())
        .args(["verify", "smol"])
        .output()
        .unwrap());

    // Removed: every file and blob of the set goes.
    ok(hearth(h).args(["rm", "smol"]).output().unwrap());
    assert!(!dir.exists());
    assert!(file_names(&h.join("blobs")).is_empty());
}
