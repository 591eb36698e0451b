//! `hearth sync s3://bucket/prefix [--watch SECS]`: keeps a node's store in
//! step with the models pushed under a prefix. A model the node lacks is
//! pulled; a new version (another digest) of one it pulled from there
//! replaces it; a stored model of the same name from elsewhere is left
//! alone and reported. Every pull is the store's verified, resumable one,
//! so an interrupted sync resumes at the next round.

use std::sync::Arc;

use object_store::path::Path as Key;
use object_store::ObjectStore;
use store::{Manifest, Progress, PullOptions, Store, StoredModel};

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
    /// Models this round could not pull, with why; the others went on.
    pub failed: Vec<(String, String)>,
}

/// Another way to a model a round pulls, tried before the bucket (the
/// binary's peers): given the bucket's manifest, the source to record and
/// the pull's options, `Some` when it stored exactly that version.
pub type Elsewhere<'a> =
    dyn Fn(&Manifest, &str, &PullOptions, &dyn Progress) -> Option<StoredModel> + 'a;

/// One round: every model pushed under the prefix of `url`; each model to
/// pull is asked of `elsewhere` first.
pub fn sync(
    store: &Store,
    url: &str,
    s3: &S3Options,
    options: &PullOptions,
    elsewhere: Option<&Elsewhere<'_>>,
    progress: &dyn Progress,
) -> Result<Synced, BucketError> {
    let location = Location::parse(url)?;
    let bucket = Arc::new(Bucket::open(&location.bucket, s3)?);
    let prefix = location.key.as_str();
    let mut synced = Synced::default();
    for name in pushed_models(&bucket, prefix)? {
        let manifest = match read_manifest(&bucket, prefix, &name) {
            Ok(manifest) => manifest,
            Err(err) => {
                synced.failed.push((name, err.to_string()));
                continue;
            }
        };
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
        let found = elsewhere.and_then(|first| first(&manifest, &from, &options, progress));
        if let Some(model) = found.filter(|m| m.manifest.digest() == manifest.digest()) {
            tracing::info!(model = %model.manifest.name, "synced from elsewhere than the bucket");
            synced
                .pulled
                .push((model.manifest.name.clone(), model.manifest.digest()));
            continue;
        }
        // One model that fails (a damaged chunk in the bucket, a full
        // disk) does not keep the others from arriving.
        match pull_manifest(
            store,
            &bucket,
            prefix,
            &manifest,
            &manifest.name,
            &from,
            &options,
            progress,
        ) {
            Ok((model, reuse)) => {
                tracing::info!(model = %model.manifest.name, reused = reuse.reused_bytes, transferred = reuse.transferred_bytes, "synced");
                synced
                    .pulled
                    .push((model.manifest.name.clone(), model.manifest.digest()))
            }
            Err(err) => synced.failed.push((manifest.name.clone(), err.to_string())),
        }
    }
    Ok(synced)
}

/// The names of the manifests directly under `prefix/models/`.
fn pushed_models(bucket: &Bucket, prefix: &str) -> Result<Vec<String>, BucketError> {
    let dir = Key::from(join(prefix, "models"));
    let listed = bucket
        .wait(bucket.objects.list_with_delimiter(Some(&dir)))
        .map_err(|e| bucket.object_error(dir.as_ref(), e))?;
    let mut names = Vec::new();
    for meta in listed.objects {
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
