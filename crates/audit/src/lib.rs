//! The tamper-evident audit log.
//!
//! Every entry is one JSON line carrying its sequence number, the previous
//! line's hash (`prev`) and its own (`hash`), so editing, deleting,
//! inserting or reordering a line breaks the chain where it happened. Every
//! N entries or T seconds, at each rotation and at shutdown, a `checkpoint`
//! line signs the chain's head with an ed25519 key kept outside the log, so
//! rewriting the whole chain needs that key. A writer thread batches lines
//! and fsyncs each batch: a crash loses at most the unsynced tail and never
//! leaves a broken chain (a torn last line is cut off and recorded at the
//! next start). Files rotate by size; the chain runs on across them.
//!
//! This crate knows nothing of HTTP or principals: callers describe what
//! happened as an [`Event`].

mod chain;
mod event;
mod export;
mod key;
mod verify;
mod writer;

pub use chain::{line_hash, GENESIS};
pub use ed25519_dalek::VerifyingKey;
pub use event::{ApiRequest, Event};
pub use export::{export, parse_since, Query};
pub use key::{key_id, load_public_key, public_path, signature_holds, AuditKey};
pub use verify::{files_from, verify, Failure, Report};
pub use writer::{log_files, AuditConfig, AuditLog};

/// What can go wrong opening or writing the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path} line {line} is damaged ({reason}); run `hearth audit verify`, and move the file aside to start a new chain")]
    Damaged {
        path: std::path::PathBuf,
        line: u64,
        reason: String,
    },
    #[error("audit signing key {path}: {reason}")]
    Key {
        path: std::path::PathBuf,
        reason: String,
    },
}
