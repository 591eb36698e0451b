//! JWT verification against tokens signed the way an OIDC provider signs them.

use std::path::Path;

use auth::{AuthError, JwtIssuerConfig, JwtVerifier};
use serde_json::{json, Value};
use testkit::jwt::{jwks, Signer};
use types::Priority;

const ISS: &str = "https://idp.hospital.test/realms/staff";
const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-shared";

fn config(toml_text: &str) -> JwtIssuerConfig {
    toml::from_str(toml_text).unwrap()
}

fn issuer_with_jwks(dir: &Path, signers: &[&Signer], algorithms: &str) -> JwtIssuerConfig {
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks(signers)).unwrap();
    config(&format!(
        r#"
        issuer = "{ISS}"
        audience = ["hearth", "other-app"]
        algorithms = {algorithms}
        jwks_file = "{}"
        roles_claim = "realm_access.roles"
        priority_claim = "hearth_priority"
        [attributes]
        department = "department"
        certification = "cert"
        level = "level"
        "#,
        path.display()
    ))
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": "hearth", "sub": "u-123", "preferred_username": "dr.house",
        "exp": NOW + 300, "nbf": NOW - 10,
        "realm_access": {"roles": ["radiologist", "user"]},
        "department": "radiology", "cert": "board_certified", "level": 3,
        "hearth_priority": "batch",
    })
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

#[test]
fn every_supported_algorithm_verifies_and_claims_become_the_principal() {
    let dir = tempfile::tempdir().unwrap();
    let signers = [
        Signer::rs256("r1"),
        Signer::es256("e1"),
        Signer::eddsa("d1"),
    ];
    let refs: Vec<&Signer> = signers.iter().collect();
    let v = JwtVerifier::new(vec![issuer_with_jwks(
        dir.path(),
        &refs,
        r#"["RS256", "ES256", "EdDSA"]"#,
    )])
    .unwrap();
    for s in &signers {
        let p = v
            .verify(&s.sign(&claims()), NOW)
            .unwrap_or_else(|e| panic!("{:?}: {e}", s.alg));
        assert_eq!(p.id, "user:u-123");
        assert_eq!(p.name, "dr.house");
        assert_eq!(p.issuer.as_deref(), Some(ISS));
        assert_eq!(
            p.roles.iter().map(String::as_str).collect::<Vec<_>>(),
            ["radiologist", "user"]
        );
        assert_eq!(p.attrs["department"], "radiology");
        assert_eq!(p.attrs["certification"], "board_certified");
        assert_eq!(p.attrs["level"], "3");
        assert_eq!(p.priority, Some(Priority::Batch));
    }
    // A provider with one key may leave `kid` out.
    let single = JwtVerifier::new(vec![issuer_with_jwks(
        dir.path(),
        &[&signers[2]],
        r#"["EdDSA"]"#,
    )])
    .unwrap();
    assert!(single
        .verify(&signers[2].sign_without_kid(&claims()), NOW)
        .is_ok());
}

#[test]
fn hs256_uses_a_shared_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, SECRET).unwrap();
    let cfg = config(&format!(
        "issuer = \"{ISS}\"\naudience = \"hearth\"\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\n",
        path.display()
    ));
    let v = JwtVerifier::new(vec![cfg]).unwrap();
    let good = Signer::hs256("any", SECRET);
    assert_eq!(
        v.verify(&good.sign(&claims()), NOW).unwrap().id,
        "user:u-123"
    );
    let bad = Signer::hs256("any", b"another-secret-of-the-same-length-ok");
    assert_eq!(
        v.verify(&bad.sign(&claims()), NOW),
        Err(AuthError::InvalidToken("bad signature"))
    );
}

