//! An encrypted store: every blob sealed with one key (`vault`), new
//! blobs sealed as they are committed, and plaintext handed to the engine
//! only in memory. `encryption.json` in the home names the key's id; it is
//! written before the first blob is sealed and removed after the last is
//! opened again, so a store is encrypted exactly while it exists.
//!
//! Digests stay over the plaintext: manifests, verification and pulls are
//! the same for both kinds of store.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use types::Progress;
use vault::{Key, VaultError};

use crate::error::{IoContext, StoreError};
use crate::{sync_dir, Store};

const MARKER: &str = "encryption.json";

/// A number no other staged file of this process has.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Serialize, Deserialize)]
struct Marker {
    key_id: String,
}

/// What [`Store::encrypt`] or [`Store::decrypt`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// Blobs converted by this call (earlier runs' are skipped).
    pub files: usize,
    pub bytes: u64,
}

/// A stored model's first file as llama.cpp can open it: the file itself,
/// or for a sealed model its plaintext in memory, behind links named as a
/// split set expects. Holds the memory until dropped (a loaded engine
/// keeps its own mapping).
pub struct Readable {
    path: PathBuf,
    _memory: Vec<vault::InMemory>,
    _links: Option<tempfile::TempDir>,
}

impl Readable {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path leads to plaintext in memory (a decrypted model),
    /// not to the stored file.
    pub fn in_memory(&self) -> bool {
        !self._memory.is_empty()
    }

    /// The plaintext bytes held in memory.
    pub fn in_memory_bytes(&self) -> u64 {
        self._memory.iter().map(vault::InMemory::size).sum()
    }
}

