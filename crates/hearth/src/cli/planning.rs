//! The arguments of `plan`, `quantize` and `eval`: sizing hardware and
//! measuring what quantization loses.

use std::path::PathBuf;

use clap::Args;

use super::EngineArgs;

/// `hearth plan`: a model, hardware and a workload in; memory, speed,
/// servers and cost out.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A stored model, a GGUF file, or a preset (llama-7b, llama-8b,
    /// llama-13b, llama-70b) [default: smollm2]
    pub model: Option<String>,
    /// Weight type of a preset or --params shape (F16, Q8_0, Q4_K_M, ...)
    #[arg(long, default_value = "Q4_K_M", value_name = "TYPE")]
    pub weight_type: String,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Device from the catalog (--list-hardware), or `host` for this machine
    #[arg(long, default_value = "host", value_name = "NAME")]
    pub hardware: String,
    /// TOML file of [[device]] tables that extend the catalog
    #[arg(long, env = "HEARTH_HARDWARE_FILE", value_name = "FILE")]
    pub hardware_file: Option<PathBuf>,
    /// Devices per server [default: the fewest that hold the model]
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_hyphen_values = true)]
    pub devices: Option<u32>,
    /// Tokens each sequence may hold
    #[arg(
        long,
        default_value_t = 4096,
        value_name = "TOKENS",
        value_parser = at_least_one,
        allow_hyphen_values = true
    )]
    pub context: u32,
    /// Sequences served at once
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        value_parser = at_least_one,
        allow_hyphen_values = true
    )]
    pub concurrency: u32,
    /// Average requests per second
    #[arg(long, default_value_t = 1.0, value_name = "QPS")]
    pub qps: f64,
    #[arg(long, default_value_t = 512, value_name = "TOKENS")]
    pub prompt_tokens: u32,
    #[arg(long, default_value_t = 256, value_name = "TOKENS")]
    pub output_tokens: u32,
    /// Servers are sized for the average load times this
    #[arg(long, default_value_t = 3.0, value_name = "FACTOR")]
    pub peak_factor: f64,
    /// Slowest acceptable decode speed of one stream
    #[arg(long, default_value_t = 10.0, value_name = "TOKENS_PER_SECOND")]
    pub min_stream_tps: f64,
    /// KV cache type: f16, q8_0 or f32
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
    #[command(flatten)]
    pub cost: CostArgs,
    /// Use typical efficiency factors even where a calibration is stored
    #[arg(long)]
    pub uncalibrated: bool,
    /// Measure this machine (hearth bench on the default model) and store
    /// the efficiency factors for --hardware
    #[arg(long)]
    pub calibrate: bool,
    /// Print the sizing table of the 7B/13B/70B presets on A100, H100 and
    /// RTX 4090 classes
    #[arg(long)]
    pub sizing: bool,
    /// List the hardware catalog
    #[arg(long)]
    pub list_hardware: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `hearth quantize`: a model in, the same model in another weight type
/// stored beside it.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// A stored model or a GGUF file, in F32, F16 or BF16
    pub model: String,
    /// Weight type to make (Q4_K_M, Q8_0, F16, ...)
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "report")]
    pub weight_type: Option<String>,
    /// Stored name of the result [default: MODEL-TYPE, lowercase]
    #[arg(long, conflicts_with = "report")]
    pub name: Option<String>,
    /// Quantize weights that are quantized already (each pass loses more)
    #[arg(long)]
    pub allow_requantize: bool,
    /// Quantize to each of --types and measure size, perplexity and speed
    /// against the source: a table, --json, and --chart
    #[arg(long)]
    pub report: bool,
    /// Weight types of the report
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "F16,Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0",
        value_name = "TYPES"
    )]
    pub types: Vec<String>,
    /// Write the report's chart (SVG) here
    #[arg(long, value_name = "FILE", requires = "report")]
    pub chart: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long, requires = "report")]
    pub json: bool,
    #[command(flatten)]
    pub text: EvalText,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `hearth eval`: perplexity over a text.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A stored model or a GGUF file [default: smollm2]
    pub model: Option<String>,
    #[command(flatten)]
    pub text: EvalText,
    /// Print JSON instead of a line
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The text and windows perplexity is measured over.
#[derive(Debug, Args)]
pub struct EvalText {
    /// Plain UTF-8 text [default: the shipped public-domain text]
    #[arg(long, value_name = "FILE")]
    pub text: Option<PathBuf>,
    /// Tokens per window; the second half of each is scored
    #[arg(long, default_value_t = 512, value_name = "TOKENS")]
    pub window: u32,
    /// Score at most this many windows [default: every whole window]
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_hyphen_values = true)]
    pub windows: Option<u32>,
}