#[test]
fn time_audience_issuer_and_key_checks_each_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let key = Signer::eddsa("d1");
    let v = JwtVerifier::new(vec![issuer_with_jwks(dir.path(), &[&key], r#"["EdDSA"]"#)]).unwrap();
    let refused = |c: Value| v.verify(&key.sign(&c), NOW);
    let reason = |r| Err(AuthError::InvalidToken(r));
    // Expiry and not-before, with the default 60 s leeway.
    assert_eq!(
        refused(with(claims(), "exp", json!(NOW - 61))),
        reason("expired")
    );
    assert!(refused(with(claims(), "exp", json!(NOW - 59))).is_ok());
    assert_eq!(
        refused(with(claims(), "nbf", json!(NOW + 61))),
        reason("not yet valid")
    );
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(refused(no_exp), reason("no `exp` claim"));
    // Audience: one of the configured ones, and present.
    assert_eq!(
        refused(with(claims(), "aud", json!("billing"))),
        reason("wrong audience")
    );
    assert!(refused(with(claims(), "aud", json!(["billing", "other-app"]))).is_ok());
    let mut no_aud = claims();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(refused(no_aud), reason("missing `aud`"));
    // Issuer nobody configured.
    assert_eq!(
        refused(with(claims(), "iss", json!("https://evil.test"))),
        reason("untrusted issuer")
    );
    // Subject required.
    assert_eq!(
        refused(with(claims(), "sub", json!(""))),
        reason("no subject")
    );
    // A kid the issuer does not publish, and a forgery under a published kid.
    assert_eq!(
        v.verify(&Signer::eddsa("d9").sign(&claims()), NOW),
        Err(AuthError::UnknownSigningKey { issuer: ISS.into() })
    );
    assert_eq!(
        v.verify(&Signer::other_eddsa("d1").sign(&claims()), NOW),
        reason("bad signature")
    );
    // Garbage.
    assert_eq!(v.verify("a.b.c", NOW), reason("malformed"));
}

#[test]
fn algorithm_confusion_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = Signer::rs256("r1");
    let v = JwtVerifier::new(vec![issuer_with_jwks(dir.path(), &[&rsa], r#"["RS256"]"#)]).unwrap();
    // HS256 keyed with the public JWKS text: the textbook confusion attack.
    let public = jwks(&[&rsa]);
    let forged = Signer::hs256("r1", public.as_bytes()).sign(&claims());
    assert_eq!(
        v.verify(&forged, NOW),
        Err(AuthError::InvalidToken(
            "algorithm not allowed for its issuer"
        ))
    );
    // `alg: none`.
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims()));
    assert_eq!(
        v.verify(&none, NOW),
        Err(AuthError::InvalidToken("malformed"))
    );
    // ES256 is not on this issuer's list even though the library knows it.
    let es = Signer::es256("r1").sign(&claims());
    assert_eq!(
        v.verify(&es, NOW),
        Err(AuthError::InvalidToken(
            "algorithm not allowed for its issuer"
        ))
    );
}

#[test]
fn fetched_keys_rotate_and_a_bad_document_keeps_the_old_ones() {
    let old = Signer::eddsa("2026-10");
    let new = Signer::es256("2026-11");
    let cfg = config(&format!(
        "issuer = \"{ISS}\"\naudience = \"hearth\"\nalgorithms = [\"EdDSA\", \"ES256\"]\njwks_url = \"http://127.0.0.1:1/jwks\"\n"
    ));
    let v = JwtVerifier::new(vec![cfg]).unwrap();
    assert_eq!(
        v.jwks_urls(),
        vec![(ISS.into(), "http://127.0.0.1:1/jwks".into(), 300)]
    );
    // Nothing fetched yet: every key is unknown.
    assert!(matches!(
        v.verify(&old.sign(&claims()), NOW),
        Err(AuthError::UnknownSigningKey { .. })
    ));
    assert_eq!(v.install_jwks(ISS, &jwks(&[&old])).unwrap(), 1);
    assert!(v.verify(&old.sign(&claims()), NOW).is_ok());
    assert!(v.install_jwks(ISS, "{not json").is_err());
    assert!(
        v.verify(&old.sign(&claims()), NOW).is_ok(),
        "old keys survive a bad fetch"
    );
    v.install_jwks(ISS, &jwks(&[&new])).unwrap();
    assert!(v.verify(&new.sign(&claims()), NOW).is_ok());
    assert!(matches!(
        v.verify(&old.sign(&claims()), NOW),
        Err(AuthError::UnknownSigningKey { .. })
    ));
}

#[test]
fn unusable_issuer_configurations_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "tooshort").unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"keys\": 7}").unwrap();
    let cases = [
        (format!("issuer = \"{ISS}\"\naudience = []\njwks_url = \"https://x\"\n"), "audience"),
        (
            format!("issuer = \"{ISS}\"\naudience = \"a\"\nalgorithms = [\"HS256\", \"RS256\"]\njwks_url = \"https://x\"\n"),
            "cannot share",
        ),
        (
            format!("issuer = \"{ISS}\"\naudience = \"a\"\njwks_url = \"https://x\"\njwks_file = \"/x\"\n"),
            "exactly one",
        ),
        (
            format!("issuer = \"{ISS}\"\naudience = \"a\"\njwks_url = \"https://x\"\nalgorithms = [\"HS256\"]\n"),
            "secret_file",
        ),
        (
            format!("issuer = \"{ISS}\"\naudience = \"a\"\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\n", short.display()),
            "32 bytes",
        ),
        (
            format!("issuer = \"{ISS}\"\naudience = \"a\"\njwks_file = \"{}\"\n", broken.display()),
            "broken.json",
        ),
        (format!("issuer = \"{ISS}\"\naudience = \"a\"\nalgorithms = [\"none\"]\njwks_url = \"https://x\"\n"), "unknown algorithm"),
        (format!("issuer = \"{ISS}\"\naudience = \"a\"\njwks_url = \"ftp://x\"\n"), "http"),
    ];
    for (text, expected) in cases {
        let err = JwtVerifier::new(vec![config(&text)])
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"));
        let msg = err.to_string();
        assert!(msg.contains(expected) && msg.contains(ISS), "{text}: {msg}");
    }
}