/// [`Readable`] for the model file at `path` (a set's first file).
pub fn readable(path: &Path, key: Option<&Key>) -> Result<Readable, StoreError> {
    let sealed = set_files(path)
        .iter()
        .map(|f| vault::is_sealed(f))
        .collect::<Result<Vec<bool>, _>>()?;
    if sealed.iter().any(|s| *s) && !sealed.iter().all(|s| *s) {
        return Err(StoreError::Damaged {
            name: path.display().to_string(),
            reason: "some files of this set are encrypted and some are not; rerun `hearth store encrypt` or `hearth store decrypt`".into(),
        });
    }
    if !sealed[0] {
        return Ok(Readable {
            path: path.to_path_buf(),
            _memory: Vec::new(),
            _links: None,
        });
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model.gguf")
        .to_string();
    let Some(set) = gguf::split::SplitName::parse(&name).filter(|s| s.count > 1) else {
        let memory = vault::in_memory(path, key, &name)?;
        return Ok(Readable {
            path: memory.path(),
            _memory: vec![memory],
            _links: None,
        });
    };
    // llama.cpp finds a set's other files by name beside the first: links
    // (no bytes) to each file's memory, in a directory of their own.
    let links = tempfile::Builder::new()
        .prefix("hearth-plain-")
        .tempdir()
        .map_err(|cause| StoreError::Io {
            path: std::env::temp_dir(),
            cause,
        })?;
    let mut memory = Vec::new();
    for no in 1..=set.count {
        let file = set.sibling(no);
        let sealed = path.with_file_name(&file);
        let plain = vault::in_memory(&sealed, key, &file)?;
        let link = links.path().join(&file);
        std::os::unix::fs::symlink(plain.path(), &link).at(&link)?;
        memory.push(plain);
    }
    Ok(Readable {
        path: links.path().join(set.sibling(1)),
        _memory: memory,
        _links: Some(links),
    })
}

/// The GGUF headers of the model whose first file is `path` (every file of
/// a split set): a sealed model's are read from its first records only.
pub fn headers(path: &Path, key: Option<&Key>) -> Result<Vec<gguf::Gguf>, StoreError> {
    if !vault::is_sealed(path)? {
        return Ok(gguf::split::read_set(path)?);
    }
    set_files(path)
        .iter()
        .map(|file| {
            let reader = vault::Reader::open(file, key)?;
            let size = reader.size();
            gguf::parse(reader, size, gguf::Limits::default()).map_err(|error| {
                StoreError::from(gguf::GgufFileError {
                    path: file.clone(),
                    error,
                })
            })
        })
        .collect()
}

/// The GGUF header of one file that may be sealed (a pull's partial file
/// in an encrypted store), with the model checks for a set's first file.
pub(crate) fn header_of(
    path: &Path,
    key: Option<&Key>,
    first: bool,
) -> Result<gguf::Gguf, gguf::GgufFileError> {
    let wrap = |error| gguf::GgufFileError {
        path: path.to_path_buf(),
        error,
    };
    let reader = vault::Reader::open(path, key)
        .map_err(|e| wrap(gguf::GgufError::Io(std::io::Error::other(e))))?;
    if !reader.is_sealed() {
        drop(reader);
        return match first {
            true => gguf::read_model(path),
            false => gguf::read_file(path),
        };
    }
    let size = reader.size();
    let header = gguf::parse(
        std::io::BufReader::with_capacity(1 << 16, reader),
        size,
        gguf::Limits::default(),
    )
    .map_err(wrap)?;
    if first {
        header.check_hparams().map_err(wrap)?;
    }
    Ok(header)
}

/// A file under `tmp/` that plaintext streams into from its first byte (a
/// wheel's member, a bundle's blob): sealed as it is written when the
/// store is encrypted, so no plaintext reaches the disk; plain otherwise.
pub struct Staged {
    path: PathBuf,
    sink: Sink,
    at: u64,
    size: Option<u64>,
}

enum Sink {
    Plain(fs::File),
    Sealed(Box<vault::Partial>),
}

impl Store {
    /// Starts `path` (created or replaced) for `size` bytes of plaintext;
    /// an encrypted store needs the size before the first byte.
    pub fn stage(&self, path: &Path, size: Option<u64>) -> Result<Staged, StoreError> {
        let sink = match self.sealing_key()? {
            None => Sink::Plain(fs::File::create(path).at(path)?),
            Some(key) => {
                let size = size.ok_or_else(|| StoreError::Io {
                    path: path.to_path_buf(),
                    cause: std::io::Error::other(
                        "an encrypted store seals a file as it arrives, which needs its size first, and none is known",
                    ),
                })?;
                // A fresh file: records an earlier run left would still
                // authenticate under a kept header.
                let _ = fs::remove_file(path);
                let (partial, _) = vault::Partial::open(path, Arc::clone(key), size)?;
                Sink::Sealed(Box::new(partial))
            }
        };
        Ok(Staged {
            path: path.to_path_buf(),
            sink,
            at: 0,
            size,
        })
    }
}

impl Staged {
    /// Syncs what was written: the file is whole on disk. A sealed file
    /// must have received exactly the size it was started for.
    pub fn finish(self) -> Result<(), StoreError> {
        if let (Sink::Sealed(_), Some(size)) = (&self.sink, self.size) {
            if self.at != size {
                return Err(StoreError::SizeMismatch {
                    what: self.path.display().to_string(),
                    expected: size,
                    actual: self.at,
                });
            }
        }
        match self.sink {
            Sink::Plain(file) => file.sync_all().at(&self.path),
            Sink::Sealed(partial) => Ok(partial.sync(0, partial.size())?),
        }
    }
}

impl std::io::Write for Staged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            Sink::Plain(file) => file.write_all(buf)?,
            Sink::Sealed(partial) => partial.write_at(buf, self.at).map_err(vault_io)?,
        }
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Plain(file) => file.flush(),
            Sink::Sealed(_) => Ok(()),
        }
    }
}

/// How a pull into an encrypted store lands: each partial file sealed as
/// its bytes arrive (`vault::Partial`), so a pull, even one killed
/// halfway, puts no plaintext on the disk; the finished file is already
/// the sealed blob the commit publishes.
#[derive(Debug)]
pub(crate) struct SealedStaging {
    key: Arc<Key>,
}

