//! JWT bearer tokens from an organisation's OIDC provider (Keycloak, Entra…).
//!
//! Each configured issuer names its audience, the algorithms it signs with
//! and where its keys come from: a JWKS file, a JWKS URL (fetched and
//! refreshed by the caller through [`JwtVerifier::install_jwks`], so this
//! crate stays free of HTTP), or a shared secret file for HS256. A token's
//! claims become a [`Principal`] through the issuer's claim mapping.
//!
//! Two rules close the classic JWT holes: an issuer's algorithms are either
//! all HMAC (with a secret) or all public-key (with a JWKS), so a public key
//! can never be used as an HMAC secret; and `alg: none` parses as no
//! algorithm at all. Time checks (`exp` required, `nbf`, leeway) use the
//! caller's clock, so they are tested without waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use types::Priority;

use crate::error::AuthError;
use crate::principal::Principal;

/// One trusted token issuer, as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// The exact `iss` claim this issuer's tokens carry.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Required, so
    /// a token minted for another application at the same provider fails.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Accepted `alg` values (RS256, ES256, EdDSA, HS256…).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// HS256/384/512 only: a file holding the shared secret.
    pub secret_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// How often a JWKS URL is fetched again, in seconds.
    #[serde(default = "default_refresh")]
    pub jwks_refresh_secs: u64,
    /// Claim holding the user's stable id.
    #[serde(default = "default_subject")]
    pub subject_claim: String,
    /// Claim holding a display name for logs and audit.
    #[serde(default = "default_name")]
    pub name_claim: String,
    /// Claim holding roles: an array of strings or a space-separated string.
    /// Dotted paths reach nested claims (`realm_access.roles` in Keycloak).
    #[serde(default = "default_roles")]
    pub roles_claim: String,
    /// Principal attribute → claim (path) it is read from.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Claim holding `interactive` or `batch`: the highest class allowed.
    pub priority_claim: Option<String>,
    /// Quotas for each user of this issuer (each `sub` counted apart).
    #[serde(default)]
    pub limits: crate::quota::Limits,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_leeway() -> u64 {
    60
}
fn default_refresh() -> u64 {
    300
}
fn default_subject() -> String {
    "sub".into()
}
fn default_name() -> String {
    "preferred_username".into()
}
fn default_roles() -> String {
    "roles".into()
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// A trusted issuer's configuration or keys are unusable.
#[derive(Debug, thiserror::Error)]
#[error("JWT issuer {issuer}: {reason}")]
pub struct JwtConfigError {
    pub issuer: String,
    pub reason: String,
}

/// A public key or secret an issuer signs with.
struct VerifyKey {
    kid: Option<String>,
    /// The algorithm the key declares, if any.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

struct Issuer {
    config: JwtIssuerConfig,
    algorithms: Vec<Algorithm>,
    keys: RwLock<Arc<Vec<VerifyKey>>>,
}

/// Verifies bearer tokens from every configured issuer.
pub struct JwtVerifier {
    issuers: Vec<Issuer>,
}

impl JwtVerifier {
    /// Checks every issuer's configuration and loads its key files. Issuers
    /// with a JWKS URL start without keys until [`Self::install_jwks`].
    pub fn new(configs: Vec<JwtIssuerConfig>) -> Result<JwtVerifier, JwtConfigError> {
        let mut issuers = Vec::new();
        for config in configs {
            let bad = |reason: String| JwtConfigError {
                issuer: config.issuer.clone(),
                reason,
            };
            if config.issuer.is_empty() {
                return Err(bad("`issuer` is empty".into()));
            }
            if issuers
                .iter()
                .any(|i: &Issuer| i.config.issuer == config.issuer)
            {
                return Err(bad("configured twice".into()));
            }
            if config.audience.is_empty() || config.audience.iter().any(String::is_empty) {
                return Err(bad("`audience` must name at least one audience".into()));
            }
            let algorithms = config
                .algorithms
                .iter()
                .map(|a| {
                    Algorithm::from_str(a).map_err(|_| bad(format!("unknown algorithm `{a}`")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if algorithms.is_empty() {
                return Err(bad("`algorithms` is empty".into()));
            }
            let hmac = algorithms.iter().any(is_hmac);
            if hmac && !algorithms.iter().all(is_hmac) {
                return Err(bad(
                    "HMAC and public-key algorithms cannot share an issuer".into()
                ));
            }
            let sources = [
                config.jwks_file.is_some(),
                config.jwks_url.is_some(),
                config.secret_file.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err(bad(
                    "set exactly one of `jwks_file`, `jwks_url` and `secret_file`".into(),
                ));
            }
            if hmac != config.secret_file.is_some() {
                return Err(bad(
                    "HS256/384/512 need `secret_file`, and `secret_file` needs them".into(),
                ));
            }
            if let Some(url) = &config.jwks_url {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(bad(format!("`jwks_url` {url} is not an http(s) URL")));
                }
            }
            if config.jwks_refresh_secs < 10 {
                return Err(bad("`jwks_refresh_secs` must be at least 10".into()));
            }
            let issuer = Issuer {
                config,
                algorithms,
                keys: RwLock::new(Arc::new(Vec::new())),
            };
            issuer.load_files()?;
            issuers.push(issuer);
        }
        Ok(JwtVerifier { issuers })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// `(issuer, url, refresh seconds)` for every issuer whose keys the
    /// caller must fetch.
    pub fn jwks_urls(&self) -> Vec<(String, String, u64)> {
        self.issuers
            .iter()
            .filter_map(|i| {
                let url = i.config.jwks_url.clone()?;
                Some((i.config.issuer.clone(), url, i.config.jwks_refresh_secs))
            })
            .collect()
    }

    /// Replaces `issuer`'s keys with a fetched JWKS document. Returns how
    /// many keys it holds. A bad document leaves the old keys in place.
    pub fn install_jwks(&self, issuer: &str, jwks: &str) -> Result<usize, JwtConfigError> {
        let Some(i) = self.issuers.iter().find(|i| i.config.issuer == issuer) else {
            return Err(JwtConfigError {
                issuer: issuer.into(),
                reason: "not a configured issuer".into(),
            });
        };
        let keys = parse_jwks(issuer, jwks)?;
        let n = keys.len();
        *i.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(n)
    }

    /// Reads every issuer's key files again (SIGHUP). All or nothing per
    /// issuer: a file that fails to parse keeps that issuer's old keys, and
    /// the other issuers still reload. Returns the first failure.
    pub fn reload_files(&self) -> Result<(), JwtConfigError> {
        let results: Vec<_> = self.issuers.iter().map(Issuer::load_files).collect();
        results.into_iter().collect()
    }

    /// Whether `token` has a JWT's shape (three base64url parts).
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// The principal behind a JWT at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken("malformed"))?;
        let iss = unverified_issuer(token).ok_or(AuthError::InvalidToken("no `iss` claim"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or(AuthError::InvalidToken("untrusted issuer"))?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(AuthError::InvalidToken(
                "algorithm not allowed for its issuer",
            ));
        }
        let keys = Arc::clone(&issuer.keys.read().unwrap_or_else(|e| e.into_inner()));
        let candidates: Vec<&VerifyKey> = keys
            .iter()
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                // A key without a kid (a shared secret) may sign any kid.
                _ => true,
            })
            .filter(|k| k.alg.is_none_or(|a| a == header.alg))
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::UnknownSigningKey {
                issuer: issuer.config.issuer.clone(),
            });
        }
        let mut validation = Validation::new(header.alg);
        // Time is checked below against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = ["iss", "aud"].map(String::from).into();
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&issuer.config.audience);
        let mut last = AuthError::InvalidToken("bad signature");
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return issuer.principal(&data.claims, now),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature | K::InvalidAlgorithm => {
                            AuthError::InvalidToken("bad signature")
                        }
                        K::InvalidAudience => AuthError::InvalidToken("wrong audience"),
                        K::InvalidIssuer => AuthError::InvalidToken("untrusted issuer"),
                        K::MissingRequiredClaim(_) => AuthError::InvalidToken("missing `aud`"),
                        _ => AuthError::InvalidToken("malformed"),
                    };
                    if !matches!(last, AuthError::InvalidToken("bad signature")) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

fn is_hmac(a: &Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The `iss` claim, read before verification only to pick whose keys verify.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

fn parse_jwks(issuer: &str, text: &str) -> Result<Vec<VerifyKey>, JwtConfigError> {
    let bad = |reason: String| JwtConfigError {
        issuer: issuer.into(),
        reason,
    };
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| bad(format!("JWKS is not valid: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        // Keys for encryption, or of a type this build cannot verify, are
        // skipped, as every OIDC client does: providers publish both.
        if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| Algorithm::from_str(&a.to_string()).ok());
        keys.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    Ok(keys)
}

impl Issuer {
    fn load_files(&self) -> Result<(), JwtConfigError> {
        let bad = |reason: String| JwtConfigError {
            issuer: self.config.issuer.clone(),
            reason,
        };
        let keys = if let Some(path) = &self.config.jwks_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            parse_jwks(&self.config.issuer, &text)
                .map_err(|e| bad(format!("{}: {}", path.display(), e.reason)))?
        } else if let Some(path) = &self.config.secret_file {
            let secret = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            let secret = secret.trim_ascii();
            if secret.len() < 32 {
                return Err(bad(format!(
                    "{}: an HMAC secret needs at least 32 bytes",
                    path.display()
                )));
            }
            vec![VerifyKey {
                kid: None,
                alg: None,
                key: DecodingKey::from_secret(secret),
            }]
        } else {
            return Ok(());
        };
        if keys.is_empty() {
            return Err(bad("no usable signing key".into()));
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// The verified claims as a principal, after the time checks.
    fn principal(&self, claims: &Value, now: u64) -> Result<Principal, AuthError> {
        let c = &self.config;
        let leeway = c.leeway_secs as f64;
        let now = now as f64;
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or(AuthError::InvalidToken("no `exp` claim"))?;
        if now > exp + leeway {
            return Err(AuthError::InvalidToken("expired"));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_f64().ok_or(AuthError::InvalidToken("malformed"))?;
            if now + leeway < nbf {
                return Err(AuthError::InvalidToken("not yet valid"));
            }
        }
        let sub = claim(claims, &c.subject_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or(AuthError::InvalidToken("no subject"))?;
        let name = claim(claims, &c.name_claim)
            .and_then(Value::as_str)
            .unwrap_or(sub);
        let roles: BTreeSet<String> = match claim(claims, &c.roles_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => BTreeSet::new(),
        };
        let attrs = c
            .attributes
            .iter()
            .filter_map(|(attr, path)| {
                let v = match claim(claims, path)? {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((attr.clone(), v))
            })
            .collect();
        let priority = c
            .priority_claim
            .as_deref()
            .and_then(|p| claim(claims, p))
            .and_then(Value::as_str)
            .and_then(Priority::parse);
        Ok(Principal {
            id: format!("user:{sub}"),
            name: name.to_string(),
            issuer: Some(c.issuer.clone()),
            roles,
            attrs,
            priority,
            limits: c.limits,
        })
    }
}

/// A claim by name, or by dotted path into nested objects. The whole name
/// is tried first: providers use URLs with dots as claim names.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_are_found_by_name_or_dotted_path() {
        let c = json!({"realm_access": {"roles": ["a"]}, "https://x.org/roles": "b"});
        assert_eq!(claim(&c, "realm_access.roles"), Some(&json!(["a"])));
        assert_eq!(claim(&c, "https://x.org/roles"), Some(&json!("b")));
        assert_eq!(claim(&c, "realm_access.missing"), None);
    }
}
