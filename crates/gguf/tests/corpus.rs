//! The committed malformed-file corpus: each file is refused, by name, with the right reason.

use std::path::{Path, PathBuf};

/// File name → a fragment the error message must contain.
const EXPECTED: &[(&str, &str)] = &[
    ("truncated-empty.gguf", "only 0 bytes"),
    ("truncated-in-magic.gguf", "only 2 bytes"),
    ("truncated-in-header.gguf", "truncated: tensor count"),
    (
        "truncated-in-metadata-key.gguf",
        "truncated: metadata key #2 of 6 of 20 bytes",
    ),
    (
        "truncated-in-metadata-value.gguf",
        "truncated: value of `general.name` of 9 bytes",
    ),
    (
        "truncated-in-string-array.gguf",
        "truncated: string in array `tokenizer.ggml.tokens` of 3 bytes",
    ),
    (
        "truncated-in-tensor-info.gguf",
        "truncated: name of tensor #1 of 2 of 18 bytes",
    ),
    ("truncated-in-tensor-data.gguf", "past the end of the file"),
    (
        "absurd-tensor-count.gguf",
        "tensor count 18446744073709551615 is over the limit",
    ),
    (
        "absurd-kv-count.gguf",
        "metadata key/value count 1099511627776 is over the limit",
    ),
    (
        "tensor-count-beyond-file.gguf",
        "truncated: length of name of tensor #0 of 50000",
    ),
    (
        "kv-count-beyond-file.gguf",
        "truncated: length of metadata key #0 of 60000",
    ),
    (
        "absurd-array-length.gguf",
        "array element count 4611686018427387904 is over the limit",
    ),
    (
        "array-longer-than-file.gguf",
        "truncated: array `a.b` of 1000000 F32 elements",
    ),
    (
        "key-longer-than-file.gguf",
        "truncated: metadata key #0 of 1 of 1000 bytes",
    ),
    (
        "value-longer-than-file.gguf",
        "truncated: value of `general.name` of 5000 bytes",
    ),
    (
        "string-over-limit.gguf",
        "claims 18446744073709551615 bytes, over the limit",
    ),
    (
        "array-string-longer-than-file.gguf",
        "truncated: string in array `t` of 999 bytes",
    ),
    ("unknown-value-type.gguf", "unknown value type 13"),
    ("unknown-array-element-type.gguf", "unknown value type 99"),
    ("nested-array.gguf", "array of arrays"),
    (
        "wrong-magic.gguf",
        "not a GGUF file: it starts with \"GGML\"",
    ),
    ("not-gguf.txt", "not a GGUF file: it starts with \"This\""),
    ("not-gguf-zip.gguf", "not a GGUF file"),
    ("big-endian.gguf", "big-endian"),
    ("version-1.gguf", "GGUF version 1 is not supported"),
    ("empty-key.gguf", "metadata key #0 at byte 24 is empty"),
    (
        "invalid-utf8-key.gguf",
        "metadata key #0 of 1 at byte 24 is not valid UTF-8",
    ),
    ("bad-bool.gguf", "boolean byte 7"),
    ("duplicate-key.gguf", "`a.b` appears more than once"),
    ("alignment-zero.gguf", "`general.alignment` is 0"),
    (
        "alignment-not-power-of-two.gguf",
        "`general.alignment` is 48",
    ),
    ("alignment-wrong-type.gguf", "`general.alignment` is \"32\""),
    ("hparam-block-count-zero.gguf", "`llama.block_count` is 0"),
    (
        "hparam-block-count-huge.gguf",
        "`llama.block_count` is 100000",
    ),
    (
        "hparam-nextn-over-layers.gguf",
        "`llama.nextn_predict_layers` is 3: exceeds the block count",
    ),
    (
        "hparam-too-many-experts.gguf",
        "`llama.expert_count` is 5000",
    ),
    (
        "hparam-experts-used-over-count.gguf",
        "`llama.expert_used_count` is 8: exceeds the expert count",
    ),
    (
        "hparam-rope-scaling-unknown.gguf",
        "`llama.rope.scaling.type` is \"banana\"",
    ),
    ("tensor-too-many-dims.gguf", "5 dimensions"),
    ("tensor-unknown-type.gguf", "unknown ggml type 4"),
    ("tensor-shape-overflow.gguf", "overflows the element count"),
    (
        "tensor-row-not-block-multiple.gguf",
        "not a multiple of the Q4_0 block size 32",
    ),
    (
        "tensor-offset-unaligned.gguf",
        "data offset 3 is not a multiple of the alignment 32",
    ),
    ("tensor-data-past-end.gguf", "past the end of the file"),
    (
        "tensor-name-too-long.gguf",
        "claims 64 bytes, over the limit of 63",
    ),
    ("duplicate-tensor.gguf", "tensor `w` appears more than once"),
    ("tensors-overlap.gguf", "tensors `a` and `b` overlap"),
];

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/malformed")
}

#[test]
fn every_malformed_file_is_refused_with_its_name_and_reason() {
    let mut seen = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let expected = EXPECTED
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} has no expectation in EXPECTED"))
            .1;
        let err = gguf::read_model(&path).expect_err(&format!("{name} was accepted"));
        let message = err.to_string();
        assert!(
            message.contains(&name),
            "message does not name the file: {message}"
        );
        assert!(
            message.contains(expected),
            "{name}: expected `{expected}` in `{message}`"
        );
        seen += 1;
    }
    assert_eq!(
        seen,
        EXPECTED.len(),
        "corpus files missing from the directory"
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let path = corpus_dir().join("does-not-exist.gguf");
    let err = gguf::read_model(&path).unwrap_err();
    assert!(err.to_string().contains("does-not-exist.gguf"), "{err}");
    assert!(matches!(err.error, gguf::GgufError::Io(_)));
}
