//! `bench --batch N --depth D`: aggregate decode speed of N sequences
//! decoding together, each D tokens deep, through the engine's scheduler.
//!
//! Like llama-batched-bench, it times decode alone. Each sequence's prompt
//! is computed once beforehand and kept in the prefix cache, so the timed
//! requests start from the cache together and every step carries all N.

use anyhow::{ensure, Result};
use engine::{Engine, EngineConfig};
use types::{GenerationRequest, Prompt, ResolvedModel, SamplingParams, TextGenerator};

use super::{exact_prompt_from, summarise, Report};
use crate::config::Config;

pub(crate) fn measure(
    config: &Config,
    model: &ResolvedModel,
    batch: u32,
    depth: u32,
    gen_tokens: u32,
    reps: u32,
) -> Result<Report> {
    ensure!(
        batch > 0 && reps > 0 && gen_tokens > 0,
        "counts must be positive"
    );
    // Each sequence holds its prompt and every repetition's reply (the
    // cache keeps the prompt; replies are dropped when a repetition ends).
    let ctx = depth + gen_tokens + 16;
    let pool = ctx * batch;
    let engine_config = EngineConfig {
        ctx_size: Some(ctx),
        kv_size: Some(pool),
        max_running: batch,
        prefix_cache: true,
        prefix_cache_size: Some(pool),
        ..config.engine.clone()
    };
    let loading = std::time::Instant::now();
    let readable = store::readable(&model.path, config.store_key()?.as_deref())?;
    let engine = crate::commands::load_engine(readable, &engine_config)?;
    let load_seconds = loading.elapsed().as_secs_f64();
    // Distinct from the first token on, so no sequence shares cells with
    // another (which would read less KV than N separate contexts do).
    let prompts = (0..batch)
        .map(|i| exact_prompt_from(&engine, depth.max(1) as usize, &format!("Sequence {i}. ")))
        .collect::<Result<Vec<_>>>()?;
    // Computes every prompt into the cache, and warms llama.cpp's buffers.
    run(&engine, &prompts, 2, false)?;
    let samples = (0..reps)
        .map(|_| run(&engine, &prompts, gen_tokens + 1, true))
        .collect::<Result<Vec<_>>>()?;
    let test = format!("tg{gen_tokens}@d{depth}x{batch}");
    Ok(Report {
        model: model.name.clone(),
        threads: engine_config.threads,
        load_seconds,
        results: vec![summarise(test, gen_tokens, &samples)],
    })
}

/// Submits every prompt at once and returns aggregate decode tokens per
/// second: tokens after each first one, over the time from the first
/// tokens (the cached prompts' last token, computed in one step) to the
/// last sequence's end.
fn run(engine: &Engine, prompts: &[Vec<u32>], max_tokens: u32, cached: bool) -> Result<f64> {
    let start = std::time::Instant::now();
    let generations = prompts
        .iter()
        .map(|p| {
            let mut req = GenerationRequest::new(Prompt::Tokens(p.clone()));
            req.sampling = SamplingParams::greedy();
            req.max_tokens = Some(max_tokens);
            req.ignore_eos = true;
            Ok(engine.submit(req)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let outputs = std::thread::scope(|scope| {
        let handles: Vec<_> = generations
            .into_iter()
            .map(|g| scope.spawn(move || g.blocking_collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("collector thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let wall = start.elapsed().as_secs_f64();
    let mut first_token = 0f64;
    let mut decoded = 0u64;
    for out in &outputs {
        ensure!(
            out.usage.completion_tokens == max_tokens,
            "generation ended early"
        );
        // Otherwise the timed window would include prompt computation.
        ensure!(
            !cached || out.usage.cached_tokens + 1 >= out.usage.prompt_tokens,
            "a prompt was not served from the prefix cache ({} of {} tokens)",
            out.usage.cached_tokens,
            out.usage.prompt_tokens
        );
        first_token = first_token.max(out.timings.time_to_first_token_ms / 1e3);
        decoded += u64::from(max_tokens - 1);
    }
    Ok(decoded as f64 / (wall - first_token))
}
