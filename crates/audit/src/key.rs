//! The checkpoint signing key: an ed25519 key in a file of its own (0600),
//! never inside the log, with its public half beside it for verifiers.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::AuditError;

pub struct AuditKey {
    signing: SigningKey,
}

impl AuditKey {
    /// Loads the key at `path`, creating it (and `<path>.pub`) on first use.
    pub fn load_or_create(path: &Path) -> Result<AuditKey, AuditError> {
        let bad = |reason: String| AuditError::Key {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad("not 64 hex digits of an ed25519 secret key".into()))?;
                Ok(AuditKey {
                    signing: SigningKey::from_bytes(&bytes),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| bad(e.to_string()))?;
                let key = AuditKey {
                    signing: SigningKey::from_bytes(&bytes),
                };
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
                }
                write_private(path, &hex::encode(bytes)).map_err(|e| bad(e.to_string()))?;
                std::fs::write(public_path(path), hex::encode(key.verifying().as_bytes()))
                    .map_err(|e| bad(e.to_string()))?;
                Ok(key)
            }
            Err(e) => Err(bad(e.to_string())),
        }
    }

    pub fn verifying(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub(crate) fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.signing.sign(message).to_bytes())
    }
}

/// `<key path>.pub`: where the public half is written.
pub fn public_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// A public key file (64 hex digits).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, AuditError> {
    let bad = |reason: String| AuditError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("not 64 hex digits of an ed25519 public key".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

/// A short, stable name for a public key: the first 16 hex digits of its
/// SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
