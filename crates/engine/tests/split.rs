//! Split GGUF sets (`<name>-00001-of-0000N.gguf`, the layout llama.cpp's
//! `gguf-split` writes): loaded from the first file, with the others found
//! beside it, they generate exactly what the unsplit model does; a set
//! opened at a later file or missing a file is refused with an error naming
//! the problem, never an abort.

use engine::{Engine, EngineConfig};
use types::{ChatMessage, GenerationRequest, Prompt, Role, SamplingParams, TextGenerator};

fn config() -> EngineConfig {
    EngineConfig {
        threads: 2,
        prefix_cache: false,
        ..EngineConfig::default()
    }
}

fn reply(engine: &Engine) -> String {
    let mut r = GenerationRequest::new(Prompt::Chat(vec![ChatMessage::new(
        Role::User,
        "What is the capital of Japan?",
    )]));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(24);
    engine
        .submit(r)
        .expect("submit")
        .blocking_collect()
        .expect("generation")
        .text
}

fn refused(path: &std::path::Path) -> String {
    match Engine::load(path, &config()) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(err) => err.to_string(),
    }
}

#[test]
fn a_split_set_generates_what_the_whole_model_does() {
    let dir = tempfile::tempdir().unwrap();
    let whole = testkit::default_model();
    let parts = testkit::split::split_gguf(&whole, dir.path(), "smol", 3);
    let expected = reply(&Engine::load(&whole, &config()).expect("load the whole model"));
    let split = Engine::load(&parts[0], &config()).expect("load the split set");
    assert_eq!(reply(&split), expected);
    drop(split);

    // Opened at the second file: it holds no model metadata.
    let message = refused(&parts[1]);
    assert!(message.contains("smol-00002-of-00003.gguf"), "{message}");
    // A file of the set missing: named.
    std::fs::remove_file(&parts[2]).unwrap();
    let message = refused(&parts[0]);
    assert!(message.contains("smol-00003-of-00003.gguf"), "{message}");
    // The first file under another name: llama.cpp could not find the rest.
    let renamed = dir.path().join("smol.gguf");
    std::fs::rename(&parts[0], &renamed).unwrap();
    let message = refused(&renamed);
    assert!(message.contains("-00001-of-00003.gguf"), "{message}");
}
