//! Quota usage kept across restarts: `hearth serve` restores today's
//! settled token counts from the key store at start, saves what changed
//! every few seconds, and once more when it stops, so restarting a server
//! does not hand every key a fresh daily budget.

use std::sync::Arc;
use std::time::Duration;

/// How often changed counts are written.
const PERSIST_EVERY: Duration = Duration::from_secs(5);

/// Fresh quotas holding today's saved usage. A store that cannot be read
/// starts from zero and says so.
pub fn restore(authenticator: &auth::Authenticator) -> Arc<auth::Quotas> {
    let quotas = auth::Quotas::new();
    let now = auth::unix_now_ms();
    match authenticator.keys().load_usage(auth::quota::day_of(now)) {
        Ok(saved) => {
            for usage in &saved {
                quotas.restore(usage, now);
            }
            if !saved.is_empty() {
                tracing::info!(accounts = saved.len(), "restored today's quota usage");
            }
        }
        Err(err) => {
            tracing::error!(%err, "cannot read saved quota usage; daily budgets start from zero")
        }
    }
    quotas
}

/// Saves changed usage every [`PERSIST_EVERY`] until the process ends.
pub async fn persist(access: server::Access) {
    let mut ticks = tokio::time::interval(PERSIST_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let access = access.clone();
        // SQLite with fsync: off the async workers.
        let _ = tokio::task::spawn_blocking(move || flush(&access)).await;
    }
}

/// Saves what changed since the last save.
pub fn flush(access: &server::Access) {
    let (Some(authenticator), Some(quotas)) = (&access.authenticator, &access.quotas) else {
        return;
    };
    let changes = quotas.take_changes();
    if changes.is_empty() {
        return;
    }
    if let Err(err) = authenticator.keys().save_usage(&changes) {
        tracing::error!(%err, "cannot save quota usage; retrying");
        quotas.unsaved(&changes);
    }
}
