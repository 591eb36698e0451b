//! `pull`, `list`, `rm` and `show`: managing and describing models.

use anyhow::{Context, Result};
use serde::Serialize;
use types::ModelResolver;

use super::{open_store, pull_options};
use crate::config::Config;
use crate::progress::Bar;

pub fn pull(config: &Config, args: &crate::cli::PullArgs) -> Result<()> {
    let store = open_store(config)?;
    let mut options = pull_options(config, args.force);
    if let Some(n) = args.connections {
        anyhow::ensure!(
            (1..=64).contains(&n),
            "--connections must be between 1 and 64, not {n}"
        );
        options.transfer.connections = n;
    }
    if let Some(rate) = &args.limit_rate {
        options.transfer.limit_rate = Some(crate::config::parse_rate(rate)?);
    }
    let located = store::is_location(&args.model);
    anyhow::ensure!(
        located || (args.name.is_none() && args.sha256.is_none()),
        "--name and --sha256 apply to pulls from a location (https://, hf://, a file); `{}` is a catalog name",
        args.model
    );
    let progress: Box<dyn store::Progress> = if args.json {
        options.show_pip_output = false;
        Box::new(crate::progress::JsonLines::new())
    } else {
        Box::new(Bar::new())
    };
    let from_peers = super::peers::pull(&config.peers, &store, args, &options, progress.as_ref())?;
    let stored = if let Some(stored) = from_peers {
        stored
    } else if store::location_kind(&args.model) == store::LocationKind::Bucket {
        anyhow::ensure!(
            args.sha256.is_none(),
            "--sha256 does not apply to s3:// pulls: a pushed model's manifest names every chunk's digest"
        );
        let (model, reuse) = bucket::pull_counted(
            &store,
            &args.model,
            args.name.as_deref(),
            &config.s3,
            &options,
            progress.as_ref(),
        )?;
        if let Some(r) = reuse {
            eprintln!(
                "reused {} bytes already stored; transferred {} bytes",
                r.reused_bytes, r.transferred_bytes
            );
        }
        model
    } else if located {
        let wanted = store::Wanted {
            name: args.name.clone(),
            sha256: args.sha256.clone(),
        };
        store.pull_location(&args.model, &wanted, &options, progress.as_ref())?
    } else {
        store.pull(&args.model, &options, progress.as_ref())?
    };
    let m = &stored.manifest;
    if let Some(log) = super::audit_log::open(config)? {
        log.record(audit::Event::ModelPull {
            model: m.name.clone(),
            sha256: Some(m.digest()),
        });
    }
    let files = m.parts.len() + 1;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"status": "success", "model": m.name, "size": m.total_size(),
                               "sha256": m.digest(), "files": files, "path": stored.path})
        );
    } else {
        println!(
            "{}: {} bytes{}, sha256 {} ({})",
            m.name,
            m.total_size(),
            if files > 1 {
                format!(" in {files} files")
            } else {
                String::new()
            },
            m.digest(),
            stored.path.display()
        );
    }
    Ok(())
}

pub fn list(config: &Config, json: bool) -> Result<()> {
    let models = open_store(config)?.list()?;
    if json {
        let manifests: Vec<_> = models.iter().map(|m| &m.manifest).collect();
        println!("{}", serde_json::to_string_pretty(&manifests)?);
        return Ok(());
    }
    if models.is_empty() {
        println!(
            "No models stored yet; try `hearth pull {}`.",
            store::DEFAULT_MODEL
        );
        return Ok(());
    }
    println!("{:<20} {:>10}  {:<14} SOURCE", "NAME", "SIZE", "SHA-256");
    for m in &models {
        let m = &m.manifest;
        println!(
            "{:<20} {:>10}  {:<14} {}",
            m.name,
            human_bytes(m.total_size()),
            &m.digest()[..12],
            m.source
        );
    }
    Ok(())
}

