//! Who is asking and what they may do, without HTTP.
//!
//! A request's credential (an API key or a JWT) becomes a
//! [`Principal`]: an id, roles and attributes that policies decide on, and
//! the priority class its requests may use, and the [`Limits`] [`Quotas`]
//! hold it to. API keys live hashed in an
//! embedded SQLite database ([`KeyStore`]). [`Policies`] (Cedar) decide
//! what a principal may do. The `server` crate turns these decisions into
//! HTTP answers; nothing here knows about status codes.

mod authenticator;
mod error;
mod jwt;
mod keys;
pub mod policy;
mod principal;
pub mod quota;

pub use authenticator::Authenticator;
pub use error::{AuthError, StoreError};
pub use jwt::{JwtConfigError, JwtIssuerConfig, JwtVerifier};
pub use keys::{KeyInfo, KeyStore, NewKey, KEY_PREFIX};
pub use policy::{
    Action, LivePolicies, Policies, PolicyDecision, PolicyError, RequestContext, Resource,
};
pub use principal::{Credential, Principal};
pub use quota::{Admission, DailyUsage, Limits, QuotaExceeded, Quotas};

/// Seconds since the Unix epoch: the clock every expiry check uses.
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the Unix epoch: the clock quotas count on.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
