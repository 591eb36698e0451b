//! The one typed configuration: flags, `HEARTH_*` variables and the TOML file, merged and validated once.
//!
//! Precedence is flag > environment > file > default. clap already folds the
//! environment into the flags, so this module only layers the file and the
//! defaults underneath, then checks every value before anything starts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use engine::EngineConfig;
use serde::Deserialize;
use store::PipCommand;

use crate::cli::{EngineArgs, GlobalArgs, ServeArgs};
use crate::peering::{peer_settings, FilePeers, PeerSettings};

/// The configuration file's shape. Unknown keys are errors, so typos surface.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// How to invoke pip for package-hosted models, e.g. `python3 -m pip`.
    pub pip: Option<String>,
    #[serde(default)]
    pub engine: FileEngine,
    #[serde(default)]
    pub server: FileServer,
    #[serde(default)]
    pub auth: FileAuth,
    #[serde(default)]
    pub audit: FileAudit,
    #[serde(default)]
    pub tls: FileTls,
    #[serde(default)]
    pub pull: FilePull,
    #[serde(default)]
    pub bundles: FileBundles,
    #[serde(default)]
    pub s3: FileS3,
    #[serde(default)]
    pub peers: FilePeers,
    #[serde(default)]
    pub store: FileStore,
    /// Per-model settings, by model name.
    #[serde(default)]
    pub models: BTreeMap<String, FileModel>,
}

/// `[bundles]`: what `hearth import` accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBundles {
    /// Refuse unsigned bundles and those signed by keys not in
    /// `$HEARTH_HOME/trusted_keys/`.
    pub require_signature: Option<bool>,
}

/// `[s3]`: object storage for `s3://` pulls and pushes; credentials come
/// from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), never from this file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileS3 {
    /// An S3-compatible server instead of AWS (`AWS_ENDPOINT_URL`
    /// overrides it).
    pub endpoint: Option<String>,
    /// The region (`AWS_REGION` overrides it).
    pub region: Option<String>,
}

/// `[store]`: the model store's encryption key, from a file or a command
/// (a KMS or HSM wrapper that prints it); never the key itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    /// 64 hex digits or 32 raw bytes (`HEARTH_STORE_KEY_FILE` overrides it).
    pub key_file: Option<PathBuf>,
    /// Run with `sh -c`; prints the key (`HEARTH_STORE_KEY_COMMAND` overrides it).
    pub key_command: Option<String>,
}

/// Where the store's key comes from.
#[derive(Debug, Clone, Default)]
pub enum KeySource {
    #[default]
    None,
    File(PathBuf),
    Command(String),
}

