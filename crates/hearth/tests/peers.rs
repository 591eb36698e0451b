//! Peer distribution between real `hearth serve --share` nodes on loopback:
//! a third node pulls a model from two peers (one found through the
//! system's resolver) without contacting the origin; a peer that lends bad
//! bytes is dropped and the pull still ends verified; with no good peer
//! left the origin serves the rest; peer routes refuse requests without
//! credentials (even on a node whose API needs none), and credentials
//! without the `replicate` permission; `/api/pull` on a serving node asks
//! its configured peers first.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use testkit::jwt::{jwks, Signer};
use testkit::origin::Origin;
use testkit::tls::{Issued, TestCa};

mod support;

use support::{
    flip_byte, hearth, ok, spawn_server_logging_to, wait_ready, wait_ready_with, Server,
};

/// A node's home: 8 MiB chunks (so the model has a dozen for the peers to
/// share) and the cluster's token issuer.
fn node_home(site: &Site) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[pull]\nchunk_mb = 8\nca_file = {:?}\n\n[peers]\nclient_cert = {:?}\n\n[[auth.jwt]]\nissuer = \"https://idp.test\"\naudience = \"hearth\"\nalgorithms = [\"ES256\"]\njwks_file = {:?}\n",
            site.ca_file, site.node_pem, site.jwks_file
        ),
    )
    .unwrap();
    home
}

/// `hearth serve --share` of `smol`; with `tls`, over HTTPS that demands
/// a client certificate from the site's CA (mutual TLS).
fn lender(home: &Path, log: &Path, tls: Option<&Site>) -> (Server, String) {
    let mut cmd = hearth(home);
    cmd.args([
        "serve",
        "--share",
        "--port",
        "0",
        "--ctx-size",
        "256",
        "--model",
        "smol",
    ]);
    if let Some(site) = tls {
        cmd.arg("--tls-cert")
            .arg(&site.server.cert)
            .arg("--tls-key")
            .arg(&site.server.key)
            .arg("--tls-client-ca")
            .arg(&site.ca_file);
    }
    let (server, base) = spawn_server_logging_to(cmd, std::fs::File::create(log).unwrap());
    match tls {
        None => wait_ready(&base),
        Some(site) => {
            let pem = std::fs::read(&site.node_pem).unwrap();
            let client = reqwest::blocking::Client::builder()
                .add_root_certificate(
                    reqwest::Certificate::from_pem(site.ca.pem().as_bytes()).unwrap(),
                )
                .identity(reqwest::Identity::from_pem(&pem).unwrap())
                .build()
                .unwrap();
            wait_ready_with(&client, &base);
        }
    }
    (server, base)
}

fn pull(home: &Path, token: &str, args: &[&str]) -> Output {
    hearth(home)
        .env("HEARTH_PEER_KEY", token)
        .arg("pull")
        .args(args)
        .output()
        .unwrap()
}

fn stored_file(home: &Path) -> PathBuf {
    home.join("models/smol/model.gguf")
}

