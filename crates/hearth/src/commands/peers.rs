//! `hearth pull` from other Hearth nodes first: which model to ask them
//! for (a catalog model by its pinned digest, a location's model by the
//! origin its manifest must record, `peer://host:port/NAME` as is), and
//! the origin to fall back on.

use anyhow::{bail, Context, Result};
use store::{Manifest, PullOptions, Store, StoredModel};

use crate::cli::PullArgs;
use crate::peering::PeerSettings;

/// The model pulled from peers, or `None` when the origin should serve
/// the pull (no peer holds it, or the peers failed).
pub fn pull(
    settings: &PeerSettings,
    store: &Store,
    args: &PullArgs,
    options: &PullOptions,
    progress: &dyn store::Progress,
) -> Result<Option<StoredModel>> {
    let http = peer_http(settings, options);
    if let Some(rest) = args.model.strip_prefix("peer://") {
        return named(store, args, rest, options, &http, progress).map(Some);
    }
    if args.no_peers {
        return Ok(None);
    }
    let peers = settings
        .resolve(&args.peer, args.peers_dns.as_deref())
        .context("the peers to pull from")?;
    if peers.is_empty() {
        return Ok(None);
    }
    let Some((name, expect, source)) = wanted(args, options)? else {
        return Ok(None);
    };
    let origin = |m: &Manifest, index: usize| store::origin_file(m, index, options);
    let pulled = peer::pull(
        store, &name, &peers, &expect, &source, &origin, options, &http, progress,
    );
    match pulled {
        Ok(Some(pulled)) => {
            report(&pulled);
            Ok(Some(pulled.model))
        }
        Ok(None) => {
            tracing::info!(model = %name, "no peer holds it; pulling from the origin");
            Ok(None)
        }
        Err(err) => {
            tracing::warn!(model = %name, %err, "pulling from peers failed; pulling from the origin");
            Ok(None)
        }
    }
}

/// `peer://host:port/NAME`: the version that node holds, from it alone,
/// with no origin to fall back on (the node's word for where it came from
/// is not trusted with this node's credentials).
fn named(
    store: &Store,
    args: &PullArgs,
    rest: &str,
    options: &PullOptions,
    http: &transfer::HttpOptions,
    progress: &dyn store::Progress,
) -> Result<StoredModel> {
    let (address, name) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() || name.contains('/') {
        bail!("`{}` names no model: peer://HOST:PORT/NAME", args.model);
    }
    if args.name.is_some() || args.no_peers {
        bail!("a peer:// pull takes the node's model under its own name, from that node");
    }
    let node = peer::Peer::parse(address, false)?;
    let held = peer::manifest_of(&node, name, http)
        .with_context(|| format!("{node} holds no model `{name}` (or cannot be reached)"))?;
    let expect = match &args.sha256 {
        Some(sha) => peer::Expect::Digest(sha.to_ascii_lowercase()),
        None => peer::Expect::Digest(held.digest()),
    };
    let no_origin = no_origin("it is pulled from a named node alone");
    let pulled = peer::pull(
        store,
        name,
        std::slice::from_ref(&node),
        &expect,
        &args.model,
        &no_origin,
        options,
        http,
        progress,
    )?
    .with_context(|| format!("{node} does not hold that version of `{name}`"))?;
    report(&pulled);
    Ok(pulled.model)
}

/// The version `manifest` names (a bucket's, for `hearth sync`), from
/// `peers` alone, recorded as from `source`; `None` when no peer holds it
/// or the peers failed (the caller's own source serves it then).
pub fn by_digest(
    settings: &PeerSettings,
    store: &Store,
    peers: &[peer::Peer],
    manifest: &Manifest,
    source: &str,
    options: &PullOptions,
    progress: &dyn store::Progress,
) -> Option<StoredModel> {
    let http = peer_http(settings, options);
    let no_origin = no_origin("the caller falls back on its own source");
    let expect = peer::Expect::Digest(manifest.digest());
    match peer::pull(
        store,
        &manifest.name,
        peers,
        &expect,
        source,
        &no_origin,
        options,
        &http,
        progress,
    ) {
        Ok(Some(pulled)) => {
            report(&pulled);
            Some(pulled.model)
        }
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(model = %manifest.name, %err, "pulling from peers failed; using the bucket");
            None
        }
    }
}

/// How requests to peers go: the pull's HTTP settings with this node's
/// credentials (the hub's token stays with the hub).
fn peer_http(settings: &PeerSettings, options: &PullOptions) -> transfer::HttpOptions {
    transfer::HttpOptions {
        token: settings.key.clone(),
        identity: settings.client_cert.clone(),
        ..options.http.clone()
    }
}

/// An origin for a pull from peers alone: none, for `reason`.
fn no_origin(
    reason: &'static str,
) -> impl Fn(&Manifest, usize) -> Result<Box<dyn transfer::Source>, store::StoreError> {
    move |m: &Manifest, _: usize| {
        Err(store::StoreError::NoOrigin {
            name: m.name.clone(),
            reason: reason.into(),
        })
    }
}

fn report(pulled: &peer::Pulled) {
    eprintln!(
        "reused {} bytes already stored; transferred {} bytes",
        pulled.reused_bytes, pulled.transferred_bytes
    );
    for place in &pulled.places {
        let role = if place.origin { "origin" } else { "peer" };
        match &place.dropped {
            None => eprintln!("{role} {}: {} bytes", place.place, place.bytes),
            Some(why) => eprintln!(
                "{role} {}: {} bytes, then dropped: {why}",
                place.place, place.bytes
            ),
        }
    }
}

/// The name, the model peers must hold, and the source to record, for a
/// catalog name or a location; `None` for what peers do not serve: a file
/// on this machine (the user named those bytes) and object storage (a
/// shared place of its own).
fn wanted(
    args: &PullArgs,
    options: &PullOptions,
) -> Result<Option<(String, peer::Expect, String)>> {
    if !store::is_location(&args.model) {
        let Some(entry) = store::catalog::find(&args.model) else {
            return Ok(None);
        };
        return Ok(Some((
            entry.name.to_string(),
            peer::Expect::Digest(entry.sha256.to_string()),
            entry.described(),
        )));
    }
    if matches!(
        store::location_kind(&args.model),
        store::LocationKind::Bucket | store::LocationKind::File
    ) {
        return Ok(None);
    }
    let wanted = store::Wanted {
        name: args.name.clone(),
        sha256: args.sha256.clone(),
    };
    let (name, origin) = store::origin_of(&args.model, &wanted, options)?;
    // What a peer records is stripped of secrets; so is the comparison.
    let expect = match &args.sha256 {
        Some(sha) => peer::Expect::Digest(sha.to_ascii_lowercase()),
        None => peer::Expect::Source(store::without_secrets(&origin)),
    };
    Ok(Some((name, expect, origin)))
}