/// `[pull]`: how models are fetched from URLs and hubs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePull {
    /// Ranged requests in flight at once (default 4).
    pub connections: Option<usize>,
    /// Chunk size in MiB for new pulls (default 64).
    pub chunk_mb: Option<u64>,
    /// Attempts after the first, per chunk (default 5).
    pub retries: Option<u32>,
    /// Seconds without a byte before a connection counts as stalled (default 30).
    pub stall_secs: Option<u64>,
    /// A cap on the average rate: bytes per second, or with K, M or G.
    pub limit_rate: Option<String>,
    /// The Hugging Face-layout hub `hf://` locations come from (default
    /// the public hub; `HF_ENDPOINT` overrides it, as for the hub's tools).
    pub hf_endpoint: Option<String>,
    /// A file holding the hub token (`HF_TOKEN` overrides it).
    pub hf_token_file: Option<PathBuf>,
    /// PEM certificate authorities to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    /// Trusted JWT issuers (`[[auth.jwt]]`), checked in `auth::JwtVerifier`.
    #[serde(default)]
    pub jwt: Vec<auth::JwtIssuerConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAudit {
    /// On by default; `false` turns the audit log off.
    pub enabled: Option<bool>,
    /// Default `$HEARTH_HOME/audit`.
    pub dir: Option<PathBuf>,
    /// The ed25519 checkpoint key, kept outside the log. Default
    /// `$HEARTH_HOME/audit.key` (its public half in `audit.key.pub`).
    pub signing_key: Option<PathBuf>,
    pub checkpoint_every: Option<u64>,
    pub checkpoint_secs: Option<u64>,
    pub max_file_mb: Option<u64>,
    /// Record prompt and response texts, not only their SHA-256.
    pub record_text: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// PEM certificate chain; with `key`, the server speaks only HTTPS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// PEM CA(s) for client certificates: mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: let clients without a certificate connect too.
    pub client_cert_optional: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileModel {
    /// Attributes policies see on the model (`resource.department`…).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEngine {
    pub threads: Option<u32>,
    pub ctx_size: Option<u32>,
    pub kv_size: Option<u32>,
    pub kv_layout: Option<engine::KvLayout>,
    pub seed: Option<u32>,
    #[serde(alias = "parallel")]
    pub max_running: Option<u32>,
    pub gpu_layers: Option<u32>,
    /// Map model files (true) or read them into the engine's memory.
    pub mmap: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub model: Option<OneOrMany>,
    pub memory_budget: Option<u64>,
    /// Seconds.
    pub keep_alive: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub max_queue: Option<u32>,
    pub step_tokens: Option<u32>,
    /// Seconds.
    pub batch_delay: Option<f64>,
    pub prefix_cache: Option<bool>,
    pub prefix_cache_size: Option<u32>,
    pub insecure_no_auth: Option<bool>,
    /// Whether `/metrics` answers without credentials.
    pub open_metrics: Option<bool>,
    /// `auto` or `manual`: when a newly stored version replaces a served model.
    pub model_swap: Option<ModelSwap>,
}

/// Everything a command needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub home: PathBuf,
    pub pip: PipCommand,
    pub engine: EngineConfig,
    /// Seed used when a request does not bring its own.
    pub seed: Option<u32>,
    pub server: ServerSettings,
    /// Trusted JWT issuers; structured, so only the file sets them.
    pub jwt_issuers: Vec<auth::JwtIssuerConfig>,
    /// Policy attributes per model name.
    pub model_attrs: BTreeMap<String, BTreeMap<String, String>>,
    /// The audit log; `None` when turned off.
    pub audit: Option<AuditSettings>,
    /// How pulls from URLs and hubs run.
    pub pull: PullSettings,
    /// `hearth import` refuses bundles without a trusted signature.
    pub bundles_require_signature: bool,
    /// Where `s3://` locations are.
    pub s3: bucket::S3Options,
    /// Other nodes.
    pub peers: PeerSettings,
    /// The store's encryption key, read when a command opens the store.
    pub store_key: KeySource,
}

impl Config {
    /// The store's key, when one is configured: read from its file, or
    /// printed by its command, now.
    pub fn store_key(&self) -> Result<Option<std::sync::Arc<vault::Key>>> {
        let key = match &self.store_key {
            KeySource::None => return Ok(None),
            KeySource::File(path) => vault::Key::from_file(path)?,
            KeySource::Command(command) => vault::Key::from_command(command)?,
        };
        Ok(Some(std::sync::Arc::new(key)))
    }
}

#[derive(Debug, Clone)]
pub struct PullSettings {
    pub transfer: transfer::Options,
    pub http: transfer::HttpOptions,
    pub hf_endpoint: String,
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub log: audit::AuditConfig,
    pub record_text: bool,
}

/// `model = "smollm2"` or `model = ["smollm2", "gemma3"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: IpAddr,
    pub port: u16,
    /// Every model served, loaded at start and kept; the first is the
    /// default. Never empty, no name twice.
    pub models: Vec<String>,
    /// Bytes the loaded models may take together.
    pub memory_budget: u64,
    /// How long a model loaded on demand stays after its last request.
    pub keep_alive: std::time::Duration,
    pub max_body_bytes: usize,
    /// Serve the API to anyone, even off loopback, even with keys stored.
    pub insecure_no_auth: bool,
    /// `/metrics` without credentials: by default only on loopback.
    pub open_metrics: bool,
    /// HTTPS instead of HTTP.
    pub tls: Option<server::TlsFiles>,
    /// When a served model's newly stored version replaces it.
    pub model_swap: ModelSwap,
}

/// When `hearth serve` moves a served model to a newly stored version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelSwap {
    /// As soon as the store holds it (checked every 2 s).
    Auto,
    /// Only on `POST /admin/models/{name}/reload`.
    Manual,
}

