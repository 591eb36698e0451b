//! One module per command group; this one dispatches and holds what they share.

mod audit_log;
mod bench;
mod directory;
mod embed;
mod fleet;
mod footprint;
mod generate;
mod keys;
mod models;
mod objects;
mod peers;
mod planning;
mod policy;
mod quality;
mod reload;
mod serve;
mod space;
mod usage;
mod verify;

use std::io::IsTerminal;

use anyhow::{Context, Result};
use engine::Engine;
use store::{PullOptions, Store};
use types::{ResolvedModel, SamplingParams};

use crate::cli::{Cli, Command, EngineArgs, SamplingArgs};
use crate::config::Config;
use crate::progress::Bar;

pub fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    let none = EngineArgs::default();
    match cli.command {
        Command::Pull(args) => models::pull(&Config::load(global, &none, None)?, &args),
        Command::List { json } => models::list(&Config::load(global, &none, None)?, json),
        Command::Rm { model } => models::rm(&Config::load(global, &none, None)?, &model),
        Command::Push {
            model,
            to,
            limit_rate,
            plaintext,
        } => objects::push(
            &Config::load(global, &none, None)?,
            &model,
            &to,
            limit_rate.as_deref(),
            plaintext,
        ),
        Command::Sync {
            from,
            watch,
            limit_rate,
        } => objects::sync(
            &Config::load(global, &none, None)?,
            &from,
            watch,
            limit_rate.as_deref(),
        ),
        Command::Export {
            models,
            output,
            sign,
            plaintext,
        } => space::export(
            &Config::load(global, &none, None)?,
            &models,
            &output,
            sign.as_deref(),
            plaintext,
        ),
        Command::Import {
            bundle,
            require_signature,
        } => space::import(
            &Config::load(global, &none, None)?,
            &bundle,
            require_signature,
        ),
        Command::Du { json } => space::du(&Config::load(global, &none, None)?, json),
        Command::Gc { all_partials } => {
            space::gc(&Config::load(global, &none, None)?, all_partials)
        }
        Command::Repair { model } => models::repair(&Config::load(global, &none, None)?, &model),
        Command::Verify { model } => {
            models::verify(&Config::load(global, &none, None)?, model.as_deref())
        }
        Command::Show { model, json } => {
            models::show(&Config::load(global, &none, None)?, &model, json)
        }
        Command::Run(args) => generate::run(&Config::load(global, &args.engine, None)?, &args),
        Command::Chat(args) => generate::chat(&Config::load(global, &args.engine, None)?, &args),
        Command::Embed(args) => embed::embed(&Config::load(global, &args.engine, None)?, &args),
        Command::Serve(args) => serve::serve(&Config::load(global, &args.engine, Some(&args))?),
        Command::Bench(args) => bench::bench(&Config::load(global, &args.engine, None)?, &args),
        Command::Plan(args) => planning::plan(&Config::load(global, &args.engine, None)?, &args),
        Command::Quantize(args) => {
            quality::quantize(&Config::load(global, &args.engine, None)?, &args)
        }
        Command::Eval(args) => quality::eval(&Config::load(global, &args.engine, None)?, &args),
        Command::VerifyDeploy(args) => {
            verify::verify_deploy(&Config::load(global, &args.engine, None)?, &args)
        }
        Command::Keys(command) => keys::keys(&Config::load(global, &none, None)?, command),
        Command::Policy(command) => policy::policy(&Config::load(global, &none, None)?, command),
        Command::Audit(command) => audit_log::audit(&Config::load(global, &none, None)?, command),
        Command::Store(command) => space::store(&Config::load(global, &none, None)?, command),
    }
}

/// The store, with its key when one is configured (an encrypted store's
/// files are read and written with it).
fn open_store(config: &Config) -> Result<Store> {
    let store = Store::open(&config.home)
        .with_context(|| format!("cannot open the store in {}", config.home.display()))?;
    Ok(store.with_key(config.store_key()?))
}

fn pull_options(config: &Config, force: bool) -> PullOptions {
    PullOptions {
        pip: config.pip.clone(),
        show_pip_output: std::io::stderr().is_terminal(),
        force,
        transfer: config.pull.transfer.clone(),
        http: config.pull.http.clone(),
        hf_endpoint: config.pull.hf_endpoint.clone(),
    }
}

/// Resolves a model reference, pulling catalog models on first use.
fn resolve(config: &Config, reference: &str) -> Result<ResolvedModel> {
    let store = open_store(config)?;
    Ok(store.resolve_or_pull(reference, &pull_options(config, false), &Bar::new())?)
}

/// Resolves and loads a model for generation.
fn load(config: &Config, reference: &str) -> Result<(ResolvedModel, Engine)> {
    let model = resolve(config, reference)?;
    // An encrypted model's plaintext reaches llama.cpp in memory only.
    let readable = store::readable(&model.path, config.store_key()?.as_deref())?;
    let engine = load_engine(readable, &config.engine)?;
    Ok((model, engine))
}

/// An engine for `readable`'s weights. A decrypted model's plaintext is
/// in memory already: llama.cpp copies it into its own buffers instead of
/// mapping the in-memory file, which decodes faster (mapping it cost about
/// 7% of decode here, and the copy decodes about 7% faster than the
/// mapped plain file: docs/benchmarks.md), and the in-memory file is let
/// go once loaded, so the plaintext is held once. The copy holds it twice
/// while loading, so a model that does not fit twice in the memory now
/// available is mapped instead.
pub(crate) fn load_engine(
    readable: store::Readable,
    config: &engine::EngineConfig,
) -> Result<Engine, engine::EngineError> {
    let copy = readable.in_memory()
        && {
            let needed = readable.in_memory_bytes().saturating_mul(2);
            let fits = available_memory().is_some_and(|free| free > needed);
            if !fits {
                tracing::warn!(needed_bytes = needed, "too little memory to copy the decrypted model; mapping it (decode about 7% slower)");
            }
            fits
        };
    let config = engine::EngineConfig {
        use_mmap: config.use_mmap && !copy,
        ..config.clone()
    };
    Engine::load(readable.path(), &config)
}

/// The kernel's estimate of memory available without swapping
/// (`MemAvailable`), in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Sampling from flags on top of the defaults and the configured seed.
fn sampling(args: &SamplingArgs, seed: Option<u32>) -> SamplingParams {
    let d = SamplingParams::default();
    SamplingParams {
        temperature: args.temperature.unwrap_or(d.temperature),
        top_k: args.top_k.unwrap_or(d.top_k),
        top_p: args.top_p.unwrap_or(d.top_p),
        min_p: args.min_p.unwrap_or(d.min_p),
        seed,
        repeat_penalty: args.repeat_penalty.unwrap_or(d.repeat_penalty),
        repeat_last_n: d.repeat_last_n,
        presence_penalty: args.presence_penalty.unwrap_or(d.presence_penalty),
        frequency_penalty: args.frequency_penalty.unwrap_or(d.frequency_penalty),
        logit_bias: Vec::new(),
    }
}
