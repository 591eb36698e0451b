//! Pulls from a bucket: a pushed model's files read chunk by chunk from
//! their content-addressed objects, each checked against the manifest as
//! it arrives, or a plain GGUF object read in ranges; both through
//! [`store::Store::pull_files`], so they resume and verify like any pull.

use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, ObjectStore};
use store::{FileToFetch, Manifest, Progress, PullOptions, Repaired, Store, StoredModel};
use transfer::source::Sink;
use transfer::{Chunk, Remote, Source, TransferError};

use crate::{chunk_key, manifest_key, Bucket, BucketError, Location, S3Options};

/// Pulls `url` into `store`: `s3://bucket/prefix/<name>` is a model pushed
/// there (its manifest at `prefix/models/<name>.json`), and
/// `s3://bucket/key.gguf` a plain object. `name` overrides the stored name.
pub fn pull(
    store: &Store,
    url: &str,
    name: Option<&str>,
    s3: &S3Options,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<StoredModel, BucketError> {
    Ok(pull_counted(store, url, name, s3, options, progress)?.0)
}

/// Bytes a pull took from files already stored, and bytes it received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reuse {
    pub reused_bytes: u64,
    pub transferred_bytes: u64,
}

/// [`pull`], saying how much of a pushed model's bytes were already here
/// (`None` for a plain object, read whole).
pub fn pull_counted(
    store: &Store,
    url: &str,
    name: Option<&str>,
    s3: &S3Options,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<(StoredModel, Option<Reuse>), BucketError> {
    let location = Location::parse(url)?;
    let bucket = Arc::new(Bucket::open(&location.bucket, s3)?);
    // Recorded as sync and repair spell it: `s3://bucket/key`, normalised.
    let url = &bucket.url(&location.key);
    let (prefix, last) = split_key(&location.key);
    if last.is_empty() {
        return Err(BucketError::BadLocation {
            url: url.to_string(),
            reason: "name a model (s3://bucket/prefix/NAME) or a .gguf object".into(),
        });
    }
    if let Some(stem) = last.strip_suffix(".gguf") {
        let name = name.map_or_else(|| stem.to_ascii_lowercase(), str::to_string);
        let source = ObjectSource {
            bucket,
            key: Key::from(location.key.as_str()),
        };
        let files = vec![FileToFetch {
            source: Box::new(source),
            expected: transfer::Expected::default(),
        }];
        return Ok((
            store.pull_files(&name, url, files, options, progress)?,
            None,
        ));
    }
    let manifest = read_manifest(&bucket, &prefix, &last)?;
    let name = name.unwrap_or(&manifest.name).to_string();
    let (model, reuse) = pull_manifest(
        store, &bucket, &prefix, &manifest, &name, url, options, progress,
    )?;
    Ok((model, Some(reuse)))
}

/// `prefix/last` → (`prefix`, `last`); a key without `/` has no prefix.
fn split_key(key: &str) -> (String, String) {
    match key.rsplit_once('/') {
        Some((prefix, last)) => (prefix.to_string(), last.to_string()),
        None => (String::new(), key.to_string()),
    }
}

/// `hearth repair` of a model pulled from object storage: only its bad
/// chunks, fetched again from where its manifest says it came from (the
/// chunk objects of a pushed model, or ranges of a plain object).
pub fn repair(
    store: &Store,
    name: &str,
    s3: &S3Options,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Repaired, BucketError> {
    let model = store.stored(name)?;
    let url = model.manifest.source.clone();
    let location = Location::parse(&url)?;
    let bucket = Arc::new(Bucket::open(&location.bucket, s3)?);
    let (prefix, last) = split_key(&location.key);
    let open = |m: &Manifest, index: usize| -> Result<Box<dyn Source>, store::StoreError> {
        if last.ends_with(".gguf") {
            return Ok(Box::new(ObjectSource {
                bucket: Arc::clone(&bucket),
                key: Key::from(location.key.as_str()),
            }));
        }
        let part = m.files().swap_remove(index);
        Ok(Box::new(ChunkSource::of(
            &bucket, &prefix, &url, index, part,
        )))
    };
    Ok(store.repair_from(&model.manifest.name, &open, options, progress)?)
}

/// Fetches the files `manifest` names from their chunk objects under
/// `prefix` and stores them as `name`, recording `url` as the source.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pull_manifest(
    store: &Store,
    bucket: &Arc<Bucket>,
    prefix: &str,
    manifest: &Manifest,
    name: &str,
    url: &str,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<(StoredModel, Reuse), BucketError> {
    let mut patches = Vec::new();
    let files = manifest
        .files()
        .into_iter()
        .enumerate()
        .map(|(index, part)| {
            // Bytes of this version already stored here (an earlier
            // version's unchanged tensors) are read from disk.
            let local = match manifest.cdc.get(index) {
                Some(wanted) => store.local_copies(name, wanted).unwrap_or_else(|err| {
                    tracing::warn!(model = %name, %err, "not reusing stored bytes");
                    Vec::new()
                }),
                None => Vec::new(),
            };
            FileToFetch {
                expected: transfer::Expected {
                    size: Some(part.size),
                    sha256: Some(part.sha256.clone()),
                    chunks: part.chunks.clone(),
                },
                source: {
                    let patched = Arc::new(transfer::Patched::new(
                        Box::new(ChunkSource::of(bucket, prefix, url, index, part)),
                        local,
                    ));
                    patches.push(Arc::clone(&patched));
                    Box::new(patched)
                },
            }
        })
        .collect();
    let model = store.pull_files(name, url, files, options, progress)?;
    let reuse = Reuse {
        reused_bytes: patches.iter().map(|p| p.reused()).sum(),
        transferred_bytes: patches.iter().map(|p| p.fetched()).sum(),
    };
    Ok((model, reuse))
}

/// The manifest pushed for `name` under `prefix`.
pub(crate) fn read_manifest(
    bucket: &Bucket,
    prefix: &str,
    name: &str,
) -> Result<Manifest, BucketError> {
    let key = manifest_key(prefix, name);
    let bytes = bucket
        .wait(async {
            let got = bucket.objects.get(&key).await?;
            got.bytes().await
        })
        .map_err(|e| bucket.object_error(key.as_ref(), e))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| BucketError::BadManifest {
            url: bucket.url(key.as_ref()),
            reason: e.to_string(),
        })?;
    manifest
        .check_received(name)
        .map_err(|reason| BucketError::BadManifest {
            url: bucket.url(key.as_ref()),
            reason,
        })?;
    Ok(manifest)
}

/// Streams `range` of `key` into `sink`.
fn stream(
    bucket: &Bucket,
    key: &Key,
    range: Option<(u64, u64)>,
    if_match: Option<&str>,
    sink: &mut Sink<'_>,
) -> Result<u64, TransferError> {
    let url = bucket.url(key.as_ref());
    let failed = |e| transfer_error(&url, e);
    bucket.wait(async {
        let options = GetOptions {
            range: range.map(|(start, end)| GetRange::Bounded(start..end)),
            if_match: if_match.map(str::to_string),
            ..GetOptions::default()
        };
        let got = bucket
            .objects
            .get_opts(key, options)
            .await
            .map_err(failed)?;
        let mut body = got.into_stream();
        let mut sent = 0u64;
        // The client's own timeout is off (a throttled chunk may take
        // minutes); a body that sends nothing for STALL is a stall.
        loop {
            let next = tokio::time::timeout(crate::STALL, body.next()).await;
            let Ok(next) = next else {
                return Err(TransferError::Stalled {
                    url: url.clone(),
                    secs: crate::STALL.as_secs(),
                });
            };
            let Some(piece) = next else { break };
            let piece = piece.map_err(failed)?;
            sent += piece.len() as u64;
            sink(&piece)?;
        }
        Ok(sent)
    })
}

/// An object storage failure as the transfer sees it: a missing object,
/// refused credentials and a changed object are final; anything else (the
/// network, the server's transient states) is retried.
fn transfer_error(url: &str, e: object_store::Error) -> TransferError {
    let status = |status, hint| TransferError::Status {
        url: url.to_string(),
        status,
        hint,
    };
    match e {
        object_store::Error::NotFound { .. } => status(404, ""),
        object_store::Error::Unauthenticated { .. } => status(
            401,
            "; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS profile",
        ),
        object_store::Error::PermissionDenied { .. } => {
            status(403, "; the credentials may not read this bucket")
        }
        object_store::Error::Precondition { .. } => TransferError::Changed {
            what: url.to_string(),
            before: "the version this pull started with".into(),
            after: "another".into(),
        },
        other => TransferError::Connection {
            url: url.to_string(),
            reason: other.to_string(),
        },
    }
}

/// A plain object, read in ranges.
struct ObjectSource {
    bucket: Arc<Bucket>,
    key: Key,
}

impl Source for ObjectSource {
    fn describe(&self) -> String {
        self.bucket.url(self.key.as_ref())
    }

    fn probe(&self) -> Result<Remote, TransferError> {
        let meta = self
            .bucket
            .wait(self.bucket.objects.head(&self.key))
            .map_err(|e| transfer_error(&self.describe(), e))?;
        Ok(Remote {
            size: Some(meta.size),
            ranges: true,
            validator: meta
                .e_tag
                .or_else(|| Some(format!("{}-{}", meta.size, meta.last_modified))),
            sha256: None,
        })
    }

    fn read(
        &self,
        range: Option<(u64, u64)>,
        validator: Option<&str>,
        sink: &mut Sink<'_>,
    ) -> Result<(), TransferError> {
        // Only an ETag can be matched; a size-and-time validator cannot.
        let etag = validator.filter(|v| v.starts_with('"'));
        stream(&self.bucket, &self.key, range, etag, sink).map(|_| ())
    }
}

/// One file of a pushed model, whose bytes live in chunk objects.
struct ChunkSource {
    bucket: Arc<Bucket>,
    prefix: String,
    described: String,
    size: u64,
    sha256: String,
    chunks: Vec<Chunk>,
}

impl ChunkSource {
    /// File `index` (0-based) of the model pushed at `url`.
    fn of(bucket: &Arc<Bucket>, prefix: &str, url: &str, index: usize, part: store::Part) -> Self {
        ChunkSource {
            bucket: Arc::clone(bucket),
            prefix: prefix.to_string(),
            described: format!("{url}#{}", index + 1),
            size: part.size,
            sha256: part.sha256,
            chunks: part.chunks,
        }
    }
}

impl Source for ChunkSource {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn probe(&self) -> Result<Remote, TransferError> {
        // Content-addressed: the object cannot change under a validator.
        Ok(Remote {
            size: Some(self.size),
            ranges: true,
            validator: Some(self.sha256.clone()),
            sha256: Some(self.sha256.clone()),
        })
    }

    fn read(
        &self,
        range: Option<(u64, u64)>,
        _validator: Option<&str>,
        sink: &mut Sink<'_>,
    ) -> Result<(), TransferError> {
        let (start, end) = range.unwrap_or((0, self.size));
        for chunk in &self.chunks {
            let (from, to) = (
                start.max(chunk.offset),
                end.min(chunk.offset + chunk.length),
            );
            if from >= to {
                continue;
            }
            let key = chunk_key(&self.prefix, &chunk.sha256);
            let whole = from == chunk.offset && to == chunk.offset + chunk.length;
            let inner = (!whole).then_some((from - chunk.offset, to - chunk.offset));
            stream(&self.bucket, &key, inner, None, sink)?;
        }
        Ok(())
    }
}
