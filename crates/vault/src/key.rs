//! The store's key: 32 bytes from a file or printed by a command (a KMS
//! or HSM wrapper), never from the configuration itself; known to the
//! rest of Hearth only by its id.

use std::path::Path;
use std::process::Command;

use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};

use crate::VaultError;

/// An AES-256-GCM key and its id (a digest of it, safe to print and to
/// write into sealed files: it names the key without revealing it).
pub struct Key {
    pub(crate) aead: LessSafeKey,
    id: [u8; 16],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

impl Key {
    /// 64 hexadecimal digits (whitespace around them ignored), or exactly
    /// 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Key, VaultError> {
        let text = std::str::from_utf8(bytes).map(str::trim).ok();
        let raw = match text.filter(|t| t.len() == 64) {
            Some(hexed) => hex::decode(hexed)
                .map_err(|_| VaultError::BadKey("64 characters, but not hexadecimal".into()))?,
            None if bytes.len() == 32 => bytes.to_vec(),
            None => {
                return Err(VaultError::BadKey(format!(
                    "{} bytes; a key is 64 hexadecimal digits or 32 raw bytes",
                    bytes.len()
                )))
            }
        };
        let digest = Sha256::new()
            .chain_update(b"hearth key id\n")
            .chain_update(&raw)
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        let unbound = UnboundKey::new(&AES_256_GCM, &raw)
            .map_err(|_| VaultError::BadKey("not an AES-256 key".into()))?;
        Ok(Key {
            aead: LessSafeKey::new(unbound),
            id,
        })
    }

    /// The key in the file at `path`.
    pub fn from_file(path: &Path) -> Result<Key, VaultError> {
        let bytes = std::fs::read(path).map_err(|cause| VaultError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        Key::from_bytes(&bytes).map_err(|e| VaultError::BadKey(format!("{}: {e}", path.display())))
    }

    /// The key `command` prints on its standard output (run by `sh -c`).
    pub fn from_command(command: &str) -> Result<Key, VaultError> {
        let out = Command::new("sh")
            .args(["-c", command])
            .output()
            .map_err(|e| VaultError::KeyCommand(format!("cannot run it: {e}")))?;
        if !out.status.success() {
            // Its error output is not repeated: a failing KMS wrapper may
            // print tokens or key material there.
            return Err(VaultError::KeyCommand(format!(
                "it exited with {} (its error output is not shown)",
                out.status
            )));
        }
        Key::from_bytes(&out.stdout).map_err(|e| VaultError::KeyCommand(e.to_string()))
    }

    /// A fresh random key as 64 hexadecimal digits, for a key file.
    pub fn generate() -> Result<String, VaultError> {
        let mut raw = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| VaultError::BadKey("the system's random source failed".into()))?;
        Ok(hex::encode(raw))
    }

    /// The key's id, as sealed files record it.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    pub(crate) fn id_bytes(&self) -> &[u8; 16] {
        &self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_or_raw_and_nothing_else() {
        let hexed = "ab".repeat(32);
        let a = Key::from_bytes(format!("{hexed}\n").as_bytes()).unwrap();
        let b = Key::from_bytes(&[0xab; 32]).unwrap();
        assert_eq!(a.id(), b.id());
        assert!(Key::from_bytes(b"short").is_err());
        assert!(Key::from_bytes("zz".repeat(32).as_bytes()).is_err());
        assert_ne!(a.id(), Key::from_bytes(&[1; 32]).unwrap().id());
        // The id is not the key.
        assert!(!a.id().contains("abab"));
    }

    #[test]
    fn a_command_prints_the_key() {
        let k = Key::from_command(&format!("echo {}", "01".repeat(32))).unwrap();
        assert_eq!(k.id(), Key::from_bytes(&[1; 32]).unwrap().id());
        assert!(matches!(
            Key::from_command("exit 3"),
            Err(VaultError::KeyCommand(_))
        ));
        assert!(Key::generate().unwrap().len() == 64);
    }
}
