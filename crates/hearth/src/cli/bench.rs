//! `hearth bench`'s grammar: llama-bench's tests on the engine, and the load
//! tester for any OpenAI-compatible endpoint.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use loadgen::sweep::Lengths;

use super::EngineArgs;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model to measure [default: smollm2]; with --url, the model name sent
    /// [default: the first one the endpoint lists]
    pub model: Option<String>,
    /// Prompt length: N tokens, or MIN-MAX to sample each request's length
    /// uniformly (--url only); with --url, as the server counts it, chat
    /// template and shared system prompt included
    #[arg(long, default_value = "512", value_name = "TOKENS")]
    pub prompt_tokens: Lengths,
    /// Tokens generated per request: N, or MIN-MAX (--url only)
    #[arg(
        long,
        visible_alias = "output-tokens",
        default_value = "128",
        value_name = "TOKENS"
    )]
    pub gen_tokens: Lengths,
    /// Let the model stop before --gen-tokens (no `ignore_eos`), for
    /// endpoints that refuse llama.cpp's field, such as cloud APIs; shorter
    /// answers are then not errors
    #[arg(long, requires = "url")]
    pub natural_stop: bool,
    /// Repetitions of each test (after one warm-up)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub reps: u32,
    /// Measure decode of N sequences at once instead (aggregate tokens per
    /// second), each --depth tokens deep
    #[arg(long, value_name = "N", conflicts_with = "url")]
    pub batch: Option<u32>,
    /// Tokens each sequence holds before the measured decode (with --batch)
    #[arg(long, default_value_t = 0, value_name = "TOKENS", requires = "batch")]
    pub depth: u32,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Load-test a running OpenAI-compatible server at this base URL
    /// (Hearth, llama-server, vLLM, a cloud API) instead; give it twice to
    /// compare two endpoints level by level
    #[arg(long, value_name = "URL")]
    pub url: Vec<String>,
    /// A name for each --url, in the same order, for tables and charts
    /// [default: the URL's host and port]
    #[arg(long, value_name = "NAME", requires = "url")]
    pub label: Vec<String>,
    /// Concurrency levels of the load test: clients sending requests back
    /// to back
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16",
        value_name = "N,N,…"
    )]
    pub concurrency: Vec<usize>,
    /// Requests per level [default: three per client, at least 8]
    #[arg(long, value_name = "N")]
    pub requests: Option<usize>,
    /// A system prompt of this many tokens that every request shares (as an
    /// organisation's assistant does)
    #[arg(long, default_value_t = 0, value_name = "TOKENS")]
    pub system_prompt_tokens: u32,
    /// Goodput counts requests whose first token came within this time
    #[arg(long, default_value_t = 2000.0, value_name = "MS")]
    pub slo_ttft_ms: f64,
    /// … and whose later tokens came at most this far apart on average
    /// (100 ms: ten tokens a second, faster than people read)
    #[arg(long, default_value_t = 100.0, value_name = "MS")]
    pub slo_tpot_ms: f64,
    /// Seeds the load test's sampled lengths and texts: the same seed, the
    /// same requests
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub load_seed: u64,
    /// Draw throughput, time to first token and inter-token latency against
    /// concurrency into this SVG file, every endpoint on the same axes
    #[arg(long, value_name = "FILE")]
    pub chart: Option<PathBuf>,
    /// Print and chart earlier `--json` reports instead of measuring
    #[arg(long, value_name = "FILE", conflicts_with = "url")]
    pub from: Vec<PathBuf>,
    /// Run one of the serving workloads of bench/serving.sh against --url
    #[arg(long, value_enum, requires = "url")]
    pub workload: Option<Workload>,
    /// API key sent with every --url request
    #[arg(
        long,
        env = "HEARTH_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Seconds for timed workloads (w3, priority) [default: 30, 60]
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Server process to read memory from (disconnect)
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// A w4 report whose last prompts w4-cold replays
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Serving workloads for `bench --url` (see `bench/serving.sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// 16 clients, short distinct prompts
    W1,
    /// 16 clients sharing a ~1,000-token system prompt
    W2,
    /// 12 streams while ~2,000-token prompts arrive every 3 s
    W3,
    /// 8 conversations of 6 turns re-sending their history
    W4,
    /// The last turns of a w4 report (--input), sent to a cold server
    W4Cold,
    /// One client
    W5,
    /// 64 clients, sampled at temperature 0.8
    Streams64,
    /// 64 streams, half hanging up, 5 rounds
    Disconnect,
    /// 400 simultaneous requests
    Overload,
    /// Interactive requests while 32 batch streams run
    Priority,
    /// A 1 s timeout on a long prompt while busy
    Timeout,
}
