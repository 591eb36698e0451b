//! An ed25519 signing key in a file of its own (0600), with its public
//! half beside it for verifiers: the audit log signs checkpoints with one
//! (kept outside the log), and model bundles are signed with one.

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
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
                }
                match create_private(path, &hex::encode(bytes)) {
                    Ok(()) => {}
                    // Another process created it first (two commands
                    // started together in a fresh home): use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Self::load_or_create(path)
                    }
                    Err(e) => return Err(bad(e.to_string())),
                }
                let key = AuditKey {
                    signing: SigningKey::from_bytes(&bytes),
                };
                write_replacing(&public_path(path), &hex::encode(key.verifying().as_bytes()))
                    .map_err(|e| bad(e.to_string()))?;
                Ok(key)
            }
            Err(e) => Err(bad(e.to_string())),
        }
    }

    pub fn verifying(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The signature of `message`, in hex.
    pub fn sign(&self, message: &[u8]) -> String {
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

/// Whether `signature` (hex) is `key`'s signature of `message`.
pub fn signature_holds(key: &VerifyingKey, message: &[u8], signature: &str) -> bool {
    use ed25519_dalek::Verifier;
    let Some(bytes) = hex::decode(signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        return false;
    };
    key.verify(message, &ed25519_dalek::Signature::from_bytes(&bytes))
        .is_ok()
}

/// A short, stable name for a public key: the first 16 hex digits of its
/// SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Creates `path` holding `text` (0600) only if it does not exist, and
/// never visible half-written: the text is written and synced under a
/// temporary name, then linked to `path` (which fails if it exists).
fn create_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = sibling(path, "new");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    linked
}

/// Writes `path` whole through a temporary file renamed over it.
fn write_replacing(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = sibling(path, "tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// `path` with `.<pid>.<n>.<tag>` appended: unique to this call.
fn sibling(path: &Path, tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{}.{n}.{tag}", std::process::id()));
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: two commands started together in a fresh home (two
    /// `hearth pull`s) both created the key; the second failed with
    /// "File exists". Every caller now gets the one key.
    #[test]
    fn callers_racing_to_create_the_key_all_get_the_same_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit.key");
        let keys: Vec<VerifyingKey> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| AuditKey::load_or_create(&path).unwrap().verifying()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(load_public_key(&public_path(&path)).unwrap(), keys[0]);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
