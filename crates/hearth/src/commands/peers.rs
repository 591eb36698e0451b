//! `hearth pull` from other Hearth nodes first: which model to ask them
//! for (a catalog model by its pinned digest, a location's model by the
//! origin its manifest must record, `peer://host:port/NAME` as is), and
//! the origin to fall back on.

use anyhow::{bail, Context, Result};
use store::{Manifest, PullOptions, Store, StoredModel};

use crate::cli::PullArgs;
use crate::config::Config;

/// The model pulled from peers, or `None` when the origin should serve
/// the pull (no peer holds it, or the peers failed).
pub fn pull(
    config: &Config,
    store: &Store,
    args: &PullArgs,
    options: &PullOptions,
    progress: &dyn store::Progress,
) -> Result<Option<StoredModel>> {
    let mut extra = args.peer.clone();
    let named = args.model.strip_prefix("peer://").map(|rest| {
        let (address, name) = rest.split_once('/').unwrap_or((rest, ""));
        extra.push(address.to_string());
        name.to_string()
    });
    if args.no_peers {
        if named.is_some() {
            bail!("--no-peers and a peer:// location ask for opposite things");
        }
        return Ok(None);
    }
    let peers = config
        .peers
        .resolve(&extra, args.peers_dns.as_deref())
        .context("the peers to pull from")?;
    if peers.is_empty() {
        return Ok(None);
    }
    let (name, expect) = match &named {
        Some(name) => {
            if name.is_empty() || name.contains('/') {
                bail!("`{}` names no model: peer://HOST:PORT/NAME", args.model);
            }
            if args.name.is_some() {
                bail!("a peer:// pull keeps the peer's name for the model; --name does not apply");
            }
            if args.sha256.is_some() {
                (
                    name.clone(),
                    peer::Expect::Digest(args.sha256.clone().unwrap_or_default()),
                )
            } else {
                (name.clone(), peer::Expect::Any)
            }
        }
        None => match wanted(args, options)? {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    let http = transfer::HttpOptions {
        // The hub's token stays with the hub: peers get this node's key.
        token: config.peers.key.clone(),
        ..options.http.clone()
    };
    let origin = |m: &Manifest, index: usize| store::origin_file(m, index, options);
    match peer::pull(
        store, &name, &peers, &expect, &origin, options, &http, progress,
    ) {
        Ok(Some(pulled)) => {
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
            Ok(Some(pulled.model))
        }
        Ok(None) if named.is_some() => bail!("no peer holds a model `{name}`"),
        Ok(None) => {
            tracing::info!(model = %name, "no peer holds it; pulling from the origin");
            Ok(None)
        }
        Err(err) if named.is_some() => Err(err.into()),
        Err(err) => {
            tracing::warn!(model = %name, %err, "pulling from peers failed; pulling from the origin");
            Ok(None)
        }
    }
}

/// The name and the model peers must hold for a catalog name or a
/// location; `None` for what peers do not serve (object storage, which
/// is its own shared place).
fn wanted(args: &PullArgs, options: &PullOptions) -> Result<Option<(String, peer::Expect)>> {
    if !store::is_location(&args.model) {
        let Some(entry) = store::catalog::find(&args.model) else {
            return Ok(None);
        };
        return Ok(Some((
            entry.name.to_string(),
            peer::Expect::Digest(entry.sha256.to_string()),
        )));
    }
    if store::location_kind(&args.model) == store::LocationKind::Bucket {
        return Ok(None);
    }
    let wanted = store::Wanted {
        name: args.name.clone(),
        sha256: args.sha256.clone(),
    };
    let (name, origin) = store::origin_of(&args.model, &wanted, options)?;
    let expect = match &args.sha256 {
        Some(sha) => peer::Expect::Digest(sha.to_ascii_lowercase()),
        None => peer::Expect::Source(origin),
    };
    Ok(Some((name, expect)))
}
