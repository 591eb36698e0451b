//! ARCHITECTURE.md's dependency rules, checked against `cargo metadata` and
//! the source: a rule that is not checked drifts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Each workspace crate's normal (non-dev, non-build) dependencies.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_string())
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

fn users_of(deps: &BTreeMap<String, BTreeSet<String>>, dep: &str) -> Vec<String> {
    deps.iter()
        .filter(|(_, d)| d.contains(dep))
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn dependency_rules_hold() {
    let deps = dependencies();
    let ours: BTreeSet<String> = deps.keys().cloned().collect();
    let hearth_deps =
        |krate: &str| -> Vec<String> { deps[krate].intersection(&ours).cloned().collect() };
    assert!(
        hearth_deps("types").is_empty(),
        "types depends on {:?}",
        hearth_deps("types")
    );
    assert_eq!(
        hearth_deps("scheduler"),
        ["types"],
        "the scheduler knows only the vocabulary"
    );
    assert!(
        hearth_deps("loadgen").is_empty(),
        "the load generator speaks HTTP only"
    );
    assert_eq!(users_of(&deps, "llama-cpp-2"), ["engine"]);
    assert_eq!(
        users_of(&deps, "llama-cpp-sys-2"),
        ["engine"],
        "the quantizer's raw binding is the engine's too"
    );
    assert_eq!(
        hearth_deps("plan"),
        ["gguf"],
        "planning is arithmetic over a header: no engine, no store"
    );
    assert_eq!(
        users_of(&deps, "axum"),
        ["server", "testkit"],
        "the APIs are served in one place; testkit's origin serves files to transfer tests"
    );
    assert_eq!(
        hearth_deps("transfer"),
        ["types"],
        "transfer knows no model, manifest or store"
    );
    assert_eq!(users_of(&deps, "anyhow"), ["hearth"]);
    assert_eq!(users_of(&deps, "prometheus-client"), ["server"]);
    assert_eq!(
        hearth_deps("auth"),
        ["types"],
        "auth knows the vocabulary, no HTTP and no engine"
    );
    assert_eq!(users_of(&deps, "rusqlite"), ["auth", "history"]);
    assert_eq!(
        hearth_deps("history"),
        ["types"],
        "stored conversations know no HTTP and no engine"
    );
    assert!(
        hearth_deps("audit").is_empty(),
        "the audit log knows nothing of HTTP, principals or the engine"
    );
    assert!(
        !deps["auth"].contains("reqwest") && !deps["audit"].contains("reqwest"),
        "auth and audit make no network calls"
    );
    assert_eq!(
        users_of(&deps, "ed25519-dalek"),
        ["audit"],
        "one place holds ed25519 keys; bundles sign with audit's key files"
    );
    assert_eq!(
        hearth_deps("bundle"),
        ["audit", "store", "types", "vault"],
        "bundles know the store, key files and sealed files, no HTTP and no engine"
    );
    assert!(
        hearth_deps("vault").is_empty(),
        "encryption at rest knows no model, store or engine"
    );
    assert_eq!(
        hearth_deps("peer"),
        ["store", "transfer", "types"],
        "peer pulls go through the store's transfers; no server, no engine"
    );
    assert_eq!(
        users_of(&deps, "jsonwebtoken"),
        ["auth", "testkit"],
        "auth verifies tokens; testkit signs them for tests"
    );
    assert_eq!(
        users_of(&deps, "tokio-rustls"),
        ["server", "testkit"],
        "TLS is terminated in one place (and by testkit's origin, for pull tests over https)"
    );
    assert_eq!(
        users_of(&deps, "rcgen"),
        ["testkit"],
        "certificates are made in tests only"
    );
    assert!(
        users_of(&deps, "testkit").is_empty(),
        "testkit is for tests only"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn nothing_below_the_binary_reads_the_environment() {
    let crates = root().join("crates");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let krate = entry.unwrap().path();
        let name = krate.file_name().unwrap().to_string_lossy().to_string();
        // The binary reads settings; testkit exists only for tests.
        if name == "hearth" || name == "testkit" {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Unit tests at the end of a file may read what they like.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for needle in ["env::var", "env::args", "env!(\"HEARTH", "option_env!"] {
                if code.contains(needle) {
                    offenders.push(format!("{}: {needle}", file.display()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