pub fn rm(config: &Config, model: &str) -> Result<()> {
    let removed = open_store(config)?.remove(model)?;
    if let Some(log) = super::audit_log::open(config)? {
        log.record(audit::Event::ModelDelete {
            model: removed.manifest.name.clone(),
        });
    }
    println!(
        "removed {} ({})",
        removed.manifest.name,
        human_bytes(removed.manifest.total_size())
    );
    Ok(())
}

/// `hearth verify`: every chunk of the named (or every) stored model
/// against its manifest; fails naming each bad chunk.
pub fn repair(config: &Config, model: &str) -> Result<()> {
    let store = open_store(config)?;
    let options = pull_options(config, false);
    let from_bucket =
        store::location_kind(&store.stored(model)?.manifest.source) == store::LocationKind::Bucket;
    let repaired = if from_bucket {
        bucket::repair(&store, model, &config.s3, &options, &Bar::new())?
    } else {
        store.repair(model, &options, &Bar::new())?
    };
    match repaired {
        store::Repaired::Intact => println!("{model}: ok, nothing to repair"),
        store::Repaired::Fixed {
            chunks,
            bytes,
            from,
        } => {
            for c in &chunks {
                println!(
                    "{model}: fetched again chunk {} of {} of {} (offset {}, {} bytes)",
                    c.index,
                    c.of,
                    c.path.display(),
                    c.chunk.offset,
                    c.chunk.length
                );
            }
            println!(
                "{model}: repaired {} chunk(s), {bytes} bytes from {from}; every chunk matches",
                chunks.len()
            );
            if let Some(log) = super::audit_log::open(config)? {
                let name = store
                    .get(store::catalog::find(model).map_or(model, |e| e.name))?
                    .map_or_else(|| model.to_string(), |m| m.manifest.name);
                log.record(audit::Event::ModelRepair {
                    model: name,
                    chunk_offsets: chunks.iter().map(|c| c.chunk.offset).collect(),
                    bytes,
                    source: from,
                });
            }
        }
    }
    Ok(())
}