impl SealedStaging {
    pub(crate) fn new(key: Arc<Key>) -> SealedStaging {
        SealedStaging { key }
    }
}

impl transfer::Staging for SealedStaging {
    fn open(
        &self,
        path: &Path,
        size: Option<u64>,
    ) -> Result<(Box<dyn transfer::Partial>, bool), transfer::TransferError> {
        let Some(size) = size else {
            return Err(transfer::TransferError::Io {
                path: path.to_path_buf(),
                cause: std::io::Error::other(
                    "the source does not give the file's size before sending it, and an encrypted store seals bytes as they arrive, which needs the size first",
                ),
            });
        };
        let (partial, fresh) =
            vault::Partial::open(path, Arc::clone(&self.key), size).map_err(|e| {
                transfer::TransferError::Io {
                    path: path.to_path_buf(),
                    cause: vault_io(e),
                }
            })?;
        let file = SealedFile {
            partial,
            path: path.to_path_buf(),
        };
        Ok((Box::new(file), fresh))
    }
}

/// A sealed partial file as the transfer sees it: plaintext offsets.
struct SealedFile {
    partial: vault::Partial,
    path: PathBuf,
}

/// A vault error where an I/O error is expected: its own cause, or the
/// error itself as invalid data.
pub(crate) fn vault_io(err: VaultError) -> std::io::Error {
    match err {
        VaultError::Io { cause, .. } => cause,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
    }
}

impl transfer::Partial for SealedFile {
    fn write_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        self.partial.write_at(bytes, offset).map_err(vault_io)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.partial.read_exact_at(buf, offset).map_err(vault_io)
    }

    fn prepare(&self, size: u64) -> Result<(), transfer::TransferError> {
        debug_assert_eq!(size, self.partial.size(), "sized when opened");
        transfer::reserve(self.partial.file(), &self.path, self.partial.sealed_len())
    }

    fn restart(&self) -> std::io::Result<()> {
        self.partial.restart();
        Ok(())
    }

    fn sync(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.partial.sync(offset, len).map_err(vault_io)
    }
}

/// The files of the model whose first file is `path`: itself, or every
/// file of its split set.
fn set_files(path: &Path) -> Vec<PathBuf> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match gguf::split::SplitName::parse(name).filter(|s| s.count > 1) {
        Some(set) => (1..=set.count)
            .map(|no| path.with_file_name(set.sibling(no)))
            .collect(),
        None => vec![path.to_path_buf()],
    }
}

impl Store {
    /// The store with the key its sealed files are read and written with.
    pub fn with_key(mut self, key: Option<Arc<Key>>) -> Store {
        self.key = key;
        self
    }

    pub fn key(&self) -> Option<&Key> {
        self.key.as_deref()
    }

    /// `len` bytes of a stored file's plaintext from `offset`, decrypted in
    /// memory with the store's key when the file is sealed (each record's
    /// tag checked on the way).
    pub fn read_plain(&self, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let mut reader = vault::Reader::open(path, self.key())?;
        let cut_short = || StoreError::Io {
            path: path.to_path_buf(),
            cause: std::io::ErrorKind::UnexpectedEof.into(),
        };
        if offset
            .checked_add(len)
            .is_none_or(|end| end > reader.size())
        {
            return Err(cut_short());
        }
        reader.seek_to(offset);
        let mut out = vec![0u8; usize::try_from(len).map_err(|_| cut_short())?];
        let mut filled = 0;
        while filled < out.len() {
            match reader.read_plain(&mut out[filled..])? {
                0 => return Err(cut_short()),
                n => filled += n,
            }
        }
        Ok(out)
    }

    /// The id of the key this store is encrypted with, if it is.
    pub fn encrypted_with(&self) -> Result<Option<String>, StoreError> {
        let path = self.home().join(MARKER);
        match fs::read(&path) {
            Ok(bytes) => {
                let marker: Marker =
                    serde_json::from_slice(&bytes).map_err(|cause| StoreError::Manifest {
                        path: path.clone(),
                        cause,
                    })?;
                Ok(Some(marker.key_id))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&path),
        }
    }

