//! Disk space: what the store holds (`hearth du`, each blob counted once
//! however many models link it) and what it can drop (`hearth gc`: blobs
//! no model links, and partial pulls no process is running).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{IoContext, StoreError};
use crate::Store;

/// Partial pulls untouched this long are dropped by a plain `gc`.
const STALE_PARTIAL: Duration = Duration::from_secs(24 * 3600);

/// One stored model's share of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUsage {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Other models stored with the same bytes (one blob for all).
    pub shared_with: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub models: Vec<ModelUsage>,
    /// Bytes of blobs on disk, each once.
    pub blob_bytes: u64,
    /// What the models would take if none shared a blob.
    pub model_bytes: u64,
    /// Partial pulls (and their journals) in `tmp/`.
    pub partial_bytes: u64,
    pub partial_files: usize,
}

/// What [`Store::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub removed: Vec<(PathBuf, u64)>,
    /// Partial pulls kept because a pull is running or they are recent.
    pub kept_partials: usize,
}

impl Collected {
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|(_, n)| n).sum()
    }
}

impl Store {
    pub fn usage(&self) -> Result<Usage, StoreError> {
        let models = self.list()?;
        let mut by_blob: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut usage = Usage::default();
        for m in &models {
            let ino = fs::metadata(&m.path).map_or(0, |meta| meta.ino());
            by_blob
                .entry(ino)
                .or_default()
                .push(m.manifest.name.clone());
        }
        for m in &models {
            let ino = fs::metadata(&m.path).map_or(0, |meta| meta.ino());
            usage.model_bytes += m.manifest.total_size();
            usage.models.push(ModelUsage {
                name: m.manifest.name.clone(),
                size: m.manifest.total_size(),
                sha256: m.manifest.digest(),
                shared_with: by_blob[&ino]
                    .iter()
                    .filter(|n| **n != m.manifest.name)
                    .cloned()
                    .collect(),
            });
        }
        let blobs = self.blobs_dir();
        for entry in fs::read_dir(&blobs).at(&blobs)?.filter_map(Result::ok) {
            usage.blob_bytes += entry.metadata().map_or(0, |m| m.len());
        }
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).at(&tmp)?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") || name.ends_with(".journal") {
                // Allocated blocks: a partial file is sparse until filled.
                usage.partial_bytes += entry.metadata().map_or(0, |m| m.blocks() * 512);
                usage.partial_files += usize::from(name.ends_with(".partial"));
            }
        }
        Ok(usage)
    }

    /// Removes blobs no model links and partial pulls nobody is running
    /// (with `all_partials`, however recent; else those a day old).
    pub fn gc(&self, all_partials: bool) -> Result<Collected, StoreError> {
        let mut collected = Collected::default();
        // Commits hold this lock shared between making a blob and linking
        // it, so a fresh blob is never taken for an orphan.
        let _exclusive = self.lock_layout(true)?;
        let blobs = self.blobs_dir();
        for entry in fs::read_dir(&blobs).at(&blobs)?.filter_map(Result::ok) {
            let path = entry.path();
            if let Ok(meta) = fs::metadata(&path) {
                if meta.is_file() && meta.nlink() == 1 {
                    fs::remove_file(&path).at(&path)?;
                    collected.removed.push((path, meta.len()));
                }
            }
        }
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).at(&tmp)?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".lock") {
                // A pull's lock with no partial file and no holder.
                let idle = stem != "layout"
                    && !tmp.join(format!("{stem}.partial")).exists()
                    && fs::File::open(entry.path()).is_ok_and(|f| f.try_lock().is_ok());
                if idle {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".partial") else {
                continue;
            };
            let partial = entry.path();
            let lock_path = tmp.join(format!("{stem}.lock"));
            // A running pull holds its lock; a pip pull's file has none.
            let running = fs::File::open(&lock_path).is_ok_and(|f| f.try_lock().is_err());
            let old = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_PARTIAL);
            if running || !(all_partials || old) {
                collected.kept_partials += 1;
                continue;
            }
            let journal = transfer::journal_path(&partial);
            for path in [partial, journal, lock_path] {
                if let Ok(meta) = fs::metadata(&path) {
                    if fs::remove_file(&path).is_ok() {
                        collected.removed.push((path, meta.blocks() * 512));
                    }
                }
            }
        }
        Ok(collected)
    }
}
