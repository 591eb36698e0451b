//! `bench`: prefill and decode speed measured through the real generation path.
//!
//! Mirrors llama-bench's two tests so the numbers compare directly: `pp` is a
//! prompt of N tokens on an empty context; `tg` generates M tokens after a
//! single-token prompt. Both go through `Engine::submit`, the same path the
//! server uses, with greedy sampling (llama-bench does not sample at all).

use anyhow::{ensure, Context, Result};
use engine::{Engine, EngineConfig};
use serde::Serialize;
use types::{GenerationRequest, Prompt, SamplingParams, TextGenerator, Timings};

use super::resolve;

pub(crate) mod batched;
mod chart;
mod load;
use crate::cli::{BenchArgs, Workload};
use crate::config::Config;

/// Text repeated to build a prompt of exactly the requested length.
const FILLER: &str = "The quick brown fox jumps over the lazy dog while the river runs \
    past old stone bridges, and the town wakes slowly under a grey morning sky. ";

#[derive(Serialize)]
pub(crate) struct TestResult {
    pub test: String,
    pub tokens: u32,
    reps: u32,
    pub mean_tokens_per_second: f64,
    stddev_tokens_per_second: f64,
    samples_tokens_per_second: Vec<f64>,
}

#[derive(Serialize)]
pub(crate) struct Report {
    model: String,
    threads: u32,
    /// From the stored file to a loaded engine (an encrypted model's
    /// decryption into memory included).
    load_seconds: f64,
    pub results: Vec<TestResult>,
}

pub fn bench(config: &Config, args: &BenchArgs) -> Result<()> {
    if !args.from.is_empty() {
        return load::replay(args);
    }
    if let Some(workload) = args.workload {
        let [url] = args.url.as_slice() else {
            anyhow::bail!("--workload runs against one --url");
        };
        return load_test(url, workload, args);
    }
    if !args.url.is_empty() {
        return load::run(args);
    }
    let fixed = |l: loadgen::sweep::Lengths, flag: &str| {
        ensure!(
            l.is_fixed(),
            "{flag} {l}: a range of lengths is for load tests (--url); give one number"
        );
        Ok(l.min)
    };
    let (prompt_tokens, gen_tokens) = (
        fixed(args.prompt_tokens, "--prompt-tokens")?,
        fixed(args.gen_tokens, "--gen-tokens")?,
    );
    let reference = args.model.as_deref().unwrap_or(store::DEFAULT_MODEL);
    let model = resolve(config, reference)?;
    let report = match args.batch {
        Some(batch) => batched::measure(config, &model, batch, args.depth, gen_tokens, args.reps)?,
        None => single(config, &model, prompt_tokens, gen_tokens, args.reps)?,
    };
    print(&report, args.json)
}

/// llama-bench's pp and tg tests on one sequence.
pub(crate) fn single(
    config: &Config,
    model: &types::ResolvedModel,
    prompt_tokens: u32,
    gen_tokens: u32,
    reps: u32,
) -> Result<Report> {
    ensure!(
        reps > 0 && prompt_tokens > 0 && gen_tokens > 0,
        "counts must be positive"
    );
    let engine_config = EngineConfig {
        ctx_size: Some(prompt_tokens.max(gen_tokens) + 16),
        max_running: 1,
        // As llama-bench: the whole prompt in one llama_decode (its n_batch).
        step_tokens: prompt_tokens.max(2048),
        // As llama-bench: every repetition computes its whole prompt. With
        // the cache, repetitions after the warm-up reused 511 of 512 tokens
        // and pp512 reported one token's rate.
        prefix_cache: false,
        ..config.engine.clone()
    };
    let loading = std::time::Instant::now();
    let readable = store::readable(&model.path, config.store_key()?.as_deref())?;
    let engine = super::load_engine(readable, &engine_config)?;
    let load_seconds = loading.elapsed().as_secs_f64();
    let prompt = exact_prompt(&engine, prompt_tokens as usize)?;
    let one_token = prompt[..1].to_vec();

    // As llama-bench does: each test gets a warm-up run (first use pages
    // weights in and sizes llama.cpp's buffers), then its repetitions back to
    // back.
    measure(&engine, prompt.clone(), 1)?;
    let pp = (0..reps)
        .map(|_| Ok(measure(&engine, prompt.clone(), 1)?.prefill_tokens_per_second))
        .collect::<Result<Vec<_>>>()?;
    // tg: the first token comes out of the one-token prefill; asking for
    // M + 1 tokens times exactly M single-token decode steps.
    measure(&engine, one_token.clone(), 2)?;
    let tg = (0..reps)
        .map(|_| Ok(measure(&engine, one_token.clone(), gen_tokens + 1)?.decode_tokens_per_second))
        .collect::<Result<Vec<_>>>()?;
    Ok(Report {
        model: model.name.clone(),
        threads: engine_config.threads,
        load_seconds,
        results: vec![
            summarise(format!("pp{}", prompt_tokens), prompt_tokens, &pp),
            summarise(format!("tg{}", gen_tokens), gen_tokens, &tg),
        ],
    })
}

