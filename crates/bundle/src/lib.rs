//! Air-gapped bundles: `hearth export` writes stored models to one tar
//! file (an index of their manifests first, then an optional signature of
//! the index, then each blob once); `hearth import` reads it on another
//! machine, checks the signature against the keys it trusts, hashes every
//! chunk of every blob as it streams against the signed index, and only
//! then publishes each model through the store.
//!
//! The signature covers the index, and the index holds every chunk's
//! SHA-256, so a byte changed anywhere in the bundle is found. Import is
//! idempotent (models already stored with the same bytes are skipped) and
//! resumable (each model is published as soon as its blobs verified, so
//! a rerun continues with the rest).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::{Manifest, Part, Store};
use types::Progress;

const INDEX: &str = "hearth-bundle.json";
const SIGNATURE: &str = "hearth-bundle.sig";
const FORMAT: &str = "hearth-bundle";
/// An index this large is not one.
const MAX_INDEX_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: not a Hearth bundle: {reason}", path.display())]
    NotABundle { path: PathBuf, reason: String },
    #[error("{}: the bundle is not signed, and this store accepts signed bundles only (trusted keys in {})", path.display(), trusted.display())]
    Unsigned { path: PathBuf, trusted: PathBuf },
    #[error("{}: signed by key {key_id}, which is not among the trusted keys in {}", path.display(), trusted.display())]
    UnknownSigner {
        path: PathBuf,
        key_id: String,
        trusted: PathBuf,
    },
    #[error("{}: the signature of key {key_id} does not match the bundle's index: it was changed after signing", path.display())]
    BadSignature { path: PathBuf, key_id: String },
    #[error("{}: blob {sha256} differs from the bundle's index at offset {offset} ({what}); nothing of it was stored", path.display())]
    Tampered {
        path: PathBuf,
        sha256: String,
        offset: u64,
        what: String,
    },
    #[error("{}: the index lists model `{model}`, but the bundle holds no blob {sha256}", path.display())]
    MissingBlob {
        path: PathBuf,
        model: String,
        sha256: String,
    },
    #[error("model `{model}` is damaged ({reason}); `hearth repair {model}` before exporting it")]
    Damaged { model: String, reason: String },
    #[error("signing key: {0}")]
    Key(String),
}

trait At<T> {
    fn at(self, path: &Path) -> Result<T, BundleError>;
}

impl<T> At<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, BundleError> {
        self.map_err(|cause| BundleError::Io {
            path: path.to_path_buf(),
            cause,
        })
    }
}

/// The bundle's first entry.
#[derive(Debug, Serialize, Deserialize)]
struct Index {
    format: String,
    version: u32,
    models: Vec<Manifest>,
    /// The key id of an encrypted store the blobs come from, sealed; an
    /// importer needs that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_with: Option<String>,
}

/// The second entry, when signed: the key and its signature of the
/// index's exact bytes.
#[derive(Debug, Serialize, Deserialize)]
struct Signature {
    key_id: String,
    public_key: String,
    signature: String,
}

/// Which signers an import accepts.
pub struct Trust {
    dir: PathBuf,
    keys: BTreeMap<String, audit::VerifyingKey>,
    /// Refuse unsigned bundles and bundles from keys not in `dir`.
    pub require_signature: bool,
}

impl Trust {
    /// Every `*.pub` file in `dir` (64 hex digits each); none if it does
    /// not exist.
    pub fn from_dir(dir: &Path, require_signature: bool) -> Result<Trust, BundleError> {
        let mut keys = BTreeMap::new();
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "pub") {
                    let key = audit::load_public_key(&path)
                        .map_err(|e| BundleError::Key(e.to_string()))?;
                    keys.insert(audit::key_id(&key), key);
                }
            }
        }
        Ok(Trust {
            dir: dir.to_path_buf(),
            keys,
            require_signature,
        })
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub models: Vec<String>,
    pub blobs: usize,
    pub bytes: u64,
    pub signed_by: Option<String>,
}

