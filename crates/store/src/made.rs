//! Models made on this node (`hearth quantize`): a finished file (under
//! `tmp/`, or in memory for an encrypted store) enters the store like a
//! pulled one (checked as a GGUF, chunked, hashed, sealed when the store
//! is, committed atomically), with its lineage in the manifest.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::IoContext;
use crate::manifest::Lineage;
use crate::{chunks, Manifest, NoProgress, Store, StoreError, StoredModel};

impl Store {
    /// Stores the finished GGUF `file` (under [`Store::scratch_path`]) as
    /// model `name`, made from `lineage.from`. The file is moved, not
    /// copied; an existing model of that name is replaced.
    pub fn adopt(
        &self,
        name: &str,
        file: &Path,
        source: &str,
        lineage: Lineage,
    ) -> Result<StoredModel, StoreError> {
        crate::check_model_name(name)?;
        // Never store what the engine would refuse.
        gguf::read_model(file)?;
        let _lock = self.lock_pull(name)?;
        let (chunk_list, sha256) = chunks::digest(file, chunks::CHUNK_SIZE, None, &NoProgress)?;
        let size = std::fs::metadata(file).at(file)?.len();
        // A model made elsewhere than tmp/ (in memory, for an encrypted
        // store) is staged there, sealed if the store is; one made in tmp/
        // is moved as it is (the commit seals it if the store is).
        let sealed;
        let file = match !file.starts_with(self.tmp_dir()) {
            true => {
                sealed = self.scratch_path(&format!(
                    "adopt-{}-{}.staged",
                    std::process::id(),
                    &sha256[..16]
                ));
                let mut staged = self.stage(&sealed, Some(size))?;
                let mut plain = std::fs::File::open(file).at(file)?;
                std::io::copy(&mut plain, &mut staged).at(&sealed)?;
                staged.finish()?;
                sealed.as_path()
            }
            false => {
                std::fs::File::open(file)
                    .and_then(|f| f.sync_all())
                    .at(file)?;
                file
            }
        };
        let manifest = Manifest {
            name: name.to_string(),
            size,
            sha256,
            source: source.to_string(),
            pulled_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            chunk_size: chunks::CHUNK_SIZE,
            chunks: chunk_list,
            parts: Vec::new(),
            cdc: Vec::new(),
            lineage: Some(lineage),
        };
        let stored = self.commit(&[file.to_path_buf()], &manifest)?;
        self.stamp(&stored);
        Ok(stored)
    }
}
