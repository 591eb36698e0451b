//! `quantize` and `eval`: making a smaller model with llama.cpp's quantizer,
//! stored with its lineage, and measuring what it lost as perplexity.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use engine::{EngineConfig, QuantizeOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use types::ResolvedModel;

use super::{open_store, resolve};
use crate::cli::{EvalArgs, EvalText, QuantizeArgs};
use crate::config::Config;

/// The shipped evaluation text: the Declaration of Independence and the
/// Constitution of the United States with its amendments, which are in the
/// public domain.
pub(crate) const DEFAULT_TEXT: &str = include_str!("../../../assets/founding-documents.txt");

mod report;

pub fn quantize(config: &Config, args: &QuantizeArgs) -> Result<()> {
    if args.report {
        return report::report(config, args);
    }
    let weight_type = engine::quantize_type(args.weight_type.as_deref().unwrap_or_default())?;
    let source = resolve(config, &args.model)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", source.name, weight_type.to_ascii_lowercase()));
    let from_sha256 = source_digest(&source)?;
    let stored = quantize_into_store(
        config,
        &source,
        &from_sha256,
        weight_type,
        &name,
        args.allow_requantize,
    )?;
    let size = stored.manifest.size;
    println!(
        "stored {name}: {weight_type}, {:.1} MB (from {} at {:.1} MB)",
        size as f64 / 1e6,
        source.name,
        source.size as f64 / 1e6
    );
    Ok(())
}

/// Quantizes `source` to `weight_type` under `tmp/`, with a bar following
/// the output's growth, and stores the result as `name`.
pub(crate) fn quantize_into_store(
    config: &Config,
    source: &ResolvedModel,
    from_sha256: &str,
    weight_type: &str,
    name: &str,
    allow_requantize: bool,
) -> Result<store::StoredModel> {
    // Checked first: a name the store refuses would waste the quantization.
    store::check_model_name(name)?;
    let store = open_store(config)?;
    let output = quantize_to_scratch(config, &store, source, weight_type, name, allow_requantize)?;
    let lineage = store::Lineage {
        from: source.name.clone(),
        from_sha256: from_sha256.to_string(),
        weight_type: weight_type.to_string(),
        method: format!(
            "llama.cpp llama_model_quantize{}",
            if allow_requantize {
                ", requantize allowed"
            } else {
                ""
            }
        ),
    };
    let origin = format!(
        "quantize://{}@sha256:{}#{weight_type}",
        source.name,
        from_sha256.get(..12).unwrap_or(from_sha256)
    );
    Ok(store.adopt(name, output.path(), &origin, lineage)?)
}

/// A quantized model outside the store: in memory when the store is
/// encrypted (its plaintext never reaches the disk), else a scratch file
/// removed when this is dropped.
pub(crate) struct Quantized {
    path: std::path::PathBuf,
    in_memory: Option<vault::InMemory>,
}

