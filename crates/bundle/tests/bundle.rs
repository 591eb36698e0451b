//! Bundles end to end on real stores with the real default model:
//! export, import on a fresh store, idempotence, signatures trusted,
//! unknown and broken, and a tampered blob.

use std::path::Path;

use store::{NoProgress, PullOptions, Store, Wanted};

fn store_with_model(dir: &Path) -> Store {
    let store = Store::open(dir).unwrap();
    let model = testkit::default_model();
    store
        .pull_location(
            model.to_str().unwrap(),
            &Wanted {
                name: Some("smol".into()),
                sha256: None,
            },
            &PullOptions::default(),
            &NoProgress,
        )
        .unwrap();
    store
}

fn trust(dir: &Path, keys: &[&Path], require: bool) -> bundle::Trust {
    let trusted = dir.join("trusted_keys");
    std::fs::create_dir_all(&trusted).unwrap();
    for (i, key) in keys.iter().enumerate() {
        std::fs::copy(audit::public_path(key), trusted.join(format!("k{i}.pub"))).unwrap();
    }
    bundle::Trust::from_dir(&trusted, require).unwrap()
}

/// Changes one byte of `file` at the first occurrence of `marker`, `skip`
/// bytes after it.
fn flip(file: &Path, marker: &[u8], skip: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker present")
        + marker.len()
        + skip;
    bytes[at] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_bundle_moves_models_between_stores_and_imports_once() {
    let work = tempfile::tempdir().unwrap();
    let a = store_with_model(&work.path().join("a"));
    let out = work.path().join("models.tar");
    let done = bundle::export(&a, &["smol".into()], &out, None, false, &NoProgress).unwrap();
    assert_eq!(
        (done.models.len(), done.blobs, done.signed_by),
        (1, 1, None)
    );
    let b = Store::open(&work.path().join("b")).unwrap();
    let t = trust(&work.path().join("b"), &[], false);
    let imported = bundle::import(&b, &out, &t, &NoProgress).unwrap();
    assert_eq!(imported.imported, ["smol"]);
    let (ma, mb) = (
        a.get("smol").unwrap().unwrap(),
        b.get("smol").unwrap().unwrap(),
    );
    assert_eq!(ma.manifest, mb.manifest);
    assert_eq!(
        std::fs::read(&ma.path).unwrap(),
        std::fs::read(&mb.path).unwrap()
    );
    // Again: nothing to do.
    let again = bundle::import(&b, &out, &t, &NoProgress).unwrap();
    assert!(again.imported.is_empty());
    assert_eq!(again.skipped, ["smol"]);
}

#[test]
fn signatures_are_checked_against_trusted_keys() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let a = store_with_model(&w.join("a"));
    let (ours, theirs) = (w.join("keys/ours.key"), w.join("keys/theirs.key"));
    let signed = w.join("signed.tar");
    let done = bundle::export(
        &a,
        &["smol".into()],
        &signed,
        Some(&ours),
        false,
        &NoProgress,
    )
    .unwrap();
    assert!(done.signed_by.is_some());
    let unsigned = w.join("unsigned.tar");
    bundle::export(&a, &["smol".into()], &unsigned, None, false, &NoProgress).unwrap();
    let strangers = w.join("strangers.tar");
    bundle::export(
        &a,
        &["smol".into()],
        &strangers,
        Some(&theirs),
        false,
        &NoProgress,
    )
    .unwrap();

    let fresh = |name: &str| Store::open(&w.join(name)).unwrap();
    let required = trust(&w.join("b"), &[&ours], true);
    let b = fresh("b");
    let err = bundle::import(&b, &unsigned, &required, &NoProgress).unwrap_err();
    assert!(matches!(err, bundle::BundleError::Unsigned { .. }), "{err}");
    let err = bundle::import(&b, &strangers, &required, &NoProgress).unwrap_err();
    assert!(
        matches!(err, bundle::BundleError::UnknownSigner { .. }),
        "{err}"
    );
    assert!(b.list().unwrap().is_empty());
    // The index changed after signing (one digit of a timestamp).
    let altered = w.join("altered.tar");
    std::fs::copy(&signed, &altered).unwrap();
    flip(&altered, b"\"pulled_at\": ", 3);
    let err = bundle::import(&b, &altered, &required, &NoProgress).unwrap_err();
    assert!(
        matches!(err, bundle::BundleError::BadSignature { .. }),
        "{err}"
    );
    assert!(b.list().unwrap().is_empty());
    let ok = bundle::import(&b, &signed, &required, &NoProgress).unwrap();
    assert_eq!(ok.imported, ["smol"]);
    assert_eq!(ok.signed_by, done.signed_by);
}

#[test]
fn a_tampered_blob_is_refused_and_leaves_nothing() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let a = store_with_model(&w.join("a"));
    let out = w.join("tampered.tar");
    bundle::export(&a, &["smol".into()], &out, None, false, &NoProgress).unwrap();
    // A byte 40 MB into the blob (its GGUF magic starts it).
    flip(&out, b"GGUF", 40 << 20);
    let b = Store::open(&w.join("b")).unwrap();
    let err = bundle::import(&b, &out, &trust(&w.join("b"), &[], false), &NoProgress).unwrap_err();
    match &err {
        bundle::BundleError::Tampered { offset, .. } => {
            assert_eq!(*offset, 0, "the first 64 MiB chunk holds byte 40 MB: {err}")
        }
        other => panic!("{other}"),
    }
    assert!(b.list().unwrap().is_empty());
    assert!(!std::fs::read_dir(w.join("b/tmp"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("import-")));
}
