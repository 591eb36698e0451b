//! The official Python clients (`tests/clients/`, in the venv that
//! `scripts/pyclients.sh` makes) against a live `hearth serve`.

mod support;

use std::process::Command;

fn serve() -> (support::Server, String) {
    let mut cmd = support::hearth(&testkit::hearth_home());
    cmd.args(["serve", "--port", "0", "--ctx-size", "2048"]);
    support::spawn_server(cmd)
}

/// Runs `file` against the server at `base`, with `env` on top.
fn run_python_suite_at(file: &str, base: &str, env: &[(&str, &str)]) {
    support::wait_ready(base);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(testkit::python_clients())
        .arg(format!("{root}/tests/clients/{file}"))
        .env("HEARTH_BASE", base)
        .envs(env.iter().copied())
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OLLAMA_HOST")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{file} failed:\n{report}");
    assert!(
        report.contains("\nOK") && !report.contains("Ran 0 tests"),
        "{report}"
    );
}

fn run_python_suite(file: &str) {
    let (server, base) = serve();
    run_python_suite_at(file, &base, &[]);
    drop(server);
}

#[test]
fn the_openai_client_gets_tools_and_structured_output() {
    run_python_suite("test_openai.py");
}

#[test]
fn the_anthropic_client_gets_messages_tools_and_token_counts() {
    run_python_suite("test_anthropic.py");
}

#[test]
fn the_ollama_client_lists_pulls_chats_embeds_and_deletes() {
    // A store of its own, empty: the suite pulls and deletes in it. The
    // served model is the default model's file, given by path.
    let home = tempfile::tempdir().unwrap();
    let model = home.path().join("smol.gguf");
    std::os::unix::fs::symlink(testkit::default_model(), &model).unwrap();
    let mut cmd = support::hearth(home.path());
    cmd.args(["serve", "--port", "0", "--ctx-size", "2048", "--model"])
        .arg(&model);
    let (server, base) = support::spawn_server(cmd);
    run_python_suite_at("test_ollama.py", &base, &[("HEARTH_MODEL", "smol")]);
    drop(server);
}