impl Quantized {
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Quantized {
    fn drop(&mut self) {
        if self.in_memory.is_none() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Quantizes `source` to `weight_type` outside the store (see
/// [`Quantized`]), with a bar following the output's growth; `label`
/// names the scratch file.
pub(crate) fn quantize_to_scratch(
    config: &Config,
    store: &store::Store,
    source: &ResolvedModel,
    weight_type: &str,
    label: &str,
    allow_requantize: bool,
) -> Result<Quantized> {
    let key = config.store_key()?;
    let readable = store::readable(&source.path, key.as_deref())?;
    let header = store::headers(&source.path, key.as_deref())?.swap_remove(0);
    // Expected output size, for the bar only: every weight at the type's
    // typical bits per weight.
    let params: u64 = header.tensors.iter().map(|t| t.n_elements).sum();
    let bits = plan::model::bits_per_weight(weight_type).unwrap_or(8.0);
    let expected = (params as f64 * bits / 8.0) as u64;
    let in_memory = match key.is_some() && store.encrypted_with()?.is_some() {
        true => Some(vault::empty_in_memory(&format!("quantize-{label}"))?),
        false => None,
    };
    let output = Quantized {
        path: match &in_memory {
            Some(memory) => memory.path(),
            None => store.scratch_path(&format!("quantize-{}-{label}.gguf", std::process::id())),
        },
        in_memory,
    };
    let _ = std::fs::remove_file(output.path());
    let options = QuantizeOptions {
        weight_type: weight_type.to_string(),
        threads: config.engine.threads,
        allow_requantize,
    };
    let bar = bytes_bar(
        &format!("quantizing {} to {weight_type}", source.name),
        expected,
    );
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let written = std::fs::metadata(output.path()).map_or(0, |m| m.len());
                bar.set_position(written.min(expected));
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        let result = engine::quantize(readable.path(), output.path(), &options);
        done.store(true, Ordering::Relaxed);
        result
    });
    bar.finish_and_clear();
    // The error names the stored file; say which model it is.
    result.with_context(|| format!("cannot quantize {}", source.name))?;
    Ok(output)
}

/// The source's SHA-256: the store's record, or the file hashed once (a
/// path outside the store).
pub(crate) fn source_digest(source: &ResolvedModel) -> Result<String> {
    match &source.sha256 {
        Some(sha) => Ok(sha.clone()),
        None => store::Store::hash_file(&source.path, &crate::progress::Bar::new())
            .with_context(|| format!("cannot hash {}", source.path.display())),
    }
}

fn bytes_bar(message: &str, total: u64) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/~{total_bytes} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

#[derive(Serialize)]
struct EvalReport<'a> {
    model: &'a str,
    sha256: Option<&'a str>,
    text: String,
    #[serde(flatten)]
    result: &'a engine::Perplexity,
}

pub fn eval(config: &Config, args: &EvalArgs) -> Result<()> {
    let reference = args.model.as_deref().unwrap_or(store::DEFAULT_MODEL);
    let model = resolve(config, reference)?;
    let (text, label) = eval_text(&args.text)?;
    let result = perplexity(config, &model, &text, &args.text)?;
    if args.json {
        let report = EvalReport {
            model: &model.name,
            sha256: model.sha256.as_deref(),
            text: label,
            result: &result,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: perplexity {:.4} ± {:.4} over {} tokens ({} windows of {}) of {label}, {:.1} s",
            model.name,
            result.perplexity,
            result.std_error,
            result.scored_tokens,
            result.windows,
            result.window,
            result.seconds
        );
    }
    Ok(())
}

/// The text to score and how to name it.
pub(crate) fn eval_text(args: &EvalText) -> Result<(String, String)> {
    match &args.text {
        Some(path) => Ok((
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the text {}", path.display()))?,
            path.display().to_string(),
        )),
        None => Ok((DEFAULT_TEXT.to_string(), "the shipped text".to_string())),
    }
}

/// Loads `model` in a small engine (perplexity makes its own context) and
/// scores `text`, with a bar over the windows.
pub(crate) fn perplexity(
    config: &Config,
    model: &ResolvedModel,
    text: &str,
    args: &EvalText,
) -> Result<engine::Perplexity> {
    let engine_config = EngineConfig {
        ctx_size: Some(256),
        kv_size: Some(256),
        max_running: 1,
        step_tokens: 256,
        prefix_cache: false,
        ..config.engine.clone()
    };
    let readable = store::readable(&model.path, config.store_key()?.as_deref())?;
    let engine = super::load_engine(readable, &engine_config)?;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "perplexity of {msg} [{bar:30}] {pos}/{len} windows ({eta} left) {prefix}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(model.name.clone());
    let result = engine.perplexity(
        text,
        args.window,
        args.windows,
        config.engine.threads,
        |done, total, ppl| {
            bar.set_length(u64::from(total));
            bar.set_position(u64::from(done));
            bar.set_prefix(format!("{ppl:.3}"));
        },
    );
    bar.finish_and_clear();
    Ok(result?)
}
