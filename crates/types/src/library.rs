//! The models a node keeps: what the APIs that manage models (Ollama's
//! `/api/tags`, `/api/show`, `/api/pull`, `/api/delete`) need from a store,
//! without knowing how the store lays its files out.

use std::collections::BTreeMap;

/// What is known about one model file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The name requests use (`smollm2`).
    pub name: String,
    /// Bytes on disk.
    pub size: u64,
    /// Lowercase hex SHA-256 of the file, when known.
    pub sha256: Option<String>,
    /// Unix seconds when the file was stored (or last changed).
    pub modified: u64,
    pub details: ModelDetails,
}

/// A model's own description, from its GGUF metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelDetails {
    /// `general.architecture` (`llama`, `gemma3`...).
    pub architecture: Option<String>,
    pub parameter_count: u64,
    /// The file's quantisation (`Q4_1`, `Q4_K_M`...).
    pub quantization: Option<String>,
    /// The context the model was trained for.
    pub context_length: Option<u64>,
    /// Whether it pools embeddings by design (an embedding model).
    pub embedding_only: bool,
    /// The Jinja chat template it carries, if any.
    pub chat_template: Option<String>,
    /// Scalar metadata (hyperparameters, names), as Ollama's `model_info`
    /// lists it; arrays such as the vocabulary are left out.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Receives progress of long operations; the CLI draws bars, servers
/// stream it to the client or log it.
pub trait Progress {
    /// A phase starts: `what` it does, over `total_bytes` (0 when unknown).
    fn start(&self, what: &str, total_bytes: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("model `{name}` is not stored here")]
    NotStored { name: String },
    #[error("unknown model `{name}`: it is not in the catalog (known: {known})")]
    NotInCatalog { name: String, known: String },
    /// The request cannot be honoured as asked; the reason is for the client.
    #[error("{reason}")]
    Refused { reason: String },
    /// Anything else (I/O, a failed download, a bad file): the message is
    /// for the operator's log, not for a client.
    #[error("{0}")]
    Failed(String),
}

/// The store as the APIs see it. Calls block (file system, downloads):
/// async callers run them on blocking threads.
pub trait ModelLibrary: Send + Sync + 'static {
    /// Every stored model, by name.
    fn list(&self) -> Result<Vec<ModelInfo>, LibraryError>;

    /// One stored model by name or alias; `None` when it is not stored.
    fn find(&self, name: &str) -> Result<Option<ModelInfo>, LibraryError>;

    /// Fetches a catalog model into the store, verified, reporting progress.
    fn pull(&self, name: &str, progress: &dyn Progress) -> Result<ModelInfo, LibraryError>;

    /// Removes a stored model.
    fn remove(&self, name: &str) -> Result<(), LibraryError>;
}

/// What a node lends other nodes (peer distribution): its stored models'
/// manifests and their verified files. Calls block (file system, and a
/// file changed since it was last checked is hashed again).
pub trait SharedModels: Send + Sync + 'static {
    /// The stored manifest of the model `name` (or alias) names, as JSON.
    fn manifest(&self, name: &str) -> Result<Vec<u8>, LibraryError>;

    /// The model's file whose SHA-256 is `sha256`, opened for reading its
    /// plaintext, with its size; [`LibraryError::Refused`] when this node's
    /// copy no longer matches.
    fn open(&self, name: &str, sha256: &str) -> Result<(Box<dyn SharedFile>, u64), LibraryError>;
}

/// A lent file's bytes by position (a plain file, or an encrypted one
/// decrypted record by record). Blocks.
pub trait SharedFile: Send + Sync {
    /// Reads into `buf` from byte `offset`; fewer bytes than asked, or 0
    /// at the end, as `pread` does.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
}

impl SharedFile for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}
