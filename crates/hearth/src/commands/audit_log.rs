//! `audit verify` and `audit export`, and opening the log for the commands
//! that write to it.

use std::sync::Arc;
use std::time::SystemTime;

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
            let since = since
                .as_deref()
                .map(|text| {
                    audit::parse_since(text, SystemTime::now()).with_context(|| {
                        format!("--since `{text}` is neither a time like 2026-11-01T00:00:00Z nor an age like 24h")
                    })
                })
                .transpose()?;
            let query = audit::Query {
                since,
                ..audit::Query::default()
            };
            audit::export(dir, &query, &mut std::io::stdout().lock())?;
            Ok(())
        }
    }
}
