//! The key store on a real SQLite file.

use std::collections::{BTreeMap, BTreeSet};

use auth::{AuthError, KeyStore, NewKey, StoreError};
use types::Priority;

fn key(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        roles: BTreeSet::from(["radiologist".to_string()]),
        attrs: BTreeMap::from([("department".to_string(), "radiology".to_string())]),
        priority: Some(Priority::Batch),
        expires_at: None,
        limits: auth::Limits {
            requests_per_minute: Some(60),
            tokens_per_minute: None,
            tokens_per_day: Some(1_000_000),
        },
    }
}

#[test]
fn a_created_key_authenticates_as_its_principal() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open(&dir.path().join("auth.db")).unwrap();
    assert!(!store.any().unwrap());
    let (info, secret) = store.create(&key("ward 3"), 1000).unwrap();
    assert!(store.any().unwrap());
    assert!(secret.starts_with(&format!("hth_{}_", info.id)));
    let p = store.authenticate(&secret, 1001).unwrap();
    assert_eq!(p.id, format!("key:{}", info.id));
    assert_eq!(p.name, "ward 3");
    assert!(p.roles.contains("radiologist"));
    assert_eq!(p.attrs["department"], "radiology");
    assert_eq!(p.priority, Some(Priority::Batch));
    assert_eq!(p.limits, key("x").limits);
    assert_eq!(store.list().unwrap(), vec![info]);
}

/// A database written before quotas existed (schema 1) is migrated in
/// place: its keys keep working, without limits.
#[test]
fn a_schema_1_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_sha256 BLOB NOT NULL,
           roles TEXT NOT NULL, attrs TEXT NOT NULL, priority TEXT, created_at INTEGER NOT NULL,
           expires_at INTEGER, revoked_at INTEGER) STRICT;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    let secret = "00".repeat(32);
    let hash = <sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes()).to_vec();
    conn.execute(
        "INSERT INTO api_keys VALUES ('0123456789ab', 'old', ?1, '[\"user\"]', '{}', NULL, 5, NULL, NULL)",
        [hash],
    )
    .unwrap();
    drop(conn);
    let store = KeyStore::open(&path).unwrap();
    let p = store
        .authenticate(&format!("hth_0123456789ab_{secret}"), 10)
        .unwrap();
    assert_eq!(p.name, "old");
    assert!(p.limits.is_unlimited());
}

#[test]
fn wrong_secrets_and_unknown_ids_are_refused_alike() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open(&dir.path().join("auth.db")).unwrap();
    let (info, secret) = store.create(&key("a"), 1000).unwrap();
    let mut wrong = secret.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    for token in [
        wrong.as_str(),
        &format!("hth_{}_", info.id),
        "hth_000000000000_00",
        "hth_",
        "sk-something",
        &secret[..secret.len() - 1],
    ] {
        assert_eq!(
            store.authenticate(token, 1001),
            Err(AuthError::InvalidKey),
            "{token}"
        );
    }
}

#[test]
fn revocation_counts_from_the_next_request_even_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let server = KeyStore::open(&path).unwrap();
    let (info, secret) = server.create(&key("a"), 1000).unwrap();
    assert!(server.authenticate(&secret, 1001).is_ok());
    // `hearth keys revoke` opens the same file beside the running server.
    let cli = KeyStore::open(&path).unwrap();
    let revoked = cli.revoke(&info.id, 1002).unwrap();
    assert_eq!(revoked.revoked_at, Some(1002));
    assert_eq!(
        server.authenticate(&secret, 1003),
        Err(AuthError::Revoked {
            id: info.id.clone()
        })
    );
    // Revoking again keeps the first time; the id with its prefix works too.
    assert_eq!(
        cli.revoke(&format!("hth_{}", info.id), 2000)
            .unwrap()
            .revoked_at,
        Some(1002)
    );
    assert!(matches!(
        cli.revoke("ffffffffffff", 1),
        Err(StoreError::NoSuchKey(_))
    ));
    // The server stays closed after its only key is revoked.
    assert!(server.any().unwrap());
}

#[test]
fn an_expired_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open(&dir.path().join("auth.db")).unwrap();
    let mut new = key("temp");
    new.expires_at = Some(2000);
    let (info, secret) = store.create(&new, 1000).unwrap();
    assert!(store.authenticate(&secret, 1999).is_ok());
    assert_eq!(
        store.authenticate(&secret, 2000),
        Err(AuthError::Expired { id: info.id })
    );
}

#[test]
fn the_secret_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let store = KeyStore::open(&path).unwrap();
    let (_, secret) = store.create(&key("a"), 1000).unwrap();
    drop(store);
    let secret_part = secret.rsplit('_').next().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(secret_part));
    }
}

#[test]
fn bad_fields_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open(&dir.path().join("auth.db")).unwrap();
    let mut bad_role = key("a");
    bad_role.roles.insert("two words".into());
    let mut bad_attr = key("a");
    bad_attr.attrs.insert("x".into(), "line\nbreak".into());
    for (new, field) in [(key(" "), "name"), (bad_role, "role"), (bad_attr, "attr")] {
        match store.create(&new, 1) {
            Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(!store.any().unwrap());
}

#[test]
fn a_database_from_a_newer_hearth_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    drop(KeyStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = KeyStore::open(&path).err().unwrap();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("auth.db"));
}