/// A model's architecture given by its numbers instead of a file.
#[derive(Debug, Args)]
pub struct ShapeArgs {
    /// Parameters (weights in every tensor); the other numbers are then required
    #[arg(long, value_name = "N", requires_all = ["layers", "hidden", "heads", "ffn", "vocab"])]
    pub params: Option<u64>,
    #[arg(long, value_name = "N")]
    pub layers: Option<u32>,
    /// Embedding width
    #[arg(long, value_name = "N")]
    pub hidden: Option<u32>,
    /// Attention heads
    #[arg(long, value_name = "N")]
    pub heads: Option<u32>,
    /// KV heads [default: --heads]
    #[arg(long, value_name = "N")]
    pub kv_heads: Option<u32>,
    /// Head width [default: hidden / heads]
    #[arg(long, value_name = "N")]
    pub head_dim: Option<u32>,
    /// Feed-forward width
    #[arg(long, value_name = "N")]
    pub ffn: Option<u32>,
    #[arg(long, value_name = "N")]
    pub vocab: Option<u32>,
    /// Training context [default: --context]
    #[arg(long, value_name = "TOKENS")]
    pub ctx_train: Option<u32>,
}

/// Prices for the cost comparison.
#[derive(Debug, Args)]
pub struct CostArgs {
    #[arg(long, default_value_t = 3.0, value_name = "YEARS")]
    pub years: f64,
    /// Electricity, USD per kWh
    #[arg(long, default_value_t = 0.15, value_name = "USD")]
    pub electricity: f64,
    /// Facility power per unit of IT power
    #[arg(long, default_value_t = 1.4)]
    pub pue: f64,
    /// Operations per server and year (space, support, administration), USD
    #[arg(long, default_value_t = 1500.0, value_name = "USD")]
    pub operations: f64,
    /// Cloud API price per million prompt tokens, USD
    #[arg(long, default_value_t = 0.5, value_name = "USD")]
    pub cloud_input: f64,
    /// Cloud API price per million output tokens, USD
    #[arg(long, default_value_t = 1.5, value_name = "USD")]
    pub cloud_output: f64,
}

fn at_least_one(text: &str) -> Result<u32, String> {
    match text.parse::<i64>() {
        Ok(n) if n >= 1 && n <= i64::from(u32::MAX) => Ok(n as u32),
        Ok(n) if n < 1 => Err(format!("must be at least 1, not {n}")),
        Ok(n) => Err(format!("must be at most {}, not {n}", u32::MAX)),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// `hearth verify-deploy`: golden outputs and a speed check, after a deploy.
#[derive(Debug, Args)]
pub struct VerifyDeployArgs {
    /// The deployed model: a stored name or a GGUF file; with --url, the
    /// model name sent [default: smollm2]
    pub model: Option<String>,
    /// Record the golden outputs (and the speed) instead of checking them
    #[arg(long)]
    pub record: bool,
    /// The golden record [default: $HEARTH_HOME/verify/MODEL.json]
    #[arg(long, value_name = "FILE")]
    pub golden: Option<PathBuf>,
    /// Prompts to record, one per line [default: a built-in set of 8]
    #[arg(long, value_name = "FILE", requires = "record")]
    pub prompts: Option<PathBuf>,
    /// Tokens generated per prompt when recording
    #[arg(long, default_value_t = 32, value_name = "TOKENS", value_parser = at_least_one, allow_hyphen_values = true)]
    pub max_tokens: u32,
    /// Check a running OpenAI-compatible deployment at this base URL
    /// instead of loading the model here
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// API key sent with every --url request
    #[arg(
        long,
        env = "HEARTH_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Decode may fall this many percent below the plan's prediction
    #[arg(long, default_value_t = 25.0, value_name = "PERCENT")]
    pub speed_tolerance: f64,
    /// Expect this single-stream decode speed instead of the plan's
    /// prediction (a contracted figure, say)
    #[arg(long, value_name = "TOKENS_PER_SECOND")]
    pub expect_decode_tps: Option<f64>,
    /// An output may part from the record where the two tokens were this
    /// close (log-probability, nats). Measured on the default model: a
    /// server with a prefix cache, asked the same thing again, parts at
    /// gaps up to 0.17 (its sequences land in other cells of the KV pool,
    /// and the sums round differently); swapped for Q4_0, 3 of 8 outputs
    /// (Q4_0 made from F16) or all 8 (requantized from Q4_1) part at 0.3
    /// or more or at a token the record did not weigh (swapped for Q8_0,
    /// none: the file's digest or the server's fingerprint tells that)
    #[arg(long, default_value_t = 0.25, value_name = "NATS")]
    pub tie_nats: f64,
    /// Check outputs only
    #[arg(long)]
    pub skip_speed: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}
