//! The policy table through both doors: `hearth policy check` and HTTP
//! against `hearth serve`, for API keys and JWT users, with model
//! attributes from the configuration and the caller's source address.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::jwt::{jwks, Signer};

mod support;

use support::{hearth, ok, spawn_server, wait_ready};

const ISS: &str = "https://idp.hospital.test/realms/staff";

/// A caller: a stored key or a provider's user, with roles and attributes.
struct Who {
    label: &'static str,
    jwt: bool,
    roles: &'static [&'static str],
    attrs: &'static [(&'static str, &'static str)],
}

/// What a row asks: `predict` on the served model, or `list_models`.
#[derive(Clone, Copy)]
enum Ask {
    Predict,
    List,
}

const RADIOLOGY: &[(&str, &str)] = &[
    ("department", "radiology"),
    ("certification", "board_certified"),
];

#[test]
fn the_policy_table_decides_the_same_through_the_cli_and_http() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Policies: the auth crate's table set plus a quarantined workstation.
    let policies = support::install_policy_table(h);
    std::fs::write(
        policies.join("30-quarantine.cedar"),
        r#"@id("quarantined-workstation")
forbid (principal, action, resource)
when { context has source_ip && context.source_ip == ip("127.0.0.99") };
"#,
    )
    .unwrap();
    // The served model is `medical_qa` (the default model under that name),
    // restricted and owned by radiology in the configuration.
    let model = h.join("medical_qa.gguf");
    std::os::unix::fs::symlink(testkit::default_model(), &model).unwrap();
    let signer = Signer::eddsa("staff-1");
    std::fs::write(h.join("jwks.json"), jwks(&[&signer])).unwrap();
    std::fs::write(
        h.join("config.toml"),
        format!(
            r#"
[[auth.jwt]]
issuer = "{ISS}"
audience = "hearth"
algorithms = ["EdDSA"]
jwks_file = "{}"
[auth.jwt.attributes]
department = "department"
certification = "certification"

[models.medical_qa.attributes]
department = "radiology"
sensitivity = "restricted"
"#,
            h.join("jwks.json").display()
        ),
    )
    .unwrap();

    let who = |label, jwt, roles, attrs| Who {
        label,
        jwt,
        roles,
        attrs,
    };
    let user = who("user key", false, &["user"], &[]);
    let nobody = who("visitor key", false, &["visitor"], &[]);
    let radiologist = who("radiologist key", false, &["radiologist"], RADIOLOGY);
    let cardiologist = who(
        "cardiologist key",
        false,
        &["radiologist"],
        &[
            ("department", "cardiology"),
            ("certification", "board_certified"),
        ],
    );
    let uncertified = who(
        "uncertified key",
        false,
        &["radiologist"],
        &[("department", "radiology")],
    );
    let contractor = who("contractor key", false, &["user", "contractor"], &[]);
    let admin = who("admin key", false, &["admin"], &[]);
    let jwt_radiologist = who("radiologist JWT", true, &["radiologist"], RADIOLOGY);
    let jwt_cardiologist = who(
        "cardiologist JWT",
        true,
        &["radiologist"],
        &[
            ("department", "cardiology"),
            ("certification", "board_certified"),
        ],
    );
    let jwt_user = who("user JWT", true, &["user"], &[]);
    let jwt_contractor = who("contractor JWT", true, &["contractor", "user"], &[]);

    let inside = "127.0.0.1";
    let quarantined = "127.0.0.99";
    // (caller, request, source address, allowed, deciding policies)
    let cases: Vec<(&Who, Ask, &str, bool, &str)> = vec![
        (&user, Ask::Predict, inside, true, "users-use-models"),
        (&user, Ask::List, inside, true, "users-use-models"),
        (&nobody, Ask::Predict, inside, false, ""),
        (&nobody, Ask::List, inside, false, ""),
        (
            &radiologist,
            Ask::Predict,
            inside,
            true,
            "radiologists-use-medical-qa",
        ),
        (&radiologist, Ask::List, inside, false, ""),
        (&cardiologist, Ask::Predict, inside, false, ""),
        (&uncertified, Ask::Predict, inside, false, ""),
        (
            &contractor,
            Ask::Predict,
            inside,
            false,
            "contractors-never-see-restricted",
        ),
        (&contractor, Ask::List, inside, true, "users-use-models"),
        (&admin, Ask::Predict, inside, true, "admins-do-anything"),
        (
            &user,
            Ask::Predict,
            quarantined,
            false,
            "quarantined-workstation",
        ),
        (
            &admin,
            Ask::List,
            quarantined,
            false,
            "quarantined-workstation",
        ),
        (
            &jwt_radiologist,
            Ask::Predict,
            inside,
            true,
            "radiologists-use-medical-qa",
        ),
        (&jwt_cardiologist, Ask::Predict, inside, false, ""),
        (&jwt_user, Ask::Predict, inside, true, "users-use-models"),
        (
            &jwt_user,
            Ask::Predict,
            quarantined,
            false,
            "quarantined-workstation",
        ),
        (
            &jwt_contractor,
            Ask::Predict,
            inside,
            false,
            "contractors-never-see-restricted",
        ),
        (
            &jwt_radiologist,
            Ask::Predict,
            quarantined,
            false,
            "quarantined-workstation",
        ),
    ];
    assert!(cases.len() >= 16);

    // Credentials: a stored key per key caller, a signed token per JWT one.
    let exp = auth::unix_now() + 3600;
    let credential = |w: &Who| -> String {
        if w.jwt {
            let mut claims =
                json!({"iss": ISS, "aud": "hearth", "sub": w.label, "exp": exp, "roles": w.roles});
            for (k, v) in w.attrs {
                claims[*k] = json!(v);
            }
            return signer.sign(&claims);
        }
        let mut cmd = hearth(h);
        cmd.args(["keys", "create", "--name", w.label]);
        for r in w.roles {
            cmd.args(["--role", r]);
        }
        for (k, v) in w.attrs {
            cmd.args(["--attr", &format!("{k}={v}")]);
        }
        ok(cmd.output().unwrap()).trim().to_string()
    };
    let credentials: Vec<String> = cases.iter().map(|(w, ..)| credential(w)).collect();

    // Through the CLI: stored keys by id, JWT users as ad-hoc principals.
    for ((w, ask, ip, allowed, by), secret) in cases.iter().zip(&credentials) {
        let mut cmd = hearth(h);
        cmd.args(["policy", "check", "--json", "--principal"]);
        if w.jwt {
            cmd.arg(w.label);
            for r in w.roles {
                cmd.args(["--role", r]);
            }
            for (k, v) in w.attrs {
                cmd.args(["--attr", &format!("{k}={v}")]);
            }
        } else {
            cmd.arg(secret.split('_').nth(1).unwrap());
        }
        let (action, resource) = match ask {
            Ask::Predict => ("predict", "model:medical_qa"),
            Ask::List => ("list_models", "server"),
        };
        cmd.args(["--action", action, "--resource", resource, "--context"])
            .arg(json!({"source_ip": ip}).to_string());
        let out: Value = serde_json::from_str(&ok(cmd.output().unwrap())).unwrap();
        let expected = if *allowed { "allow" } else { "deny" };
        assert_eq!(out["decision"], expected, "CLI: {} {ip}: {out}", w.label);
        let reasons: Vec<&str> = out["policies"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(reasons.join(","), *by, "CLI: {}", w.label);
    }

    // Through HTTP, from the case's own loopback address.
    let mut cmd = hearth(h);
    cmd.args(["serve", "--port", "0", "--ctx-size", "256", "--model"])
        .arg(&model);
    let (mut child, base) = spawn_server(cmd);
    wait_ready(&base);
    for ((w, ask, ip, allowed, _), secret) in cases.iter().zip(&credentials) {
        let client = reqwest::blocking::Client::builder()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let request = match ask {
            Ask::Predict => client
                .post(format!("{base}/v1/chat/completions"))
                .json(&json!({
                    "model": "medical_qa", "max_tokens": 1,
                    "messages": [{"role": "user", "content": "Hi"}],
                })),
            Ask::List => client.get(format!("{base}/v1/models")),
        };
        let resp = request.bearer_auth(secret).send().unwrap();
        let expected = if *allowed {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        let status = resp.status();
        assert_eq!(
            status,
            expected,
            "HTTP: {} {ip}: {}",
            w.label,
            resp.text().unwrap()
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
