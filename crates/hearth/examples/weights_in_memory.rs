//! Decode speed of one GGUF with its weights mapped from the page cache
//! (a plain store) and decrypted from a sealed copy into memory, then
//! copied into llama.cpp's own buffers (how an encrypted store's models
//! load), both loaded in one process and
//! measured in alternation: this machine's speed drifts by a third within
//! minutes, and only side-by-side pairs resolve a few percent.
//!
//!   OMP_WAIT_POLICY=ACTIVE GOMP_SPINCOUNT=300000 \
//!     cargo run --release --example weights_in_memory -- MODEL.gguf [PAIRS] [THREADS] [TOKENS] [mapped-first|memory-first] [plain]
//!
//! The variables are those `hearth` sets for itself: without them, two
//! engines' threads on few cores put libgomp in its crowded mode, and both
//! decode at half speed.
//! Prints one JSON line per pair, `{"mapped": tok/s, "in_memory": tok/s}`,
//! the two halves of a pair in alternating order. `bench/encryption.sh`
//! runs it and summarises the ratios.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use engine::{Engine, EngineConfig};
use types::{GenerationRequest, Prompt, SamplingParams, TextGenerator};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .context("usage: weights_in_memory MODEL.gguf [PAIRS] [THREADS] [TOKENS] [mapped-first|memory-first] [plain]")?;
    let number = |i: usize, default: u32| -> Result<u32> {
        args.get(i)
            .map_or(Ok(default), |a| a.parse().context("a count"))
    };
    let (pairs, threads, tokens) = (number(1, 20)?, number(2, 2)?, number(3, 128)?);

    let work = tempfile::tempdir()?;
    let key = vault::Key::from_bytes(vault::Key::generate()?.as_bytes())?;
    let sealed = work.path().join("model.sealed");
    vault::seal(Path::new(model), &sealed, &key)?;
    let in_memory = vault::in_memory(&sealed, Some(&key), "weights-in-memory")?;

    let config = EngineConfig {
        ctx_size: Some(tokens + 16),
        max_running: 1,
        prefix_cache: false,
        threads,
        ..EngineConfig::default()
    };
    // As `hearth` loads a decrypted model (`commands::load_engine`):
    // copied into llama.cpp's own buffers, the in-memory file let go.
    let copied = EngineConfig {
        use_mmap: false,
        ..config.clone()
    };
    // `plain` copies the model file itself instead (`--no-mmap` on a plain
    // store), to tell the copy's effect from the decryption's.
    let source = match args.get(5).map(String::as_str) {
        Some("plain") => Path::new(model).to_path_buf(),
        _ => in_memory.path(),
    };
    // Which engine loads first can favour one: `memory-first` swaps the
    // order, and bench/encryption.sh runs both orders.
    let (mapped, memory) = if args.get(4).is_some_and(|a| a == "memory-first") {
        let memory = Engine::load(&source, &copied)?;
        (Engine::load(Path::new(model), &config)?, memory)
    } else {
        let mapped = Engine::load(Path::new(model), &config)?;
        (mapped, Engine::load(&source, &copied)?)
    };
    drop(in_memory);
    // Warm both: first use pages the weights in and sizes the buffers.
    for engine in [&mapped, &memory] {
        decode(engine, tokens)?;
    }
    for pair in 0..pairs {
        let (a, b) = if pair % 2 == 0 {
            let a = decode(&mapped, tokens)?;
            (a, decode(&memory, tokens)?)
        } else {
            let b = decode(&memory, tokens)?;
            (decode(&mapped, tokens)?, b)
        };
        println!("{}", serde_json::json!({"mapped": a, "in_memory": b}));
    }
    Ok(())
}

/// Tokens per second of `tokens` single-token decode steps after a
/// one-token prompt, as `hearth bench`'s tg measures.
fn decode(engine: &Engine, tokens: u32) -> Result<f64> {
    let prompt = TextGenerator::tokenize(engine, "The", true)?;
    let mut req = GenerationRequest::new(Prompt::Tokens(prompt[..1].to_vec()));
    req.sampling = SamplingParams::greedy();
    req.max_tokens = Some(tokens + 1);
    req.ignore_eos = true;
    let out = engine.submit(req)?.blocking_collect()?;
    ensure!(
        out.usage.completion_tokens == tokens + 1,
        "generation ended early"
    );
    Ok(out.timings.decode_tokens_per_second)
}
