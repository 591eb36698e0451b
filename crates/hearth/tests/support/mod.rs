//! What the binary's integration tests share: starting `hearth serve`, and
//! reading a command's outcome.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// Spawns `cmd` (a `hearth serve --port 0 …`), reads the address line it
/// prints once listening, and returns the child with its base URL.
pub fn spawn_server(cmd: Command) -> (Child, String) {
    spawn_server_logging_to(cmd, Stdio::null())
}

/// [`spawn_server`], with the server's log going to `stderr`.
pub fn spawn_server_logging_to(mut cmd: Command, stderr: impl Into<Stdio>) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_string();
    (child, base)
}

/// The stdout of a command that must succeed.
pub fn ok(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {}: {stderr}", output.status);
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

/// The stderr of a command that must fail cleanly (exit 1, no panic).
pub fn failed(output: Output) -> String {
    assert_eq!(output.status.code(), Some(1), "expected a clean failure");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// `hearth` in its own home: keys created there must not lock other tests
/// out of the shared test home.
pub fn hearth(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.env("HEARTH_HOME", home)
        .env_remove("HEARTH_CONFIG")
        .env("HEARTH_THREADS", "2");
    cmd
}

/// Waits until the server at `base` reports ready.
pub fn wait_ready(base: &str) {
    let client = reqwest::blocking::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while client
        .get(format!("{base}/ready"))
        .send()
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(std::time::Instant::now() < deadline, "never became ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Installs the auth crate's policy-table set into `home`'s policy
/// directory and returns the directory.
pub fn install_policy_table(home: &Path) -> std::path::PathBuf {
    let policies = home.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let table = Path::new(env!("CARGO_MANIFEST_DIR")).join("../auth/tests/policies");
    for entry in std::fs::read_dir(table).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
    }
    policies
}
