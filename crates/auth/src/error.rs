//! Why a credential was refused, and what went wrong in the key store.
//!
//! Messages name key ids, which are public, and never the secret that was
//! presented: these strings reach clients and logs.

use std::path::PathBuf;

/// A credential that does not identify anyone.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <key>` or `x-api-key: <key>`")]
    Missing,
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    /// No key has this id, or the secret does not match it.
    #[error("invalid API key")]
    InvalidKey,
    #[error("API key {id} has been revoked")]
    Revoked { id: String },
    #[error("API key {id} has expired")]
    Expired { id: String },
    /// A bearer token that is not a valid JWT from a trusted issuer: the
    /// reason names the check that failed, never the token.
    #[error("invalid bearer token: {0}")]
    InvalidToken(&'static str),
    /// Signed by a key the issuer does not (yet) publish: a rotation the
    /// cached JWKS has not seen, or a forgery.
    #[error("invalid bearer token: signed by a key {issuer} does not publish")]
    UnknownSigningKey { issuer: String },
    /// The store could not be read; the request is refused, not let through.
    #[error("credentials could not be checked")]
    Unavailable,
}

/// The key database could not be opened, migrated, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("key store {path} has schema version {found}; this Hearth knows up to {known}")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("no API key with id {0}")]
    NoSuchKey(String),
    #[error("invalid key field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the system's random source failed: {0}")]
    Random(String),
}
