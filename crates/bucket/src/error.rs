//! Object storage failures, each naming the object involved.

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("{url}: {reason}")]
    BadLocation { url: String, reason: String },
    #[error("{url}: {source}")]
    Object {
        url: String,
        source: object_store::Error,
    },
    #[error("{url}: not a model manifest Hearth can read: {reason}")]
    BadManifest { url: String, reason: String },
    #[error("model `{name}` cannot be pushed: {reason}")]
    CannotPush { name: String, reason: String },
    /// A push that failed after some chunks went up: what left this node
    /// before it stopped (no manifest was written, so the model is not
    /// visible in the bucket).
    #[error("{cause} (after uploading {} chunk(s), {} bytes{})", uploaded.chunks_uploaded, uploaded.bytes_uploaded, if uploaded.decrypted { ", decrypted from the encrypted store" } else { "" })]
    PushIncomplete {
        uploaded: Box<crate::Pushed>,
        cause: Box<BucketError>,
    },
    #[error("cannot start the object storage client: {0}")]
    Runtime(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Transfer(#[from] transfer::TransferError),
}
