//! The audit log end to end: writing, rotation, restart, every tamper case
//! the acceptance names, and `kill -9` during heavy writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use audit::{verify, AuditConfig, AuditLog, Event};
use serde_json::{Map, Value};

fn config(dir: &Path) -> AuditConfig {
    let mut c = AuditConfig::new(dir.join("log"), dir.join("keys/audit.key"));
    c.checkpoint_every = 10;
    c.sync_interval = Duration::from_millis(5);
    c
}

fn event(i: u64) -> Event {
    Event::ApiRequest(audit::ApiRequest {
        request_id: format!("req-{i}"),
        principal: "key:0123456789ab".into(),
        action: "predict".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        model: Some("smollm2".into()),
        decision: "allow".into(),
        status: 200,
        source_ip: Some("10.0.0.7".into()),
        prompt_tokens: 12 + i,
        completion_tokens: 34,
        prompt_sha256: Some("ab".repeat(32)),
        response_sha256: Some("cd".repeat(32)),
        ..Default::default()
    })
}

fn public_key(dir: &Path) -> ed25519_dalek::VerifyingKey {
    audit::load_public_key(&dir.join("keys/audit.key.pub")).unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    audit::log_files(&dir.join("log")).unwrap()
}

/// A log of `n` requests (plus the opening line and checkpoints), closed.
fn written(dir: &Path, n: u64) -> Vec<PathBuf> {
    let log = AuditLog::open(config(dir)).unwrap();
    for i in 0..n {
        log.record(event(i));
    }
    drop(log);
    files(dir)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[test]
fn an_untouched_log_verifies_across_restarts_and_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_file_bytes = 8 << 10;
    for round in 0..3 {
        let log = AuditLog::open(c.clone()).unwrap();
        for i in 0..50 {
            log.record(event(round * 100 + i));
        }
    }
    let f = files(dir.path());
    assert!(f.len() >= 3, "rotated into {} files", f.len());
    let report = verify(&f, &public_key(dir.path()), false).unwrap();
    // 150 requests and 3 `log_opened` lines, plus checkpoints.
    assert_eq!(report.entries - report.checkpoints, 153);
    assert_eq!(report.unsigned_tail, 0, "a clean close signs the tail");
    assert_eq!(report.signed_through + 1, report.entries);
    // Every file ends with a checkpoint, so each is signed on its own.
    for file in &f {
        let last: Value = serde_json::from_str(lines(file).last().unwrap()).unwrap();
        assert_eq!(last["event"], "checkpoint", "{}", file.display());
    }
    // A later file verifies on its own from where it starts.
    assert!(verify(&f[1..], &public_key(dir.path()), true).is_ok());
    assert!(verify(&f[1..], &public_key(dir.path()), false).is_err());
}

/// Each tampering fails verification and names the line where it happened.
#[test]
fn every_kind_of_tampering_is_found_and_located() {
    let dir = tempfile::tempdir().unwrap();
    let file = written(dir.path(), 30).remove(0);
    let original = lines(&file);
    let key = public_key(dir.path());
    let check = |name: &str, changed: Vec<String>, line: u64, why: &str| {
        write_lines(&file, &changed);
        let err = verify(std::slice::from_ref(&file), &key, false).expect_err(name);
        assert_eq!(err.line, line, "{name}: {err}");
        assert!(err.reason.contains(why), "{name}: {err}");
        write_lines(&file, &original);
    };
    assert!(verify(std::slice::from_ref(&file), &key, false).is_ok());

    let mut edited = original.clone();
    edited[4] = edited[4].replace("\"status\":200", "\"status\":403");
    assert_ne!(edited[4], original[4]);
    check("edit a field", edited, 5, "edited");

    let mut deleted = original.clone();
    deleted.remove(6);
    check("delete a line", deleted, 7, "sequence");

    let mut inserted = original.clone();
    inserted.insert(8, original[3].clone());
    check("insert a line", inserted, 9, "sequence");

    let mut swapped = original.clone();
    swapped.swap(12, 13);
    check("swap two lines", swapped, 13, "sequence");

    let mut text = original.join("\n");
    text.push('\n');
    let cut = text.len() - original.last().unwrap().len() / 2;
    std::fs::write(&file, &text[..cut]).unwrap();
    let err = verify(std::slice::from_ref(&file), &key, false).unwrap_err();
    assert_eq!(err.line, original.len() as u64, "{err}");
    assert!(err.reason.contains("cut short"), "{err}");
    write_lines(&file, &original);

    // A forger who rewrites a checkpoint's signature and re-chains every
    // hash after it still fails: only the key signs.
    let at = original
        .iter()
        .position(|l| l.contains("\"event\":\"checkpoint\""))
        .unwrap();
    let mut forged = original.clone();
    let mut obj: Map<String, Value> = serde_json::from_str(&forged[at]).unwrap();
    obj.insert("signature".into(), Value::String("00".repeat(64)));
    forged[at] = reseal(obj);
    for i in at + 1..forged.len() {
        let prev: Map<String, Value> = serde_json::from_str(&forged[i - 1]).unwrap();
        let mut obj: Map<String, Value> = serde_json::from_str(&forged[i]).unwrap();
        obj.insert("prev".into(), prev["hash"].clone());
        forged[i] = reseal(obj);
    }
    check(
        "replace a checkpoint signature",
        forged,
        at as u64 + 1,
        "signature",
    );
}

fn reseal(mut obj: Map<String, Value>) -> String {
    let hash = audit::line_hash(&obj);
    obj.insert("hash".into(), hash.into());
    serde_json::to_string(&obj).unwrap()
}

