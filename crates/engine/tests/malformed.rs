//! Every model file passes the GGUF reader before llama.cpp opens it.

use std::io::Write;

use engine::{Engine, EngineConfig, EngineError};

fn config() -> EngineConfig {
    EngineConfig {
        threads: 1,
        ..EngineConfig::default()
    }
}

#[test]
fn malformed_corpus_is_refused_naming_the_file() {
    let files = testkit::malformed_corpus();
    assert!(files.len() >= 30, "corpus went missing");
    for path in files {
        let err = match Engine::load(&path, &config()) {
            Err(err) => err,
            Ok(_) => panic!("{} was loaded", path.display()),
        };
        assert!(
            matches!(err, EngineError::InvalidModel(_)),
            "{}: {err}",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(err.to_string().contains(name.as_ref()), "{err}");
    }
}

#[test]
fn real_model_truncated_anywhere_is_refused() {
    let model = std::fs::read(testkit::default_model()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Inside the header, the vocabulary, the tensor infos and the weights.
    let cuts = [
        3,
        20,
        5_000,
        600_000,
        1_700_000,
        1_785_700,
        50_000_000,
        model.len() - 1,
    ];
    for cut in cuts {
        let path = dir.path().join(format!("cut-at-{cut}.gguf"));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&model[..cut])
            .unwrap();
        let err = match Engine::load(&path, &config()) {
            Err(err) => err,
            Ok(_) => panic!("model truncated at {cut} was loaded"),
        };
        assert!(
            err.to_string().contains(&format!("cut-at-{cut}.gguf")),
            "{err}"
        );
    }
}

/// llama.cpp `GGML_ASSERT`s (aborts the whole process) on a block count of 0
/// or over 512 in an otherwise valid model; the reader must refuse it first.
#[test]
fn real_model_with_an_impossible_layer_count_is_refused_not_aborted() {
    let mut model = std::fs::read(testkit::default_model()).unwrap();
    let key = b"llama.block_count";
    let at = model.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    // Value type (u32 = 4), then the value itself.
    assert_eq!(&model[at..at + 4], &4u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    for layers in [0u32, 600] {
        model[at + 4..at + 8].copy_from_slice(&layers.to_le_bytes());
        let path = dir.path().join(format!("layers-{layers}.gguf"));
        std::fs::write(&path, &model).unwrap();
        let err = Engine::load(&path, &config()).err().expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("layers-{layers}.gguf")) && msg.contains("block_count"),
            "{msg}"
        );
    }
}

#[test]
fn settings_are_checked_before_loading() {
    let bad = EngineConfig {
        threads: 0,
        ..EngineConfig::default()
    };
    let err = Engine::load(&testkit::default_model(), &bad).err().unwrap();
    assert!(matches!(err, EngineError::Config(_)), "{err}");
}
