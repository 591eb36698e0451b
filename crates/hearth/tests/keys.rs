//! `hearth keys` and what keys change about `hearth serve`, end to end.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

mod support;

use support::{failed, hearth, ok, spawn_server, spawn_server_logging_to, wait_ready};

/// The stderr of `hearth ARGS` in `home`, which must fail cleanly.
fn refused(home: &Path, args: &[&str]) -> String {
    failed(hearth(home).args(args).output().unwrap())
}

fn create(home: &Path, args: &[&str]) -> String {
    let out = ok(hearth(home)
        .args(["keys", "create"])
        .args(args)
        .output()
        .unwrap());
    out.trim().to_string()
}

#[test]
fn keys_are_created_listed_and_revoked() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let secret = create(
        h,
        &[
            "--name",
            "ward-3",
            "--role",
            "radiologist",
            "--attr",
            "department=radiology",
            "--priority",
            "batch",
            "--expires",
            "90d",
        ],
    );
    assert!(secret.starts_with("hth_"), "{secret}");
    let id = secret.split('_').nth(1).unwrap().to_string();
    let list: Value = serde_json::from_str(&ok(hearth(h)
        .args(["keys", "list", "--json"])
        .output()
        .unwrap()))
    .unwrap();
    let key = &list[0];
    assert_eq!(key["id"], id.as_str());
    assert_eq!(key["name"], "ward-3");
    assert_eq!(key["roles"][0], "radiologist");
    assert_eq!(key["attrs"]["department"], "radiology");
    assert_eq!(key["priority"], "batch");
    let ninety_days = key["expires_at"].as_u64().unwrap() - key["created_at"].as_u64().unwrap();
    assert_eq!(ninety_days, 90 * 86_400);
    assert!(!list
        .to_string()
        .contains(secret.rsplit('_').next().unwrap()));

    // Regression: a whole key pasted instead of its id was echoed back,
    // secret included, in the "no such key" error.
    let pasted = format!("hth_{}_{}", "0".repeat(12), "s3cr3t".repeat(8));
    let err = failed(
        hearth(h)
            .args(["keys", "revoke", &pasted])
            .output()
            .unwrap(),
    );
    assert!(!err.contains("s3cr3t"), "{err}");
    assert!(err.contains("not the key itself"), "{err}");
    ok(hearth(h).args(["keys", "revoke", &id]).output().unwrap());
    let table = ok(hearth(h).args(["keys", "list"]).output().unwrap());
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("revoked")),
        "{table}"
    );

    let err = refused(h, &["keys", "revoke", "0123456789ab"]);
    assert!(err.contains("0123456789ab"), "{err}");
    let err = refused(h, &["keys", "create", "--name", "x", "--expires", "soon"]);
    assert!(err.contains("soon"), "{err}");
    let err = refused(h, &["keys", "create", "--name", "x", "--attr", "novalue"]);
    assert!(err.contains("novalue"), "{err}");
}

#[test]
fn serving_beyond_loopback_needs_a_key_or_an_explicit_override() {
    let home = tempfile::tempdir().unwrap();
    let model = testkit::default_model();
    let serve = |extra: &[&str]| {
        let mut cmd = hearth(home.path());
        cmd.args([
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--ctx-size",
            "256",
            "--model",
        ])
        .arg(&model)
        .args(extra);
        cmd
    };
    let err = failed(serve(&[]).output().unwrap());
    assert!(err.contains("hearth keys create"), "{err}");

    // The override starts, and says so.
    let (child, _) = spawn_server_logging_to(serve(&["--insecure-no-auth"]), Stdio::piped());
    let out = child.kill_with_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");

    // With a key, the same address is fine.
    create(home.path(), &["--name", "ops"]);
    let (mut child, _) = spawn_server(serve(&[]));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn credentials_never_reach_the_logs() {
    let home = tempfile::tempdir().unwrap();
    let secret = create(home.path(), &["--name", "logged"]);
    let secret_part = secret.rsplit('_').next().unwrap().to_string();
    // A JWT issuer too: tokens must stay out of the log as keys do.
    let signer = testkit::jwt::Signer::es256("k1");
    let jwks_file = home.path().join("jwks.json");
    std::fs::write(&jwks_file, testkit::jwt::jwks(&[&signer])).unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[[auth.jwt]]\nissuer = \"https://idp.test\"\naudience = \"hearth\"\nalgorithms = [\"ES256\"]\njwks_file = {:?}\n",
            jwks_file
        ),
    )
    .unwrap();
    let now = auth::unix_now();
    let claims = |exp: u64| serde_json::json!({"iss": "https://idp.test", "aud": "hearth", "sub": "u-1", "exp": exp, "roles": ["user"]});
    let (valid_jwt, expired_jwt) = (
        signer.sign(&claims(now + 600)),
        signer.sign(&claims(now - 600)),
    );
    let log = home.path().join("serve.log");
    let mut cmd = hearth(home.path());
    cmd.args([
        "serve",
        "--port",
        "0",
        "--ctx-size",
        "256",
        "--log",
        "trace,llama-cpp-2=warn",
        "--model",
    ])
    .arg(testkit::default_model());
    let (mut child, base) = spawn_server_logging_to(cmd, std::fs::File::create(&log).unwrap());
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // The same key with its last hex digit changed (never equal to it).
    let last = if secret.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &secret[..secret.len() - 1]);
    wait_ready(&base);
    for (header, value) in [
        ("authorization", format!("Bearer {secret}")),
        ("x-api-key", secret.clone()),
        ("authorization", format!("Bearer {wrong}")),
        ("authorization", format!("Token {secret}")),
        ("authorization", format!("Bearer {valid_jwt}")),
        ("authorization", format!("Bearer {expired_jwt}")),
    ] {
        let resp = client
            .post(format!("{base}/v1/chat/completions"))
            .header(header, value)
            .json(&serde_json::json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}))
            .send()
            .unwrap();
        assert!(
            resp.status() == 200 || resp.status() == 401,
            "{}",
            resp.status()
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("authentication failed"),
        "the log should record refusals"
    );
    let wrong_part = wrong.rsplit('_').next().unwrap();
    assert!(!text.contains(&secret_part), "the secret reached the log");
    assert!(
        !text.contains(wrong_part),
        "a presented secret reached the log"
    );
    for token in [&valid_jwt, &expired_jwt] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "a JWT reached the log");
    }
}