    /// The key new blobs are sealed with: `None` for a plain store; for an
    /// encrypted one the configured key, which must be the store's.
    pub(crate) fn sealing_key(&self) -> Result<Option<&Arc<Key>>, StoreError> {
        let Some(id) = self.encrypted_with()? else {
            return Ok(None);
        };
        let marker = self.home().join(MARKER);
        let key = self.key.as_ref().ok_or_else(|| VaultError::NoKey {
            path: marker.clone(),
        })?;
        if key.id() != id {
            return Err(VaultError::WrongKey {
                path: marker,
                sealed_with: id,
                configured: key.id(),
            }
            .into());
        }
        Ok(Some(key))
    }

    /// Brings `file` (a verified file in `tmp/`) to the store's state as
    /// the commit finds it, under the layout lock a migration takes
    /// exclusively: sealed when the store is encrypted, plaintext when it
    /// is not (a file sealed as it arrived, and the store decrypted since).
    /// Returns the path to commit.
    pub(crate) fn seal_for_commit(&self, file: &Path) -> Result<PathBuf, StoreError> {
        let Some(key) = self.sealing_key()? else {
            if !vault::is_sealed(file)? {
                return Ok(file.to_path_buf());
            }
            let plain = file.with_extension("unsealed");
            self.unseal(file, &plain)?;
            let _ = fs::remove_file(file);
            return Ok(plain);
        };
        if vault::is_sealed(file)? {
            return Ok(file.to_path_buf());
        }
        let sealed = file.with_extension("sealed");
        vault::seal(file, &sealed, key)?;
        let _ = fs::remove_file(file);
        Ok(sealed)
    }

    /// Encrypts every blob with the configured key, in place: each is
    /// sealed into `tmp/`, then takes the place of the plaintext under the
    /// blob's name and every model's name for it. An interrupted run leaves
    /// each file whole, plaintext or sealed, and a rerun goes on.
    pub fn encrypt(&self, progress: &dyn Progress) -> Result<Migrated, StoreError> {
        let key = self.key().ok_or_else(|| VaultError::NoKey {
            path: self.home().join(MARKER),
        })?;
        match self.encrypted_with()? {
            Some(id) if id != key.id() => {
                return Err(VaultError::WrongKey {
                    path: self.home().join(MARKER),
                    sealed_with: id,
                    configured: key.id(),
                }
                .into())
            }
            Some(_) => {}
            None => {
                let path = self.home().join(MARKER);
                let marker =
                    serde_json::to_vec(&Marker { key_id: key.id() }).expect("a marker serialises");
                crate::write_atomically(&path, &marker)?;
            }
        }
        self.migrate(true, progress)
    }

    /// Decrypts every blob in place (the reverse of [`Store::encrypt`]),
    /// then marks the store plain.
    pub fn decrypt(&self, progress: &dyn Progress) -> Result<Migrated, StoreError> {
        if self.encrypted_with()?.is_none() {
            return Ok(Migrated { files: 0, bytes: 0 });
        }
        self.sealing_key()?;
        self.migrate(false, progress)
    }

