//! The official Python clients (`tests/clients/`, in the venv that
//! `scripts/pyclients.sh` makes) against a live `hearth serve`.

mod support;

use std::process::Command;

fn serve() -> (support::Server, String) {
    let mut cmd = support::hearth(&testkit::hearth_home());
    cmd.args(["serve", "--port", "0", "--ctx-size", "2048"]);
    support::spawn_server(cmd)
}

fn run_python_suite(file: &str) {
    let (server, base) = serve();
    support::wait_ready(&base);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(testkit::python_clients())
        .arg(format!("{root}/tests/clients/{file}"))
        .env("HEARTH_BASE", &base)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{file} failed:\n{report}");
    assert!(
        report.contains("\nOK") && !report.contains("Ran 0 tests"),
        "{report}"
    );
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
