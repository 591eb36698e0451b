//! `hearth sync s3://bucket/prefix [--watch SECS]`: keeps a node's store in
//! step with the models pushed under a prefix. A model the node lacks is
//! pulled; a new version (another digest) of one it pulled from there
//! replaces it; a stored model of the same name from elsewhere is left
//! alone and reported. Every pull is the store's verified, resumable one,
//! so an interrupted sync resumes at the next round.

use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::ObjectStore;
use store::{Progress, PullOptions, Store};

use crate::source::{pull_manifest, read_manifest};
use crate::{join, Bucket, BucketError, Location, S3Options};

/// What one round of [`sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    /// Models pulled, with their digests.
    pub pulled: Vec<(String, String)>,
    /// Already stored with the bucket's digest.
    pub unchanged: Vec<String>,
    /// Stored here from another source under the same name: not touched.
    pub conflicting: Vec<(String, String)>,
}

/// One round: every model pushed under the prefix of `url`.
pub fn sync(
    store: &Store,
    url: &str,
    s3: &S3Options,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Synced, BucketError> {
    let location = Location::parse(url)?;
    let bucket = Arc::new(Bucket::open(&location.bucket, s3)?);
    let prefix = location.key.as_str();
    let mut synced = Synced::default();
    for name in pushed_models(&bucket, prefix)? {
        let manifest = read_manifest(&bucket, prefix, &name)?;
        let from = bucket.url(&join(prefix, &name));
        let stored = store.get(&manifest.name)?;
        match &stored {
            Some(s) if s.manifest.digest() == manifest.digest() => {
                synced.unchanged.push(manifest.name.clone());
                continue;
            }
            Some(s) if s.manifest.source != from => {
                synced
                    .conflicting
                    .push((manifest.name.clone(), s.manifest.source.clone()));
                continue;
            }
            _ => {}
        }
        // A new version of a model pulled from here replaces it.
        let options = PullOptions {
            force: stored.is_some(),
            ..options.clone()
        };
        let model = pull_manifest(
            store,
            &bucket,
            prefix,
            &manifest,
            &manifest.name,
            &from,
            &options,
            progress,
        )?;
        synced
            .pulled
            .push((model.manifest.name.clone(), model.manifest.digest()));
    }
    Ok(synced)
}

/// The names of the manifests under `prefix/models/`.
fn pushed_models(bucket: &Bucket, prefix: &str) -> Result<Vec<String>, BucketError> {
    let dir = Key::from(join(prefix, "models"));
    let listed: Vec<_> = bucket.wait(bucket.objects.list(Some(&dir)).collect());
    let mut names = Vec::new();
    for meta in listed {
        let meta = meta.map_err(|e| bucket.object_error(dir.as_ref(), e))?;
        let name = meta
            .location
            .filename()
            .and_then(|f| f.strip_suffix(".json"))
            .map(str::to_string);
        names.extend(name);
    }
    names.sort();
    Ok(names)
}
