//! `keys`: create, list and revoke API keys in `$HEARTH_HOME/auth.db`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use auth::{KeyInfo, KeyStore, NewKey};
use types::Priority;

use crate::cli::KeysCommand;
use crate::config::Config;

/// Where the key database lives.
pub fn key_store_path(config: &Config) -> PathBuf {
    config.home.join("auth.db")
}

pub fn open_key_store(config: &Config) -> Result<KeyStore> {
    Ok(KeyStore::open(&key_store_path(config))?)
}

pub fn keys(config: &Config, command: KeysCommand) -> Result<()> {
    let store = open_key_store(config)?;
    let now = auth::unix_now();
    match command {
        KeysCommand::Create {
            name,
            roles,
            attrs,
            priority,
            expires,
            rpm,
            tpm,
            daily_tokens,
            json,
        } => {
            let new = NewKey {
                name,
                // The default policies let `user` use models.
                roles: if roles.is_empty() {
                    BTreeSet::from(["user".to_string()])
                } else {
                    roles.into_iter().collect()
                },
                attrs: parse_attrs(&attrs)?,
                priority: priority.as_deref().and_then(Priority::parse),
                expires_at: expires
                    .map(|e| {
                        let d = humantime::parse_duration(&e).with_context(|| {
                            format!("--expires `{e}` is not a duration like 90d or 12h")
                        })?;
                        Ok::<_, anyhow::Error>(now.saturating_add(d.as_secs()))
                    })
                    .transpose()?,
                limits: auth::Limits {
                    requests_per_minute: rpm,
                    tokens_per_minute: tpm,
                    tokens_per_day: daily_tokens,
                },
            };
            let (info, secret) = store.create(&new, now)?;
            if let Some(log) = super::audit_log::open(config)? {
                log.record(audit::Event::KeyCreated {
                    key_id: info.id.clone(),
                    name: info.name.clone(),
                    roles: info.roles.iter().cloned().collect(),
                });
            }
            if json {
                let mut v = serde_json::to_value(&info)?;
                v["key"] = secret.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{secret}");
                eprintln!(
                    "created key {} ({}); the secret above is shown only this once",
                    info.id, info.name
                );
            }
        }
        KeysCommand::List { json } => {
            let keys = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print_table(&keys, now);
            }
        }
        KeysCommand::Revoke { id } => {
            let info = store.revoke(&id, now)?;
            if let Some(log) = super::audit_log::open(config)? {
                log.record(audit::Event::KeyRevoked {
                    key_id: info.id.clone(),
                });
            }
            eprintln!("revoked key {} ({})", info.id, info.name);
        }
    }
    Ok(())
}

pub fn parse_attrs(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut attrs = BTreeMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--attr `{pair}` must look like key=value");
        };
        if attrs.insert(k.to_string(), v.to_string()).is_some() {
            bail!("--attr `{k}` is given twice");
        }
    }
    Ok(attrs)
}

fn print_table(keys: &[KeyInfo], now: u64) {
    println!(
        "{:<14} {:<20} {:<24} {:<12} {:<10} LIMITS",
        "ID", "NAME", "ROLES", "PRIORITY", "STATE"
    );
    for k in keys {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "active"
        };
        let roles: Vec<&str> = k.roles.iter().map(String::as_str).collect();
        let l = &k.limits;
        let limits: Vec<String> = [
            l.requests_per_minute.map(|n| format!("{n} req/min")),
            l.tokens_per_minute.map(|n| format!("{n} tok/min")),
            l.tokens_per_day.map(|n| format!("{n} tok/day")),
        ]
        .into_iter()
        .flatten()
        .collect();
        println!(
            "{:<14} {:<20} {:<24} {:<12} {:<10} {}",
            k.id,
            k.name,
            roles.join(","),
            k.priority.map_or("-", Priority::as_str),
            state,
            if limits.is_empty() {
                "-".to_string()
            } else {
                limits.join(", ")
            }
        );
    }
}
