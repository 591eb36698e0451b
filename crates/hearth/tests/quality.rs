//! `hearth quantize` and `hearth eval` end to end, on the default model:
//! an F16 source made by dequantizing it, quantized again to smaller
//! types, each stored with its lineage and scored by perplexity.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod support;

use support::{failed, ok};

fn hearth(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.env("HEARTH_HOME", home)
        .env_remove("HEARTH_CONFIG")
        .env("HEARTH_THREADS", "2");
    cmd
}

fn show(home: &Path, name: &str) -> Value {
    serde_json::from_str(&ok(hearth(home)
        .args(["show", name, "--json"])
        .output()
        .unwrap()))
    .unwrap()
}

fn perplexity(home: &Path, name: &str) -> f64 {
    // Eight windows of 512: 2,040 scored tokens, enough to order the types.
    let out = ok(hearth(home)
        .args(["eval", name, "--windows", "8", "--json"])
        .output()
        .unwrap());
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["scored_tokens"], 8 * 255);
    assert_eq!(report["window"], 512);
    report["perplexity"].as_f64().unwrap()
}

#[test]
fn quantized_models_are_stored_with_lineage_and_lose_more_as_bits_fall() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let source = testkit::default_model();
    ok(hearth(home)
        .args(["pull", source.to_str().unwrap(), "--name", "smol"])
        .output()
        .unwrap());

    // The default model is Q4_1: quantizing it again needs consent.
    let e = failed(
        hearth(home)
            .args(["quantize", "smol", "--type", "Q4_0"])
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("quantized already (Q4_1)") && e.contains("--allow-requantize"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");

    // The F16 source: the default model's weights, dequantized.
    let out = ok(hearth(home)
        .args([
            "quantize",
            "smol",
            "--type",
            "F16",
            "--allow-requantize",
            "--name",
            "smol-f16",
        ])
        .output()
        .unwrap());
    assert!(out.contains("stored smol-f16: F16"), "{out}");
    let f16 = show(home, "smol-f16");
    assert_eq!(f16["quantization"], "F16");
    assert_eq!(f16["lineage"]["from"], "smol");
    assert_eq!(f16["lineage"]["from_sha256"], show(home, "smol")["sha256"]);
    assert!(f16["lineage"]["method"]
        .as_str()
        .unwrap()
        .contains("requantize allowed"));

    for ty in ["Q8_0", "Q4_0"] {
        ok(hearth(home)
            .args(["quantize", "smol-f16", "--type", ty])
            .output()
            .unwrap());
    }
    let q8 = show(home, "smol-f16-q8_0");
    let q4 = show(home, "smol-f16-q4_0");
    assert_eq!(q8["lineage"]["from"], "smol-f16");
    assert_eq!(q8["lineage"]["weight_type"], "Q8_0");
    assert_eq!(q4["quantization"], "Q4_0");
    let size = |d: &Value| d["file_size"].as_u64().unwrap();
    assert!(
        size(&f16) > size(&q8) && size(&q8) > size(&q4),
        "{f16} {q8} {q4}"
    );

    let (p16, p8, p4) = (
        perplexity(home, "smol-f16"),
        perplexity(home, "smol-f16-q8_0"),
        perplexity(home, "smol-f16-q4_0"),
    );
    // A small model on plain English: single digits to low tens. Scoring
    // the wrong position (the token itself, or two ahead) lands far off.
    assert!((3.0..30.0).contains(&p16), "F16 {p16}");
    // Q8_0 is all but lossless; Q4_0 loses measurably.
    assert!((p8 / p16 - 1.0).abs() < 0.01, "F16 {p16}, Q8_0 {p8}");
    assert!(p4 > p16 * 1.01, "F16 {p16}, Q4_0 {p4}");

    // The report measures each type against the source, reusing the
    // models made above (their manifests are not rewritten), as JSON and a
    // chart.
    let manifest_times = || {
        ["smol-f16-q8_0", "smol-f16-q4_0"].map(|name| {
            std::fs::metadata(home.join("models").join(name).join("manifest.json"))
                .and_then(|m| m.modified())
                .unwrap()
        })
    };
    let before = manifest_times();
    let chart = home.join("report.svg");
    let out = ok(hearth(home)
        .args([
            "quantize",
            "smol-f16",
            "--report",
            "--types",
            "F16,Q8_0,Q4_0",
            "--windows",
            "8",
            "--json",
            "--chart",
        ])
        .arg(&chart)
        .output()
        .unwrap());
    let report: Value = serde_json::from_str(&out).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let column = |key: &str| {
        rows.iter()
            .map(|r| r[key].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rows.iter()
            .map(|r| r["weight_type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["F16", "Q8_0", "Q4_0"]
    );
    assert_eq!(
        column("perplexity"),
        [p16, p8, p4],
        "the same windows, the same numbers"
    );
    assert_eq!(column("delta_percent")[0], 0.0);
    assert_eq!(manifest_times(), before, "the report quantized again");
    let bpw = column("bits_per_weight");
    assert!(
        bpw[0] > 15.0 && bpw[0] < 16.5 && bpw[1] > bpw[2] && bpw[2] > 4.0,
        "{bpw:?}"
    );
    assert!(column("decode_tps").iter().all(|&t| t > 1.0));
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("Q4_0") && svg.contains("bits per weight"),
        "{svg}"
    );

    // The result serves like any stored model.
    let reply = ok(hearth(home)
        .args([
            "run",
            "smol-f16-q4_0",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
            "Hello",
        ])
        .output()
        .unwrap());
    assert!(!reply.trim().is_empty());

    let e = failed(
        hearth(home)
            .args(["quantize", "smol-f16", "--type", "Q9_9"])
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("unsupported quantization type \"Q9_9\"") && e.contains("Q4_K_M"),
        "{e}"
    );
}

#[test]
fn a_corrupt_model_is_named_by_each_command() {
    let home = tempfile::tempdir().unwrap();
    let broken = home.path().join("broken.gguf");
    std::fs::write(&broken, b"GGUF\x03\x00\x00\x00 this is not a model").unwrap();
    let path = broken.to_str().unwrap();
    for args in [vec!["quantize", path, "--type", "Q4_0"], vec!["eval", path]] {
        let e = failed(hearth(home.path()).args(&args).output().unwrap());
        assert!(e.contains("broken.gguf"), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: {e}");
    }
    // A text too short for two windows is refused before any work.
    let short = home.path().join("short.txt");
    std::fs::write(&short, "Too short.").unwrap();
    testkit::default_model();
    let e = failed(
        Command::new(env!("CARGO_BIN_EXE_hearth"))
            .env("HEARTH_HOME", testkit::hearth_home())
            .env_remove("HEARTH_CONFIG")
            .args(["eval", "smollm2", "--text", short.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert!(e.contains("needs at least 1024"), "{e}");
}