/// Writes `names` (stored models, each checked first) to `out`, through a
/// temporary file renamed at the end; signs the index with the key at
/// `sign` (created, with its `.pub`, if missing).
pub fn export(
    store: &Store,
    names: &[String],
    out: &Path,
    sign: Option<&Path>,
    plaintext: bool,
    progress: &dyn Progress,
) -> Result<Exported, BundleError> {
    // From an encrypted store, blobs travel sealed unless asked otherwise.
    let sealed_with = match store.encrypted_with()? {
        Some(id) if !plaintext => Some(id),
        _ => None,
    };
    let mut models = Vec::new();
    for name in names {
        let model = store
            .get(store::catalog::find(name).map_or(name.as_str(), |e| e.name))?
            .ok_or_else(|| store::StoreError::NotStored { name: name.clone() })?;
        if model.manifest.chunks.is_empty() {
            return Err(BundleError::Damaged {
                model: name.clone(),
                reason: "its manifest has no chunk list yet; `hearth verify` records one".into(),
            });
        }
        for (path, file) in model.files() {
            let bad = store::chunks::check(&path, &file.chunks, store.key())?;
            if let Some(chunk) = bad.first() {
                return Err(BundleError::Damaged {
                    model: name.clone(),
                    reason: format!(
                        "the chunk at offset {} of {} does not match",
                        chunk.offset,
                        path.display()
                    ),
                });
            }
        }
        models.push(model);
    }
    let index = serde_json::to_vec_pretty(&Index {
        format: FORMAT.into(),
        version: 1,
        models: models.iter().map(|m| m.manifest.clone()).collect(),
        sealed_with: sealed_with.clone(),
    })
    .expect("an index serialises");
    let signature = match sign {
        Some(path) => {
            let key = audit::AuditKey::load_or_create(path)
                .map_err(|e| BundleError::Key(e.to_string()))?;
            let public = key.verifying();
            Some(Signature {
                key_id: audit::key_id(&public),
                public_key: hex::encode(public.as_bytes()),
                signature: key.sign(&index),
            })
        }
        None => None,
    };
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    // Each file of each model, once however many models share it.
    let mut blobs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for m in &models {
        for (path, file) in m.files() {
            blobs.entry(file.sha256).or_insert(path);
        }
    }
    let total: u64 = blobs
        .values()
        .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    progress.start(&format!("exporting to {}", out.display()), total);
    {
        let mut tar = tar::Builder::new(&mut tmp.1);
        append(&mut tar, INDEX, &index, &tmp.0)?;
        if let Some(sig) = &signature {
            let bytes = serde_json::to_vec_pretty(sig).expect("a signature serialises");
            append(&mut tar, SIGNATURE, &bytes, &tmp.0)?;
        }
        for (sha, path) in &blobs {
            // As stored (sealed, from an encrypted store), or its plaintext.
            let (inner, len): (Box<dyn Read>, u64) = if sealed_with.is_some() {
                let file = fs::File::open(path).at(path)?;
                let len = file.metadata().at(path)?.len();
                (Box::new(file), len)
            } else {
                let reader =
                    vault::Reader::open(path, store.key()).map_err(store::StoreError::from)?;
                let len = reader.size();
                (Box::new(reader), len)
            };
            let mut header = tar::Header::new_gnu();
            header.set_size(len);
            header.set_mode(0o644);
            header.set_cksum();
            let reader = Counted { inner, progress };
            tar.append_data(&mut header, format!("blobs/sha256-{sha}"), reader)
                .at(&tmp.0)?;
        }
        tar.finish().at(&tmp.0)?;
    }
    tmp.1.sync_all().at(&tmp.0)?;
    fs::rename(&tmp.0, out).at(out)?;
    progress.finish();
    Ok(Exported {
        models: models.iter().map(|m| m.manifest.name.clone()).collect(),
        blobs: blobs.len(),
        bytes: total,
        signed_by: signature.map(|s| s.key_id),
    })
}

fn tempfile_in(dir: &Path) -> Result<(PathBuf, fs::File), BundleError> {
    let path = dir.join(format!(".hearth-export-{}.partial", std::process::id()));
    let file = fs::File::create(&path).at(&path)?;
    Ok((path, file))
}

fn append(
    tar: &mut tar::Builder<&mut fs::File>,
    name: &str,
    bytes: &[u8],
    path: &Path,
) -> Result<(), BundleError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes).at(path)
}

/// A reader that reports progress.
struct Counted<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    pub imported: Vec<String>,
    /// Already stored with the same bytes.
    pub skipped: Vec<String>,
    pub signed_by: Option<String>,
}

