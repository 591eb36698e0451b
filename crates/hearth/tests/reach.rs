//! Reaching a model behind what sites put in the way: a hub repository
//! that wants a token, an https origin signed by the site's own CA, and a
//! forward proxy from the standard variables. Real servers on loopback:
//! testkit's origin (axum; over rustls for https) and testkit's proxy
//! (CONNECT tunnels and absolute-form requests).

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use testkit::origin::Origin;
use testkit::proxy::Proxy;
use testkit::tls::TestCa;

mod support;

use support::{failed, ok};

const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// `hearth` with none of the machine's proxy or hub settings.
fn hearth(home: &Path) -> Command {
    let mut cmd = support::hearth(home);
    for var in PROXY_VARS.iter().chain(&["HF_TOKEN", "HF_ENDPOINT"]) {
        cmd.env_remove(var);
    }
    cmd
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

/// The digest a `pull --json` reports.
fn pulled(out: &str) -> String {
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "success", "{out}");
    last["sha256"].as_str().unwrap().to_string()
}

#[test]
fn a_gated_hub_file_needs_its_token() {
    let model = testkit::default_model();
    let served = tempfile::tempdir().unwrap();
    let at = served.path().join("org/gated/smol.gguf");
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&model, &at).unwrap();
    let origin = Origin::start(served.path());
    origin.require_token(Some("hf_site_token"));
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let pull = |name: &str| {
        let mut cmd = hearth(h);
        cmd.env("HF_ENDPOINT", &origin.base).args([
            "pull",
            "hf://org/gated/smol.gguf",
            "--name",
            name,
            "--json",
        ]);
        cmd
    };
    let err = failed(pull("a").output().unwrap());
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");
    let err = failed(pull("a").env("HF_TOKEN", "hf_wrong").output().unwrap());
    assert!(err.contains("refused the token"), "{err}");
    let out = ok(pull("a").env("HF_TOKEN", "hf_site_token").output().unwrap());
    assert_eq!(pulled(&out), sha256_of(&model));
    // The same from a token file named in the configuration.
    let file = h.join("hf.token");
    std::fs::write(&file, "hf_site_token\n").unwrap();
    std::fs::write(
        h.join("config.toml"),
        format!("[pull]\nhf_token_file = {:?}\n", file),
    )
    .unwrap();
    let out = ok(pull("b").output().unwrap());
    assert_eq!(pulled(&out), sha256_of(&model));
}

#[test]
fn https_with_the_sites_ca_and_through_a_proxy() {
    let model = testkit::default_model();
    let served = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&model, served.path().join("smol.gguf")).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Site CA");
    let issued = ca.server(certs.path(), "origin");
    let secure = Origin::start_tls(served.path(), &issued.cert, &issued.key);
    assert!(secure.base.starts_with("https://"));
    let url = secure.url("smol.gguf");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let want = sha256_of(&model);

    // The site's CA is not the system's: refused, naming the certificate.
    let err = failed(
        hearth(h)
            .args(["pull", &url, "--name", "a"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("TLS handshake failed")
            && err.contains("certificate")
            && err.contains("ca_file"),
        "{err}"
    );
    assert!(
        !err.contains("retrying"),
        "an untrusted certificate is not retried: {err}"
    );
    // Trusted through `[pull] ca_file`.
    let ca_file = ca.write(certs.path(), "site-ca.pem");
    std::fs::write(
        h.join("config.toml"),
        format!("[pull]\nca_file = {:?}\n", ca_file),
    )
    .unwrap();
    let out = ok(hearth(h)
        .args(["pull", &url, "--name", "a", "--json"])
        .output()
        .unwrap());
    assert_eq!(pulled(&out), want);

    // Through a proxy from HTTPS_PROXY: a CONNECT tunnel to the origin.
    let proxy = Proxy::start();
    let out = ok(hearth(h)
        .env("HTTPS_PROXY", &proxy.url)
        .args(["pull", &url, "--name", "b", "--json"])
        .output()
        .unwrap());
    assert_eq!(pulled(&out), want);
    let authority = secure.base.trim_start_matches("https://");
    let log = proxy.log();
    assert!(
        !log.is_empty()
            && log
                .iter()
                .all(|l| l.starts_with(&format!("CONNECT {authority} "))),
        "{log:?}"
    );
    // And an http origin through HTTP_PROXY: absolute-form requests.
    let plain = Origin::start(served.path());
    let plain_url = plain.url("smol.gguf");
    let out = ok(hearth(h)
        .env("HTTP_PROXY", &proxy.url)
        .args(["pull", &plain_url, "--name", "c", "--json"])
        .output()
        .unwrap());
    assert_eq!(pulled(&out), want);
    assert!(
        proxy
            .log()
            .iter()
            .any(|l| l.starts_with(&format!("GET {plain_url} "))),
        "{:?}",
        proxy.log()
    );
    // A proxy that is not there is an error naming the location, not a
    // direct connection behind the site's back (no retries: a refused
    // connection is otherwise retried, as a restarting server's would be).
    std::fs::write(
        h.join("config.toml"),
        format!("[pull]\nca_file = {:?}\nretries = 0\n", ca_file),
    )
    .unwrap();
    let err = failed(
        hearth(h)
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .args(["pull", &url, "--name", "d"])
            .output()
            .unwrap(),
    );
    assert!(err.contains(&url), "{err}");
}
