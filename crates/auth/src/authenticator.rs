//! Turns a presented credential into a principal, or says why not.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::AuthError;
use crate::keys::KeyStore;
use crate::principal::{Credential, Principal};

/// Every way this server recognises a caller.
pub struct Authenticator {
    keys: KeyStore,
    /// Latched once credentials became required: from then on this process
    /// never answers without them, whatever happens to the store.
    required: AtomicBool,
}

impl Authenticator {
    pub fn new(keys: KeyStore) -> Authenticator {
        Authenticator {
            keys,
            required: AtomicBool::new(false),
        }
    }

    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Whether callers must authenticate: as soon as any key exists (even
    /// one created while the server runs, or since revoked). An unreadable
    /// store counts as requiring credentials.
    pub fn required(&self) -> bool {
        if self.required.load(Ordering::Relaxed) {
            return true;
        }
        let required = self.keys.any().unwrap_or_else(|err| {
            tracing::error!(%err, "cannot read the key store; refusing unauthenticated requests");
            true
        });
        if required {
            self.required.store(true, Ordering::Relaxed);
        }
        required
    }

    /// The principal behind `credential` at `now` (Unix seconds).
    pub fn authenticate(&self, credential: &Credential, now: u64) -> Result<Principal, AuthError> {
        self.keys.authenticate(credential.token(), now)
    }
}
