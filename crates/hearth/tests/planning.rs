//! `hearth plan` end to end: a stored model's shape read from its GGUF, the
//! seeds' sizing table, stored calibrations, and a one-line error for each
//! kind of bad input.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

mod support;

use support::ok;

fn hearth(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.env("HEARTH_HOME", home)
        .env_remove("HEARTH_CONFIG")
        .env_remove("HEARTH_HARDWARE_FILE")
        .env("HEARTH_THREADS", "2");
    cmd
}

fn plan_json(home: &Path, args: &[&str]) -> Value {
    let out = ok(hearth(home)
        .arg("plan")
        .args(args)
        .arg("--json")
        .output()
        .unwrap());
    serde_json::from_str(&out).unwrap()
}

/// A failure's message: one line on stderr, naming what was wrong (exit 1,
/// or 2 for a flag clap refuses).
fn one_line_error(out: Output) -> String {
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "expected a clean failure: {out:?}"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    // clap adds a "For more information" hint after its own one-line error.
    assert!(
        lines.len() == 1 || (lines.len() == 2 && lines[1].contains("--help")),
        "not one line: {err}"
    );
    lines[0].to_string()
}

#[test]
fn a_stored_model_is_planned_from_its_own_header() {
    let home = testkit::hearth_home();
    testkit::default_model();
    let p = plan_json(
        &home,
        &[
            "smollm2",
            "--hardware",
            "epyc-2c",
            "--context",
            "2048",
            "--concurrency",
            "8",
            "--uncalibrated",
        ],
    );
    let shape = &p["model"]["shape"];
    // SmolLM2-135M: 30 layers, 9 heads over 3 KV heads of 64, tied embeddings.
    assert_eq!(shape["layers"], 30);
    assert_eq!(shape["kv_heads"], 3);
    assert_eq!(shape["head_dim_k"], 64);
    assert_eq!(shape["tied_embeddings"], true);
    assert_eq!(p["model"]["weight_type"], "Q4_1");
    // The tensors' bytes: the file less its header.
    let weights = p["model"]["weight_bytes"].as_u64().unwrap();
    assert!(weights < 98_362_432 && weights > 95_000_000, "{weights}");
    // KV: 30 layers × 3 heads × (64 + 64) × 2 bytes, for 8 × 2048 tokens.
    assert_eq!(p["memory"]["kv_per_token"], 23_040);
    assert_eq!(p["memory"]["kv_total"], 23_040 * 8 * 2048);
    let total = p["memory"]["total"].as_u64().unwrap();
    assert!(total > weights + 23_040 * 8 * 2048, "{total}");
    assert_eq!(p["memory"]["fits"], true);
    // Eight streams share the weights' traffic: more in total, less each.
    let speed = &p["speed"];
    assert!(speed["decode_tps_aggregate"].as_f64() > speed["decode_tps_single"].as_f64());
    assert!(speed["decode_tps_per_stream"].as_f64() < speed["decode_tps_single"].as_f64());
    assert_eq!(
        speed["efficiency"]["source"],
        "typical llama.cpp CPU results (uncalibrated)"
    );
    assert!(p["capacity"]["servers"].as_u64().unwrap() >= 1);
}

#[test]
fn the_sizing_table_covers_the_seed_classes() {
    let home = tempfile::tempdir().unwrap();
    let out = ok(hearth(home.path())
        .args(["plan", "--sizing", "--json"])
        .output()
        .unwrap());
    let cells: Vec<Value> = serde_json::from_str(&out).unwrap();
    let cell = |model: &str, ty: &str, device: &str| {
        cells
            .iter()
            .find(|c| c["model"] == model && c["weight_type"] == ty && c["device"] == device)
            .unwrap_or_else(|| panic!("no cell for {model} {ty} {device}"))
            .clone()
    };
    // 70B at F16 (141 GB) needs two 80 GB cards; 7B at Q4_K_M fits one 4090.
    assert_eq!(cell("llama-70b", "F16", "h100-80gb")["devices"], 2);
    assert_eq!(cell("llama-7b", "Q4_K_M", "rtx-4090")["devices"], 1);
    // Decode is bandwidth over bytes: an H100 outruns an A100 on the same model.
    let h100 = cell("llama-13b", "Q8_0", "h100-80gb")["decode_tps"]
        .as_f64()
        .unwrap();
    let a100 = cell("llama-13b", "Q8_0", "a100-80gb")["decode_tps"]
        .as_f64()
        .unwrap();
    assert!(
        (h100 / a100 - 3350.0 / 2039.0).abs() < 0.05,
        "{h100} {a100}"
    );
    let table = ok(hearth(home.path())
        .args(["plan", "--sizing"])
        .output()
        .unwrap());
    assert!(
        table.contains("llama-70b") && table.contains("rtx-4090"),
        "{table}"
    );
}