pub fn verify(config: &Config, model: Option<&str>) -> Result<()> {
    let store = open_store(config)?;
    let names: Vec<String> = match model {
        Some(name) => vec![name.to_string()],
        None => store.list()?.into_iter().map(|m| m.manifest.name).collect(),
    };
    let mut damaged = Vec::new();
    for name in &names {
        let stored = store
            .get(store::catalog::find(name).map_or(name.as_str(), |e| e.name))?
            .with_context(|| format!("model `{name}` is not in the store"))?;
        let offsets = match store.verify(name, &Bar::new())? {
            store::Verified::Intact => {
                let chunks: usize = stored.files().iter().map(|(_, f)| f.chunks.len()).sum();
                println!("{name}: ok ({chunks} chunks)");
                continue;
            }
            store::Verified::IntactChunksRecorded => {
                println!("{name}: ok (chunk list recorded in its manifest)");
                continue;
            }
            store::Verified::BadChunks(bad) => {
                for chunk in &bad {
                    println!("{name}: {chunk}");
                }
                bad.iter().map(|c| c.chunk.offset).collect()
            }
            store::Verified::Mismatch {
                path,
                size,
                sha256,
                expected_size,
                expected_sha256,
            } => {
                println!(
                    "{name}: {} is {size} bytes with SHA-256 {sha256}; its manifest says {expected_size} bytes, {expected_sha256}",
                    path.display()
                );
                Vec::new()
            }
        };
        if let Some(log) = super::audit_log::open(config)? {
            log.record(audit::Event::ModelVerifyFailed {
                model: stored.manifest.name.clone(),
                bad_chunk_offsets: offsets,
            });
        }
        damaged.push(name.clone());
    }
    if !damaged.is_empty() {
        anyhow::bail!(
            "damaged: {}; `hearth repair NAME` fetches only the bad chunks (or `hearth pull --force NAME` all of it)",
            damaged.join(", ")
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct Description {
    name: String,
    path: String,
    architecture: Option<String>,
    model_name: Option<String>,
    parameters: u64,
    quantization: Option<String>,
    context_length: Option<u64>,
    vocab_size: Option<u64>,
    chat_template: bool,
    /// How conversations are rendered: the model's Jinja template, or a fallback.
    chat_format: String,
    file_size: u64,
    /// 1, or the number of files of a split set.
    files: usize,
    sha256: String,
    gguf_version: u32,
    tensors: usize,
    /// What a model made on this node was made from (`hearth quantize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    lineage: Option<store::Lineage>,
}

pub fn show(config: &Config, reference: &str, json: bool) -> Result<()> {
    let store = open_store(config)?;
    let model = store.resolve(reference)?;
    // An encrypted model's header is read from its plaintext in memory.
    let readable = store::readable(&model.path, store.key())?;
    let headers = gguf::split::read_set(readable.path())?;
    let header = &headers[0];
    let sha256 = match model.sha256 {
        Some(sha) => sha,
        None => store::Store::hash_file(&model.path, &Bar::new())
            .with_context(|| format!("cannot hash {}", model.path.display()))?,
    };
    let lineage = store
        .get(&model.name)
        .ok()
        .flatten()
        .and_then(|stored| stored.manifest.lineage);
    let d = Description {
        name: model.name,
        path: model.path.display().to_string(),
        architecture: header.architecture().map(str::to_string),
        model_name: header.model_name().map(str::to_string),
        parameters: headers.iter().map(gguf::Gguf::parameter_count).sum(),
        quantization: header.quantization(),
        context_length: header.context_length(),
        vocab_size: header.vocab_size(),
        chat_template: header.chat_template().is_some(),
        chat_format: chat_format(header.chat_template(), header.architecture()),
        file_size: headers.iter().map(|h| h.file_size).sum(),
        files: headers.len(),
        sha256,
        gguf_version: header.version,
        tensors: headers.iter().map(|h| h.tensors.len()).sum(),
        lineage,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    println!("name            {}", d.name);
    println!("path            {}", d.path);
    println!("architecture    {}", or_unknown(d.architecture));
    if let Some(n) = d.model_name {
        println!("model           {n}");
    }
    println!(
        "parameters      {} ({})",
        human_count(d.parameters),
        d.parameters
    );
    println!("quantization    {}", or_unknown(d.quantization));
    println!(
        "context length  {}",
        or_unknown(d.context_length.map(|c| c.to_string()))
    );
    println!(
        "vocabulary      {}",
        or_unknown(d.vocab_size.map(|c| c.to_string()))
    );
    println!("chat format     {}", d.chat_format);
    println!(
        "file size       {} ({} bytes{})",
        human_bytes(d.file_size),
        d.file_size,
        if d.files > 1 {
            format!(" in a split set of {} files", d.files)
        } else {
            String::new()
        }
    );
    println!("sha256          {}", d.sha256);
    println!("gguf            v{}, {} tensors", d.gguf_version, d.tensors);
    if let Some(l) = &d.lineage {
        println!(
            "made from       {} (sha256 {}) as {}, by {}",
            l.from, l.from_sha256, l.weight_type, l.method
        );
    }
    Ok(())
}

/// Which renderer `serve` will use for this model, decided as the engine
/// decides it (minus llama.cpp's matcher, which needs the model loaded).
fn chat_format(template: Option<&str>, architecture: Option<&str>) -> String {
    match template {
        None => match architecture.and_then(chat::builtin_template_for) {
            Some(name) => format!(
                "llama.cpp's built-in `{name}` template, for its architecture (the model has no chat template)"
            ),
            None => "ChatML (the model has no chat template)".into(),
        },
        Some(source) => match chat::ChatTemplate::probe(source, "", "") {
            Ok(t) => format!(
                "the model's Jinja template (tool calls: {}, tools {})",
                t.tool_format().as_str(),
                if t.renders_tools() {
                    "rendered by the template"
                } else {
                    "described in the system prompt"
                }
            ),
            Err(e) => format!("llama.cpp's built-in matcher, else ChatML (the model's template does not run as Jinja: {e})"),
        },
    }
}

pub(super) fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(98_362_432), "93.8 MiB");
        assert_eq!(human_count(134_515_008), "134.5M");
        assert_eq!(human_count(7_241_732_096), "7.24B");
    }
}
