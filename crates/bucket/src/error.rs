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
    #[error("cannot start the object storage client: {0}")]
    Runtime(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Transfer(#[from] transfer::TransferError),
}
