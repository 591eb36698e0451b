//! The store as the server's model directory: a model stored while the
//! server runs (pulled over the API, or with `hearth pull` beside it) is
//! served from its first mention, loaded on demand; a deleted one leaves.

use std::sync::{Arc, Weak};

use server::{ModelDirectory, Reload, Retire, ServedModel};
use types::{LibraryError, ModelInfo, ModelLibrary, Progress, ResolvedModel, TextGenerator};

use super::fleet::{self, Fleet, FleetModel};

pub struct StoreDirectory {
    pub store: store::Store,
    pub fleet: Arc<Fleet>,
    pub engine: engine::EngineConfig,
    /// Per model, the stored version that last failed to load or verify:
    /// a watcher does not hash it again every round.
    pub failed: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl StoreDirectory {
    /// Adds `model` to the fleet, loaded on its first request.
    pub fn serve(&self, model: &ResolvedModel) -> ServedModel {
        let bytes = super::footprint::memory_estimate(&model.path, &self.engine, self.fleet.key());
        let index = self.fleet.add(
            model.name.clone(),
            model.path.clone(),
            model.sha256.clone(),
            bytes,
            false,
        );
        served(&self.fleet, index, model)
    }
}

impl ModelDirectory for StoreDirectory {
    fn names(&self) -> Vec<String> {
        match self.store.list() {
            Ok(models) => models.into_iter().map(|m| m.manifest.name).collect(),
            Err(err) => {
                tracing::warn!(%err, "cannot list the store");
                Vec::new()
            }
        }
    }

    fn open(&self, name: &str) -> Option<ServedModel> {
        let name = store::catalog::find(name).map_or(name, |e| e.name);
        // `get` first: `resolve` alone would also take a file path.
        self.store.get(name).ok()??;
        match types::ModelResolver::resolve(&self.store, name) {
            Ok(model) => Some(self.serve(&model)),
            Err(err) => {
                tracing::warn!(model = %name, %err, "not serving a damaged stored model");
                None
            }
        }
    }

    fn retire(&self, id: &str) -> Result<(), Retire> {
        match self.fleet.index(id) {
            Some(index) => self.fleet.retire(index),
            None => Ok(()),
        }
    }

    fn reload(&self, id: &str, automatic: bool) -> Reload {
        let Some(index) = self.fleet.index(id) else {
            return Reload::NotServed;
        };
        let stored = match self.store.get(id) {
            Ok(Some(stored)) => stored.manifest.digest(),
            // Served from a path, or deleted a moment ago.
            Ok(None) => return Reload::NotServed,
            Err(err) => {
                return Reload::Failed {
                    reason: err.to_string(),
                }
            }
        };
        if self.fleet.digest(index).as_deref() == Some(stored.as_str()) {
            return Reload::Unchanged {
                digest: Some(stored),
            };
        }
        let failed_before = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            == Some(&stored);
        if automatic && failed_before {
            return Reload::Failed {
                reason: "this version failed before".into(),
            };
        }
        // Verified before it is served, like any stored model (no lock
        // held meanwhile: other models reload on their own).
        let swapped = types::ModelResolver::resolve(&self.store, id)
            .map_err(|e| e.to_string())
            .and_then(|model| {
                let digest = model.sha256.clone().unwrap_or_default();
                let bytes =
                    super::footprint::memory_estimate(&model.path, &self.engine, self.fleet.key());
                self.fleet
                    .swap(index, model.path, digest, bytes)
                    .map_err(|e| format!("{e:#}"))
            });
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        match swapped {
            Ok(fleet::Swap::Unchanged) => Reload::Unchanged {
                digest: Some(stored),
            },
            Ok(fleet::Swap::Swapped { from, to }) => {
                failed.remove(id);
                Reload::Swapped { from, to }
            }
            Err(reason) => {
                tracing::warn!(model = %id, version = %stored, %reason, "not serving the new version");
                failed.insert(id.to_string(), stored);
                Reload::Failed { reason }
            }
        }
    }
}

/// The store behind `/api/pull` and `/api/delete`, recording each pull
/// and delete in the audit log as `hearth pull` and `hearth rm` do;
/// `s3://` pulls go to object storage (the store alone cannot read it).
pub struct AuditedLibrary {
    pub library: store::Library,
    pub objects: ObjectPulls,
    /// Weak: the server closes (and flushes) the log at shutdown.
    pub audit: Option<Weak<server::Auditor>>,
    /// Nodes asked first, as `hearth pull` asks them.
    pub peers: crate::peering::PeerSettings,
}

impl AuditedLibrary {
    /// The model from the configured peers, as `hearth pull` takes it;
    /// `None` when the origin should serve the pull (no peer is
    /// configured or holds it, or they failed).
    fn pull_from_peers(
        &self,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<Option<String>, LibraryError> {
        let refused = |reason: String| LibraryError::Refused { reason };
        if store::is_location(name) && store::location_kind(name) == store::LocationKind::File {
            // Refused by the library below, with its reason.
            return Ok(None);
        }
        // A model already stored answers at once: no peer is asked.
        if self.peers.nodes.is_empty() && self.peers.dns.is_none()
            || !store::is_location(name) && self.library.find(name)?.is_some()
        {
            return Ok(None);
        }
        let args = crate::cli::PullArgs::api(name);
        let pulled = super::peers::pull(
            &self.peers,
            &self.objects.store,
            &args,
            &self.objects.options,
            progress,
        )
        .map_err(|e| refused(format!("{e:#}")))?;
        Ok(pulled.map(|stored| stored.manifest.name))
    }

    fn record(&self, event: audit::Event) {
        if let Some(auditor) = self.audit.as_ref().and_then(Weak::upgrade) {
            auditor.log.record(event);
        }
    }
}

impl ModelLibrary for AuditedLibrary {
    fn list(&self) -> Result<Vec<ModelInfo>, LibraryError> {
        self.library.list()
    }

