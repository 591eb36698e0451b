//! The authenticated caller, and the credential a request presents.

use std::collections::{BTreeMap, BTreeSet};

use types::Priority;

use crate::error::AuthError;
use crate::quota::Limits;

/// Who a request comes from, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable and unique: `key:<key id>` for API keys.
    pub id: String,
    /// A human name for logs and audit (the key's `--name`).
    pub name: String,
    /// Who vouched for a token principal (a JWT's `iss`); `None` for keys.
    pub issuer: Option<String>,
    pub roles: BTreeSet<String>,
    /// Free-form attributes policies decide on (department, certification…).
    pub attrs: BTreeMap<String, String>,
    /// The highest class this principal's requests may use; `None` leaves
    /// the request's own choice.
    pub priority: Option<Priority>,
    /// Requests and tokens it may use ([`crate::Quotas`]).
    pub limits: Limits,
}

impl Principal {
    /// The account its usage is counted in: the id, qualified by the
    /// issuer, so two providers' `sub`s never share a budget.
    pub fn account(&self) -> String {
        match &self.issuer {
            Some(iss) => format!("{iss}#{}", self.id),
            None => self.id.clone(),
        }
    }

    /// The class a request runs in: its own choice, but never above the
    /// principal's (a batch key cannot ask for interactive).
    pub fn cap_priority(&self, requested: Priority) -> Priority {
        match self.priority {
            Some(Priority::Batch) => Priority::Batch,
            _ => requested,
        }
    }
}

/// A credential as presented, before it is checked.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    /// Never prints the secret: credentials must not reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl Credential {
    /// Reads the `Authorization` and `x-api-key` header values. Both absent
    /// is [`AuthError::Missing`]; anything but one well-formed credential is
    /// [`AuthError::Malformed`].
    pub fn from_headers(
        authorization: Option<&[u8]>,
        api_key: Option<&[u8]>,
    ) -> Result<Credential, AuthError> {
        fn text(v: &[u8]) -> Result<&str, AuthError> {
            std::str::from_utf8(v)
                .map(str::trim)
                .map_err(|_| AuthError::Malformed("header is not UTF-8"))
        }
        let from_authorization = authorization
            .map(|v| {
                let v = text(v)?;
                let (scheme, token) = v.split_once(' ').ok_or(AuthError::Malformed(
                    "expected `Authorization: Bearer <token>`",
                ))?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(AuthError::Malformed("only the Bearer scheme is accepted"));
                }
                Ok(token.trim().to_string())
            })
            .transpose()?;
        let from_api_key = api_key.map(|v| text(v).map(str::to_string)).transpose()?;
        let token = match (from_authorization, from_api_key) {
            (None, None) => return Err(AuthError::Missing),
            (Some(a), Some(k)) if a != k => {
                return Err(AuthError::Malformed(
                    "`Authorization` and `x-api-key` carry different credentials",
                ))
            }
            (Some(t), _) | (None, Some(t)) => t,
        };
        if token.is_empty() || token.len() > 16 * 1024 || token.chars().any(char::is_whitespace) {
            return Err(AuthError::Malformed("empty, oversized or split token"));
        }
        Ok(Credential::Bearer(token))
    }

    pub fn token(&self) -> &str {
        match self {
            Credential::Bearer(t) => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(auth: Option<&str>, key: Option<&str>) -> Result<Credential, AuthError> {
        Credential::from_headers(auth.map(str::as_bytes), key.map(str::as_bytes))
    }

    #[test]
    fn bearer_and_x_api_key_are_accepted() {
        assert_eq!(parse(Some("Bearer abc"), None).unwrap().token(), "abc");
        assert_eq!(parse(Some("bearer  abc "), None).unwrap().token(), "abc");
        assert_eq!(parse(None, Some("abc")).unwrap().token(), "abc");
        assert_eq!(
            parse(Some("Bearer abc"), Some("abc")).unwrap().token(),
            "abc"
        );
    }

    #[test]
    fn anything_else_is_missing_or_malformed() {
        assert_eq!(parse(None, None), Err(AuthError::Missing));
        for (auth, key) in [
            (Some("Basic dXNlcjpwYXNz"), None),
            (Some("Bearer"), None),
            (Some("Bearer "), None),
            (Some("abc"), None),
            (Some("Bearer a b"), None),
            (None, Some("")),
            (Some("Bearer abc"), Some("def")),
        ] {
            assert!(
                matches!(parse(auth, key), Err(AuthError::Malformed(_))),
                "{auth:?} {key:?}"
            );
        }
        let not_utf8 = Credential::from_headers(Some(b"Bearer \xff"), None);
        assert!(matches!(not_utf8, Err(AuthError::Malformed(_))));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let c = parse(Some("Bearer hth_0123_supersecret"), None).unwrap();
        assert!(!format!("{c:?}").contains("supersecret"));
    }

    #[test]
    fn a_batch_principal_cannot_ask_for_interactive() {
        let mut p = Principal {
            id: "key:x".into(),
            name: "x".into(),
            issuer: None,
            roles: BTreeSet::new(),
            attrs: BTreeMap::new(),
            priority: Some(Priority::Batch),
            limits: Limits::default(),
        };
        assert_eq!(p.cap_priority(Priority::Interactive), Priority::Batch);
        p.priority = Some(Priority::Interactive);
        assert_eq!(p.cap_priority(Priority::Batch), Priority::Batch);
        p.priority = None;
        assert_eq!(p.cap_priority(Priority::Interactive), Priority::Interactive);
    }
}
