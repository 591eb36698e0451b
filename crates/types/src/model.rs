//! Model resolution: the one seam between "a name someone typed" and "a verified file".

use std::path::PathBuf;

/// A model file that has been found and checked, ready for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// Canonical name (`smollm2`), or the file name for a path.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Lowercase hex SHA-256 when known (stored models); `None` for ad-hoc paths.
    pub sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("unknown model `{name}`: not in the catalog, not pulled, and not a path to a file")]
    Unknown { name: String },
    #[error("model `{name}` is in the catalog but not pulled yet (run `hearth pull {name}`)")]
    NotPulled { name: String },
    #[error("model `{name}` is damaged in the store: {problem} (run `hearth pull {name}` again)")]
    Damaged { name: String, problem: String },
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Maps a user-facing reference (catalog name, alias, stored name or file path)
/// to a verified file. The content-addressed store implements this too, so
/// callers never look inside the store's layout.
pub trait ModelResolver {
    fn resolve(&self, reference: &str) -> Result<ResolvedModel, ResolveError>;
}
