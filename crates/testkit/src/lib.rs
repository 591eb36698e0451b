//! Test-only helpers shared by the crates' integration tests.
//!
//! Tests run against the real default model. It lives in the same Hearth home
//! the CLI uses (`$HEARTH_HOME`, default `~/.hearth`), so the README's serve
//! command and the test suite download it once between them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The Hearth home tests share with the CLI.
pub fn hearth_home() -> PathBuf {
    if let Some(home) = std::env::var_os("HEARTH_HOME") {
        return PathBuf::from(home);
    }
    let user_home = std::env::var_os("HOME").expect("HOME is set");
    PathBuf::from(user_home).join(".hearth")
}

/// Path of the verified default model, pulling it on first use.
pub fn default_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| catalog_model(store::DEFAULT_MODEL))
        .clone()
}

/// Path of the second real model (Gemma 3 270M, Q4_K_M: another
/// architecture, chat template and quantisation), pulling it on first use.
pub fn second_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| catalog_model("gemma3")).clone()
}

fn catalog_model(name: &str) -> PathBuf {
    let store = store::Store::open(&hearth_home()).expect("open the Hearth store");
    store
        .resolve_or_pull(name, &store::PullOptions::default(), &store::NoProgress)
        .unwrap_or_else(|e| panic!("cannot provide the model {name}: {e}"))
        .path
}

/// The committed corpus of malformed GGUF files.
pub fn malformed_corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gguf/tests/corpus/malformed");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

pub mod edit;
pub mod jwt;
pub mod origin;
pub mod proxy;
pub mod s3;
pub mod split;
pub mod tls;

/// The Python interpreter of the venv holding the official API clients
/// (`scripts/pyclients.sh` makes it on first use).
pub fn python_clients() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| setup_script("pyclients.sh")).clone()
}

/// Runs `scripts/<script>` (an installer that prints the path of what it
/// installed) and returns that path; panics with its output if it fails.
pub(crate) fn setup_script(script: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(root.join("scripts").join(script))
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
