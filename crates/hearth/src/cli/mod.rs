//! Command-line grammar: every command, flag and environment variable, with help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod bench;
mod planning;

pub use bench::{BenchArgs, Workload};
pub use planning::{EvalArgs, EvalText, PlanArgs, QuantizeArgs, VerifyDeployArgs};

#[derive(Debug, Parser)]
#[command(
    name = "hearth",
    version,
    about = "Run large language models on your own hardware",
    long_about = "Run large language models on your own hardware.\n\n\
        Settings come from flags, then HEARTH_* environment variables, then \
        the config file ($HEARTH_HOME/config.toml or --config), then defaults."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory holding models and configuration [default: ~/.hearth]
    #[arg(long, env = "HEARTH_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// TOML configuration file [default: $HEARTH_HOME/config.toml, if present]
    #[arg(long, env = "HEARTH_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `debug,llama-cpp-2=info` (llama.cpp's own log) [default: warn, info for serve]
    #[arg(long, env = "HEARTH_LOG", global = true, value_name = "FILTER")]
    pub log: Option<String>,
    /// Log line format
    #[arg(long, env = "HEARTH_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download a catalog model, verify its size and SHA-256, and store it
    Pull(PullArgs),
    /// List stored models
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Delete a stored model
    Rm {
        /// Stored model name
        model: String,
    },
    /// Re-hash stored models chunk by chunk and name any chunk that does
    /// not match its manifest
    Verify {
        /// Stored model name [default: every stored model]
        model: Option<String>,
    },
    /// Upload a stored model to object storage (`s3://bucket/prefix`):
    /// only the chunks the bucket lacks, then its manifest
    Push {
        /// Stored model name
        model: String,
        /// `s3://bucket/prefix`
        to: String,
        /// Cap the average rate: bytes per second, or with K, M or G (`10M`)
        /// [default: [pull] limit_rate]
        #[arg(long, env = "HEARTH_LIMIT_RATE")]
        limit_rate: Option<String>,
        /// From an encrypted store, decrypt the chunks on their way up (a
        /// bucket holds plaintext chunks, named by their SHA-256); without
        /// it such a push is refused
        #[arg(long)]
        plaintext: bool,
    },
    /// Pull every model pushed under `s3://bucket/prefix` that this node
    /// lacks or holds in an older version
    Sync {
        /// `s3://bucket/prefix`
        from: String,
        /// Keep going: sync again every SECS seconds
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
        /// Cap the average rate: bytes per second, or with K, M or G (`10M`)
        #[arg(long, env = "HEARTH_LIMIT_RATE")]
        limit_rate: Option<String>,
    },
    /// Write stored models to one file for a machine without network
    /// access: manifests and blobs, optionally signed
    Export {
        /// Stored model names
        #[arg(required = true)]
        models: Vec<String>,
        /// The bundle to write
        #[arg(short, long)]
        output: PathBuf,
        /// Sign with the ed25519 key in this file (created, with KEY.pub,
        /// if missing); importers trust KEY.pub in $HEARTH_HOME/trusted_keys/
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// From an encrypted store, write the models' plaintext (by
        /// default their files travel encrypted, for a store with the key)
        #[arg(long)]
        plaintext: bool,
    },
    /// Store the models of a bundle written by `hearth export`, every chunk
    /// verified before anything is published
    Import {
        /// The bundle
        bundle: PathBuf,
        /// Refuse unsigned bundles and those signed by untrusted keys
        /// [default: [bundles] require_signature]
        #[arg(long)]
        require_signature: bool,
    },
    /// Disk use of the store: each model, the bytes on disk with shared
    /// blobs counted once, and partial pulls
    Du {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove blobs no model uses and partial pulls no process is running
    Gc {
        /// Also drop partial pulls under a day old (they could be resumed)
        #[arg(long)]
        all_partials: bool,
    },
    /// Fetch again only the chunks of a stored model that no longer match
    /// its manifest, from where it was pulled
    Repair {
        /// Stored model name
        model: String,
    },
    /// Describe a model: architecture, size, quantization, context, template, SHA-256
    Show {
        /// Catalog name, stored name, or path to a GGUF file
        model: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Generate a reply to one prompt, streamed to stdout
    Run(RunArgs),
    /// Chat interactively in the terminal
    Chat(ChatArgs),
    /// Embed texts: one JSON array of floats per text, a line each, in order
    Embed(EmbedArgs),
    /// Serve the OpenAI-compatible HTTP API
    Serve(ServeArgs),
    /// Measure prefill and decode speed, llama-bench style
    Bench(BenchArgs),
    /// Size hardware for a model: memory, speed, capacity and cost
    Plan(Box<PlanArgs>),
    /// Quantize a model with llama.cpp's quantizer and store the result
    Quantize(QuantizeArgs),
    /// Perplexity of a model over a text, by llama.cpp's method
    Eval(EvalArgs),
    /// Check a deployment: golden outputs at temperature 0 (recorded once
    /// with --record) and decode speed against the plan
    VerifyDeploy(Box<VerifyDeployArgs>),
    /// Create, list and revoke API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Ask the authorization policies for a decision
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Verify or export the tamper-evident audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Encrypt or decrypt the model store at rest
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write a new random key (64 hex digits) to FILE, readable by its owner only
    Keygen {
        /// Where the key goes; it must not exist yet
        file: std::path::PathBuf,
    },
    /// Encrypt every stored file with the key of [store] key_file or
    /// key_command (AES-256-GCM), in place and resumably; later pulls
    /// are encrypted too
    Encrypt,
    /// Decrypt every stored file in place, and mark the store plain
    Decrypt,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every line's hash, the chain and every checkpoint signature;
    /// name the first bad line
    Verify {
        /// Start at this log file (its first line's `prev` is trusted)
        #[arg(long, value_name = "FILE")]
        from: Option<std::path::PathBuf>,
        /// The checkpoint public key [default: the signing key's `.pub`]
        #[arg(long, value_name = "FILE")]
        public_key: Option<std::path::PathBuf>,
    },
    /// Print entries for a SIEM
    Export {
        /// Entries from this time on: RFC 3339 (`2026-11-01T00:00:00Z`) or an age (`24h`)
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Output format
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the decision and the policies that made it
    Check {
        /// A stored key's id (its roles and attributes), or any name with --role/--attr
        #[arg(long, value_name = "KEY_ID|NAME")]
        principal: String,
        /// A role of an ad-hoc principal (repeatable)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// An attribute of an ad-hoc principal, key=value (repeatable)
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// predict, embed, list_models, pull, delete_model, manage_keys, read_audit, admin or replicate
        #[arg(long)]
        action: String,
        /// `model:NAME` or `server`
        #[arg(long)]
        resource: String,
        /// An attribute of the model, key=value (repeatable)
        #[arg(long = "resource-attr", value_name = "KEY=VALUE")]
        resource_attrs: Vec<String>,
        /// Request context as JSON: {"time": UNIX_SECONDS, "source_ip": "10.0.0.1", "tls_client": "CN=..."}
        #[arg(long, value_name = "JSON")]
        context: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret, once
    Create {
        /// Who or what the key is for
        #[arg(long)]
        name: String,
        /// A role policies refer to (repeatable) [default: user]
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// An attribute policies refer to, e.g. `department=radiology` (repeatable)
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Highest priority class the key's requests may use [default: the request's own]
        #[arg(long, value_name = "CLASS", value_parser = ["interactive", "batch"])]
        priority: Option<String>,
        /// Lifetime, e.g. `90d`, `12h` [default: no expiry]
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// Requests per minute [default: unlimited]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        rpm: Option<u32>,
        /// Tokens (prompt and completion) per minute [default: unlimited]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        tpm: Option<u64>,
        /// Tokens per day, reset at midnight UTC [default: unlimited]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        daily_tokens: Option<u64>,
        /// Print JSON (the secret in `key`)
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets)
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; it is refused from the next request on
    Revoke {
        /// The key's id (as `keys list` shows it)
        id: String,
    },
}

/// Engine settings shared by every command that loads a model.
#[derive(Debug, Args, Default)]
pub struct EngineArgs {
    /// CPU threads for inference [default: number of physical cores]
    #[arg(long, env = "HEARTH_THREADS", value_name = "N")]
    pub threads: Option<u32>,
    /// Most tokens one sequence may hold, prompt and reply [default: the model's, at most 4096]
    #[arg(long, env = "HEARTH_CTX_SIZE", value_name = "TOKENS")]
    pub ctx_size: Option<u32>,
    /// KV pool shared by all sequences, in tokens [default: ctx-size × 4 for serve,
    /// or ctx-size per stream]
    #[arg(long, env = "HEARTH_KV_SIZE", value_name = "TOKENS")]
    pub kv_size: Option<u32>,
    /// KV layout: `unified` (one pool, cells shared per token), `streams`
    /// (a whole context per running sequence: faster attention, more
    /// memory) or `auto` (streams on a CPU when they fit a quarter of the
    /// memory and no kv-size is set) [default: auto]
    #[arg(long, env = "HEARTH_KV_LAYOUT", value_name = "LAYOUT")]
    pub kv_layout: Option<engine::KvLayout>,
    /// Default random seed for sampling [default: random]
    #[arg(long, env = "HEARTH_SEED", value_name = "SEED")]
    pub seed: Option<u32>,
    /// Most sequences decoding at once (serve) [default: 16]
    #[arg(
        long,
        visible_alias = "parallel",
        env = "HEARTH_MAX_RUNNING",
        value_name = "N"
    )]
    pub max_running: Option<u32>,
    /// Layers to offload to the GPU (CUDA builds) [default: all with CUDA, else 0]
    #[arg(long, env = "HEARTH_GPU_LAYERS", value_name = "N")]
    pub gpu_layers: Option<u32>,
    /// Read the weights into the engine's memory instead of mapping the
    /// model file (llama.cpp's --no-mmap; a decrypted model always is)
    #[arg(long, env = "HEARTH_NO_MMAP")]
    pub no_mmap: bool,
}

