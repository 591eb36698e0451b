//! `hearth serve` on SIGHUP: policies, JWT key files and TLS certificates
//! are read again. Each part that fails to load keeps its previous version
//! and says why in the log; requests in flight are never dropped.

use std::sync::Arc;

use crate::config::Config;

/// Reloads on every SIGHUP until the process ends.
pub async fn on_hangup(config: Config, access: server::Access, tls: Option<Arc<server::Tls>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGHUP; reloading is off");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            reload(&config, &access, tls.as_deref());
        }
    }
    #[cfg(not(unix))]
    let _ = (config, access, tls);
}

fn reload(config: &Config, access: &server::Access, tls: Option<&server::Tls>) {
    tracing::info!("SIGHUP: reloading policies, JWT key files and TLS certificates");
    if let Some(live) = &access.policies {
        match super::serve::load_policies(config) {
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
