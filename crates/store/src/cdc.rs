//! Content-defined chunks of stored files (FastCDC, 2020): boundaries set
//! by the bytes themselves, so a new version of a model that changes one
//! tensor shares every chunk but the few around it with the old one, even
//! where bytes moved. Fixed chunks (`chunks.rs`) stay the unit of
//! verification and transfer; these decide which bytes of a new version a
//! pull can take from files already stored instead of the network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::chunks::Chunk;
use crate::error::{IoContext, StoreError};
use crate::MANIFEST_FILE;
use crate::{Store, StoredModel};

/// 256 KiB to 4 MiB, 1 MiB on average: a changed tensor costs about
/// itself plus a chunk on each side, and a 40 GB model's manifest lists
/// about 40,000 of them.
const MIN: u32 = 256 << 10;
const AVG: u32 = 1 << 20;
const MAX: u32 = 4 << 20;

/// The content-defined chunks of the file at `path`, each with its SHA-256.
pub fn index(path: &Path, key: Option<&vault::Key>) -> Result<Vec<Chunk>, StoreError> {
    // A sealed file is indexed by its plaintext.
    let file = vault::Reader::open(path, key)?;
    let mut out = Vec::new();
    for piece in fastcdc::v2020::StreamCDC::new(file, MIN, AVG, MAX) {
        let piece = piece
            .map_err(|e| std::io::Error::other(e.to_string()))
            .at(path)?;
        out.push(Chunk {
            offset: piece.offset,
            length: piece.length as u64,
            sha256: hex::encode(Sha256::digest(&piece.data)),
        });
    }
    Ok(out)
}

impl Store {
    /// The stored model `name` with the content-defined index of every
    /// file, computing and recording the ones its manifest lacks (after
    /// checking the files, so an index never describes damaged bytes).
    pub fn with_cdc(&self, name: &str) -> Result<StoredModel, StoreError> {
        let stored = |store: &Store| {
            store
                .get(name)?
                .ok_or_else(|| StoreError::NotStored { name: name.into() })
        };
        let model = stored(self)?;
        let files = model.files();
        if model.manifest.cdc.len() == files.len() {
            return Ok(model);
        }
        self.check_unchanged(&model)
            .map_err(|reason| StoreError::Damaged {
                name: name.to_string(),
                reason,
            })?;
        // Indexed without the model's lock (minutes for a large model: a
        // pull of it must not wait), then recorded only if the manifest
        // still describes the same files.
        let cdc: Vec<Vec<Chunk>> = files
            .iter()
            .map(|(path, _)| index(path, self.key()))
            .collect::<Result<_, _>>()?;
        let _lock = self.lock_pull(name)?;
        let mut now = stored(self)?;
        if now.manifest.files() != model.manifest.files() {
            // Replaced meanwhile: its index is made on its next use.
            return Ok(now);
        }
        now.manifest.cdc = cdc;
        self.write_manifest(&now.path.with_file_name(MANIFEST_FILE), &now.manifest)?;
        Ok(now)
    }

    /// Spans of a file described by `wanted` (its content-defined chunks)
    /// that files stored here already hold: those of the model `name`
    /// (indexed now if needed: usually the version being replaced) and of
    /// every other model already indexed.
    pub fn local_copies(
        &self,
        name: &str,
        wanted: &[Chunk],
    ) -> Result<Vec<transfer::Local>, StoreError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut held: HashMap<&str, (PathBuf, u64, u64)> = HashMap::new();
        let mut models = Vec::new();
        match self.with_cdc(name) {
            Ok(model) => models.push(model),
            Err(StoreError::NotStored { .. }) => {}
            Err(err) => {
                tracing::warn!(model = %name, %err, "not reusing the stored version's bytes")
            }
        }
        models.extend(
            self.list()?
                .into_iter()
                .filter(|m| m.manifest.name != name && !m.manifest.cdc.is_empty()),
        );
        for model in &models {
            for ((path, part), chunks) in model.files().into_iter().zip(&model.manifest.cdc) {
                // Sealed bytes cannot be copied as plaintext.
                if vault::is_sealed(&path).unwrap_or(true) {
                    continue;
                }
                for c in chunks
                    .iter()
                    .filter(|c| c.offset.saturating_add(c.length) <= part.size)
                {
                    held.entry(c.sha256.as_str())
                        .or_insert_with(|| (path.clone(), c.offset, c.length));
                }
            }
        }
        Ok(wanted
            .iter()
            .filter_map(|c| {
                let (path, at, length) = held.get(c.sha256.as_str())?;
                // The same digest over the same length, or nothing.
                (*length == c.length).then(|| transfer::Local {
                    offset: c.offset,
                    length: c.length,
                    path: path.clone(),
                    at: *at,
                })
            })
            .collect())
    }
}
