//! `hearth bench --url` against a real `hearth serve`: a sweep of two
//! endpoints on one chart, the server's own timings beside the client's,
//! errors counted by kind, and bad sweeps refused in one line.

use std::process::Command;

use serde_json::Value;

mod support;
use support::{failed, ok, spawn_server, wait_ready};

fn serve(extra: &[&str]) -> (support::Server, String) {
    let mut cmd = support::hearth(&testkit::hearth_home());
    cmd.args(["serve", "--port", "0", "--ctx-size", "1024"])
        .args(extra);
    let (server, base) = spawn_server(cmd);
    wait_ready(&base);
    (server, base)
}

fn bench() -> Command {
    let mut cmd = support::hearth(&testkit::hearth_home());
    cmd.arg("bench");
    cmd
}

#[test]
fn a_sweep_of_two_endpoints_reports_both_beside_the_servers_own_timings() {
    let (_server, base) = serve(&["--max-running", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("load.svg");
    let out = ok(bench()
        .args([
            "--url", &base, "--url", &base, "--label", "first", "--label", "second",
        ])
        .args(["--concurrency", "1,3", "--requests", "6"])
        .args(["--prompt-tokens", "60-90", "--gen-tokens", "6"])
        .args(["--system-prompt-tokens", "20"])
        .args(["--slo-ttft-ms", "600000", "--slo-tpot-ms", "600000"])
        .arg("--json")
        .arg("--chart")
        .arg(&chart)
        .output()
        .unwrap());
    let report: Value = serde_json::from_str(&out).unwrap();
    let endpoints = report["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2);
    for (endpoint, label) in endpoints.iter().zip(["first", "second"]) {
        assert_eq!(endpoint["label"], label);
        assert_eq!(
            endpoint["model"], "smollm2",
            "the first model the server lists"
        );
        let levels = endpoint["levels"].as_array().unwrap();
        let conc: Vec<u64> = levels
            .iter()
            .map(|l| l["concurrency"].as_u64().unwrap())
            .collect();
        assert_eq!(conc, [1, 3]);
        for l in levels {
            assert_eq!(l["errors"], 0, "{l}");
            assert_eq!(l["requests"], 6);
            assert_eq!(l["output_tokens"], 36, "exactly the asked length each");
            let prompt = l["prompt_tokens_mean"].as_f64().unwrap();
            assert!(
                (58.0..=93.0).contains(&prompt),
                "prompt lengths off target: {prompt}"
            );
            assert_eq!(l["goodput"]["fraction"], 1.0, "a lenient objective");
            let ttft = l["ttft_ms"]["p50"].as_f64().unwrap();
            assert!(ttft > 0.0 && ttft <= l["e2e_ms"]["p50"].as_f64().unwrap());
            // The server times a subset of what the client sees: its first
            // token can come no later, and its busy span is no longer.
            let server = &l["server"];
            assert_eq!(server["requests"], 6, "every answer carried timings: {l}");
            let d_ttft = server["ttft_p50_diff_percent"].as_f64().unwrap();
            let d_tok = server["output_tokens_per_s_diff_percent"].as_f64().unwrap();
            assert!(
                (0.0..50.0).contains(&d_ttft),
                "client TTFT vs server: {d_ttft}%"
            );
            assert!(
                (-50.0..=0.0).contains(&d_tok),
                "client tok/s vs server: {d_tok}%"
            );
        }
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    for text in [
        "first",
        "second",
        "Time to first token",
        "Output throughput",
    ] {
        assert!(svg.contains(text), "chart lacks {text}");
    }

    // The saved report prints and charts again without a server.
    let saved = dir.path().join("load.json");
    std::fs::write(&saved, &out).unwrap();
    let again = dir.path().join("again.svg");
    let table = ok(bench()
        .arg("--from")
        .arg(&saved)
        .arg("--chart")
        .arg(&again)
        .output()
        .unwrap());
    assert!(
        table.contains("first (") && table.contains("second ("),
        "{table}"
    );
    assert!(table.contains("srvTTFT50"), "{table}");
    assert_eq!(std::fs::read_to_string(&again).unwrap(), svg);
}

#[test]
fn a_full_queue_shows_as_429_errors_and_lost_goodput() {
    let (_server, base) = serve(&["--max-running", "1", "--max-queue", "1"]);
    let out = ok(bench()
        .args(["--url", &base, "--concurrency", "4", "--requests", "8"])
        .args(["--prompt-tokens", "60", "--gen-tokens", "24", "--json"])
        .output()
        .unwrap());
    let report: Value = serde_json::from_str(&out).unwrap();
    let level = &report["endpoints"][0]["levels"][0];
    let rejected = level["error_kinds"]["http 429"].as_u64().unwrap_or(0);
    assert!(rejected >= 1, "four clients, room for two: {level}");
    assert_eq!(level["errors"].as_u64().unwrap(), rejected, "{level}");
    assert!(level["first_error"].as_str().unwrap().contains("HTTP 429"));
    assert!(level["goodput"]["fraction"].as_f64().unwrap() < 1.0);
}

#[test]
fn bad_load_tests_get_one_line_errors() {
    let (_server, base) = serve(&[]);
    let cases: [(&[&str], &str); 5] = [
        (&["--url", &base, "no-such-model"], "404"),
        (
            &["--url", "http://127.0.0.1:9", "--concurrency", "1"],
            "cannot reach",
        ),
        (
            &["--url", &base, "--concurrency", "2,0"],
            "at least 1 client",
        ),
        (&["--prompt-tokens", "100-200"], "--url"),
        (&["--url", &base, "--prompt-tokens", "5"], "too short"),
    ];
    for (args, wanted) in cases {
        let err = failed(bench().args(args).output().unwrap());
        assert!(err.contains(wanted), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}
