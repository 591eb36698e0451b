//! `hearth serve` over TLS: the official OpenAI Python client through a CA
//! made in the test, plaintext refused, mutual TLS with the client's
//! identity in policies, and certificates reloaded on SIGHUP.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::tls::{Issued, TestCa};

mod support;

use support::{hearth, ok, spawn_server, wait_ready_with};

fn create_key(home: &Path) -> String {
    ok(hearth(home)
        .args(["keys", "create", "--name", "tls"])
        .output()
        .unwrap())
    .trim()
    .to_string()
}

/// `hearth serve` on a free port with `extra` arguments; returns the child
/// and its `https://` base URL.
fn serve_tls(home: &Path, server: &Issued, extra: &[&str]) -> (support::Server, String) {
    let mut cmd = hearth(home);
    cmd.args(["serve", "--port", "0", "--ctx-size", "256", "--tls-cert"])
        .arg(&server.cert)
        .arg("--tls-key")
        .arg(&server.key)
        .args(extra)
        .arg("--model")
        .arg(testkit::default_model());
    let (child, base) = spawn_server(cmd);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    // Certificates name localhost; the port is the server's.
    let base = base.replace("https://127.0.0.1", "https://localhost");
    (child, base)
}

/// A client trusting only `ca`, presenting `identity` if given.
fn client(ca: &TestCa, identity: Option<&Issued>) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// Sends an HTTP request in plaintext to the TLS port and returns whatever
/// comes back before the server closes the connection.
fn plaintext_answer(base: &str) -> Vec<u8> {
    let port = base.rsplit(':').next().unwrap();
    let mut tcp = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    answer
}

const PYTHON_CHAT: &str = r#"
import os, ssl, openai
verify = ssl.create_default_context(cafile=os.environ["CA"]) if os.environ.get("CA") else True
client = openai.OpenAI(
    base_url=os.environ["BASE"] + "/v1",
    api_key=os.environ["KEY"],
    http_client=openai.DefaultHttpxClient(verify=verify),
    max_retries=0,
)
model = client.models.list().data[0].id
reply = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=5, seed=1)
print(reply.usage.completion_tokens, reply.choices[0].message.content)
"#;

fn python_chat(base: &str, key: &str, ca: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(testkit::python_clients());
    cmd.args(["-c", PYTHON_CHAT])
        .env("BASE", base)
        .env("KEY", key)
        .env_remove("SSL_CERT_FILE")
        .env_remove("OPENAI_BASE_URL");
    if let Some(ca) = ca {
        cmd.env("CA", ca);
    }
    cmd.output().unwrap()
}

#[test]
fn the_official_openai_client_talks_over_tls_and_plaintext_gets_nothing() {
    let home = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let h = home.path();
    let key = create_key(h);
    let ca = TestCa::new("Hearth test CA");
    let ca_file = ca.write(certs.path(), "ca.crt");
    let server = ca.server(certs.path(), "server");
    let (mut child, base) = serve_tls(h, &server, &[]);
    wait_ready_with(&client(&ca, None), &base);

    let out = python_chat(&base, &key, Some(&ca_file));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (tokens, text) = stdout.trim().split_once(' ').unwrap();
    assert!(
        tokens.parse::<u32>().unwrap() > 0 && !text.is_empty(),
        "{stdout}"
    );
    // Without the CA the client refuses the server's certificate.
    let out = python_chat(&base, &key, None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CERTIFICATE_VERIFY_FAILED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Plaintext on the TLS port: no HTTP answer at all.
    let answer = plaintext_answer(&base);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let http = base.replace("https://", "http://");
    assert!(reqwest::blocking::get(format!("{http}/health")).is_err());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Only clients with a certificate from the client CA get in, and the
/// certificate's subject reaches the policies; SIGHUP swaps the server's
/// certificate without a restart.
#[test]
fn mutual_tls_refuses_clients_without_a_certificate_and_names_those_with_one() {
    let home = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (h, dir) = (home.path(), certs.path());
    let key = create_key(h);
    // Predictions only from the ward terminal's certificate.
    let policies = h.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("default.cedar"),
        auth::policy::DEFAULT_POLICIES,
    )
    .unwrap();
    std::fs::write(
        policies.join("terminals.cedar"),
        r#"forbid (principal, action == Hearth::Action::"predict", resource)
           unless { context has tls_client && context.tls_client == "CN=ward-3-terminal" };"#,
    )
    .unwrap();
    let ca = TestCa::new("Hearth server CA");
    let clients = TestCa::new("Hospital client CA");
    let client_ca = clients.write(dir, "clients.crt");
    let server = ca.server(dir, "server");
    let ward = clients.client(dir, "ward", "ward-3-terminal");
    let kiosk = clients.client(dir, "kiosk", "lobby-kiosk");
    let stranger = TestCa::new("Someone else").client(dir, "stranger", "ward-3-terminal");
    let client_ca_arg = client_ca.to_str().unwrap();
    let (mut child, base) = serve_tls(h, &server, &["--tls-client-ca", client_ca_arg]);
    wait_ready_with(&client(&ca, Some(&ward)), &base);

    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let post = |c: &reqwest::blocking::Client| {
        c.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat)
            .send()
    };
    // No certificate, or one from another CA: the handshake fails.
    let err = post(&client(&ca, None)).unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    assert!(post(&client(&ca, Some(&stranger))).is_err());
    // The ward terminal may predict; the kiosk is known but forbidden.
    let reply = post(&client(&ca, Some(&ward))).unwrap();
    assert_eq!(reply.status(), 200);
    let reply = post(&client(&ca, Some(&kiosk))).unwrap();
    assert_eq!(reply.status(), 403);
    let body: Value = reply.json().unwrap();
    assert_eq!(body["error"]["code"], "permission_denied");

    // A new server certificate from another CA, in place, then SIGHUP.
    let renewed_ca = TestCa::new("Renewed server CA");
    let renewed = renewed_ca.server(dir, "renewed");
    std::fs::copy(&renewed.cert, &server.cert).unwrap();
    std::fs::copy(&renewed.key, &server.key).unwrap();
    support::signal("-HUP", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while post(&client(&renewed_ca, Some(&ward))).is_err() {
        assert!(std::time::Instant::now() < deadline, "never reloaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        post(&client(&ca, Some(&ward))).is_err(),
        "the old certificate is gone"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