/// Sampling flags for `run` and `chat`.
#[derive(Debug, Args, Default, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate [default: until the reply ends]
    #[arg(long, short = 'n', value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Randomness; 0 is greedy [default: 0.8]
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Keep the k most likely tokens; 0 disables [default: 40]
    #[arg(long, value_name = "K")]
    pub top_k: Option<u32>,
    /// Nucleus sampling threshold [default: 0.95]
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Drop tokens below this fraction of the best one [default: 0.05]
    #[arg(long, value_name = "P")]
    pub min_p: Option<f32>,
    /// Penalty for repeating recent tokens; 1 disables [default: 1.0]
    #[arg(long, value_name = "X")]
    pub repeat_penalty: Option<f32>,
    /// OpenAI-style presence penalty [default: 0]
    #[arg(long, value_name = "X")]
    pub presence_penalty: Option<f32>,
    /// OpenAI-style frequency penalty [default: 0]
    #[arg(long, value_name = "X")]
    pub frequency_penalty: Option<f32>,
    /// Stop before this text (repeatable)
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// [MODEL] PROMPT: MODEL (catalog name, stored name or GGUF path) defaults
    /// to smollm2 and is pulled on first use; PROMPT `-` reads stdin
    #[arg(required = true, num_args = 1..=2, value_names = ["MODEL", "PROMPT"])]
    pub words: Vec<String>,
    /// System message to put before the prompt
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Send the prompt as raw text, without the chat template
    #[arg(long)]
    pub raw: bool,
    /// Keep generating past end-of-turn tokens
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print one JSON object with text, usage and timings
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Texts to embed; `-` reads one text per line from stdin
    #[arg(required = true, value_name = "TEXT")]
    pub texts: Vec<String>,
    /// Catalog name, stored name or GGUF path [default: smollm2]
    #[arg(long, short)]
    pub model: Option<String>,
    /// Keep only the first N dimensions, normalised again
    #[arg(long, value_name = "N")]
    pub dimensions: Option<u32>,
    /// Cut a text longer than the context instead of failing
    #[arg(long)]
    pub truncate: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Catalog name, stored name or GGUF path [default: smollm2]
    pub model: Option<String>,
    /// System message for the conversation
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// After each reply, print its token counts and speed to stderr
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "HEARTH_HOST", value_name = "ADDR")]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one [default: 8080]
    #[arg(long, env = "HEARTH_PORT", value_name = "PORT")]
    pub port: Option<u16>,
    /// Model to serve: catalog name, stored name or GGUF path; repeat to
    /// serve several, each loaded at start and kept (the first is the
    /// default for requests that name none) [default: smollm2]
    #[arg(
        long,
        env = "HEARTH_MODEL",
        value_name = "MODEL",
        value_delimiter = ','
    )]
    pub model: Vec<String>,
    /// Memory the loaded models may take together (weights and KV); a
    /// stored model loaded on demand unloads the least recently used idle
    /// ones to fit [default: three quarters of the machine's memory]
    #[arg(long, env = "HEARTH_MEMORY_BUDGET", value_name = "BYTES")]
    pub memory_budget: Option<u64>,
    /// Seconds a model loaded on demand stays after its last request [default: 300]
    #[arg(long, env = "HEARTH_KEEP_ALIVE", value_name = "SECONDS")]
    pub keep_alive: Option<u64>,
    /// Largest request body accepted; larger ones get 413 [default: 8388608]
    #[arg(long, env = "HEARTH_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most requests waiting for a place; more get 429 with Retry-After [default: 128]
    #[arg(long, env = "HEARTH_MAX_QUEUE", value_name = "N")]
    pub max_queue: Option<u32>,
    /// Most tokens per decode step, running tokens and prompt chunks together [default: 512]
    #[arg(long, env = "HEARTH_STEP_TOKENS", value_name = "TOKENS")]
    pub step_tokens: Option<u32>,
    /// Seconds a batch request ranks behind interactive work (ageing) [default: 60]
    #[arg(long, env = "HEARTH_BATCH_DELAY", value_name = "SECONDS")]
    pub batch_delay: Option<f64>,
    /// Do not keep finished requests' KV for later requests with the same prefix
    #[arg(long, env = "HEARTH_NO_PREFIX_CACHE")]
    pub no_prefix_cache: bool,
    /// KV cells kept for the prefix cache after 2 s idle, in tokens [default: 0]
    #[arg(long, env = "HEARTH_PREFIX_CACHE_SIZE", value_name = "TOKENS")]
    pub prefix_cache_size: Option<u32>,
    /// Answer API requests without credentials, even off loopback and with
    /// keys stored (logs a warning at every start)
    #[arg(long, env = "HEARTH_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// When a served model moves to a newly stored version of itself:
    /// `auto` (as soon as it is stored) or `manual` (on POST
    /// /admin/models/{name}/reload) [default: auto]
    #[arg(long, env = "HEARTH_MODEL_SWAP", value_enum, value_name = "WHEN")]
    pub model_swap: Option<crate::config::ModelSwap>,
    /// Lend stored models to other Hearth nodes (`hearth pull --peer`):
    /// manifests and file ranges under /peer/v1, for credentials the
    /// policies allow `replicate` [default: [peers] share]
    #[arg(long, env = "HEARTH_SHARE")]
    pub share: bool,
    /// Serve /metrics without credentials [default: true on loopback, else false]
    #[arg(long, env = "HEARTH_OPEN_METRICS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub open_metrics: Option<bool>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key; reread on SIGHUP)
    #[arg(
        long,
        env = "HEARTH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key
    #[arg(
        long,
        env = "HEARTH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file (mutual TLS)
    #[arg(long, env = "HEARTH_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `hearth pull`: a catalog name, or a location to fetch a GGUF from.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Catalog name (`smollm2`), `https://…/model.gguf`,
    /// `hf://org/repo[@revision]/model.gguf`, `s3://bucket/prefix/NAME` (a
    /// pushed model) or `s3://bucket/key.gguf`, or a local file
    pub model: String,
    /// Download again even if already stored
    #[arg(long)]
    pub force: bool,
    /// Store a location's model under this name [default: its file name
    /// without .gguf]
    #[arg(long)]
    pub name: Option<String>,
    /// The SHA-256 the whole file must have
    #[arg(long)]
    pub sha256: Option<String>,
    /// Ranged requests in flight at once [default: 4, or [pull] connections]
    #[arg(long, env = "HEARTH_PULL_CONNECTIONS")]
    pub connections: Option<usize>,
    /// Cap the average rate: bytes per second, or with K, M or G (`10M`)
    #[arg(long, env = "HEARTH_LIMIT_RATE")]
    pub limit_rate: Option<String>,
    /// Print progress as JSON lines on stdout instead of a bar
    #[arg(long)]
    pub json: bool,
    /// Another Hearth node to pull from first (`host:port`); repeat for
    /// several, added to [peers] nodes
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "HEARTH_PEERS",
        value_delimiter = ','
    )]
    pub peer: Vec<String>,
    /// Pull from every node a DNS name resolves to [default: [peers] dns]
    #[arg(long, value_name = "HOST:PORT")]
    pub peers_dns: Option<String>,
    /// Ask no peer, only the origin
    #[arg(long)]
    pub no_peers: bool,
}

impl PullArgs {
    /// A pull of `model` as the API asks for it: the configuration's
    /// peers and settings, no flags.
    pub fn api(model: &str) -> PullArgs {
        PullArgs {
            model: model.to_string(),
            force: false,
            name: None,
            sha256: None,
            connections: None,
            limit_rate: None,
            json: false,
            peer: Vec::new(),
            peers_dns: None,
            no_peers: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks a command's definition (unique flags, valid `requires`)
    /// only when it is built in a debug build: every subcommand, here.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
