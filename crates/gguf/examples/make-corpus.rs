//! Regenerates `tests/corpus/malformed/`: one file per way a GGUF header can lie.
//!
//! Run: `cargo run -p gguf --example make-corpus`. The files are committed so
//! that the engine's tests and the fuzz target's seed corpus use the same set.

#[path = "../tests/support/writer.rs"]
mod writer;

use std::path::Path;
use writer::{model_with, valid_model, Bytes};

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/malformed");
    std::fs::create_dir_all(&dir)?;
    let valid = valid_model();
    let h = || Bytes::default().header(3, 0, 1);
    let files: Vec<(&str, Vec<u8>)> = vec![
        // Truncated at several offsets of an otherwise valid file.
        ("truncated-empty.gguf", vec![]),
        ("truncated-in-magic.gguf", valid[..2].to_vec()),
        ("truncated-in-header.gguf", valid[..13].to_vec()),
        (
            "truncated-in-metadata-key.gguf",
            cut_in(&valid, b"context_length"),
        ),
        (
            "truncated-in-metadata-value.gguf",
            cut_in(&valid, b"tiny-test"),
        ),
        ("truncated-in-string-array.gguf", cut_in(&valid, b"llo")),
        (
            "truncated-in-tensor-info.gguf",
            cut_in(&valid, b"output_norm"),
        ),
        (
            "truncated-in-tensor-data.gguf",
            valid[..valid.len() - 10].to_vec(),
        ),
        // Absurd counts.
        (
            "absurd-tensor-count.gguf",
            Bytes::default().header(3, u64::MAX, 0).0,
        ),
        (
            "absurd-kv-count.gguf",
            Bytes::default().header(3, 0, 1 << 40).0,
        ),
        (
            "tensor-count-beyond-file.gguf",
            Bytes::default().header(3, 50_000, 0).0,
        ),
        (
            "kv-count-beyond-file.gguf",
            Bytes::default().header(3, 0, 60_000).0,
        ),
        (
            "absurd-array-length.gguf",
            h().str("a.b").u32(9).u32(4).u64(1 << 62).0,
        ),
        (
            "array-longer-than-file.gguf",
            h().str("a.b").u32(9).u32(6).u64(1_000_000).0,
        ),
        // Strings longer than the file (or than any sane limit).
        ("key-longer-than-file.gguf", h().u64(1000).raw(b"general").0),
        (
            "value-longer-than-file.gguf",
            h().str("general.name").u32(8).u64(5000).raw(b"x").0,
        ),
        (
            "string-over-limit.gguf",
            h().str("general.name").u32(8).u64(u64::MAX).0,
        ),
        (
            "array-string-longer-than-file.gguf",
            h().str("t").u32(9).u32(8).u64(1).u64(999).0,
        ),
        // Unknown value types.
        (
            "unknown-value-type.gguf",
            h().str("general.name").u32(13).u32(0).0,
        ),
        (
            "unknown-array-element-type.gguf",
            h().str("a.b").u32(9).u32(99).u64(1).0,
        ),
        (
            "nested-array.gguf",
            h().str("a.b").u32(9).u32(9).u64(1).u32(4).u64(0).0,
        ),
        // Not GGUF at all, or the wrong flavour of it.
        (
            "wrong-magic.gguf",
            Bytes::default().raw(b"GGML").u32(3).u64(0).u64(0).0,
        ),
        (
            "not-gguf.txt",
            b"This is a plain text file, not a model.\n".to_vec(),
        ),
        (
            "not-gguf-zip.gguf",
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec(),
        ),
        (
            "big-endian.gguf",
            Bytes::default()
                .raw(b"GGUF")
                .raw(&3u32.to_be_bytes())
                .u64(0)
                .u64(0)
                .0,
        ),
        ("version-1.gguf", Bytes::default().header(1, 0, 0).0),
        // Lies inside the metadata.
        ("empty-key.gguf", h().str("").u32(4).u32(1).0),
        (
            "invalid-utf8-key.gguf",
            h().u64(2).raw(&[0xff, 0xfe]).u32(4).u32(1).0,
        ),
        ("bad-bool.gguf", h().str("general.flag").u32(7).u8(7).0),
        (
            "duplicate-key.gguf",
            Bytes::default()
                .header(3, 0, 2)
                .kv_u32("a.b", 1)
                .kv_u32("a.b", 2)
                .0,
        ),
        ("alignment-zero.gguf", h().kv_u32("general.alignment", 0).0),
        (
            "alignment-not-power-of-two.gguf",
            h().kv_u32("general.alignment", 48).0,
        ),
        (
            "alignment-wrong-type.gguf",
            h().kv_str("general.alignment", "32").0,
        ),
        // Values llama.cpp would abort on (GGML_ASSERT) instead of refusing.
        (
            "hparam-block-count-zero.gguf",
            hparam(&[("llama.block_count", 0)]),
        ),
        (
            "hparam-block-count-huge.gguf",
            hparam(&[("llama.block_count", 100_000)]),
        ),
        (
            "hparam-nextn-over-layers.gguf",
            hparam(&[("llama.block_count", 2), ("llama.nextn_predict_layers", 3)]),
        ),
        (
            "hparam-too-many-experts.gguf",
            hparam(&[("llama.expert_count", 5000)]),
        ),
        (
            "hparam-experts-used-over-count.gguf",
            hparam(&[("llama.expert_count", 4), ("llama.expert_used_count", 8)]),
        ),
        (
            "hparam-rope-scaling-unknown.gguf",
            model_with(
                1,
                Bytes::default().kv_str("llama.rope.scaling.type", "banana"),
            ),
        ),
        // Lies inside the tensor infos.
        (
            "tensor-too-many-dims.gguf",
            tensor(&[1, 1, 1, 1, 1], 0, 0, 4),
        ),
        ("tensor-unknown-type.gguf", tensor(&[32], 4, 0, 128)),
        (
            "tensor-shape-overflow.gguf",
            tensor(&[1 << 40, 1 << 40], 0, 0, 0),
        ),
        (
            "tensor-row-not-block-multiple.gguf",
            tensor(&[33], 2, 0, 64),
        ),
        ("tensor-offset-unaligned.gguf", tensor(&[4], 0, 3, 64)),
        ("tensor-data-past-end.gguf", tensor(&[4], 0, 1 << 50, 16)),
        (
            "tensor-name-too-long.gguf",
            Bytes::default()
                .header(3, 1, 0)
                .tensor(&"w".repeat(64), &[4], 0, 0)
                .data(32, 16)
                .0,
        ),
        (
            "duplicate-tensor.gguf",
            Bytes::default()
                .header(3, 2, 0)
                .tensor("w", &[4], 0, 0)
                .tensor("w", &[4], 0, 32)
                .data(32, 64)
                .0,
        ),
        (
            "tensors-overlap.gguf",
            Bytes::default()
                .header(3, 2, 0)
                .tensor("a", &[16], 0, 0)
                .tensor("b", &[16], 0, 32)
                .data(32, 96)
                .0,
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes)?;
    }
    println!("wrote {}", dir.display());
    Ok(())
}

/// The valid model with extra u32 hyperparameters.
fn hparam(pairs: &[(&str, u32)]) -> Vec<u8> {
    let extra = pairs
        .iter()
        .fold(Bytes::default(), |b, (k, v)| b.kv_u32(k, *v));
    model_with(pairs.len() as u64, extra)
}

/// The file cut one byte into the first occurrence of `marker`.
fn cut_in(bytes: &[u8], marker: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker present");
    bytes[..at + 1].to_vec()
}

/// One tensor info followed by `data` bytes of data.
fn tensor(dims: &[u64], ggml_type: u32, offset: u64, data: usize) -> Vec<u8> {
    Bytes::default()
        .header(3, 1, 0)
        .tensor("blk.0.weight", dims, ggml_type, offset)
        .data(32, data)
        .0
}
