//! Signing JWTs the way an OIDC provider would, with committed test-only keys.
//!
//! The keys under `keys/` protect nothing: they exist so tests can play the
//! identity provider for every algorithm Hearth accepts.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

/// One provider key: it signs tokens and publishes its public half.
pub struct Signer {
    pub kid: String,
    pub alg: Algorithm,
    key: EncodingKey,
    /// base64url public key, for Ed25519 keys.
    ed_public: Option<&'static str>,
}

impl Signer {
    pub fn rs256(kid: &str) -> Signer {
        Signer::pem(
            kid,
            Algorithm::RS256,
            include_bytes!("../keys/rsa.pem"),
            None,
        )
    }

    pub fn es256(kid: &str) -> Signer {
        Signer::pem(
            kid,
            Algorithm::ES256,
            include_bytes!("../keys/ec.pem"),
            None,
        )
    }

    pub fn eddsa(kid: &str) -> Signer {
        Signer::pem(
            kid,
            Algorithm::EdDSA,
            include_bytes!("../keys/ed25519.pem"),
            Some(include_str!("../keys/ed25519.x")),
        )
    }

    /// A second Ed25519 key: a provider nobody configured.
    pub fn other_eddsa(kid: &str) -> Signer {
        Signer::pem(
            kid,
            Algorithm::EdDSA,
            include_bytes!("../keys/other-ed25519.pem"),
            Some(include_str!("../keys/other-ed25519.x")),
        )
    }

    pub fn hs256(kid: &str, secret: &[u8]) -> Signer {
        Signer {
            kid: kid.into(),
            alg: Algorithm::HS256,
            key: EncodingKey::from_secret(secret),
            ed_public: None,
        }
    }

    fn pem(kid: &str, alg: Algorithm, pem: &[u8], ed_public: Option<&'static str>) -> Signer {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_ed_pem(pem),
        }
        .expect("a committed test key");
        Signer {
            kid: kid.into(),
            alg,
            key,
            ed_public,
        }
    }

    /// A compact JWT over `claims`, with this key's `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign a test token")
    }

    /// The same, with no `kid` (providers with a single key often omit it).
    pub fn sign_without_kid(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.key).expect("sign")
    }

    pub fn jwk(&self) -> Jwk {
        let mut jwk = match self.alg {
            // jsonwebtoken cannot derive an Ed25519 public JWK; the public
            // halves were exported next to the keys with openssl.
            Algorithm::EdDSA => serde_json::from_value(serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": self.ed_public.expect("Ed25519"),
            }))
            .expect("an OKP JWK"),
            _ => Jwk::from_encoding_key(&self.key, self.alg).expect("public half"),
        };
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }
}

/// The JWKS document a provider with these keys serves.
pub fn jwks(signers: &[&Signer]) -> String {
    let set = JwkSet {
        keys: signers.iter().map(|s| s.jwk()).collect(),
    };
    serde_json::to_string(&set).expect("serialize JWKS")
}