impl Config {
    /// Reads the file (if any) and merges it under the command's flags.
    pub fn load(
        global: &GlobalArgs,
        engine: &EngineArgs,
        serve: Option<&ServeArgs>,
    ) -> Result<Config> {
        let home = match &global.home {
            Some(home) => home.clone(),
            None => default_home()?,
        };
        let file = read_file(global.config.as_deref(), &home)?;
        let pip_line = file.pip.unwrap_or_else(|| "python3 -m pip".to_string());
        let pip = PipCommand::parse(&pip_line).context("`pip` in the configuration is empty")?;

        let fe = &file.engine;
        let threads = engine
            .threads
            .or(fe.threads)
            .unwrap_or_else(|| num_cpus::get_physical() as u32);
        let gpu_default = if cfg!(feature = "cuda") { 999 } else { 0 };
        let fs = &file.server;
        let defaults = EngineConfig::default();
        // One-shot commands run a single sequence; only the server needs room for many.
        let max_running = match serve {
            Some(_) => engine.max_running.or(fe.max_running),
            None => Some(1),
        };
        let batch_delay = serve.and_then(|s| s.batch_delay).or(fs.batch_delay);
        if batch_delay.is_some_and(|d| !(0.0..=86_400.0).contains(&d)) {
            bail!("batch-delay must be between 0 and 86400 seconds");
        }
        let engine_config = EngineConfig {
            threads,
            ctx_size: engine.ctx_size.or(fe.ctx_size),
            kv_size: engine.kv_size.or(fe.kv_size),
            kv_layout: engine.kv_layout.or(fe.kv_layout).unwrap_or_default(),
            max_running: max_running.unwrap_or(defaults.max_running),
            max_queue: serve
                .and_then(|s| s.max_queue)
                .or(fs.max_queue)
                .unwrap_or(defaults.max_queue),
            step_tokens: serve
                .and_then(|s| s.step_tokens)
                .or(fs.step_tokens)
                .unwrap_or(defaults.step_tokens),
            batch_delay: batch_delay.map_or(defaults.batch_delay, Duration::from_secs_f64),
            prefix_cache: !serve.is_some_and(|s| s.no_prefix_cache)
                && fs.prefix_cache.unwrap_or(true),
            prefix_cache_size: serve
                .and_then(|s| s.prefix_cache_size)
                .or(fs.prefix_cache_size),
            gpu_layers: engine.gpu_layers.or(fe.gpu_layers).unwrap_or(gpu_default),
            use_mmap: !engine.no_mmap && fe.mmap.unwrap_or(true),
            ..defaults
        };

        let host = serve
            .and_then(|s| s.host.clone())
            .or_else(|| fs.host.clone())
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let host: IpAddr = host
            .parse()
            .with_context(|| format!("`{host}` is not an IP address to listen on"))?;
        let server = ServerSettings {
            host,
            port: serve.and_then(|s| s.port).or(fs.port).unwrap_or(8080),
            models: served_models(serve.map(|s| s.model.clone()), fs.model.clone())?,
            memory_budget: serve
                .and_then(|s| s.memory_budget)
                .or(fs.memory_budget)
                .unwrap_or_else(default_memory_budget),
            keep_alive: std::time::Duration::from_secs(
                serve
                    .and_then(|s| s.keep_alive)
                    .or(fs.keep_alive)
                    .unwrap_or(300),
            ),
            max_body_bytes: serve
                .and_then(|s| s.max_body_bytes)
                .or(fs.max_body_bytes)
                .unwrap_or(8 << 20),
            insecure_no_auth: serve.is_some_and(|s| s.insecure_no_auth)
                || fs.insecure_no_auth.unwrap_or(false),
            open_metrics: serve
                .and_then(|s| s.open_metrics)
                .or(fs.open_metrics)
                .unwrap_or(host.is_loopback()),
            tls: tls_files(serve, &file.tls)?,
            model_swap: serve
                .and_then(|s| s.model_swap)
                .or(fs.model_swap)
                .unwrap_or(ModelSwap::Auto),
        };
        let fa = &file.audit;
        let audit = fa.enabled.unwrap_or(true).then(|| {
            let mut log = audit::AuditConfig::new(
                fa.dir.clone().unwrap_or_else(|| home.join("audit")),
                fa.signing_key
                    .clone()
                    .unwrap_or_else(|| home.join("audit.key")),
            );
            if let Some(n) = fa.checkpoint_every {
                log.checkpoint_every = n;
            }
            if let Some(secs) = fa.checkpoint_secs {
                log.checkpoint_interval = Duration::from_secs(secs);
            }
            if let Some(mb) = fa.max_file_mb {
                log.max_file_bytes = mb << 20;
            }
            AuditSettings {
                log,
                record_text: fa.record_text.unwrap_or(false),
            }
        });
        let pull = pull_settings(&file.pull)?;
        let peers = peer_settings(&file.peers, serve)?;
        let store_key = key_source(&file.store)?;
        let config = Config {
            peers,
            store_key,
            home,
            pull,
            bundles_require_signature: file.bundles.require_signature.unwrap_or(false),
            s3: crate::aws::s3_options(file.s3.endpoint.clone(), file.s3.region.clone())?,
            pip,
            engine: engine_config,
            seed: engine.seed.or(fe.seed),
            server,
            jwt_issuers: file.auth.jwt,
            model_attrs: file
                .models
                .into_iter()
                .map(|(name, m)| (name, m.attributes))
                .collect(),
            audit,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let e = &self.engine;
        if e.threads == 0 || e.threads > 1024 {
            bail!("threads must be between 1 and 1024, not {}", e.threads);
        }
        if let Some(ctx) = e.ctx_size {
            if !(16..=1 << 20).contains(&ctx) {
                bail!("ctx-size must be between 16 and 1048576 tokens, not {ctx}");
            }
        }
        if e.max_running == 0 || e.max_running > 256 {
            bail!(
                "max-running must be between 1 and 256, not {}",
                e.max_running
            );
        }
        if let Some(kv) = e.kv_size {
            if !(16..=1 << 24).contains(&kv) {
                bail!("kv-size must be between 16 and 16777216 tokens, not {kv}");
            }
        }
        if e.prefix_cache_size.is_some_and(|c| c > 1 << 24) {
            bail!("prefix-cache-size must be at most 16777216 tokens");
        }
        if e.max_queue > 1 << 20 {
            bail!("max-queue must be at most 1048576, not {}", e.max_queue);
        }
        if e.step_tokens <= e.max_running || e.step_tokens > 1 << 16 {
            bail!(
                "step-tokens must be more than max-running ({}) and at most 65536, not {}",
                e.max_running,
                e.step_tokens
            );
        }
        if let Some(a) = &self.audit {
            if a.log.checkpoint_every == 0 || a.log.checkpoint_interval.is_zero() {
                bail!("audit.checkpoint_every and audit.checkpoint_secs must be at least 1");
            }
            if a.log.max_file_bytes < 1 << 20 {
                bail!("audit.max_file_mb must be at least 1");
            }
        }
        if !(1024..=1 << 30).contains(&self.server.max_body_bytes) {
            bail!("max-body-bytes must be between 1024 and 1073741824");
        }
        Ok(())
    }
}

/// Three quarters of the machine's memory (8 GiB where it cannot be read).
fn default_memory_budget() -> u64 {
    engine::machine_memory().map_or(8 << 30, |bytes| bytes / 4 * 3)
}

/// The models to serve: the flags' (or `HEARTH_MODEL`'s) if any, else the
/// file's, else the default model. A name given twice is an error: it
/// would load the model twice.
fn served_models(flags: Option<Vec<String>>, file: Option<OneOrMany>) -> Result<Vec<String>> {
    let models = match (flags.filter(|f| !f.is_empty()), file) {
        (Some(flags), _) => flags,
        (None, Some(OneOrMany::One(one))) => vec![one],
        (None, Some(OneOrMany::Many(many))) => many,
        (None, None) => vec![store::DEFAULT_MODEL.to_string()],
    };
    if models.is_empty() || models.iter().any(|m| m.trim().is_empty()) {
        bail!("`model` must name at least one model, and no empty name");
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = models.iter().find(|m| !seen.insert(m.as_str())) {
        bail!("model `{twice}` is given twice");
    }
    Ok(models)
}

/// Flags over the file, whole: a flag's certificate never pairs with the
/// file's key.
fn tls_files(serve: Option<&ServeArgs>, file: &FileTls) -> Result<Option<server::TlsFiles>> {
    let flags = serve.and_then(|s| s.tls_cert.clone().zip(s.tls_key.clone()));
    let (cert, key) = match (flags, &file.cert, &file.key) {
        (Some(pair), _, _) => pair,
        (None, Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, None, None) => {
            if serve.and_then(|s| s.tls_client_ca.as_ref()).is_some() || file.client_ca.is_some() {
                bail!("a TLS client CA needs a server certificate and key (tls.cert, tls.key)");
            }
            return Ok(None);
        }
        _ => bail!("tls.cert and tls.key go together"),
    };
    let client_ca = serve
        .and_then(|s| s.tls_client_ca.clone())
        .or_else(|| file.client_ca.clone());
    Ok(Some(server::TlsFiles {
        cert,
        key,
        client_cert_optional: client_ca.is_some() && file.client_cert_optional.unwrap_or(false),
        client_ca,
    }))
}

/// `[pull]` with the hub's own variables over it. Reading `HF_ENDPOINT`
/// and `HF_TOKEN` here (not in `store`) keeps the environment in the binary.
fn pull_settings(file: &FilePull) -> Result<PullSettings> {
    let defaults = transfer::Options::default();
    let connections = file.connections.unwrap_or(defaults.connections);
    if !(1..=64).contains(&connections) {
        bail!("[pull] connections must be between 1 and 64, not {connections}");
    }
    let chunk_mb = file.chunk_mb.unwrap_or(defaults.chunk_size >> 20);
    if !(1..=4096).contains(&chunk_mb) {
        bail!("[pull] chunk_mb must be between 1 and 4096, not {chunk_mb}");
    }
    let stall = file.stall_secs.unwrap_or(30);
    if stall == 0 {
        bail!("[pull] stall_secs must be at least 1");
    }
    let token = secret(
        "HF_TOKEN",
        file.hf_token_file.as_deref(),
        "[pull] hf_token_file",
    )?;
    let hf_endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(|| file.hf_endpoint.clone())
        .unwrap_or_else(|| store::DEFAULT_HF_ENDPOINT.to_string());
    if !(hf_endpoint.starts_with("https://") || hf_endpoint.starts_with("http://")) {
        bail!("the hub endpoint `{hf_endpoint}` is not an http(s) URL");
    }
    Ok(PullSettings {
        transfer: transfer::Options {
            connections,
            chunk_size: chunk_mb << 20,
            retries: file.retries.unwrap_or(defaults.retries),
            limit_rate: file.limit_rate.as_deref().map(parse_rate).transpose()?,
            ..defaults
        },
        http: transfer::HttpOptions {
            stall: Duration::from_secs(stall),
            extra_ca: file.ca_file.iter().cloned().collect(),
            token,
            identity: None,
        },
        hf_endpoint,
    })
}

fn key_source(file: &FileStore) -> Result<KeySource> {
    let env = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
    // The environment overrides the file, whichever of the two it names.
    if let Some(path) = env("HEARTH_STORE_KEY_FILE") {
        return Ok(KeySource::File(PathBuf::from(path)));
    }
    if let Some(command) = env("HEARTH_STORE_KEY_COMMAND") {
        return Ok(KeySource::Command(command));
    }
    Ok(match (&file.key_file, &file.key_command) {
        (Some(_), Some(_)) => bail!("[store] has both key_file and key_command; give one"),
        (Some(path), None) => KeySource::File(path.clone()),
        (None, Some(command)) => KeySource::Command(command.clone()),
        (None, None) => KeySource::None,
    })
}

/// A token from the environment variable `var`, else from the file the
/// configuration names (trimmed), else none.
pub(crate) fn secret(var: &str, file: Option<&Path>, what: &str) -> Result<Option<String>> {
    if let Some(value) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        return Ok(Some(value));
    }
    file.map(|path| {
        std::fs::read_to_string(path)
            .map(|text| text.trim().to_string())
            .with_context(|| format!("cannot read {what} {}", path.display()))
    })
    .transpose()
}

/// `500000`, `800K`, `10M`, `1G` (powers of 1024) as bytes per second.
pub fn parse_rate(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches("B") {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => bail!("`{text}` is not a rate: bytes per second, or a number with K, M or G"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("`{text}` is not a rate"))?;
    if n == 0 {
        bail!("a rate limit must be above zero");
    }
    Ok(n << shift)
}

fn default_home() -> Result<PathBuf> {
    let home =
        std::env::var_os("HOME").context("HOME is not set; pass --home or set HEARTH_HOME")?;
    Ok(PathBuf::from(home).join(".hearth"))
}

/// An explicit `--config` must exist; the default one is optional.
fn read_file(explicit: Option<&Path>, home: &Path) -> Result<FileConfig> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => (home.join("config.toml"), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileConfig::default())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    toml::from_str(&text).with_context(|| format!("invalid configuration in {}", path.display()))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
