//! `push` and `sync`: models in object storage (the `bucket` crate).

use anyhow::Result;

use super::{open_store, pull_options};
use crate::config::Config;
use crate::progress::Bar;

/// `hearth push`: a stored model to object storage.
pub fn push(
    config: &Config,
    model: &str,
    to: &str,
    limit_rate: Option<&str>,
    plaintext: bool,
) -> Result<()> {
    let store = open_store(config)?;
    let rate = match limit_rate {
        Some(rate) => Some(crate::config::parse_rate(rate)?),
        None => config.pull.transfer.limit_rate,
    };
    let pushed = match bucket::push(&store, model, to, &config.s3, rate, plaintext, &Bar::new()) {
        Ok(pushed) => pushed,
        Err(bucket::BucketError::PushIncomplete { uploaded, cause }) => {
            // Bytes left this node before the push stopped: on the record
            // (a log that cannot open must not hide the push's own error).
            if let Ok(Some(log)) = super::audit_log::open(config) {
                log.record(audit::Event::ModelPushFailed {
                    model: uploaded.name.clone(),
                    destination: uploaded.manifest.clone(),
                    chunks_uploaded: uploaded.chunks_uploaded,
                    bytes_uploaded: uploaded.bytes_uploaded,
                    decrypted: uploaded.decrypted,
                    reason: cause.to_string(),
                });
            }
            return Err(bucket::BucketError::PushIncomplete { uploaded, cause }.into());
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(log) = super::audit_log::open(config)? {
        log.record(audit::Event::ModelPush {
            model: pushed.name.clone(),
            destination: pushed.manifest.clone(),
            bytes_uploaded: pushed.bytes_uploaded,
            decrypted: pushed.decrypted,
        });
    }
    println!(
        "{}: uploaded {} chunk(s), {} bytes; {} chunk(s), {} bytes, already there; manifest {}{}",
        pushed.name,
        pushed.chunks_uploaded,
        pushed.bytes_uploaded,
        pushed.chunks_reused,
        pushed.bytes_reused,
        pushed.manifest,
        if pushed.decrypted {
            " (decrypted from the encrypted store)"
        } else {
            ""
        }
    );
    Ok(())
}

/// `hearth sync`: pulls every model pushed under the prefix that this
/// node lacks or has in an older version; with `watch`, again every so
/// many seconds until stopped.
pub fn sync(
    config: &Config,
    from: &str,
    watch: Option<u64>,
    limit_rate: Option<&str>,
) -> Result<()> {
    let store = open_store(config)?;
    let mut options = pull_options(config, false);
    if let Some(rate) = limit_rate {
        options.transfer.limit_rate = Some(crate::config::parse_rate(rate)?);
    }
    if watch == Some(0) {
        anyhow::bail!("--watch takes a number of seconds of at least 1");
    }
    let log = super::audit_log::open(config)?;
    loop {
        // Resolved each round: a headless service's addresses change.
        let peers = config.peers.resolve(&[], None)?;
        let elsewhere = |m: &store::Manifest,
                         source: &str,
                         options: &store::PullOptions,
                         progress: &dyn store::Progress| {
            super::peers::by_digest(&config.peers, &store, &peers, m, source, options, progress)
        };
        let elsewhere: Option<&bucket::Elsewhere<'_>> = match peers.is_empty() {
            true => None,
            false => Some(&elsewhere),
        };
        match bucket::sync(&store, from, &config.s3, &options, elsewhere, &Bar::new()) {
            Ok(round) => {
                for (name, digest) in &round.pulled {
                    println!("{name}: pulled ({digest})");
                    if let Some(log) = &log {
                        log.record(audit::Event::ModelPull {
                            model: name.clone(),
                            sha256: Some(digest.clone()),
                        });
                    }
                }
                for (name, why) in &round.failed {
                    eprintln!("{name}: not synced: {why}");
                }
                for (name, source) in &round.conflicting {
                    println!(
                        "{name}: not synced: a model of that name is stored here from {source}"
                    );
                }
                println!(
                    "{from}: {} pulled, {} unchanged, {} failed",
                    round.pulled.len(),
                    round.unchanged.len(),
                    round.failed.len()
                );
                if watch.is_none() && !round.failed.is_empty() {
                    anyhow::bail!("{} model(s) could not be synced", round.failed.len());
                }
            }
            // Watching outlives a bad round (the network, the server).
            Err(err) if watch.is_some() => eprintln!("sync of {from} failed: {err}"),
            Err(err) => return Err(err.into()),
        }
        match watch {
            Some(secs) => std::thread::sleep(std::time::Duration::from_secs(secs)),
            None => return Ok(()),
        }
    }
}
