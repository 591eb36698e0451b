//! Turns a presented credential into a principal, or says why not.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::AuthError;
use crate::jwt::JwtVerifier;
use crate::keys::{KeyStore, KEY_PREFIX};
use crate::principal::{Credential, Principal};

/// Every way this server recognises a caller.
pub struct Authenticator {
    keys: KeyStore,
    jwt: JwtVerifier,
    /// Latched once credentials became required: from then on this process
    /// never answers without them, whatever happens to the store.
    required: AtomicBool,
}

impl Authenticator {
    /// API keys only.
    pub fn new(keys: KeyStore) -> Authenticator {
        Authenticator::with_jwt(keys, JwtVerifier::new(Vec::new()).expect("no issuers"))
    }

    /// API keys and JWTs from the verifier's issuers.
    pub fn with_jwt(keys: KeyStore, jwt: JwtVerifier) -> Authenticator {
        let required = AtomicBool::new(!jwt.is_empty());
        Authenticator {
            keys,
            jwt,
            required,
        }
    }

    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    pub fn jwt(&self) -> &JwtVerifier {
        &self.jwt
    }

    /// Whether callers must authenticate: as soon as a JWT issuer is
    /// configured or any key exists (even one created while the server
    /// runs, or since revoked). An unreadable store counts as requiring
    /// credentials.
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

    /// The principal behind `credential` at `now` (Unix seconds). API keys
    /// carry a fixed prefix; anything else shaped like a JWT is one.
    pub fn authenticate(&self, credential: &Credential, now: u64) -> Result<Principal, AuthError> {
        let token = credential.token();
        if token.starts_with(KEY_PREFIX) || self.jwt.is_empty() {
            self.keys.authenticate(token, now)
        } else if JwtVerifier::looks_like_jwt(token) {
            self.jwt.verify(token, now)
        } else {
            Err(AuthError::InvalidKey)
        }
    }
}
