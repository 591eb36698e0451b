//! Pulling a model from other Hearth nodes that lend theirs (`hearth serve
//! --share`), so a cluster fetches a model from the outside once.
//!
//! A pull asks every peer for the model's manifest, keeps the peers whose
//! manifest is the one the caller expects (a pinned digest, or a model
//! that came from the named origin) and agrees with the most others, then
//! fetches each file through [`transfer::Spread`]: chunks go to the peers
//! in parallel, each is checked against the manifest's digests as it
//! arrives, a peer that fails or sends bad bytes is dropped for the rest
//! of the pull, and the origin serves what no peer is left for. Everything
//! else (partial files, journal, resume, commit) is the store's.
//!
//! This crate knows no HTTP server, no credentials' meaning and no
//! configuration file: the binary hands it peers, a token and options.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use store::{FileToFetch, Manifest, OpenFile, PullOptions, Store, StoreError, StoredModel};
use transfer::{HttpOptions, HttpSource, Patched, Source, Spread, TransferError};
use types::Progress;

/// Another Hearth node, by the base URL of its API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    base: String,
}

impl Peer {
    /// `peer://host:port` or `host:port` (over https when `tls`), or an
    /// `http(s)://host:port` URL as is.
    pub fn parse(text: &str, tls: bool) -> Result<Peer, PeerError> {
        let bad = |reason: &str| PeerError::BadPeer {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim().trim_end_matches('/');
        let (scheme, address) = if let Some(rest) = trimmed.strip_prefix("http://") {
            ("http", rest)
        } else if let Some(rest) = trimmed.strip_prefix("https://") {
            ("https", rest)
        } else {
            let rest = trimmed.strip_prefix("peer://").unwrap_or(trimmed);
            (if tls { "https" } else { "http" }, rest)
        };
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(bad("expected host:port"));
        };
        if host.is_empty() || address.contains('/') || port.parse::<u16>().is_err() {
            return Err(bad("expected host:port, with a port number"));
        }
        Ok(Peer {
            base: format!("{scheme}://{address}"),
        })
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn manifest_url(&self, name: &str) -> String {
        format!("{}/peer/v1/models/{name}", self.base)
    }

    fn file_url(&self, name: &str, sha256: &str) -> String {
        format!("{}/peer/v1/models/{name}/files/sha256-{sha256}", self.base)
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

/// The peers behind a DNS name (`host:port`) that resolves to several
/// addresses, as a Kubernetes headless service does: one per address.
pub fn discover(name: &str, tls: bool) -> Result<Vec<Peer>, PeerError> {
    let addresses = name.to_socket_addrs().map_err(|e| PeerError::Discovery {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    Ok(from_addresses(addresses, tls))
}

/// One peer per distinct address, in a stable order.
pub fn from_addresses(addresses: impl IntoIterator<Item = SocketAddr>, tls: bool) -> Vec<Peer> {
    let scheme = if tls { "https" } else { "http" };
    let mut peers: Vec<Peer> = addresses
        .into_iter()
        .map(|a| Peer {
            base: format!("{scheme}://{a}"),
        })
        .collect();
    peers.sort();
    peers.dedup();
    peers
}

/// Which model the caller will accept from peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The model whose [`Manifest::digest`] is this (a catalog pin).
    Digest(String),
    /// A model pulled from this origin (as its manifest records it).
    Source(String),
    /// Whatever the peers agree on (`peer://host:port/NAME`).
    Any,
}

impl Expect {
    fn accepts(&self, m: &Manifest) -> bool {
        match self {
            Expect::Digest(d) => m.digest().eq_ignore_ascii_case(d),
            Expect::Source(s) => &m.source == s,
            Expect::Any => true,
        }
    }
}

/// What one place (a peer or the origin) did for a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub place: String,
    pub bytes: u64,
    /// Why the place was dropped, if it was.
    pub dropped: Option<String>,
    pub origin: bool,
}

/// A model pulled from peers, and who served it.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub model: StoredModel,
    pub places: Vec<Place>,
    /// Bytes taken from files this store already held.
    pub reused_bytes: u64,
    /// Bytes received from peers and the origin.
    pub transferred_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer `{text}`: {reason}")]
    BadPeer { text: String, reason: String },
    #[error("cannot discover peers from `{name}`: {reason}")]
    Discovery { name: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The longest a peer may take to answer for its manifest: a peer that
/// is down must not hold up a pull that others can serve.
const MANIFEST_WAIT: Duration = Duration::from_secs(5);

/// The largest manifest accepted (a 1 TB model in 64 MiB chunks needs
/// about 2 MB).
const MAX_MANIFEST: usize = 16 << 20;

/// Pulls `name` from `peers` into `store`, each file checked chunk by
/// chunk against the manifest the chosen peers agree on, and records
/// `source` (where the caller knows the model comes from, never what a
/// peer says) as its source; `origin` opens file `index` of a manifest
/// whose source is `source`, to fall back on when every peer is dropped.
/// `None` when no peer holds the model `expect` accepts: the caller pulls
/// from the origin.
#[allow(clippy::too_many_arguments)]
pub fn pull(
    store: &Store,
    name: &str,
    peers: &[Peer],
    expect: &Expect,
    source: &str,
    origin: &OpenFile<'_>,
    options: &PullOptions,
    http: &HttpOptions,
    progress: &dyn Progress,
) -> Result<Option<Pulled>, PeerError> {
    let Some((mut manifest, holders)) = agree(name, peers, expect, http) else {
        return Ok(None);
    };
    manifest.source = source.to_string();
    tracing::info!(model = %name, digest = %manifest.digest(), peers = holders.len(), "pulling from peers");
    let mut spreads = Vec::new();
    let mut patches = Vec::new();
    let mut files = Vec::new();
    for (index, part) in manifest.files().into_iter().enumerate() {
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        let mut lenders = Vec::new();
        for peer in &holders {
            match HttpSource::new(&peer.file_url(name, &part.sha256), http) {
                Ok(source) => {
                    sources.push(Box::new(source));
                    lenders.push(peer.clone());
                }
                Err(err) => tracing::warn!(%peer, %err, "skipping a peer"),
            }
        }
        let fallback = match origin(&manifest, index) {
            Ok(source) => Some(source),
            Err(err) => {
                tracing::info!(model = %name, %err, "no origin to fall back on if every peer fails");
                None
            }
        };
        let spread = std::sync::Arc::new(Spread::new(
            // Content-addressed, so a rerun resumes the partial file
            // whichever peers serve it.
            format!("peers:sha256-{}", part.sha256),
            part.size,
            &part.sha256,
            sources,
            fallback,
        ));
        // Bytes of the new version this store already holds (the old
        // version's unchanged tensors) come from disk.
        let local = match manifest.cdc.get(index) {
            Some(wanted) => store.local_copies(name, wanted).unwrap_or_else(|err| {
                tracing::warn!(model = %name, %err, "not reusing stored bytes");
                Vec::new()
            }),
            None => Vec::new(),
        };
        let patched = std::sync::Arc::new(Patched::new(
            Box::new(std::sync::Arc::clone(&spread)),
            local,
        ));
        patches.push(std::sync::Arc::clone(&patched));
        files.push(FileToFetch {
            source: Box::new(patched),
            expected: transfer::Expected {
                size: Some(part.size),
                sha256: Some(part.sha256.clone()),
                chunks: part.chunks.clone(),
            },
        });
        spreads.push((spread, lenders));
    }
    let model = store.pull_files(name, &manifest.source, files, options, progress)?;
    let mut places: BTreeMap<(bool, String), Place> = BTreeMap::new();
    for (spread, lenders) in &spreads {
        for (i, served) in spread.served().into_iter().enumerate() {
            let place = if served.origin {
                served.place
            } else {
                lenders[i].to_string()
            };
            let entry = places
                .entry((served.origin, place.clone()))
                .or_insert(Place {
                    place,
                    bytes: 0,
                    dropped: None,
                    origin: served.origin,
                });
            entry.bytes += served.bytes;
            entry.dropped = entry.dropped.take().or(served.dropped);
        }
    }
    Ok(Some(Pulled {
        model,
        places: places.into_values().collect(),
        reused_bytes: patches.iter().map(|p| p.reused()).sum(),
        transferred_bytes: patches.iter().map(|p| p.fetched()).sum(),
    }))
}

/// Asks every peer for the manifest of `name` (at once) and returns the
/// one `expect` accepts that most peers hold, with those peers.
fn agree(
    name: &str,
    peers: &[Peer],
    expect: &Expect,
    http: &HttpOptions,
) -> Option<(Manifest, Vec<Peer>)> {
    let quick = HttpOptions {
        stall: http.stall.min(MANIFEST_WAIT),
        ..http.clone()
    };
    let answers: Vec<(Peer, Option<Manifest>)> = std::thread::scope(|scope| {
        let asked: Vec<_> = peers
            .iter()
            .map(|peer| {
                let quick = &quick;
                scope.spawn(move || (peer.clone(), ask(peer, name, quick)))
            })
            .collect();
        asked.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    // Grouped by every file's size and digests, not the digest alone: two
    // manifests of one version agree on every chunk.
    let mut by_digest: BTreeMap<String, (Manifest, Vec<Peer>)> = BTreeMap::new();
    for (peer, manifest) in answers {
        let Some(manifest) = manifest else { continue };
        if !expect.accepts(&manifest) {
            tracing::info!(%peer, model = %name, digest = %manifest.digest(), source = %manifest.source, "the peer holds another version of the model; not using it");
            continue;
        }
        let files = serde_json::to_string(&manifest.files()).expect("a manifest serialises");
        by_digest
            .entry(files)
            .or_insert_with(|| (manifest, Vec::new()))
            .1
            .push(peer);
    }
    if by_digest.len() > 1 {
        tracing::warn!(model = %name, versions = by_digest.len(), "peers hold different versions of the model; using the one most of them hold");
    }
    by_digest
        .into_values()
        .max_by_key(|(_, holders)| holders.len())
}

/// What `peer` holds as `name`, if anything (a sound manifest).
pub fn manifest_of(peer: &Peer, name: &str, http: &HttpOptions) -> Option<Manifest> {
    ask(
        peer,
        name,
        &HttpOptions {
            stall: http.stall.min(MANIFEST_WAIT),
            ..http.clone()
        },
    )
}

/// One peer's manifest of `name`: `None` when it holds none, cannot be
/// reached, or answers with something that is not a sound manifest of it.
fn ask(peer: &Peer, name: &str, http: &HttpOptions) -> Option<Manifest> {
    let result = HttpSource::new(&peer.manifest_url(name), http).and_then(|source| {
        let mut bytes = Vec::new();
        source.read(None, None, &mut |piece| {
            if bytes.len() + piece.len() > MAX_MANIFEST {
                return Err(TransferError::BadLocation(format!(
                    "{}: a manifest over {MAX_MANIFEST} bytes",
                    source.describe()
                )));
            }
            bytes.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(bytes)
    });
    let bytes = match result {
        Ok(bytes) => bytes,
        Err(TransferError::Status { status: 404, .. }) => {
            tracing::debug!(%peer, model = %name, "the peer does not hold the model");
            return None;
        }
        Err(err) => {
            tracing::warn!(%peer, model = %name, %err, "cannot ask the peer for the model");
            return None;
        }
    };
    let manifest: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(err) => {
            tracing::warn!(%peer, model = %name, %err, "the peer's manifest is not readable");
            return None;
        }
    };
    if let Err(reason) = manifest.check_received(name) {
        tracing::warn!(%peer, model = %name, %reason, "the peer's manifest is unsound");
        return None;
    }
    Some(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_in_every_accepted_form() {
        let base = |t: &str, tls| Peer::parse(t, tls).map(|p| p.base().to_string());
        assert_eq!(base("peer://a:8080", false).unwrap(), "http://a:8080");
        assert_eq!(base("a:8080", true).unwrap(), "https://a:8080");
        assert_eq!(base("https://a:8443/", false).unwrap(), "https://a:8443");
        assert_eq!(
            base("peer://[::1]:8080", false).unwrap(),
            "http://[::1]:8080"
        );
        for bad in ["a", "peer://a:port", "peer://:80", "peer://a:80/x"] {
            assert!(Peer::parse(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_dns_name_with_several_addresses_gives_a_peer_each() {
        let addrs: Vec<SocketAddr> = ["10.0.0.2:8080", "10.0.0.1:8080", "10.0.0.2:8080"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let peers = from_addresses(addrs, false);
        let bases: Vec<&str> = peers.iter().map(Peer::base).collect();
        assert_eq!(bases, ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]);
        // Through the system's resolver.
        let found = discover("localhost:8080", false).unwrap();
        assert!(found.iter().any(|p| p.base() == "http://127.0.0.1:8080"));
        assert!(discover("no-such-host.invalid:80", false).is_err());
    }
}