#[test]
fn a_stored_calibration_is_used_unless_refused() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("plan")).unwrap();
    let args = ["llama-7b", "--hardware", "epyc-2c", "--weight-type", "q4_0"];
    let typical = plan_json(home.path(), &args);
    std::fs::write(
        home.path().join("plan/calibration.toml"),
        "[epyc-2c]\nbandwidth = 0.3\ncompute = 0.05\nattention = 0.025\nmasked_cell_cost = 8.0\nlayer_overhead_us = 60.0\nsource = \"measured here\"\n",
    )
    .unwrap();
    let calibrated = plan_json(home.path(), &args);
    assert_eq!(calibrated["speed"]["efficiency"]["source"], "measured here");
    // Half the efficiency everywhere (twice the typical 30 us a layer
    // costs): half the speed.
    let ratio = calibrated["speed"]["decode_tps_single"].as_f64().unwrap()
        / typical["speed"]["decode_tps_single"].as_f64().unwrap();
    assert!((ratio - 0.5).abs() < 1e-6, "{ratio}");
    let refused = plan_json(home.path(), &[&args[..], &["--uncalibrated"]].concat());
    assert_eq!(
        refused["speed"]["decode_tps_single"],
        typical["speed"]["decode_tps_single"]
    );
    // A damaged calibration is named, not ignored.
    std::fs::write(
        home.path().join("plan/calibration.toml"),
        "[epyc-2c]\nbandwidth = \"fast\"\n",
    )
    .unwrap();
    let e = one_line_error(hearth(home.path()).arg("plan").args(args).output().unwrap());
    assert!(
        e.contains("calibration of epyc-2c") && e.contains("damaged"),
        "{e}"
    );
}

#[test]
fn a_hardware_file_extends_the_catalog() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("extra.toml");
    std::fs::write(
        &file,
        "[[device]]\nname = \"mi300x\"\nkind = \"gpu\"\nmemory_gb = 192\nbandwidth_gb_s = 5300\n\
         fp16_tflops = 1307\nint8_tops = 2615\npower_w = 750\nprice_usd = 15000\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // 70B at F16 fits one 192 GB card.
    let p = plan_json(
        home.path(),
        &[
            "llama-70b",
            "--weight-type",
            "f16",
            "--hardware",
            "mi300x",
            "--hardware-file",
            file,
        ],
    );
    assert_eq!(p["devices"], 1);
    let list = ok(hearth(home.path())
        .args(["plan", "--list-hardware", "--hardware-file", file])
        .output()
        .unwrap());
    assert!(
        list.contains("mi300x") && list.contains("h100-80gb") && list.contains("host"),
        "{list}"
    );

    // A device that makes no sense is refused, naming the file.
    let broken = home.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[[device]]\nname = \"nil\"\nkind = \"gpu\"\nmemory_gb = 0\nbandwidth_gb_s = 5300\n\
         fp16_tflops = 1307\nint8_tops = 2615\npower_w = 750\nprice_usd = 15000\n",
    )
    .unwrap();
    let e = one_line_error(
        hearth(home.path())
            .args(["plan", "--list-hardware", "--hardware-file"])
            .arg(&broken)
            .output()
            .unwrap(),
    );
    assert!(e.contains("broken.toml") && e.contains("memory_gb"), "{e}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let home = tempfile::tempdir().unwrap();
    let plan = |args: &[&str]| {
        one_line_error(hearth(home.path()).arg("plan").args(args).output().unwrap())
    };

    let e = plan(&["llama-7b", "--hardware", "tpu-v9"]);
    assert!(
        e.contains("unknown hardware \"tpu-v9\"") && e.contains("h100-80gb"),
        "{e}"
    );

    let e = plan(&[
        "llama-70b",
        "--weight-type",
        "f16",
        "--hardware",
        "rtx-4090",
        "--devices",
        "1",
    ]);
    assert!(
        e.contains("needs") && e.contains("smallest configuration"),
        "{e}"
    );

    let e = plan(&["llama-7b", "--concurrency", "0"]);
    assert!(
        e.contains("--concurrency") && e.contains("at least 1"),
        "{e}"
    );
    let e = plan(&["llama-7b", "--concurrency", "-3"]);
    assert!(
        e.contains("--concurrency") && e.contains("at least 1"),
        "{e}"
    );

    let e = plan(&["llama-7b", "--weight-type", "Q9_Z"]);
    assert!(e.contains("unknown weight type \"Q9_Z\""), "{e}");

    let e = plan(&["llama-7b", "--prompt-tokens", "5000", "--context", "4096"]);
    assert!(e.contains("exceed the context"), "{e}");

    let broken = home.path().join("broken.gguf");
    std::fs::write(&broken, b"GGUF\x03\x00\x00\x00 this is not a model").unwrap();
    let e = plan(&[broken.to_str().unwrap()]);
    assert!(e.contains("broken.gguf"), "{e}");

    let e = plan(&["no-such-model"]);
    assert!(e.contains("no-such-model") && e.contains("preset"), "{e}");
}
