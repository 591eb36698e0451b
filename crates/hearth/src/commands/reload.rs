//! `hearth serve` on SIGHUP: policies, JWT key files and TLS certificates
//! are read again. Each part that fails to load keeps its previous version
//! and says why in the log; requests in flight are never dropped.

use std::sync::Arc;

use crate::config::Config;

/// SIGHUP, caught from now on: call before announcing the port, or a
/// reload sent right after start would end the process (SIGHUP's default).
#[cfg(unix)]
pub fn listen() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .map_err(|err| tracing::warn!(%err, "cannot listen for SIGHUP; reloading is off"))
        .ok()
}

#[cfg(not(unix))]
pub fn listen() -> Option<()> {
    None
}

/// Reloads on every SIGHUP `listen` caught, until the process ends.
#[cfg(unix)]
pub async fn on_hangup(
    hangups: Option<tokio::signal::unix::Signal>,
    config: Config,
    access: server::Access,
    tls: Option<Arc<server::Tls>>,
) {
    let Some(mut hangups) = hangups else {
        return;
    };
    while hangups.recv().await.is_some() {
        reload(&config, &access, tls.as_deref());
    }
}

#[cfg(not(unix))]
pub async fn on_hangup(_: Option<()>, _: Config, _: server::Access, _: Option<Arc<server::Tls>>) {}

fn reload(config: &Config, access: &server::Access, tls: Option<&server::Tls>) {
    tracing::info!("SIGHUP: reloading policies, JWT key files and TLS certificates");
    if let Some(live) = &access.policies {
        // At start a missing directory gets the defaults; on reload it is a
        // mistake (a directory moved aside), never a reason to loosen.
        let dir = config.home.join("policies");
        let loaded = if dir.is_dir() {
            super::serve::load_policies(config)
        } else {
            Err(anyhow::anyhow!("{} is missing", dir.display()))
        };
        match loaded {
            Ok(policies) => {
                tracing::info!(
                    policies = policies.len(),
                    sha256 = policies.digest(),
                    "authorization policies reloaded"
                );
                super::serve::record_policies(access.audit.as_deref(), &policies);
                live.replace(policies);
            }
            Err(err) => tracing::error!(
                error = format!("{err:#}"),
                "policies not reloaded; the previous ones stay in force"
            ),
        }
    }
    if let Some(authenticator) = &access.authenticator {
        if let Err(err) = authenticator.jwt().reload_files() {
            tracing::error!(%err, "JWT key files not reloaded; the previous keys stay in force");
        }
    }
    if let Some(tls) = tls {
        match tls.reload() {
            Ok(()) => {
                tracing::info!(cert = %tls.files().cert.display(), "TLS certificate reloaded")
            }
            Err(err) => tracing::error!(
                %err,
                "TLS certificate not reloaded; the previous one stays in force"
            ),
        }
    }
}
