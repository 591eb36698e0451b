//! What the binary's integration tests share: starting `hearth serve`, and
//! reading a command's outcome.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// A child process (a running `hearth serve`, a Prometheus), killed when
/// dropped: a test that fails half way must not leave a server behind (one
/// whose home was deleted under it once kept a core busy for hours).
pub struct Server(Option<Child>);

impl Server {
    pub fn new(child: Child) -> Server {
        Server(Some(child))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("still held").id()
    }

    /// Kills the process and returns what it wrote to piped streams.
    pub fn kill_with_output(mut self) -> std::process::Output {
        let mut child = self.0.take().expect("still held");
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }
}

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("still held")
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("still held")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Spawns `cmd` (a `hearth serve --port 0 …`), reads the address line it
/// prints once listening, and returns the child with its base URL.
pub fn spawn_server(cmd: Command) -> (Server, String) {
    spawn_server_logging_to(cmd, Stdio::null())
}

/// [`spawn_server`], with the server's log going to `stderr`.
pub fn spawn_server_logging_to(mut cmd: Command, stderr: impl Into<Stdio>) -> (Server, String) {
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
    (Server::new(child), base)
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

/// XORs the byte at `at` of the file at `path` with `mask`: one bad byte,
/// as a failing disk leaves it.
pub fn flip_byte(path: &Path, at: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ mask], at).unwrap();
}

/// `hearth` in its own home: keys created there must not lock other tests
/// out of the shared test home. One llama.cpp thread: cargo runs two of
/// these tests at once on CI's 2 cores, and two servers of 2 threads each
/// spin against each other (models.rs 53 s → 27 s, prometheus.rs 32 s →
/// 19 s, clients.rs 3m43s → 2m11s of CPU when measured on 2026-12-04).
pub fn hearth(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.env("HEARTH_HOME", home)
        .env_remove("HEARTH_CONFIG")
        .env("HEARTH_THREADS", "1");
    cmd
}

/// Waits until the server at `base` reports ready.
pub fn wait_ready(base: &str) {
    wait_ready_with(&reqwest::blocking::Client::new(), base);
}

/// [`wait_ready`] through `client` (one that trusts a test CA, say).
pub fn wait_ready_with(client: &reqwest::blocking::Client, base: &str) {
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

/// Sends `signal` (`-HUP`, `-TERM`…) to process `pid`.
pub fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
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