/// Reads the bundle at `path` into `store` (see the module's comment).
pub fn import(
    store: &Store,
    path: &Path,
    trust: &Trust,
    progress: &dyn Progress,
) -> Result<Imported, BundleError> {
    let not_a_bundle = |reason: &str| BundleError::NotABundle {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let file = fs::File::open(path).at(path)?;
    let mut archive = tar::Archive::new(file);
    let mut entries = archive.entries().at(path)?;
    let mut next = || -> Result<Option<(String, tar::Entry<'_, fs::File>)>, BundleError> {
        match entries.next() {
            None => Ok(None),
            Some(entry) => {
                let entry = entry.at(path)?;
                let name = entry
                    .path()
                    .map_err(|_| not_a_bundle("an entry's name is not valid"))?
                    .to_string_lossy()
                    .into_owned();
                Ok(Some((name, entry)))
            }
        }
    };
    let (name, mut entry) = next()?.ok_or_else(|| not_a_bundle("it is empty"))?;
    if name != INDEX || entry.size() > MAX_INDEX_BYTES {
        return Err(not_a_bundle(&format!(
            "it starts with `{name}`, not {INDEX}"
        )));
    }
    let mut index_bytes = Vec::new();
    entry.read_to_end(&mut index_bytes).at(path)?;
    let mut report = Imported::default();
    let mut pending = next()?;
    if let Some((name, mut entry)) = pending.take_if(|(n, _)| n == SIGNATURE) {
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).at(path)?;
        let _ = name;
        let sig: Signature = serde_json::from_slice(&bytes)
            .map_err(|e| not_a_bundle(&format!("its signature does not parse: {e}")))?;
        match trust.keys.get(&sig.key_id) {
            Some(key) => {
                if !audit::signature_holds(key, &index_bytes, &sig.signature) {
                    return Err(BundleError::BadSignature {
                        path: path.to_path_buf(),
                        key_id: sig.key_id,
                    });
                }
                report.signed_by = Some(sig.key_id);
            }
            None if trust.require_signature => {
                return Err(BundleError::UnknownSigner {
                    path: path.to_path_buf(),
                    key_id: sig.key_id,
                    trusted: trust.dir.clone(),
                })
            }
            None => {
                tracing::warn!(key_id = %sig.key_id, "the bundle is signed by a key this store does not trust; importing it as unsigned");
            }
        }
    } else if trust.require_signature {
        return Err(BundleError::Unsigned {
            path: path.to_path_buf(),
            trusted: trust.dir.clone(),
        });
    }
    // Parsed only once its signature (if any) held.
    let index: Index = serde_json::from_slice(&index_bytes)
        .map_err(|e| not_a_bundle(&format!("its index does not parse: {e}")))?;
    if index.format != FORMAT || index.version != 1 {
        return Err(not_a_bundle("its index is of another format or version"));
    }
    // Every file a model of the index needs, by its SHA-256.
    let mut files: BTreeMap<String, Part> = BTreeMap::new();
    for m in &index.models {
        for file in m.files() {
            files.entry(file.sha256.clone()).or_insert(file);
        }
    }
    // Models already stored with the same bytes are skipped.
    let (stored, mut todo): (Vec<&Manifest>, Vec<&Manifest>) = index.models.iter().partition(|m| {
        store
            .get(&m.name)
            .ok()
            .flatten()
            .is_some_and(|s| s.manifest.digest() == m.digest())
    });
    report.skipped = stored.iter().map(|m| m.name.clone()).collect();
    let total = files.values().map(|f| f.size).sum();
    progress.start(&format!("importing {}", path.display()), total);
    // Blobs received and checked, waiting for the rest of their model.
    let mut received: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    while let Some((name, mut entry)) = match pending.take() {
        Some(e) => Some(e),
        None => next()?,
    } {
        let sha = name
            .strip_prefix("blobs/sha256-")
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| not_a_bundle(&format!("unexpected entry `{name}`")))?
            .to_string();
        let Some(file) = files.get(&sha) else {
            return Err(not_a_bundle(&format!(
                "blob {sha} is in no model of its index"
            )));
        };
        seen.insert(sha.clone());
        let needed = todo
            .iter()
            .any(|m| m.files().iter().any(|f| f.sha256 == sha));
        if !needed {
            progress.advance(file.size);
            continue;
        }
        let scratch = store.scratch_path(&format!("import-{}.partial", &sha[..16]));
        let checked = match &index.sealed_with {
            None => receive(store, &mut entry, &scratch, file, progress),
            Some(_) => receive_sealed(store, &mut entry, &scratch, file, progress),
        };
        if let Err(err) = checked {
            let _ = fs::remove_file(&scratch);
            return Err(match err {
                Received::Io(cause) => BundleError::Io {
                    path: path.to_path_buf(),
                    cause,
                },
                Received::Store(err) => BundleError::Store(err),
                Received::Differs { offset, what } => BundleError::Tampered {
                    path: path.to_path_buf(),
                    sha256: sha,
                    offset,
                    what,
                },
            });
        }
        received.insert(sha, scratch);
        // Each model whose every file is now here is published (the first
        // to use a blob moves it into the store; the rest link it).
        let (ready, waiting): (Vec<&Manifest>, Vec<&Manifest>) = todo
            .into_iter()
            .partition(|m| m.files().iter().all(|f| received.contains_key(&f.sha256)));
        todo = waiting;
        for m in ready {
            let paths: Vec<PathBuf> = m
                .files()
                .iter()
                .map(|f| received[&f.sha256].clone())
                .collect();
            store.publish(&paths, m)?;
            report.imported.push(m.name.clone());
        }
    }
    progress.finish();
    for m in &index.models {
        if let Some(file) = m.files().into_iter().find(|f| !seen.contains(&f.sha256)) {
            return Err(BundleError::MissingBlob {
                path: path.to_path_buf(),
                model: m.name.clone(),
                sha256: file.sha256,
            });
        }
    }
    Ok(report)
}

