//! The stamp beside each stored file: what it looked like (size,
//! modification time, inode) when its chunks last matched, so a model is
//! hashed again before use only when its files changed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::IoContext;
use crate::manifest::MODEL_FILE;
use crate::{chunks, BadChunk, Store, StoreError, StoredModel};

/// The file's metadata when its chunks last matched (see [`Stamp`]).
const VERIFIED_FILE: &str = "verified.json";

/// What a stored file looked like when its chunks last matched: a file
/// with the same size, modification time and inode is not hashed again
/// before use (as git trusts its index). A change made behind the file
/// system's back (a failing disk) needs `hearth verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    modified_ns: i128,
    inode: u64,
    sha256: String,
}

impl Stamp {
    fn of(path: &Path, sha256: &str) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path).ok()?;
        Some(Stamp {
            size: meta.len(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            inode: meta.ino(),
            sha256: sha256.to_string(),
        })
    }
}
/// A sealed stored file read by position: each read opens it, checks its
/// header against the key, and decrypts the records it touches.
struct SealedFile {
    path: std::path::PathBuf,
    key: std::sync::Arc<vault::Key>,
}

impl types::SharedFile for SealedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let mut reader = vault::Reader::open(&self.path, Some(&self.key))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        reader.seek_to(offset);
        std::io::Read::read(&mut reader, buf)
    }
}

/// Checks one stored file of model `name` against its chunks, unless its
/// stamp shows it unchanged since they last matched; names the first bad
/// chunk.
fn check_file(
    name: &str,
    path: &Path,
    file: &crate::Part,
    key: Option<&vault::Key>,
) -> Result<(), String> {
    if file.chunks.is_empty() {
        return Ok(());
    }
    let now = Stamp::of(path, &file.sha256);
    let recorded: Option<Stamp> = fs::read(stamp_path(path))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if now.is_some() && now == recorded {
        return Ok(());
    }
    let bad = chunks::check(path, &file.chunks, key).map_err(|e| e.to_string())?;
    let bad = BadChunk::named(path, &file.chunks, bad);
    if let Some(first) = bad.first() {
        return Err(format!(
            "{first}{}; `hearth repair {name}` fetches the bad chunks again (`hearth pull --force {name}` all of it)",
            if bad.len() > 1 {
                format!(" ({} bad chunks in this file)", bad.len())
            } else {
                String::new()
            },
        ));
    }
    stamp_file(path, &file.sha256);
    Ok(())
}

/// Where the stamp of the stored file `path` is kept: `verified.json`
/// beside a single `model.gguf`, `<file>.verified.json` beside each file of
/// a split set.
fn stamp_path(path: &Path) -> PathBuf {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(MODEL_FILE) | None => path.with_file_name(VERIFIED_FILE),
        Some(name) => {
            let stem = name.strip_suffix(".gguf").unwrap_or(name);
            path.with_file_name(format!("{stem}.{VERIFIED_FILE}"))
        }
    }
}

/// Notes that the file at `path` matched its chunks as it is now. Best
/// effort: without the stamp the next use only checks again.
fn stamp_file(path: &Path, sha256: &str) {
    let Some(stamp) = Stamp::of(path, sha256) else {
        return;
    };
    let at = stamp_path(path);
    let written = tempfile::NamedTempFile::new_in(at.parent().unwrap_or(Path::new("."))).and_then(
        |mut tmp| {
            tmp.write_all(&serde_json::to_vec(&stamp).expect("a stamp serialises"))?;
            tmp.persist(&at).map_err(|e| e.error)?;
            Ok(())
        },
    );
    if let Err(err) = written {
        tracing::debug!(%err, path = %at.display(), "cannot record the verification stamp");
    }
}

impl Store {
    /// Before a stored model is used: if its file changed since it was
    /// last checked (size, modification time or inode differ from the
    /// stamp beside the manifest), every chunk is hashed again, and a bad
    /// one is named. Manifests without a chunk list are checked by
    /// `hearth verify` only.
    pub(crate) fn check_unchanged(&self, model: &StoredModel) -> Result<(), String> {
        for (path, file) in model.files() {
            check_file(&model.manifest.name, &path, &file, self.key())?;
        }
        Ok(())
    }

    /// The file of stored model `reference` (its stored name) whose SHA-256 is `sha256`,
    /// opened for lending to another node, with its size: checked like a
    /// model before use, so this node never lends bytes it would refuse
    /// to load itself.
    pub fn shared_file(
        &self,
        reference: &str,
        sha256: &str,
    ) -> Result<(Box<dyn types::SharedFile>, u64), StoreError> {
        // The stored name exactly: never an alias, which policies did not
        // see.
        let model = self.get(reference)?.ok_or_else(|| StoreError::NotStored {
            name: reference.to_string(),
        })?;
        let (path, file) = model
            .files()
            .into_iter()
            .find(|(_, f)| f.sha256.eq_ignore_ascii_case(sha256))
            .ok_or_else(|| StoreError::NotStored {
                name: format!("{}/sha256-{sha256}", model.manifest.name),
            })?;
        let opened: Box<dyn types::SharedFile> = if vault::is_sealed(&path)? {
            // Lent as plaintext, decrypted a record at a time: the peer
            // seals it again if its own store is encrypted.
            let key = self
                .key
                .clone()
                .ok_or_else(|| vault::VaultError::NoKey { path: path.clone() })?;
            Box::new(SealedFile {
                path: path.clone(),
                key,
            })
        } else {
            Box::new(fs::File::open(&path).at(&path)?)
        };
        check_file(&model.manifest.name, &path, &file, self.key()).map_err(|reason| {
            StoreError::Damaged {
                name: model.manifest.name.clone(),
                reason,
            }
        })?;
        Ok((opened, file.size))
    }

    /// Notes that each of `model`'s files matched its chunks as it is now.
    pub(crate) fn stamp(&self, model: &StoredModel) {
        for (path, file) in model.files() {
            stamp_file(&path, &file.sha256);
        }
    }
}
