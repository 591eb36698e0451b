//! Models in object storage (S3-compatible, through `object_store`): a
//! bucket laid out for Hearth, pushes that upload only what a bucket
//! lacks, and pulls that go through the store's verified, resumable
//! transfers.
//!
//! Layout under `s3://bucket/prefix/`:
//!
//! ```text
//! chunks/sha256-<hex>    each chunk of each pushed file once, named by its SHA-256
//! models/<name>.json     a pushed model's manifest (the store's), written last
//! ```
//!
//! Chunks are content-addressed, so a second version of a model, or a
//! model sharing files with another, uploads only the chunks that differ;
//! a manifest appears only after every chunk it names, so a reader never
//! finds a model it cannot fetch. `sync` pulls every model pushed under a
//! prefix that the node lacks, or has in an older version. A plain object (`s3://bucket/x.gguf`)
//! pulls like any ranged source.

mod error;
mod push;
mod source;
mod sync;

use std::future::Future;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::ObjectStore;

pub use error::BucketError;
pub use push::{push, Pushed};
pub use source::{pull, pull_counted, repair, Reuse};
pub use sync::{sync, Elsewhere, Synced};

/// Where a site's object storage is and who Hearth is there; the binary
/// fills it from `[s3]` and the standard AWS variables.
#[derive(Clone, Default)]
pub struct S3Options {
    /// An S3-compatible server (MinIO, Ceph, …) instead of AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

// By hand: the secrets never reach a log line.
impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A read that receives nothing for this long is a stall (retried), as
/// for http sources.
const STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// `s3://bucket/key`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub key: String,
}

impl Location {
    pub fn parse(url: &str) -> Result<Location, BucketError> {
        let bad = |why: &str| BucketError::BadLocation {
            url: url.to_string(),
            reason: why.to_string(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("an object storage location starts with s3://"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(bad(
                "a bucket name is 3 to 63 lowercase letters, digits, '-' or '.'",
            ));
        }
        let key = key.trim_matches('/');
        if key.split('/').any(|part| part == "." || part == "..") || key.contains("//") {
            return Err(bad("a key has no empty, '.' or '..' segments"));
        }
        Ok(Location {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

/// An open bucket, with the runtime its async client runs on; every
/// method blocks, as the store's transfers do.
pub struct Bucket {
    name: String,
    objects: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    pub fn open(name: &str, options: &S3Options) -> Result<Bucket, BucketError> {
        // No whole-request timeout: a chunk under a rate cap may take
        // minutes. Reads time out per piece instead (`STALL`). Set first:
        // the client options also hold `allow_http`, set below.
        let client = object_store::ClientOptions::new()
            .with_timeout_disabled()
            .with_connect_timeout(STALL);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(name)
            .with_client_options(client);
        if let Some(endpoint) = options.endpoint.clone() {
            // A site's own server on plain http is its choice to make.
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &options.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &options.session_token {
            builder = builder.with_token(token);
        }
        let objects = builder.build().map_err(|source| BucketError::Object {
            url: format!("s3://{name}"),
            source,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| BucketError::Runtime(e.to_string()))?;
        Ok(Bucket {
            name: name.to_string(),
            objects: Arc::new(objects),
            runtime,
        })
    }

    /// `s3://bucket/key`, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name)
    }

    fn wait<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn object_error(&self, key: &str, source: object_store::Error) -> BucketError {
        BucketError::Object {
            url: self.url(key),
            source,
        }
    }
}

/// The key of a chunk under `prefix`.
fn chunk_key(prefix: &str, sha256: &str) -> Key {
    Key::from(join(prefix, &format!("chunks/sha256-{sha256}")))
}

/// The key of a model's manifest under `prefix`.
fn manifest_key(prefix: &str, name: &str) -> Key {
    Key::from(join(prefix, &format!("models/{name}.json")))
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_refuse_what_is_not_one() {
        assert_eq!(
            Location::parse("s3://models/site/a/").unwrap(),
            Location {
                bucket: "models".into(),
                key: "site/a".into()
            }
        );
        assert_eq!(Location::parse("s3://models").unwrap().key, "");
        for bad in [
            "https://models/x",
            "s3://Models/x",
            "s3://m/x",
            "s3://models/a//b",
            "s3://models/a/../b",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(chunk_key("p", "ab").as_ref(), "p/chunks/sha256-ab");
        assert_eq!(manifest_key("", "m:q4").as_ref(), "models/m:q4.json");
    }
}