#[test]
fn a_torn_last_line_is_cut_off_and_recorded_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = written(dir.path(), 5).remove(0);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"{\"seq\":99,\"ti");
    std::fs::write(&file, &bytes).unwrap();
    let log = AuditLog::open(config(dir.path())).unwrap();
    log.record(event(6));
    drop(log);
    let all = files(dir.path());
    verify(&all, &public_key(dir.path()), false).unwrap();
    let text = std::fs::read_to_string(&all[0]).unwrap();
    assert!(text.contains("\"event\":\"log_recovered\""));
    assert!(text.contains("\"dropped_bytes\":13"));
}

#[test]
fn a_damaged_head_refuses_to_open_rather_than_start_a_broken_chain() {
    let dir = tempfile::tempdir().unwrap();
    let file = written(dir.path(), 5).remove(0);
    let mut l = lines(&file);
    let last = l.len() - 1;
    l[last] = l[last].replace("checkpoint", "checkpoinT");
    write_lines(&file, &l);
    let err = AuditLog::open(config(dir.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("audit-000001.jsonl") && err.contains("damaged"),
        "{err}"
    );
}

/// The child half of the kill test: writes until killed, printing how many
/// entries are known to be on disk after each sync.
#[test]
fn kill_child_writer() {
    let Some(dir) = std::env::var_os("AUDIT_KILL_CHILD_DIR") else {
        return;
    };
    let log = AuditLog::open(config(Path::new(&dir))).unwrap();
    let mut i = 0;
    loop {
        for _ in 0..500 {
            log.record(event(i));
            i += 1;
        }
        log.sync();
        println!("synced {i}");
    }
}

#[test]
fn kill_9_during_heavy_writes_leaves_a_log_that_verifies() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AUDIT_KILL_CHILD_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut synced = 0u64;
    let mut line = String::new();
    while synced < 20_000 {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the writer died");
        if let Some(n) = line.trim().strip_prefix("synced ") {
            synced = n.parse().unwrap();
        }
    }
    // SIGKILL: no destructor, no final checkpoint, mid-batch.
    child.kill().unwrap();
    child.wait().unwrap();
    let key = public_key(dir.path());
    let report = verify(&files(dir.path()), &key, false).unwrap();
    let requests = report.entries - report.checkpoints - 1;
    assert!(
        requests >= synced,
        "{requests} requests on disk, {synced} were synced before the kill"
    );
    // And the chain goes on from there.
    let log = AuditLog::open(config(dir.path())).unwrap();
    log.record(event(0));
    drop(log);
    verify(&files(dir.path()), &key, false).unwrap();
}

/// Two writers on one chain (the server and `hearth keys` beside it): each
/// batch follows whatever the other wrote, so the chain stays whole.
#[test]
fn two_writers_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let server = AuditLog::open(config(dir.path())).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..300 {
                server.record(event(i));
            }
        });
        s.spawn(|| {
            for i in 0..20 {
                let cli = AuditLog::open(config(dir.path())).unwrap();
                cli.record(Event::KeyRevoked {
                    key_id: format!("{i:012}"),
                });
            }
        });
    });
    drop(server);
    let report = verify(&files(dir.path()), &public_key(dir.path()), false).unwrap();
    // 300 requests, 20 revocations, 21 `log_opened`.
    assert_eq!(report.entries - report.checkpoints, 341);
}

/// CPU ticks (1/100 s) the process's `hearth-audit` threads have used.
#[cfg(target_os = "linux")]
fn writer_ticks() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let t = t.ok()?.path();
            let comm = std::fs::read_to_string(t.join("comm")).ok()?;
            if comm.trim() != "hearth-audit" {
                return None;
            }
            let stat = std::fs::read_to_string(t.join("stat")).ok()?;
            // Fields after the parenthesised name: utime and stime are the
            // 12th and 13th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            Some(f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?)
        })
        .sum()
}

/// Regression: when the log's directory vanished (a test's temporary home
/// deleted under a server left running), the writer retried in a tight
/// loop, burning a core and flooding its log. It must back off instead.
#[cfg(target_os = "linux")]
#[test]
fn a_log_that_cannot_be_written_is_retried_without_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path())).unwrap();
    log.record(event(0));
    log.sync();
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    for i in 1..=5 {
        log.record(event(i));
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = writer_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let spent = writer_ticks() - before;
    assert!(spent <= 10, "the writer used {spent}/200 ticks retrying");
    drop(log);
}

/// Few entries never reach the count: the interval signs them anyway,
/// while the log is still open, so a crash later loses no signature.
#[test]
fn a_quiet_log_is_signed_within_the_checkpoint_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_every = 1_000_000;
    c.checkpoint_interval = Duration::from_millis(300);
    let log = AuditLog::open(c).unwrap();
    for i in 0..3 {
        log.record(event(i));
    }
    let checkpoints = || {
        lines(&files(dir.path())[0])
            .iter()
            .filter(|l| l.contains(r#""event":"checkpoint""#))
            .count()
    };
    // Synced within 5 ms, not yet signed.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(checkpoints(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while checkpoints() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(checkpoints(), 1, "signed while open");
    let report = verify(&files(dir.path()), &public_key(dir.path()), false).unwrap();
    assert_eq!(report.unsigned_tail, 0);
    assert_eq!(report.entries - report.checkpoints, 4);
    // Nothing new: no empty checkpoints follow.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(checkpoints(), 1);
    drop(log);
}
