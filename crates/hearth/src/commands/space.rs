//! `hearth du` and `hearth gc`: the store's disk use, each blob counted
//! once, and removing what no model needs; `hearth export` and `hearth
//! import`: moving models between stores as signed bundles.

use std::path::Path;

use anyhow::{Context, Result};

use super::models::human_bytes;
use super::open_store;
use crate::config::Config;

pub fn du(config: &Config, json: bool) -> Result<()> {
    let usage = open_store(config)?.usage()?;
    if json {
        let models: Vec<_> = usage
            .models
            .iter()
            .map(|m| serde_json::json!({"name": m.name, "size": m.size, "sha256": m.sha256, "shared_with": m.shared_with}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "models": models, "model_bytes": usage.model_bytes, "disk_bytes": usage.blob_bytes,
                "partial_bytes": usage.partial_bytes, "partial_files": usage.partial_files,
            })
        );
        return Ok(());
    }
    println!(
        "{:<24} {:>10}  {:<14} SHARED WITH",
        "NAME", "SIZE", "SHA-256"
    );
    for m in &usage.models {
        println!(
            "{:<24} {:>10}  {:<14} {}",
            m.name,
            human_bytes(m.size),
            &m.sha256[..12.min(m.sha256.len())],
            m.shared_with.join(", ")
        );
    }
    println!(
        "{} model(s), {} on disk ({} saved by sharing); partial pulls: {} file(s), {}",
        usage.models.len(),
        human_bytes(usage.blob_bytes),
        human_bytes(usage.model_bytes.saturating_sub(usage.blob_bytes)),
        usage.partial_files,
        human_bytes(usage.partial_bytes)
    );
    Ok(())
}

pub fn gc(config: &Config, all_partials: bool) -> Result<()> {
    let collected = open_store(config)?.gc(all_partials)?;
    for (path, bytes) in &collected.removed {
        println!("removed {} ({})", path.display(), human_bytes(*bytes));
    }
    println!(
        "freed {}{}",
        human_bytes(collected.bytes()),
        if collected.kept_partials > 0 {
            format!(
                "; kept {} partial pull(s) (running, or under a day old: --all-partials drops those not running)",
                collected.kept_partials
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

pub fn export(
    config: &Config,
    models: &[String],
    out: &Path,
    sign: Option<&Path>,
    plaintext: bool,
) -> Result<()> {
    let store = open_store(config)?;
    let done = bundle::export(
        &store,
        models,
        out,
        sign,
        plaintext,
        &crate::progress::Bar::new(),
    )?;
    println!(
        "wrote {}: {} model(s) ({}), {} blob(s), {}{}",
        out.display(),
        done.models.len(),
        done.models.join(", "),
        done.blobs,
        human_bytes(done.bytes),
        done.signed_by
            .map_or_else(String::new, |k| format!(", signed by key {k}"))
    );
    Ok(())
}

pub fn import(config: &Config, bundle_path: &Path, require_signature: bool) -> Result<()> {
    let store = open_store(config)?;
    let trust = bundle::Trust::from_dir(
        &config.home.join("trusted_keys"),
        require_signature || config.bundles_require_signature,
    )?;
    let done = bundle::import(&store, bundle_path, &trust, &crate::progress::Bar::new())?;
    if let Some(log) = super::audit_log::open(config)? {
        for name in &done.imported {
            let sha256 = store.get(name)?.map(|m| m.manifest.digest());
            log.record(audit::Event::ModelPull {
                model: name.clone(),
                sha256,
            });
        }
    }
    for name in &done.imported {
        println!("imported {name}");
    }
    for name in &done.skipped {
        println!("{name}: already stored with the same bytes");
    }
    println!(
        "{}",
        done.signed_by.map_or_else(
            || "the bundle was not signed by a trusted key".to_string(),
            |k| format!("signed by trusted key {k}")
        )
    );
    Ok(())
}

/// `hearth store keygen|encrypt|decrypt`.
pub fn store(config: &Config, command: crate::cli::StoreCommand) -> Result<()> {
    use crate::cli::StoreCommand;
    match command {
        StoreCommand::Keygen { file } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = vault::Key::generate()?;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("cannot create {}", file.display()))?;
            writeln!(out, "{key}")?;
            out.sync_all()?;
            let id = vault::Key::from_bytes(key.as_bytes())?.id();
            println!(
                "wrote a new key to {} (key id {id}); keep a copy where the store is not",
                file.display()
            );
        }
        StoreCommand::Encrypt => {
            let store = open_store(config)?;
            anyhow::ensure!(
                store.key().is_some(),
                "no key is configured: set key_file or key_command under [store] (or HEARTH_STORE_KEY_FILE); `hearth store keygen FILE` makes one"
            );
            let done = store.encrypt(&crate::progress::Bar::new())?;
            let id = store.key().map(vault::Key::id).unwrap_or_default();
            println!(
                "encrypted {} file(s), {} (key id {id}); the store stays encrypted, new pulls too",
                done.files,
                human_bytes(done.bytes)
            );
        }
        StoreCommand::Decrypt => {
            let store = open_store(config)?;
            let done = store.decrypt(&crate::progress::Bar::new())?;
            println!(
                "decrypted {} file(s), {}; the store is plain",
                done.files,
                human_bytes(done.bytes)
            );
        }
    }
    Ok(())
}
