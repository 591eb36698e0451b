//! Other Hearth nodes in the configuration: `[peers]` (and `--share`,
//! `--peer`), validated into the settings pulls and `serve` use.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::ServeArgs;
use crate::config::secret;

/// `[peers]`: other Hearth nodes, to pull models from and to lend them to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePeers {
    /// `hearth serve` lends its stored models to other nodes (`--share`).
    pub share: Option<bool>,
    /// Nodes to pull from first: `host:port`, `peer://host:port` or a URL.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// A DNS name (`host:port`) whose every address is a node, as a
    /// Kubernetes headless service resolves.
    pub dns: Option<String>,
    /// Peers named `host:port` speak HTTPS (trusting `[pull] ca_file`).
    pub tls: Option<bool>,
    /// A file holding the key this node presents to peers
    /// (`HEARTH_PEER_KEY` overrides it).
    pub key_file: Option<PathBuf>,
    /// A PEM file with this node's client certificate and key, for peers
    /// that require mutual TLS.
    pub client_cert: Option<PathBuf>,
}

/// Other Hearth nodes: whom pulls ask first, and whether `serve` lends.
#[derive(Debug, Clone, Default)]
pub struct PeerSettings {
    pub share: bool,
    pub nodes: Vec<peer::Peer>,
    pub dns: Option<String>,
    pub tls: bool,
    /// Sent to peers as a bearer token.
    pub key: Option<String>,
    /// Presented to peers that ask for a client certificate.
    pub client_cert: Option<PathBuf>,
}

impl PeerSettings {
    /// The static nodes, `extra` ones (`--peer`), and whatever the DNS name
    /// resolves to now; a name that does not resolve is logged and skipped.
    pub fn resolve(&self, extra: &[String], dns: Option<&str>) -> Result<Vec<peer::Peer>> {
        let mut peers = self.nodes.clone();
        for text in extra {
            peers.push(peer::Peer::parse(text, self.tls)?);
        }
        if let Some(name) = dns.or(self.dns.as_deref()) {
            match peer::discover(name, self.tls) {
                Ok(found) => peers.extend(found),
                Err(err) => tracing::warn!(%err, "no peers from DNS"),
            }
        }
        peers.sort();
        peers.dedup();
        Ok(peers)
    }
}

pub(crate) fn peer_settings(file: &FilePeers, serve: Option<&ServeArgs>) -> Result<PeerSettings> {
    let tls = file.tls.unwrap_or(false);
    let nodes = file
        .nodes
        .iter()
        .map(|n| peer::Peer::parse(n, tls).context("in [peers] nodes"))
        .collect::<Result<Vec<_>>>()?;
    let key = secret(
        "HEARTH_PEER_KEY",
        file.key_file.as_deref(),
        "[peers] key_file",
    )?;
    Ok(PeerSettings {
        share: serve.is_some_and(|s| s.share) || file.share.unwrap_or(false),
        nodes,
        dns: file.dns.clone(),
        tls,
        key,
        client_cert: file.client_cert.clone(),
    })
}
