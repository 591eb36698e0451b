//! `hearth push MODEL s3://bucket/prefix`: every chunk of the model's files
//! that the bucket lacks is checked against the manifest and uploaded
//! (multipart when large), then the manifest, last.
//!
//! A bucket holds plaintext chunks named by their SHA-256, so that any
//! node can verify what it pulls and share chunks between versions. From
//! an encrypted store each chunk is therefore decrypted in memory on its
//! way up, and only when the caller asked for it (`--plaintext`): the
//! bucket's own protection (server-side encryption, access policy) then
//! guards the weights.

use std::path::Path;

use futures::StreamExt;
use transfer::Chunk;

use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use store::{Progress, Store};

use crate::{chunk_key, manifest_key, Bucket, BucketError, Location, S3Options};

/// Chunks above this go up in parts, several at once.
const MULTIPART_ABOVE: u64 = 16 << 20;
const PART_SIZE: usize = 8 << 20;
/// Chunks checked and uploaded at once (each up to a chunk in memory).
const UPLOADS: usize = 4;

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    pub name: String,
    pub chunks_uploaded: usize,
    pub bytes_uploaded: u64,
    /// Chunks the bucket already held (from this model or another).
    pub chunks_reused: usize,
    pub bytes_reused: u64,
    /// Where the manifest went.
    pub manifest: String,
    /// Chunks went up from an encrypted store, decrypted on their way.
    pub decrypted: bool,
}

/// Pushes stored model `name` to `url`. From an encrypted store only with
/// `plaintext`, the caller's consent to its weights leaving encrypted.
pub fn push(
    store: &Store,
    name: &str,
    url: &str,
    s3: &S3Options,
    limit_rate: Option<u64>,
    plaintext: bool,
    progress: &dyn Progress,
) -> Result<Pushed, BucketError> {
    // The same average-rate cap as pulls: uploads wait until their bytes are due.
    let pace = transfer::Pace::new(limit_rate);
    let location = Location::parse(url)?;
    let bucket = Bucket::open(&location.bucket, s3)?;
    let encrypted = store.encrypted_with()?.is_some();
    if encrypted && !plaintext {
        return Err(BucketError::CannotPush {
            name: name.to_string(),
            reason: "the store is encrypted, and a bucket holds plaintext chunks (named and verified by their SHA-256); add --plaintext to decrypt them on the way up, with the bucket's own encryption guarding them".into(),
        });
    }
    // With its content-defined index, so a node holding an earlier version
    // pulls only what changed.
    let model = store.with_cdc(&store.stored(name)?.manifest.name)?;
    let cannot = |reason: String| BucketError::CannotPush {
        name: model.manifest.name.clone(),
        reason,
    };
    if model.manifest.chunks.is_empty() {
        return Err(cannot(
            "its manifest has no chunk list yet; `hearth verify` records one".into(),
        ));
    }

    let prefix = location.key.as_str();
    let mut pushed = Pushed {
        name: model.manifest.name.clone(),
        ..Pushed::default()
    };
    progress.start(
        &format!("pushing {} to {url}", model.manifest.name),
        model.manifest.total_size(),
    );
    // Each distinct chunk once, checked and uploaded a few at a time.
    let mut jobs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (path, file) in model.files() {
        for chunk in file.chunks {
            if seen.insert(chunk.sha256.clone()) {
                jobs.push((path.clone(), chunk));
            } else {
                pushed.chunks_reused += 1;
                pushed.bytes_reused += chunk.length;
                progress.advance(chunk.length);
            }
        }
    }
    let name = model.manifest.name.as_str();
    let done: Vec<Result<Done, BucketError>> = bucket.wait(
        futures::stream::iter(jobs)
            .map(|(path, chunk)| {
                let (bucket, pace) = (&bucket, &pace);
                async move {
                    let done = push_chunk(store, bucket, prefix, &path, &chunk, name).await?;
                    if let Done::Uploaded(n) = done {
                        pace.received(n);
                    }
                    Ok(done)
                }
            })
            .buffer_unordered(UPLOADS)
            .inspect(|done| {
                if let Ok(Done::Reused(n) | Done::Uploaded(n)) = done {
                    progress.advance(*n);
                }
            })
            .collect(),
    );
    let mut failed = None;
    for done in done {
        match done {
            Ok(Done::Reused(n)) => {
                pushed.chunks_reused += 1;
                pushed.bytes_reused += n;
            }
            Ok(Done::Uploaded(n)) => {
                pushed.chunks_uploaded += 1;
                pushed.bytes_uploaded += n;
            }
            Err(err) => {
                failed.get_or_insert(err);
            }
        }
    }
    // Plaintext left this node only if a chunk went up.
    pushed.decrypted = encrypted && pushed.chunks_uploaded > 0;
    pushed.manifest = bucket.url(manifest_key(prefix, &model.manifest.name).as_ref());
    if let Some(cause) = failed {
        // The chunks that went up stay (each is named by its digest, and
        // a rerun finds them); the caller must still hear of them.
        return Err(stopped(pushed, cause));
    }
    // Last: the manifest is what makes the model visible in the bucket.
    let key = manifest_key(prefix, &model.manifest.name);
    // Where it came from, without what may carry a secret (a pre-signed
    // query, a user:password@).
    let mut shared = model.manifest.clone();
    shared.source = store::without_secrets(&shared.source);
    let json = serde_json::to_vec_pretty(&shared).expect("a manifest serialises");
    if let Err(e) = bucket.wait(bucket.objects.put(&key, PutPayload::from(json))) {
        return Err(stopped(pushed, bucket.object_error(key.as_ref(), e)));
    }
    progress.finish();
    Ok(pushed)
}

