//! Keeps JWT issuers' published keys fresh: fetched at start, again every
//! issuer's refresh interval, and at once (rate-limited) when a token names
//! a key the cache lacks, so a provider's key rotation costs no failed
//! request and a flood of forged `kid`s costs one fetch per interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth::Authenticator;

/// The shortest gap between two fetches of one issuer's keys on demand.
const ON_DEMAND_GAP: Duration = Duration::from_secs(10);
/// JWKS documents are small; anything bigger is not one.
const MAX_JWKS_BYTES: usize = 1 << 20;

pub struct JwksRefresher {
    authenticator: Arc<Authenticator>,
    client: reqwest::Client,
    /// issuer → (URL, last on-demand fetch).
    sources: HashMap<String, (String, Mutex<Option<Instant>>)>,
    /// One fetch at a time per process: concurrent requests with the same
    /// unknown key wait for the fetch already under way.
    fetching: tokio::sync::Mutex<()>,
}

impl JwksRefresher {
    /// Fetches every issuer's keys once (a failure is logged; tokens from
    /// that issuer fail until a later fetch works) and keeps them fresh.
    /// `None` when no issuer publishes its keys at a URL.
    pub async fn start(authenticator: Arc<Authenticator>) -> Option<Arc<JwksRefresher>> {
        let urls = authenticator.jwt().jwks_urls();
        if urls.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .ok()?;
        let sources = urls
            .iter()
            .map(|(iss, url, _)| (iss.clone(), (url.clone(), Mutex::new(None))))
            .collect();
        let refresher = Arc::new(JwksRefresher {
            authenticator,
            client,
            sources,
            fetching: tokio::sync::Mutex::new(()),
        });
        for (issuer, _, every) in urls {
            refresher.fetch(&issuer).await;
            let weak = Arc::downgrade(&refresher);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(every));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(r) = weak.upgrade() else { return };
                    r.fetch(&issuer).await;
                }
            });
        }
        Some(refresher)
    }

    /// Fetches `issuer`'s keys now unless that happened in the last
    /// [`ON_DEMAND_GAP`]. Returns whether new keys were installed.
    pub async fn refresh_now(&self, issuer: &str) -> bool {
        let _one = self.fetching.lock().await;
        let Some((_, last)) = self.sources.get(issuer) else {
            return false;
        };
        {
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < ON_DEMAND_GAP) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.fetch(issuer).await
    }

    async fn fetch(&self, issuer: &str) -> bool {
        let Some((url, _)) = self.sources.get(issuer) else {
            return false;
        };
        let text = match self.get(url).await {
            Ok(text) => text,
            Err(err) => {
                tracing::warn!(%issuer, %url, %err, "cannot fetch the issuer's signing keys");
                return false;
            }
        };
        match self.authenticator.jwt().install_jwks(issuer, &text) {
            Ok(n) => {
                tracing::info!(%issuer, keys = n, "issuer signing keys refreshed");
                true
            }
            Err(err) => {
                tracing::warn!(%err, %url, "ignoring an unusable JWKS document");
                false
            }
        }
    }

    async fn get(&self, url: &str) -> Result<String, String> {
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.without_url().to_string())?;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
        }
        String::from_utf8(body).map_err(|_| "not UTF-8".to_string())
    }
}
