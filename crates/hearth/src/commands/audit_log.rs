//! `audit verify` and `audit export`, and opening the log for the commands
//! that write to it.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use crate::cli::AuditCommand;
use crate::config::Config;

/// The audit log, unless turned off.
pub fn open(config: &Config) -> Result<Option<Arc<audit::AuditLog>>> {
    let Some(settings) = &config.audit else {
        return Ok(None);
    };
    Ok(Some(Arc::new(audit::AuditLog::open(settings.log.clone())?)))
}

pub fn audit(config: &Config, command: AuditCommand) -> Result<()> {
    let Some(settings) = &config.audit else {
        bail!("the audit log is turned off (audit.enabled = false)");
    };
    let dir = &settings.log.dir;
    match command {
        AuditCommand::Verify { from, public_key } => {
            let key_path = public_key.unwrap_or_else(|| {
                let mut p = settings.log.key_path.as_os_str().to_owned();
                p.push(".pub");
                p.into()
            });
            let key = audit::load_public_key(&key_path)?;
            let files = audit::files_from(dir, from.as_deref())
                .with_context(|| format!("cannot list {}", dir.display()))?;
            if files.is_empty() {
                match &from {
                    Some(f) => bail!(
                        "--from {} names no log file in {}",
                        f.display(),
                        dir.display()
                    ),
                    None => bail!("no audit log files in {}", dir.display()),
                }
            }
            match audit::verify(&files, &key, from.is_some()) {
                Ok(r) => {
                    println!(
                        "OK: {} entries in {} files, {} checkpoints; signed through entry {}, {} newer entries chained but not yet signed",
                        r.entries, r.files, r.checkpoints, r.signed_through, r.unsigned_tail
                    );
                    Ok(())
                }
                Err(failure) => bail!("audit log does not verify: {failure}"),
            }
        }
        AuditCommand::Export { since, format: _ } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let files =
                audit::log_files(dir).with_context(|| format!("cannot list {}", dir.display()))?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for file in files {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                for line in BufReader::new(f).lines() {
                    let line = line.with_context(|| format!("cannot read {}", file.display()))?;
                    if let Some(since) = since {
                        let time = serde_json::from_str::<serde_json::Value>(&line)
                            .ok()
                            .and_then(|v| v["time"].as_str().map(str::to_string))
                            .and_then(|t| humantime::parse_rfc3339(&t).ok());
                        if time.is_some_and(|t| t < since) {
                            continue;
                        }
                    }
                    writeln!(out, "{line}")?;
                }
            }
            Ok(())
        }
    }
}

fn parse_since(text: &str) -> Result<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    let age: Duration = humantime::parse_duration(text).with_context(|| {
        format!("--since `{text}` is neither a time like 2026-11-01T00:00:00Z nor an age like 24h")
    })?;
    Ok(SystemTime::now() - age)
}