pub(super) fn print(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "model {}  threads {}  load {:.2} s",
        report.model, report.threads, report.load_seconds
    );
    println!("{:<16} {:>12} {:>10}", "test", "t/s", "± stddev");
    for r in &report.results {
        println!(
            "{:<16} {:>12.2} {:>10.2}",
            r.test, r.mean_tokens_per_second, r.stddev_tokens_per_second
        );
    }
    Ok(())
}

/// Runs one serving workload against a live server and prints its JSON report.
fn load_test(url: &str, workload: Workload, args: &BenchArgs) -> Result<()> {
    use loadgen::workloads as w;
    let model = args.model.as_deref().unwrap_or(store::DEFAULT_MODEL);
    let client = loadgen::Client::with_api_key(url, model, args.api_key.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        Ok::<_, anyhow::Error>(match workload {
            Workload::W1 => w::w1(&client).await,
            Workload::W2 => w::w2(&client).await,
            Workload::W3 => w::w3(&client, args.duration.unwrap_or(30)).await,
            Workload::W4 => w::w4(&client).await,
            Workload::W4Cold => {
                let path = args.input.as_ref().context("w4-cold needs --input")?;
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                w::w4_cold(&client, &serde_json::from_str(&text)?).await
            }
            Workload::W5 => w::w5(&client).await,
            Workload::Streams64 => w::streams64(&client).await,
            Workload::Disconnect => w::disconnect(&client, 5, args.server_pid).await,
            Workload::Overload => w::overload(&client, 400).await,
            Workload::Priority => w::priority(&client, args.duration.unwrap_or(60)).await,
            Workload::Timeout => w::timeout(&client).await,
        })
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// A prompt of exactly `n` tokens cut from repeated filler text.
fn exact_prompt(engine: &Engine, n: usize) -> Result<Vec<u32>> {
    exact_prompt_from(engine, n, FILLER)
}

/// A prompt of exactly `n` tokens: `head`, then filler.
pub(super) fn exact_prompt_from(engine: &Engine, n: usize, head: &str) -> Result<Vec<u32>> {
    let mut text = head.to_string();
    loop {
        // As a prompt is tokenised: BOS, special tokens parsed.
        let tokens = TextGenerator::tokenize(engine, &text, true)?;
        if tokens.len() >= n {
            return Ok(tokens[..n].to_vec());
        }
        text.push_str(FILLER);
    }
}

fn measure(engine: &Engine, prompt: Vec<u32>, max_tokens: u32) -> Result<Timings> {
    let mut req = GenerationRequest::new(Prompt::Tokens(prompt));
    req.sampling = SamplingParams::greedy();
    req.max_tokens = Some(max_tokens);
    req.ignore_eos = true;
    let out = engine.submit(req)?.blocking_collect()?;
    ensure!(
        out.usage.completion_tokens == max_tokens,
        "generation ended early"
    );
    ensure!(
        out.usage.cached_tokens == 0,
        "the prompt came from the prefix cache; nothing was measured"
    );
    Ok(out.timings)
}

pub(super) fn summarise(test: String, tokens: u32, samples: &[f64]) -> TestResult {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    TestResult {
        test,
        tokens,
        reps: samples.len() as u32,
        mean_tokens_per_second: mean,
        stddev_tokens_per_second: var.sqrt(),
        samples_tokens_per_second: samples.to_vec(),
    }
}