/// Waits for `needle` in the text files under `dir` (the audit writer
/// and the log flush on their own threads).
fn eventually_in(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text: String = if path.is_dir() {
            std::fs::read_dir(path)
                .unwrap()
                .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
                .collect()
        } else {
            std::fs::read_to_string(path).unwrap_or_default()
        };
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An origin serving the default model as `smol.gguf`, and the cluster's
/// token issuer.
struct Site {
    served: tempfile::TempDir,
    origin: Origin,
    url: String,
    signer: Signer,
    _keys: tempfile::TempDir,
    jwks_file: PathBuf,
    /// The site's CA: it signs lenders' server certificates and nodes'
    /// client certificates.
    ca: TestCa,
    ca_file: PathBuf,
    server: Issued,
    /// A node's client certificate and key, in one PEM file.
    node_pem: PathBuf,
}

impl Site {
    fn start() -> Site {
        let served = tempfile::tempdir().unwrap();
        std::fs::copy(testkit::default_model(), served.path().join("smol.gguf")).unwrap();
        let origin = Origin::start(served.path());
        let url = origin.url("smol.gguf");
        let signer = Signer::es256("k1");
        let keys = tempfile::tempdir().unwrap();
        let jwks_file = keys.path().join("jwks.json");
        std::fs::write(&jwks_file, jwks(&[&signer])).unwrap();
        let ca = TestCa::new("Site CA");
        let ca_file = ca.write(keys.path(), "ca.crt");
        let server = ca.server(keys.path(), "lender");
        let node = ca.client(keys.path(), "node", "node-c");
        let node_pem = keys.path().join("node.pem");
        std::fs::write(&node_pem, format!("{}{}", node.cert_pem, node.key_pem)).unwrap();
        Site {
            served,
            origin,
            url,
            signer,
            _keys: keys,
            jwks_file,
            ca,
            ca_file,
            server,
            node_pem,
        }
    }

    /// A token of the issuer with these roles, for an hour.
    fn token(&self, roles: &[&str]) -> String {
        self.signer.sign(
            &serde_json::json!({"iss": "https://idp.test", "aud": "hearth",
            "sub": "node-c", "exp": auth::unix_now() + 3600, "roles": roles}),
        )
    }
}

#[test]
fn a_node_pulls_from_two_peers_drops_a_bad_one_and_falls_back_to_the_origin() {
    let site = Site::start();
    let (origin, url) = (&site.origin, site.url.clone());
    let token = |roles: &[&str]| site.token(roles);
    let node = token(&["node"]);

    // A and B hold the model, pulled from the origin.
    let (a, b) = (node_home(&site), node_home(&site));
    for home in [&a, &b] {
        ok(hearth(home.path()).args(["pull", &url]).output().unwrap());
    }
    let logs = tempfile::tempdir().unwrap();
    let (a_log, b_log) = (logs.path().join("a.log"), logs.path().join("b.log"));
    let (_a_server, a_base) = lender(a.path(), &a_log, None);
    // B demands a client certificate (mutual TLS) as well as a token.
    let (_b_server, b_base) = lender(b.path(), &b_log, Some(&site));
    let a_port = a_base.rsplit(':').next().unwrap().to_string();
    origin.clear_log();

    // Peer routes: no credentials is 401, a user's token 403.
    let client = reqwest::blocking::Client::new();
    let manifest_url = format!("{a_base}/peer/v1/models/smol");
    assert_eq!(client.get(&manifest_url).send().unwrap().status(), 401);
    let user = token(&["user"]);
    let denied = client.get(&manifest_url).bearer_auth(&user).send().unwrap();
    assert_eq!(denied.status(), 403);
    let allowed = client.get(&manifest_url).bearer_auth(&node).send().unwrap();
    assert_eq!(allowed.status(), 200);

    // C, a third serving node, pulls from A (found by resolving localhost)
    // and B; the origin is named but not contacted.
    let c = node_home(&site);
    let mut serve_c = hearth(c.path());
    serve_c
        .args(["serve", "--port", "0", "--ctx-size", "256", "--model"])
        .arg(testkit::default_model());
    let (_c_server, c_base) = spawn_server_logging_to(
        serve_c,
        std::fs::File::create(logs.path().join("c.log")).unwrap(),
    );
    wait_ready(&c_base);
    let b_peer = b_base.trim_start_matches("http://");
    let dns = format!("localhost:{a_port}");
    let out = pull(
        c.path(),
        &node,
        &[&url, "--peer", b_peer, "--peers-dns", &dns],
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(
        origin.log().is_empty(),
        "the origin was contacted: {:?}",
        origin.log()
    );
    for base in [&a_base, &b_base] {
        let line = said
            .lines()
            .find(|l| l.starts_with(&format!("peer {base}:")))
            .unwrap_or_else(|| panic!("no report for {base}: {said}"));
        assert!(!line.contains(": 0 bytes"), "{line}");
    }
    for log in [&a_log, &b_log] {
        let text = eventually_in(log, "lending bytes to a peer");
        assert!(text.contains("lending bytes to a peer"), "{text}");
    }
    let audit = eventually_in(&a.path().join("audit"), "\"peer_transfer\"");
    assert!(audit.contains("\"peer_transfer\""), "{audit}");
    assert_eq!(
        std::fs::read(stored_file(c.path())).unwrap(),
        std::fs::read(testkit::default_model()).unwrap()
    );
    ok(hearth(c.path()).args(["verify", "smol"]).output().unwrap());
    // C serves what it pulled.
    let asked = client
        .post(format!("{c_base}/v1/completions"))
        .bearer_auth(token(&["user"]))
        .json(&serde_json::json!({"model": "smol", "prompt": "The capital of Japan is", "max_tokens": 4}))
        .send()
        .unwrap();
    assert_eq!(asked.status(), 200, "{}", asked.text().unwrap_or_default());

    // B's copy goes bad behind the file system's back (its stamp still
    // matches): one byte in every chunk, the modification time put back.
    let b_file = stored_file(b.path());
    let modified = std::fs::metadata(&b_file).unwrap().modified().unwrap();
    let size = std::fs::metadata(&b_file).unwrap().len();
    for at in (1000..size).step_by(8 << 20) {
        flip_byte(&b_file, at, 0x20);
    }
    std::fs::File::options()
        .write(true)
        .open(&b_file)
        .unwrap()
        .set_modified(modified)
        .unwrap();

    // D pulls from A and B: B is dropped at its first chunk, A serves the
    // rest, and the model ends verified, still without the origin.
    let d = node_home(&site);
    let out = pull(
        d.path(),
        &node,
        &[&url, "--peer", b_peer, "--peer", &a_base],
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("dropping this peer"), "{said}");
    let b_line = said
        .lines()
        .find(|l| l.starts_with(&format!("peer {b_base}:")))
        .unwrap_or_else(|| panic!("no report for B: {said}"));
    assert!(b_line.contains("dropped: sent bad bytes"), "{b_line}");
    assert!(
        origin.log().is_empty(),
        "the origin was contacted: {:?}",
        origin.log()
    );
    ok(hearth(d.path()).args(["verify", "smol"]).output().unwrap());

    // `peer://A/smol`: what A holds, from A alone, recorded as from A.
    let g = node_home(&site);
    let named = format!("peer://{}/smol", a_base.trim_start_matches("http://"));
    let out = pull(g.path(), &node, &[&named]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(g.path().join("models/smol/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["source"], named.as_str());
    assert!(
        origin.log().is_empty(),
        "the origin was contacted: {:?}",
        origin.log()
    );

    // E has only B: once B is dropped the origin serves what is left.
    let e = node_home(&site);
    let out = pull(e.path(), &node, &[&url, "--peer", b_peer]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("origin {url}:")), "{said}");
    assert!(!origin.log().is_empty(), "the origin served nothing");
    ok(hearth(e.path()).args(["verify", "smol"]).output().unwrap());
    assert_eq!(
        std::fs::read(stored_file(e.path())).unwrap(),
        std::fs::read(testkit::default_model()).unwrap()
    );

    // A node that needs no credentials for its API still lends nothing
    // without them.
    std::fs::remove_file(e.path().join("config.toml")).unwrap();
    let (_e_server, e_base) = lender(e.path(), &logs.path().join("e.log"), None);
    let open = client
        .get(format!("{e_base}/peer/v1/models/smol"))
        .send()
        .unwrap();
    assert_eq!(open.status(), 401);
    let api = client.get(format!("{e_base}/v1/models")).send().unwrap();
    assert_eq!(api.status(), 200, "the rest of the API is open");
}

/// Bytes lent per the lender's log (`length=` of each "lending bytes"
/// line) from byte `from` of the log on.
fn lent_since(log: &Path, from: usize) -> u64 {
    let text = std::fs::read_to_string(log).unwrap();
    text[from..]
        .lines()
        .filter(|l| l.contains("lending bytes to a peer"))
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("length="))
                .expect("a length on the line")
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn a_new_version_from_a_peer_transfers_only_what_changed() {
    let site = Site::start();
    let (origin, url) = (&site.origin, site.url.clone());
    let published = site.served.path().join("smol.gguf");
    let node = site.token(&["node"]);

    // A and C hold version 1; A lends.
    let (a, c) = (node_home(&site), node_home(&site));
    ok(hearth(a.path()).args(["pull", &url]).output().unwrap());
    let logs = tempfile::tempdir().unwrap();
    let a_log = logs.path().join("a.log");
    let (_a_server, a_base) = lender(a.path(), &a_log, None);
    let a_peer = a_base.trim_start_matches("http://").to_string();
    let out = pull(c.path(), &node, &[&url, "--peer", &a_peer]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Version 2 changes one tensor; A pulls it from the origin.
    let v2 = site.served.path().join("v2.gguf");
    let changed = testkit::edit::change_tensor(&published, &v2, "blk.0.attn_q.weight");
    std::fs::rename(&v2, &published).unwrap();
    ok(hearth(a.path())
        .args(["pull", &url, "--force"])
        .output()
        .unwrap());
    origin.clear_log();

    // C pulls version 2 from A: only about the changed tensor travels.
    let mark = std::fs::read_to_string(&a_log).unwrap().len();
    let out = pull(c.path(), &node, &[&url, "--peer", &a_peer]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    let size = std::fs::metadata(&published).unwrap().len();
    let counts = said
        .lines()
        .find_map(|l| l.strip_prefix("reused "))
        .unwrap_or_else(|| panic!("no counts: {said}"));
    let words: Vec<&str> = counts.split_whitespace().collect();
    let (reused, transferred): (u64, u64) = (words[0].parse().unwrap(), words[5].parse().unwrap());
    assert_eq!(reused + transferred, size, "{said}");
    assert!(
        transferred >= changed && transferred < size / 10,
        "{transferred} of {size} bytes transferred for a {changed}-byte tensor"
    );
    eprintln!("delta: {transferred} of {size} bytes transferred for a {changed}-byte tensor, {reused} reused");
    // The lender's log agrees, byte for byte.
    let lent = eventually_lent(&a_log, mark, transferred);
    assert_eq!(lent, transferred);
    assert!(origin.log().is_empty(), "the origin was contacted");
    assert_eq!(
        std::fs::read(stored_file(c.path())).unwrap(),
        std::fs::read(&published).unwrap()
    );
    ok(hearth(c.path()).args(["verify", "smol"]).output().unwrap());
}

/// [`lent_since`], waiting a little for the log to catch up to `want`.
fn eventually_lent(log: &Path, from: usize, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lent = lent_since(log, from);
        if lent >= want || Instant::now() > deadline {
            return lent;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/api/pull` on a serving node asks the peers in its configuration
/// first, as `hearth pull` does: the model comes from the peer, and the
/// origin it was published at is not contacted.
#[test]
fn an_api_pull_asks_the_configured_peers_first() {
    let site = Site::start();
    let a = node_home(&site);
    ok(hearth(a.path()).args(["pull", &site.url]).output().unwrap());
    let logs = tempfile::tempdir().unwrap();
    let a_log = logs.path().join("a.log");
    let (_a_server, a_base) = lender(a.path(), &a_log, None);
    site.origin.clear_log();

    let d = node_home(&site);
    let config = d.path().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[peers]\n",
        &format!(
            "[peers]\nnodes = [{:?}]\n",
            a_base.trim_start_matches("http://")
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut serve = hearth(d.path());
    serve
        .env("HEARTH_PEER_KEY", site.token(&["node"]))
        .args(["serve", "--port", "0", "--ctx-size", "256", "--model"])
        .arg(testkit::default_model());
    let (_d_server, d_base) = spawn_server_logging_to(
        serve,
        std::fs::File::create(logs.path().join("d.log")).unwrap(),
    );
    wait_ready(&d_base);
    let reply = reqwest::blocking::Client::new()
        .post(format!("{d_base}/api/pull"))
        .bearer_auth(site.token(&["admin"]))
        .json(&serde_json::json!({"model": site.url, "stream": false}))
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap();
    let status = reply.status();
    let body = reply.text().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        site.origin.log().is_empty(),
        "the origin was contacted: {:?}",
        site.origin.log()
    );
    let lent = eventually_in(&a_log, "lending bytes to a peer");
    assert!(lent.contains("lending bytes to a peer"), "{lent}");
    assert_eq!(
        std::fs::read(stored_file(d.path())).unwrap(),
        std::fs::read(testkit::default_model()).unwrap()
    );
    ok(hearth(d.path()).args(["verify", "smol"]).output().unwrap());
}