/// A push that stopped on `cause`: with what went up, once any chunk did.
fn stopped(pushed: Pushed, cause: BucketError) -> BucketError {
    match pushed.chunks_uploaded {
        0 => cause,
        _ => BucketError::PushIncomplete {
            uploaded: Box::new(pushed),
            cause: Box::new(cause),
        },
    }
}

/// What became of one chunk.
enum Done {
    /// The bucket had it; its bytes.
    Reused(u64),
    Uploaded(u64),
}

/// One chunk of the file at `path`: left alone if the bucket has it, else
/// read (decrypted, from a sealed file), checked against its digest and
/// uploaded.
async fn push_chunk(
    store: &Store,
    bucket: &Bucket,
    prefix: &str,
    path: &Path,
    chunk: &Chunk,
    model: &str,
) -> Result<Done, BucketError> {
    let key = chunk_key(prefix, &chunk.sha256);
    match bucket.objects.head(&key).await {
        Ok(meta) if meta.size == chunk.length => return Ok(Done::Reused(chunk.length)),
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(bucket.object_error(key.as_ref(), e)),
    }
    let cannot = |reason: String| BucketError::CannotPush {
        name: model.to_string(),
        reason,
    };
    let bytes = store
        .read_plain(path, chunk.offset, chunk.length)
        .map_err(|e| cannot(e.to_string()))?;
    // Never publish a damaged chunk under its good name.
    if hex::encode(Sha256::digest(&bytes)) != chunk.sha256 {
        return Err(cannot(format!(
            "the chunk at offset {} of {} does not match its SHA-256; `hearth repair {model}` first",
            chunk.offset,
            path.display()
        )));
    }
    upload(bucket, &key, bytes)
        .await
        .map_err(|e| bucket.object_error(key.as_ref(), e))?;
    Ok(Done::Uploaded(chunk.length))
}

async fn upload(bucket: &Bucket, key: &Key, bytes: Vec<u8>) -> Result<(), object_store::Error> {
    if bytes.len() as u64 <= MULTIPART_ABOVE {
        bucket.objects.put(key, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let upload = bucket.objects.put_multipart(key).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    writer.write(&bytes);
    writer.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sources_lose_their_secrets() {
        use store::without_secrets;
        assert_eq!(
            without_secrets("https://u:p@h.test/m.gguf?X-Amz-Signature=s"),
            "https://h.test/m.gguf"
        );
        assert_eq!(without_secrets("pip://p==1#m.gguf"), "pip://p==1#m.gguf");
        assert_eq!(without_secrets("/models/m.gguf"), "/models/m.gguf");
    }
}