enum Received {
    Io(std::io::Error),
    Differs { offset: u64, what: String },
    Store(store::StoreError),
}

/// [`receive`] of a blob that may be sealed: it is kept as it came, then
/// read back through the store's key (which must be the bundle's) and
/// every chunk checked. A plain store gets the plaintext.
fn receive_sealed(
    store: &Store,
    entry: &mut impl Read,
    scratch: &Path,
    manifest: &Part,
    progress: &dyn Progress,
) -> Result<(), Received> {
    let raw = scratch.with_extension("sealed");
    let mut out = fs::File::create(&raw).map_err(Received::Io)?;
    let mut counted = Counted {
        inner: entry,
        progress,
    };
    std::io::copy(&mut counted, &mut out).map_err(Received::Io)?;
    out.sync_all().map_err(Received::Io)?;
    let checked = (|| {
        if vault::plaintext_len(&raw)? != manifest.size {
            return Ok(Some("the blob has another size".to_string()));
        }
        let bad = store::chunks::check(&raw, &manifest.chunks, store.key())?;
        let covered: u64 = manifest.chunks.iter().map(|c| c.length).sum();
        Ok::<_, store::StoreError>(match bad.first() {
            Some(c) => Some(format!("the chunk at offset {} does not match", c.offset)),
            None if covered != manifest.size => Some("the index's chunks do not cover it".into()),
            None => None,
        })
    })();
    match checked {
        Err(err) => {
            let _ = fs::remove_file(&raw);
            Err(Received::Store(err))
        }
        Ok(Some(what)) => {
            let _ = fs::remove_file(&raw);
            Err(Received::Differs { offset: 0, what })
        }
        Ok(None)
            if store.encrypted_with().ok().flatten().is_some()
                || !vault::is_sealed(&raw).unwrap_or(false) =>
        {
            fs::rename(&raw, scratch).map_err(Received::Io)
        }
        Ok(None) => {
            // A plain store: the plaintext, which is what it holds.
            let unsealed = store.unseal(&raw, scratch);
            let _ = fs::remove_file(&raw);
            unsealed.map_err(Received::Store)
        }
    }
}

/// Streams a blob to `scratch` (sealed as it is written into an encrypted
/// store), hashing each of the manifest's chunks and the whole as they
/// pass; any difference stops it.
fn receive(
    store: &Store,
    entry: &mut impl Read,
    scratch: &Path,
    manifest: &Part,
    progress: &dyn Progress,
) -> Result<(), Received> {
    let mut out = store
        .stage(scratch, Some(manifest.size))
        .map_err(Received::Store)?;
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    for chunk in &manifest.chunks {
        if chunk.offset != at {
            return Err(Received::Differs {
                offset: at,
                what: "the index's chunk list has a gap".into(),
            });
        }
        let mut part = Sha256::new();
        let mut left = chunk.length;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = entry.read(&mut buf[..want]).map_err(Received::Io)?;
            if n == 0 {
                return Err(Received::Differs {
                    offset: at,
                    what: "the blob ends early".into(),
                });
            }
            part.update(&buf[..n]);
            whole.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(Received::Io)?;
            progress.advance(n as u64);
            left -= n as u64;
            at += n as u64;
        }
        if hex::encode(part.finalize()) != chunk.sha256 {
            return Err(Received::Differs {
                offset: chunk.offset,
                what: format!("chunk of {} bytes has another SHA-256", chunk.length),
            });
        }
    }
    if entry.read(&mut buf[..1]).map_err(Received::Io)? != 0 {
        return Err(Received::Differs {
            offset: at,
            what: "the blob is longer than its index says".into(),
        });
    }
    if at != manifest.size || hex::encode(whole.finalize()) != manifest.sha256 {
        return Err(Received::Differs {
            offset: 0,
            what: "the whole file has another size or SHA-256".into(),
        });
    }
    out.finish().map_err(Received::Store)
}