#[test]
fn an_authenticator_with_an_issuer_requires_credentials_and_routes_by_token_shape() {
    let dir = tempfile::tempdir().unwrap();
    let key = Signer::eddsa("d1");
    let v = JwtVerifier::new(vec![issuer_with_jwks(dir.path(), &[&key], r#"["EdDSA"]"#)]).unwrap();
    let store = auth::KeyStore::open(&dir.path().join("auth.db")).unwrap();
    let a = auth::Authenticator::with_jwt(store, v);
    assert!(
        a.required(),
        "a configured issuer requires credentials before any key exists"
    );
    let bearer = |t: &str| auth::Credential::Bearer(t.to_string());
    assert!(a.authenticate(&bearer(&key.sign(&claims())), NOW).is_ok());
    assert_eq!(
        a.authenticate(&bearer("hth_abc_def"), NOW),
        Err(AuthError::InvalidKey)
    );
    assert_eq!(
        a.authenticate(&bearer("opaque"), NOW),
        Err(AuthError::InvalidKey)
    );
}

#[test]
fn a_configured_leeway_replaces_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let key = Signer::eddsa("d1");
    let mut strict = issuer_with_jwks(dir.path(), &[&key], r#"["EdDSA"]"#);
    strict.leeway_secs = 0;
    let mut lenient = strict.clone();
    lenient.leeway_secs = 300;
    let check = |config: &JwtIssuerConfig, c: Value| {
        JwtVerifier::new(vec![config.clone()])
            .unwrap()
            .verify(&key.sign(&c), NOW)
            .map(|_| ())
    };
    let expired = with(claims(), "exp", json!(NOW - 1));
    let early = with(claims(), "nbf", json!(NOW + 200));
    // No leeway: a second past `exp` is expired.
    assert_eq!(
        check(&strict, expired.clone()),
        Err(AuthError::InvalidToken("expired"))
    );
    assert_eq!(
        check(&strict, early.clone()),
        Err(AuthError::InvalidToken("not yet valid"))
    );
    // Five minutes: both pass, and beyond it they do not.
    assert_eq!(check(&lenient, expired), Ok(()));
    assert_eq!(check(&lenient, early), Ok(()));
    assert_eq!(
        check(&lenient, with(claims(), "exp", json!(NOW - 301))),
        Err(AuthError::InvalidToken("expired"))
    );
}