    fn migrate(&self, seal: bool, progress: &dyn Progress) -> Result<Migrated, StoreError> {
        // Exclusive: no commit links a blob while it changes under it.
        let _layout = self.lock_layout(true)?;
        self.clear_migration_leftovers();
        let blobs = self.blobs_dir();
        let mut todo = Vec::new();
        for entry in fs::read_dir(&blobs).at(&blobs)?.filter_map(Result::ok) {
            let path = entry.path();
            let named = entry.file_name().to_string_lossy().starts_with("sha256-");
            if named && vault::is_sealed(&path)? != seal {
                todo.push(path);
            }
        }
        let total = todo
            .iter()
            .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        progress.start(if seal { "encrypting" } else { "decrypting" }, total);
        let mut done = Migrated { files: 0, bytes: 0 };
        for blob in todo {
            let name = blob
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            // A new file each time: a staged file an interrupted run left
            // may already be a model's file under its final name, and must
            // never be written again.
            let staged = self.tmp_dir().join(format!(
                "migrate-{name}-{}-{}",
                std::process::id(),
                unique()
            ));
            if seal {
                vault::seal(&blob, &staged, self.key().expect("checked by encrypt"))?;
            } else {
                self.unseal(&blob, &staged)?;
            }
            let sha256 = name.trim_start_matches("sha256-");
            for link in self.files_of(sha256)? {
                let next = link.with_extension("migrating");
                let _ = fs::remove_file(&next);
                fs::hard_link(&staged, &next).at(&next)?;
                fs::rename(&next, &link).at(&link)?;
            }
            let len = fs::metadata(&blob).map_or(0, |m| m.len());
            fs::rename(&staged, &blob).at(&blob)?;
            sync_dir(&blobs)?;
            progress.advance(len);
            done.files += 1;
            done.bytes += len;
        }
        if !seal {
            // Under the same exclusive lock: a commit waiting for it must
            // not seal a blob into a store about to be marked plain.
            let marker = self.home().join(MARKER);
            fs::remove_file(&marker).at(&marker)?;
        }
        progress.finish();
        Ok(done)
    }

    /// Writes the plaintext of sealed `from` to `to`: for `hearth store
    /// decrypt`, and for a plain store importing an encrypted bundle (a
    /// plain store holds plaintext).
    pub fn unseal(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        let mut reader = vault::Reader::open(from, self.key())?;
        let mut out = fs::File::create(to).at(to)?;
        std::io::copy(&mut reader, &mut out).at(from)?;
        out.sync_all().at(to)
    }

    /// Names an interrupted run left: staged files in `tmp/` (perhaps
    /// plaintext, after a decrypt) and half-made links beside model files.
    /// Removing a name never removes a model's own name for the same file.
    fn clear_migration_leftovers(&self) {
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            if entry.file_name().to_string_lossy().starts_with("migrate-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        let models = self.models_dir();
        for dir in fs::read_dir(&models)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            for file in fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
            {
                if file.path().extension().is_some_and(|e| e == "migrating") {
                    let _ = fs::remove_file(file.path());
                }
            }
        }
    }

    /// Every model file whose manifest records this SHA-256 (by the
    /// manifests, not the inode: an interrupted run may have relinked some
    /// names already).
    fn files_of(&self, sha256: &str) -> Result<Vec<PathBuf>, StoreError> {
        Ok(self
            .list()?
            .iter()
            .flat_map(|m| m.files())
            .filter(|(_, part)| part.sha256 == sha256)
            .map(|(path, _)| path)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Regression: a file sealed as it arrived was committed sealed into a
    /// store that `store decrypt` had made plain meanwhile.
    #[test]
    fn a_commit_unseals_what_arrived_sealed_into_a_store_decrypted_since() {
        let home = tempfile::tempdir().unwrap();
        let key = Arc::new(Key::from_bytes(&[5u8; 32]).unwrap());
        let store = Store::open(home.path())
            .unwrap()
            .with_key(Some(Arc::clone(&key)));
        store.encrypt(&types::NoProgress).unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let staged_path = store.scratch_path("arrived");
        let mut staged = store.stage(&staged_path, Some(bytes.len() as u64)).unwrap();
        staged.write_all(&bytes).unwrap();
        staged.finish().unwrap();
        assert!(vault::is_sealed(&staged_path).unwrap());
        // Short of its size, a sealed file is refused at its end.
        let mut short = store.stage(&store.scratch_path("short"), Some(10)).unwrap();
        short.write_all(&[1; 9]).unwrap();
        assert!(short.finish().is_err());

        store.decrypt(&types::NoProgress).unwrap();
        let committed = store.seal_for_commit(&staged_path).unwrap();
        assert!(!vault::is_sealed(&committed).unwrap());
        assert_eq!(fs::read(&committed).unwrap(), bytes);
    }
}
