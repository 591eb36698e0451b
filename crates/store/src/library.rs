//! The store as the APIs that manage models see it ([`types::ModelLibrary`]):
//! stored models described from their GGUF metadata, pulls with the
//! configured pip command, removal.

use std::collections::BTreeMap;
use std::path::Path;

use types::{LibraryError, ModelDetails, ModelInfo, ModelLibrary, Progress, SharedModels};

use crate::{canonical_name, PullOptions, Store, StoreError, StoredModel};

/// A [`Store`] with the options its pulls use.
pub struct Library {
    store: Store,
    options: PullOptions,
}

impl Library {
    pub fn new(store: Store, options: PullOptions) -> Self {
        Self { store, options }
    }
}

/// A model file's own description, read from its GGUF header (never its
/// tensors); a split set's parameters are counted over all its files.
pub fn describe(path: &Path, key: Option<&vault::Key>) -> Result<ModelDetails, StoreError> {
    let headers = crate::headers(path, key)?;
    let header = &headers[0];
    let arch = header.architecture().map(str::to_string);
    let metadata: BTreeMap<String, serde_json::Value> = header
        .metadata()
        .filter_map(|(key, value)| Some((key.to_string(), json(value)?)))
        .collect();
    let embedding_only = arch
        .as_deref()
        .is_some_and(|a| header.get(&format!("{a}.pooling_type")).is_some());
    Ok(ModelDetails {
        parameter_count: headers.iter().map(gguf::Gguf::parameter_count).sum(),
        quantization: header.quantization(),
        context_length: header.context_length(),
        chat_template: header.chat_template().map(str::to_string),
        embedding_only,
        metadata,
        architecture: arch,
    })
}

/// A scalar metadata value as JSON; arrays (vocabularies, merges) are
/// left out, as Ollama leaves them out of `model_info` unless asked.
fn json(value: &gguf::Value) -> Option<serde_json::Value> {
    use gguf::Value::*;
    Some(match value {
        U8(v) => (*v).into(),
        I8(v) => (*v).into(),
        U16(v) => (*v).into(),
        I16(v) => (*v).into(),
        U32(v) => (*v).into(),
        I32(v) => (*v).into(),
        U64(v) => (*v).into(),
        I64(v) => (*v).into(),
        F32(v) => serde_json::Number::from_f64(f64::from(*v))?.into(),
        F64(v) => serde_json::Number::from_f64(*v)?.into(),
        Bool(v) => (*v).into(),
        String(v) => v.clone().into(),
        Array { .. } => return None,
    })
}

fn info(model: StoredModel, key: Option<&vault::Key>) -> Result<ModelInfo, StoreError> {
    Ok(ModelInfo {
        details: describe(&model.path, key)?,
        size: model.manifest.total_size(),
        sha256: Some(model.manifest.digest()),
        name: model.manifest.name,
        modified: model.manifest.pulled_at,
    })
}

impl From<StoreError> for LibraryError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotStored { name } => LibraryError::NotStored { name },
            StoreError::NotInCatalog { name, known } => LibraryError::NotInCatalog { name, known },
            err @ StoreError::Damaged { .. } => LibraryError::Refused {
                reason: err.to_string(),
            },
            other => LibraryError::Failed(other.to_string()),
        }
    }
}

impl ModelLibrary for Library {
    fn list(&self) -> Result<Vec<ModelInfo>, LibraryError> {
        let mut models = Vec::new();
        for model in self.store.list()? {
            match info(model, self.store.key()) {
                Ok(info) => models.push(info),
                // One unreadable entry must not hide the others.
                Err(err) => tracing::warn!(%err, "skipping a stored model that cannot be read"),
            }
        }
        Ok(models)
    }

    fn find(&self, name: &str) -> Result<Option<ModelInfo>, LibraryError> {
        match self.store.get(canonical_name(name))? {
            None => Ok(None),
            Some(model) => Ok(Some(info(model, self.store.key())?)),
        }
    }

    fn pull(&self, name: &str, progress: &dyn Progress) -> Result<ModelInfo, LibraryError> {
        // A client names catalog models and remote locations, never a
        // file on the server's own disk.
        if crate::is_location(name) && crate::location_kind(name) == crate::LocationKind::File {
            return Err(LibraryError::Refused {
                reason: format!(
                    "`{name}` is a file path; the API pulls catalog names, https:// and hf:// locations (a file on the server is pulled with `hearth pull PATH` there)"
                ),
            });
        }
        let model = self.store.pull(name, &self.options, progress)?;
        Ok(info(model, self.store.key())?)
    }

    fn remove(&self, name: &str) -> Result<(), LibraryError> {
        self.store.remove(name)?;
        Ok(())
    }
}

/// Peers name models by their stored name only, never an alias, so a
/// policy written for a name cannot be walked around.
impl SharedModels for Library {
    fn manifest(&self, name: &str) -> Result<Vec<u8>, LibraryError> {
        if self.store.get(name)?.is_none() {
            return Err(LibraryError::NotStored { name: name.into() });
        }

        // With its content-defined index (made once, on first request), so
        // a node holding an earlier version fetches only what changed.
        let mut manifest = self.store.with_cdc(name)?.manifest;
        // A signed URL's query or a password stays on this node.
        manifest.source = crate::without_secrets(&manifest.source);
        Ok(serde_json::to_vec(&manifest).expect("a manifest serialises"))
    }

    fn open(
        &self,
        name: &str,
        sha256: &str,
    ) -> Result<(Box<dyn types::SharedFile>, u64), LibraryError> {
        Ok(self.store.shared_file(name, sha256)?)
    }
}