#[test]
fn policy_check_explains_decisions() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let policies = support::install_policy_table(h);
    let check = |args: &[&str]| {
        ok(hearth(h)
            .args(["policy", "check"])
            .args(args)
            .output()
            .unwrap())
        .trim()
        .to_string()
    };
    let radiologist = [
        "--principal",
        "dr-x",
        "--role",
        "radiologist",
        "--attr",
        "certification=board_certified",
        "--action",
        "predict",
        "--resource",
        "model:medical_qa",
    ];
    let mut in_radiology = radiologist.to_vec();
    in_radiology.extend(["--attr", "department=radiology"]);
    assert_eq!(check(&in_radiology), "ALLOW by radiologists-use-medical-qa");
    let mut in_cardiology = radiologist.to_vec();
    in_cardiology.extend(["--attr", "department=cardiology"]);
    assert_eq!(check(&in_cardiology), "DENY (no policy permits this)");
    let outside = [
        "--principal",
        "ops",
        "--role",
        "admin",
        "--action",
        "admin",
        "--resource",
        "server",
        "--context",
        r#"{"source_ip": "192.168.1.5"}"#,
    ];
    assert_eq!(check(&outside), "DENY by admin-only-inside");

    // A stored key is checked with its own roles (the default `user`).
    let secret = create(h, &["--name", "desk"]);
    let id = secret.split('_').nth(1).unwrap();
    let out: Value = serde_json::from_str(&check(&[
        "--principal",
        id,
        "--action",
        "predict",
        "--resource",
        "model:smollm2",
        "--json",
    ]))
    .unwrap();
    assert_eq!(out["decision"], "allow");
    assert_eq!(out["policies"][0], "users-use-models");

    let err = refused(
        h,
        &[
            "policy",
            "check",
            "--principal",
            "x",
            "--action",
            "fly",
            "--resource",
            "server",
        ],
    );
    assert!(err.contains("fly"), "{err}");
    std::fs::write(policies.join("zz-broken.cedar"), "permit (principal,").unwrap();
    let err = refused(
        h,
        &[
            "policy",
            "check",
            "--principal",
            "x",
            "--action",
            "admin",
            "--resource",
            "server",
        ],
    );
    assert!(err.contains("zz-broken.cedar"), "{err}");
}

/// A key's daily budget, spent, stays spent when the server restarts: the
/// usage is saved in the key store and restored at start.
#[test]
fn a_spent_daily_budget_stays_spent_across_a_restart() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let key = create(h, &["--name", "budget", "--daily-tokens", "12"]);
    let listed = ok(hearth(h).args(["keys", "list"]).output().unwrap());
    assert!(listed.contains("12 tok/day"), "{listed}");
    let chat =
        serde_json::json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let ask = |base: &str| {
        let reply = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat)
            .send()
            .unwrap();
        let status = reply.status().as_u16();
        (status, reply.json::<Value>().unwrap())
    };
    let serve = || {
        let mut cmd = hearth(h);
        cmd.args(["serve", "--port", "0", "--ctx-size", "256", "--model"])
            .arg(testkit::default_model());
        let (child, base) = spawn_server(cmd);
        wait_ready(&base);
        (child, base)
    };
    let (mut child, base) = serve();
    let (status, body) = ask(&base);
    assert_eq!(status, 200, "{body}");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() >= 12);
    let (status, body) = ask(&base);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    // A clean stop, as a service manager would send it.
    support::signal("-TERM", child.id());
    child.wait().unwrap();

    let (mut child, base) = serve();
    let (status, body) = ask(&base);
    assert_eq!(status, 429, "the restart handed out a new budget: {body}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Policies are checked when the server starts: one that does not parse,
/// and one that parses but names an action the schema does not have, each
/// stop it before it listens, with Cedar's diagnostic and the file's name.
#[test]
fn an_invalid_policy_refuses_start_with_cedars_diagnostic() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    create(h, &["--name", "desk"]);
    let policies = h.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("default.cedar"),
        "permit (principal, action, resource);",
    )
    .unwrap();
    let model = testkit::default_model();
    let serve = |h: &Path| {
        refused(
            h,
            &["serve", "--port", "0", "--model", model.to_str().unwrap()],
        )
    };
    std::fs::write(policies.join("zz-broken.cedar"), "permit (principal,").unwrap();
    let err = serve(h);
    assert!(err.contains("zz-broken.cedar"), "{err}");
    assert!(!err.contains("listening"), "{err}");
    std::fs::write(
        policies.join("zz-broken.cedar"),
        r#"permit (principal, action == Action::"fly", resource);"#,
    )
    .unwrap();
    let err = serve(h);
    assert!(
        err.contains("zz-broken.cedar") && err.contains("fly"),
        "{err}"
    );
}
