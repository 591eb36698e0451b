//! The models this server answers for. The set changes while it runs: a
//! model pulled (over the API, or with `hearth pull` beside the server)
//! becomes servable on its first mention, and a deleted one leaves.

use std::sync::{Arc, RwLock};

use types::{ModelInfo, TextGenerator};

use crate::metrics::Metrics;

/// One model this server answers for.
pub struct ServedModel {
    /// The name clients put in `model`, and `/v1/models` lists.
    pub id: String,
    /// Other names accepted for it (catalog aliases).
    pub aliases: Vec<String>,
    /// Unix time the model was loaded.
    pub created: u64,
    pub generator: Arc<dyn TextGenerator>,
    /// What is known about its file (Ollama's `/api/show`, `/api/ps`).
    pub info: Option<ModelInfo>,
}

impl ServedModel {
    fn answers_to(&self, name: &str) -> bool {
        self.id == name || self.aliases.iter().any(|a| a == name)
    }
}

/// Where models beyond the ones the server started with come from, and
/// how they leave: `hearth serve` implements it over its store and fleet.
pub trait ModelDirectory: Send + Sync {
    /// The names of the models that can be served now.
    fn names(&self) -> Vec<String>;
    /// The stored model `name` (or one of its aliases), ready to serve.
    /// Only stored models: never a path, or any client could make the
    /// server load any file it can read.
    fn open(&self, name: &str) -> Option<ServedModel>;
    /// Stops serving the model `id` so that its files can be removed:
    /// unloads it if it is loaded and idle.
    fn retire(&self, id: &str) -> Result<(), Retire>;
    /// Serves the version of model `id` stored now, if it is another one
    /// than the version served: new requests go to it, running ones finish
    /// on the old. `automatic` calls (a watcher's) skip a version that
    /// already failed to load; a request asks again.
    fn reload(&self, id: &str, automatic: bool) -> Reload {
        let _ = (id, automatic);
        Reload::NotServed
    }
}

/// What reloading a served model did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// No stored model of that name is served.
    NotServed,
    /// The stored version is the one served (`None`: a server without a
    /// store, whose models have no other version).
    Unchanged {
        digest: Option<String>,
    },
    Swapped {
        from: Option<String>,
        to: String,
    },
    /// The stored version cannot be served (damaged, not loadable): the
    /// served version stays.
    Failed {
        reason: String,
    },
}

/// Why a model cannot stop being served now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// Given to `hearth serve` itself: it stays until the server stops.
    Pinned,
    /// Requests run or wait on it.
    Busy,
}

/// The served models, and the directory that adds and removes them.
pub(crate) struct Roster {
    models: RwLock<Vec<Arc<ServedModel>>>,
    directory: Option<Arc<dyn ModelDirectory>>,
    metrics: Arc<Metrics>,
}

impl Roster {
    pub(crate) fn new(models: Vec<ServedModel>, metrics: Arc<Metrics>) -> Roster {
        Roster {
            models: RwLock::new(models.into_iter().map(Arc::new).collect()),
            directory: None,
            metrics,
        }
    }

    pub(crate) fn set_directory(&mut self, directory: Arc<dyn ModelDirectory>) {
        self.directory = Some(directory);
    }

    /// The models served now, in the order they were added.
    pub(crate) fn all(&self) -> Vec<Arc<ServedModel>> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The first model: what a request that names none gets.
    pub(crate) fn default_model(&self) -> Option<Arc<ServedModel>> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
    }

    /// The served model `name` answers to, without asking the directory.
    pub(crate) fn served(&self, name: &str) -> Option<Arc<ServedModel>> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|m| m.answers_to(name))
            .cloned()
    }

    /// The served model `name` answers to, or the stored one the
    /// directory opens for it (a model pulled since the server started).
    pub(crate) fn find(&self, name: &str) -> Option<Arc<ServedModel>> {
        if let Some(served) = self.served(name) {
            return Some(served);
        }
        let opened = self.directory.as_ref()?.open(name)?;
        Some(self.add(opened))
    }

    fn add(&self, model: ServedModel) -> Arc<ServedModel> {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        // Two requests may open the same new model at once: the first wins.
        if let Some(first) = models.iter().find(|m| m.id == model.id) {
            return Arc::clone(first);
        }
        tracing::info!(model = %model.id, "serving a model added to the store");
        let model = Arc::new(model);
        models.push(Arc::clone(&model));
        self.metrics
            .watch(model.id.clone(), Arc::clone(&model.generator));
        model
    }

    /// Adds every model the directory holds that is not served yet, and
    /// drops served ones it no longer holds (a `hearth rm` beside the
    /// server) once they are idle.
    pub(crate) fn refresh(&self) {
        let Some(directory) = &self.directory else {
            return;
        };
        let names = directory.names();
        for name in &names {
            if self.served(name).is_none() {
                if let Some(model) = directory.open(name) {
                    self.add(model);
                }
            }
        }
        for model in self.all() {
            if !names.contains(&model.id) && directory.retire(&model.id).is_ok() {
                self.remove(&model.id);
            }
        }
    }

    /// Serves the stored version of `id` (a name or alias) if it is a new
    /// one, and describes the model anew.
    pub(crate) fn reload(&self, name: &str, automatic: bool) -> Reload {
        let Some(served) = self.served(name) else {
            return Reload::NotServed;
        };
        let Some(directory) = &self.directory else {
            return Reload::Unchanged { digest: None };
        };
        let reloaded = directory.reload(&served.id, automatic);
        if matches!(reloaded, Reload::Swapped { .. }) {
            let info = directory.open(&served.id).and_then(|m| m.info);
            let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = models.iter_mut().find(|m| m.id == served.id) {
                *slot = Arc::new(ServedModel {
                    id: served.id.clone(),
                    aliases: served.aliases.clone(),
                    created: served.created,
                    generator: Arc::clone(&served.generator),
                    info,
                });
            }
        }
        reloaded
    }

    /// Stops serving `id` so its files can be deleted.
    pub(crate) fn retire(&self, id: &str) -> Result<(), Retire> {
        let Some(directory) = &self.directory else {
            return Err(Retire::Pinned);
        };
        directory.retire(id)?;
        self.remove(id);
        Ok(())
    }

    fn remove(&self, id: &str) {
        self.models
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|m| m.id != id);
        self.metrics.unwatch(id);
        tracing::info!(model = %id, "no longer serving");
    }
}
