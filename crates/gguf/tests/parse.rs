//! Parsing well-formed files, and refusing every prefix of one.

mod support;

use gguf::{parse_bytes, GgufError, ValueType};
use support::writer::valid_model;

#[test]
fn reads_a_valid_file() {
    let g = parse_bytes(&valid_model()).expect("valid file parses");
    assert_eq!(g.version, 3);
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.model_name(), Some("tiny-test"));
    assert_eq!(g.context_length(), Some(256));
    assert_eq!(g.vocab_size(), Some(3));
    assert_eq!(g.quantization().as_deref(), Some("F32"));
    assert_eq!(g.parameter_count(), 12 + 4);
    assert_eq!(g.tensors.len(), 2);
    assert_eq!(g.tensors[0].n_bytes, 48);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.data_offset % 32, 0);
    assert_eq!(
        g.get("tokenizer.ggml.tokens").unwrap().as_array(),
        Some((ValueType::String, 3))
    );
    assert!(g.chat_template().is_none());
}

#[test]
fn every_truncation_is_refused() {
    let full = valid_model();
    for cut in 0..full.len() {
        let err = parse_bytes(&full[..cut]).expect_err(&format!("prefix of {cut} bytes parsed"));
        assert!(
            matches!(
                err,
                GgufError::Truncated { .. }
                    | GgufError::TooShort { .. }
                    | GgufError::TensorOutOfBounds { .. }
            ),
            "cut at {cut}: unexpected error {err}"
        );
    }
}

#[test]
fn every_single_byte_flip_is_survived() {
    // Not every flip is invalid (a flipped data byte is still a valid file),
    // but none may panic, hang or allocate wildly; what parses must still
    // describe every tensor inside the file, and what fails must say why.
    let full = valid_model();
    let (mut parsed, mut refused) = (0, 0);
    for i in 0..full.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bytes = full.clone();
            bytes[i] ^= mask;
            match parse_bytes(&bytes) {
                Ok(g) => {
                    parsed += 1;
                    for t in &g.tensors {
                        assert!(g.data_offset + t.offset + t.n_bytes <= bytes.len() as u64);
                    }
                }
                Err(err) => {
                    refused += 1;
                    assert!(!err.to_string().is_empty());
                }
            }
        }
    }
    // Flips in tensor data parse; flips in the magic or counts do not.
    assert!(
        parsed > 0 && refused > 0,
        "{parsed} parsed, {refused} refused"
    );
}

#[test]
fn a_valid_file_passes_the_hyperparameter_checks() {
    let g = parse_bytes(&valid_model()).unwrap();
    g.check_hparams().unwrap();
}