    fn find(&self, name: &str) -> Result<Option<ModelInfo>, LibraryError> {
        self.library.find(name)
    }

    fn pull(&self, name: &str, progress: &dyn Progress) -> Result<ModelInfo, LibraryError> {
        let pulled = if store::location_kind(name) == store::LocationKind::Bucket {
            let stored = self.objects.pull(name, progress)?;
            // Described as every stored model is.
            self.library
                .find(&stored)?
                .ok_or(LibraryError::NotStored { name: stored })?
        } else if let Some(stored) = self.pull_from_peers(name, progress)? {
            self.library
                .find(&stored)?
                .ok_or(LibraryError::NotStored { name: stored })?
        } else {
            self.library.pull(name, progress)?
        };
        self.record(audit::Event::ModelPull {
            model: pulled.name.clone(),
            sha256: pulled.sha256.clone(),
        });
        Ok(pulled)
    }

    fn remove(&self, name: &str) -> Result<(), LibraryError> {
        // The stored name, not the alias the client used.
        let model = self
            .library
            .find(name)?
            .map_or_else(|| name.to_string(), |m| m.name);
        self.library.remove(name)?;
        self.record(audit::Event::ModelDelete { model });
        Ok(())
    }
}

/// What an API pull of `s3://…` needs: the store, where the object
/// storage is, and how pulls run.
pub struct ObjectPulls {
    pub store: store::Store,
    pub s3: bucket::S3Options,
    pub options: store::PullOptions,
}

impl ObjectPulls {
    /// Pulls `url`; returns the stored name.
    fn pull(&self, url: &str, progress: &dyn Progress) -> Result<String, LibraryError> {
        let stored = bucket::pull(&self.store, url, None, &self.s3, &self.options, progress)
            .map_err(|e| match e {
                bucket::BucketError::BadLocation { .. } => LibraryError::Refused {
                    reason: e.to_string(),
                },
                other => LibraryError::Failed(other.to_string()),
            })?;
        Ok(stored.manifest.name)
    }
}

/// Model `index` of `fleet` as the server sees it.
pub fn served(fleet: &Arc<Fleet>, index: usize, model: &ResolvedModel) -> ServedModel {
    ServedModel {
        id: model.name.clone(),
        aliases: store::catalog::find(&model.name)
            .map(|e| e.aliases.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default(),
        created: auth::unix_now(),
        generator: Arc::new(FleetModel {
            fleet: Arc::clone(fleet),
            index,
        }) as Arc<dyn TextGenerator>,
        info: describe(model, fleet.key()),
    }
}

/// What `/api/show` and `/api/ps` tell about a served model's file.
fn describe(model: &ResolvedModel, key: Option<&vault::Key>) -> Option<types::ModelInfo> {
    match store::describe(&model.path, key) {
        Ok(details) => {
            let modified = std::fs::metadata(&model.path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            Some(types::ModelInfo {
                name: model.name.clone(),
                size: model.size,
                sha256: model.sha256.clone(),
                modified,
                details,
            })
        }
        // Loading reports a bad file with its own message in a moment.
        Err(err) => {
            tracing::debug!(%err, "cannot describe the model");
            None
        }
    }
}
