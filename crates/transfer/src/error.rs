//! Transfer failures, each naming the object and, where it applies, the
//! chunk; and which of them a retry can cure.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{url}: the server answered HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        /// What to do about it, when that is known (a hub asking for a
        /// token); empty or starting with "; ".
        hint: &'static str,
    },
    #[error("{url}: {reason}")]
    Connection { url: String, reason: String },
    /// The TLS handshake failed: an untrusted certificate, most often.
    #[error("{url}: the TLS handshake failed ({reason}); if the site signs its servers with its own CA, name that CA in ca_file under [pull]")]
    Tls { url: String, reason: String },
    #[error("{url}: no bytes arrived for {secs} s (stalled)")]
    Stalled { url: String, secs: u64 },
    #[error("{url}: the response ended after {got} of {expected} bytes")]
    Truncated {
        url: String,
        got: u64,
        expected: u64,
    },
    #[error("{url}: the server sent bytes {got_start}.. when asked for {wanted_start}..")]
    WrongRange {
        url: String,
        wanted_start: u64,
        got_start: u64,
    },
    #[error("{what}: chunk at offset {offset} ({length} bytes) has SHA-256 {actual}, expected {expected}")]
    ChunkMismatch {
        what: String,
        offset: u64,
        length: u64,
        expected: String,
        actual: String,
    },
    #[error("{what} has SHA-256 {actual}, expected {expected}")]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what} changed on the server while it was being fetched (validator {before} became {after}); pull again")]
    Changed {
        what: String,
        before: String,
        after: String,
    },
    #[error("{url}: the server ignored the byte range asked for")]
    RangeIgnored { url: String },
    #[error("the transfer was cancelled")]
    Cancelled,
    #[error("{}: not enough free space for its {needed} bytes; free some (`hearth gc` drops abandoned pulls) and pull again to resume", path.display())]
    NoSpace { path: PathBuf, needed: u64 },
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{0}")]
    BadLocation(String),
    /// Every peer asked for the object failed or sent bad bytes, and no
    /// origin stood behind them.
    #[error("{what}: every peer was dropped and no origin is known to fall back to")]
    NoPlaceLeft { what: String },
}

impl TransferError {
    /// Whether trying again (after a pause) may succeed: the network and
    /// the server's transient states, and a chunk whose bytes came wrong.
    /// Local I/O (a full disk), refusals (4xx) and settled mismatches are
    /// final.
    pub fn is_transient(&self) -> bool {
        match self {
            TransferError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            TransferError::Connection { .. }
            | TransferError::Stalled { .. }
            | TransferError::Truncated { .. }
            | TransferError::WrongRange { .. }
            | TransferError::ChunkMismatch { .. } => true,
            _ => false,
        }
    }
}

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, TransferError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, TransferError> {
        self.map_err(|cause| TransferError::Io {
            path: path.to_path_buf(),
            cause,
        })
    }
}
