//! Models served on demand: a stored model not given with `--model` loads
//! on its first request and unloads after its keep-alive, or earlier, least
//! recently used first, when loading another would exceed the memory
//! budget. A model is only unloaded while nothing runs or waits on it, so
//! an unload never cuts off a request. The decision is a pure function
//! ([`evictions`]); [`Fleet`] carries it out under one lock.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use engine::{Engine, EngineConfig};
use types::{
    GenerateError, Generation, GenerationObserver, GenerationRequest, LoadSnapshot, TextGenerator,
};

/// One loaded model as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resident {
    pub index: usize,
    pub bytes: u64,
    pub last_used: Instant,
    /// Requests run or wait on it, or a caller holds it: not unloadable.
    pub busy: bool,
    pub pinned: bool,
    /// How long it stays after its last use; `None`: for ever.
    pub keep_alive: Option<Duration>,
}

/// What loading `bytes` more under `budget` takes: the models to unload,
/// least recently used first, or `None` when only busy or pinned models
/// could make room (the caller waits for one to become idle). A model that
/// does not fit beside the pinned ones loads over budget once every other
/// model is gone: refusing it would make it unusable.
pub fn evictions(resident: &[Resident], bytes: u64, budget: u64) -> Option<Vec<usize>> {
    let used: u64 = resident.iter().map(|r| r.bytes).sum();
    if used + bytes <= budget {
        return Some(Vec::new());
    }
    let mut candidates: Vec<&Resident> = resident.iter().filter(|r| !r.busy && !r.pinned).collect();
    candidates.sort_by_key(|r| r.last_used);
    let mut freed = 0;
    let mut out = Vec::new();
    for r in candidates {
        if used - freed + bytes <= budget {
            break;
        }
        freed += r.bytes;
        out.push(r.index);
    }
    let fits = used - freed + bytes <= budget;
    let alone = resident.iter().all(|r| r.pinned || out.contains(&r.index));
    (fits || alone).then_some(out)
}

/// Models whose keep-alive ran out while idle.
pub fn expired(resident: &[Resident], now: Instant) -> Vec<usize> {
    resident
        .iter()
        .filter(|r| {
            !r.busy
                && !r.pinned
                && r.keep_alive
                    .is_some_and(|k| now.saturating_duration_since(r.last_used) >= k)
        })
        .map(|r| r.index)
        .collect()
}

struct Member {
    name: String,
    path: PathBuf,
    /// The stored version's digest (`Manifest::digest`); `None` for a
    /// file given by path.
    digest: Option<String>,
    /// The loaded engine's version, as clients see it.
    fingerprint: Option<Arc<str>>,
    /// Earlier versions still finishing requests: unloaded once idle.
    draining: Vec<(Arc<Engine>, u64)>,
    /// Weights plus the KV pool, estimated before loading.
    bytes: u64,
    pinned: bool,
    engine: Option<Arc<Engine>>,
    loading: bool,
    /// When loading it last failed: requests within [`LOAD_RETRY`] of
    /// that get 503 at once rather than each trying again.
    failed: Option<Instant>,
    /// Deleted: no longer loaded for anyone.
    retired: bool,
    last_used: Instant,
    /// Set by a request (Ollama's `keep_alive`); `None`: the fleet's default.
    keep_alive: Option<Option<Duration>>,
    /// Hears each finished request of this model (the metrics, labelled
    /// with its name).
    observer: Option<Arc<dyn GenerationObserver>>,
}

impl Member {
    /// As the planner sees it: loaded, or being loaded (which already
    /// claims its room and cannot be unloaded).
    fn resident(&self, index: usize, default_keep_alive: Duration) -> Option<Resident> {
        let busy = match &self.engine {
            Some(engine) => in_use(engine) || self.draining.iter().any(|(e, _)| in_use(e)),
            None if self.loading => true,
            None => return None,
        };
        Some(Resident {
            index,
            // Earlier versions still finishing requests hold memory too.
            bytes: self.bytes + self.draining.iter().map(|(_, b)| b).sum::<u64>(),
            last_used: self.last_used,
            busy,
            pinned: self.pinned,
            keep_alive: self.keep_alive.unwrap_or(Some(default_keep_alive)),
        })
    }

    /// Takes the engine out for unloading; the next request starts from
    /// the server's keep-alive again (a `keep_alive: 0` is not sticky).
    fn take(&mut self) -> Option<(String, Arc<Engine>)> {
        let engine = self.engine.take()?;
        self.keep_alive = None;
        Some((self.name.clone(), engine))
    }
}

/// Held by a caller, or requests (or embeddings) run or wait on it.
fn in_use(engine: &Arc<Engine>) -> bool {
    Arc::strong_count(engine) > 1 || !engine.is_idle()
}

/// Every model the server may load, and the engines loaded now.
pub struct Fleet {
    members: Mutex<Vec<Member>>,
    changed: Condvar,
    config: EngineConfig,
    budget: u64,
    keep_alive: Duration,
    /// Told of every load and unload (the audit log).
    on_change: OnceLock<Box<dyn Fn(Change) + Send + Sync>>,
    /// One swap at a time.
    swapping: Mutex<()>,
    /// An encrypted store's key: sealed models load from memory.
    key: Option<Arc<vault::Key>>,
    /// The digest of the version of a model (by name) stored now.
    versions: Versions,
}

/// The digest of the version of a model (by name) stored now.
pub type Versions = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A model entering or leaving memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Loaded {
        name: String,
        path: PathBuf,
    },
    Unloaded {
        name: String,
    },
    /// Another version of the model's files serves new requests.
    Swapped {
        name: String,
        from: Option<String>,
        to: String,
    },
}

/// What [`Fleet::swap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The model already serves that version.
    Unchanged,
    Swapped {
        from: Option<String>,
        to: String,
    },
}

/// A version as clients see it (OpenAI's `system_fingerprint`): `fp_`
/// and the first 12 hex digits of its digest.
fn fingerprint(digest: Option<&str>) -> Option<Arc<str>> {
    digest.map(|d| Arc::from(format!("fp_{}", &d[..d.len().min(12)])))
}

/// How long a request waits for busy models to free room before it gets
/// 503. Waiting for the model's own load does not count.
const ROOM_WAIT: Duration = Duration::from_secs(60);

/// After a failed load, how long requests get 503 (with this as
/// `Retry-After`) before one tries to load the model again: a file that
/// cannot load should not be read again for every queued request.
const LOAD_RETRY: Duration = Duration::from_secs(10);

impl Fleet {
    pub fn new(
        config: EngineConfig,
        budget: u64,
        keep_alive: Duration,
        key: Option<Arc<vault::Key>>,
        versions: Versions,
    ) -> Arc<Fleet> {
        Arc::new(Fleet {
            members: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            config,
            budget,
            keep_alive,
            on_change: OnceLock::new(),
            swapping: Mutex::new(()),
            key,
            versions,
        })
    }

    /// Hears every load and unload from now on.
    pub fn on_change(&self, f: impl Fn(Change) + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(f));
    }

    fn changed(&self, change: Change) {
        if let Some(f) = self.on_change.get() {
            f(change);
        }
    }

    /// Drops engines outside the lock, telling whoever listens.
    fn unload(&self, engines: Vec<(String, Arc<Engine>)>, why: &str) {
        for (name, engine) in engines {
            tracing::info!(model = %name, why, "unloading");
            drop(engine);
            self.changed(Change::Unloaded { name });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a model, or serves a deleted one again (pulled anew, maybe
    /// another file); pinned ones are loaded by [`Fleet::load`] and never
    /// unloaded. Returns its index.
    pub fn add(
        &self,
        name: String,
        path: PathBuf,
        digest: Option<String>,
        bytes: u64,
        pinned: bool,
    ) -> usize {
        let mut members = self.lock();
        if let Some(index) = members.iter().position(|m| m.name == name) {
            let m = &mut members[index];
            if m.retired {
                (m.path, m.digest, m.bytes, m.retired, m.failed) =
                    (path, digest, bytes, false, None);
            }
            return index;
        }
        members.push(Member {
            name,
            path,
            digest,
            fingerprint: None,
            draining: Vec::new(),
            bytes,
            pinned,
            engine: None,
            loading: false,
            failed: None,
            retired: false,
            last_used: Instant::now(),
            keep_alive: None,
            observer: None,
        });
        members.len() - 1
    }

    /// The index of the model `name`, if it is served.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.lock()
            .iter()
            .position(|m| m.name == name && !m.retired)
    }

    /// Stops serving model `index` (its files are about to be deleted):
    /// unloads it if it is loaded and idle. A pinned or busy one stays.
    pub fn retire(&self, index: usize) -> Result<(), server::Retire> {
        let mut members = self.lock();
        let m = &mut members[index];
        if m.pinned {
            return Err(server::Retire::Pinned);
        }
        if m.loading
            || m.engine.as_ref().is_some_and(in_use)
            || m.draining.iter().any(|(e, _)| in_use(e))
        {
            return Err(server::Retire::Busy);
        }
        m.retired = true;
        let mut engines: Vec<_> = m.take().into_iter().collect();
        engines.extend(m.draining.drain(..).map(|(e, _)| (m.name.clone(), e)));
        drop(members);
        self.unload(engines, "deleted");
        Ok(())
    }

    /// The engine of `index`, loading it first (and unloading others to
    /// make room) if it is not loaded. Blocks: callers run on blocking threads.
    pub fn acquire(&self, index: usize) -> Result<Arc<Engine>, GenerateError> {
        self.acquire_version(index).map(|(engine, _)| engine)
    }

    /// [`Fleet::acquire`], with the version the engine serves.
    fn acquire_version(
        &self,
        index: usize,
    ) -> Result<(Arc<Engine>, Option<Arc<str>>), GenerateError> {
        let mut deadline = Instant::now() + ROOM_WAIT;
        let mut members = self.lock();
        loop {
            let m = &mut members[index];
            if m.retired {
                return Err(GenerateError::Unavailable);
            }
            if let Some(engine) = &m.engine {
                m.last_used = Instant::now();
                return Ok((Arc::clone(engine), m.fingerprint.clone()));
            }
            if let Some(failed) = m.failed {
                let wait = LOAD_RETRY.saturating_sub(failed.elapsed());
                if !wait.is_zero() {
                    return Err(GenerateError::NotLoaded {
                        retry_after_secs: wait.as_secs_f64().ceil() as u32,
                    });
                }
            }
            if m.loading {
                // Another caller loads it: however long that takes, the
                // wait for room starts after.
                deadline = Instant::now() + ROOM_WAIT;
            } else if !m.pinned {
                // (A pinned model is loaded at start by `load`; requests
                // that arrive before wait for it rather than load a copy.)
                let resident: Vec<Resident> = members
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| m.resident(i, self.keep_alive))
                    .collect();
                if let Some(out) = evictions(&resident, members[index].bytes, self.budget) {
                    let unloaded: Vec<(String, Arc<Engine>)> =
                        out.into_iter().filter_map(|i| members[i].take()).collect();
                    drop(members);
                    self.unload(unloaded, "room for another model");
                    return self
                        .load_engine(index)
                        .map_err(|_| GenerateError::NotLoaded {
                            retry_after_secs: LOAD_RETRY.as_secs() as u32,
                        });
                }
            }
            // Being loaded by another caller, or no room until a busy
            // model goes idle: wait and look again.
            let now = Instant::now();
            if now >= deadline {
                return Err(GenerateError::NotLoaded {
                    retry_after_secs: 5,
                });
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            members = self
                .changed
                .wait_timeout(members, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Loads model `index` now (a pinned model, at start).
    pub fn load(&self, index: usize) -> anyhow::Result<engine::ModelInfo> {
        let (engine, _) = self.load_engine(index)?;
        Ok(engine.info().clone())
    }

    /// Loads model `index`, which the caller found unloaded, and tells
    /// whoever waits. A panic inside the loader is a failed load: the
    /// model must not stay marked as loading for ever.
    fn load_engine(&self, index: usize) -> anyhow::Result<(Arc<Engine>, Option<Arc<str>>)> {
        let (path, name, known) = {
            let mut members = self.lock();
            members[index].loading = true;
            let m = &members[index];
            (m.path.clone(), m.name.clone(), m.digest.clone())
        };
        // The version stored now, which may be newer than the one last
        // served (committed while the model was unloaded): read around the
        // load, so the fingerprint names the bytes actually loaded.
        let mut digest = known;
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..3 {
                let before = self.stored_version(&name);
                let engine = self.load_file(&path)?;
                if before == self.stored_version(&name) {
                    digest = before.or(digest.take());
                    return Ok(engine);
                }
            }
            anyhow::bail!("{} kept changing while it loaded", path.display())
        }));
        let mut members = self.lock();
        let m = &mut members[index];
        m.loading = false;
        self.changed.notify_all();
        let engine = match loaded {
            Ok(Ok(engine)) => engine,
            failed => {
                m.failed = Some(Instant::now());
                let err = match failed {
                    Ok(Err(e)) => e,
                    _ => anyhow::anyhow!("loading {} panicked", path.display()),
                };
                tracing::error!(model = %m.name, error = %err, "cannot load the model");
                return Err(err);
            }
        };
        if let Some(observer) = &m.observer {
            engine.set_observer(Arc::clone(observer));
        }
        tracing::info!(model = %m.name, pinned = m.pinned, "loaded");
        let engine = Arc::new(engine);
        (m.engine, m.failed, m.last_used) = (Some(Arc::clone(&engine)), None, Instant::now());
        // A swap waits for loads to finish, so the version is the one read.
        m.fingerprint = fingerprint(digest.as_deref());
        m.digest = digest;
        let version = m.fingerprint.clone();
        // `serve` records a pinned model's load itself, with its digest.
        let change = (!m.pinned).then(|| Change::Loaded {
            name: m.name.clone(),
            path: m.path.clone(),
        });
        drop(members);
        // Outside the lock: the audit writer may be slow.
        if let Some(change) = change {
            self.changed(change);
        }
        Ok((engine, version))
    }

    /// Serves the version `digest` of model `index`'s files (at `path`,
    /// already verified) from now on. A loaded model loads the new version
    /// at once and moves new requests to it; requests already running
    /// finish on the old one, which is unloaded once idle. An unloaded
    /// model loads the new version on its next request. For a moment both
    /// versions are in memory.
    pub fn swap(
        &self,
        index: usize,
        path: PathBuf,
        digest: String,
        bytes: u64,
    ) -> anyhow::Result<Swap> {
        let _one = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
        let mut members = self.lock();
        // A load in progress reads the old path: let it finish first.
        while members[index].loading {
            members = self
                .changed
                .wait_timeout(members, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let m = &members[index];
        if m.digest.as_deref() == Some(digest.as_str()) {
            return Ok(Swap::Unchanged);
        }
        let (name, from, loaded) = (m.name.clone(), m.digest.clone(), m.engine.is_some());
        drop(members);
        let engine = if loaded {
            let loaded =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.load_file(&path)));
            match loaded {
                Ok(Ok(engine)) => Some(Arc::new(engine)),
                Ok(Err(e)) => return Err(e),
                Err(_) => anyhow::bail!("loading {} panicked", path.display()),
            }
        } else {
            None
        };
        let mut members = self.lock();
        let m = &mut members[index];
        if let Some(engine) = engine {
            if let Some(observer) = &m.observer {
                engine.set_observer(Arc::clone(observer));
            }
            if let Some(old) = m.engine.replace(engine) {
                m.draining.push((old, m.bytes));
            }
            m.fingerprint = fingerprint(Some(&digest));
            m.last_used = Instant::now();
        }
        (m.path, m.digest, m.bytes, m.failed) = (path, Some(digest.clone()), bytes, None);
        drop(members);
        tracing::info!(model = %name, from = from.as_deref().unwrap_or("-"), to = %digest, "serving a new version");
        self.changed(Change::Swapped {
            name,
            from: from.clone(),
            to: digest.clone(),
        });
        self.reap();
        Ok(Swap::Swapped { from, to: digest })
    }

    /// The digest of the version model `index` serves.
    pub fn digest(&self, index: usize) -> Option<String> {
        self.lock()[index].digest.clone()
    }

    /// The key sealed models are read with.
    pub fn key(&self) -> Option<&vault::Key> {
        self.key.as_deref()
    }

    fn stored_version(&self, name: &str) -> Option<String> {
        (self.versions)(name)
    }

    /// An engine for the model file at `path`: a sealed one's plaintext
    /// goes to llama.cpp in memory, never to the disk.
    fn load_file(&self, path: &std::path::Path) -> anyhow::Result<Engine> {
        let readable = store::readable(path, self.key.as_deref())?;
        Ok(super::load_engine(readable, &self.config)?)
    }

    /// Unloads idle models whose keep-alive ran out, and earlier versions
    /// that finished their requests; called periodically.
    pub fn reap(&self) {
        let mut members = self.lock();
        let mut finished = Vec::new();
        for m in members.iter_mut() {
            let (idle, busy): (Vec<_>, Vec<_>) =
                m.draining.drain(..).partition(|(e, _)| !in_use(e));
            m.draining = busy;
            finished.extend(idle.into_iter().map(|(e, _)| (m.name.clone(), e)));
        }
        // A model counts as used until its last request ends, not from
        // when that request arrived.
        let now = Instant::now();
        for m in members.iter_mut() {
            if m.engine.as_ref().is_some_and(|e| !e.is_idle()) {
                m.last_used = now;
            }
        }
        let resident: Vec<Resident> = members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.resident(i, self.keep_alive))
            .collect();
        let out: Vec<(String, Arc<Engine>)> = expired(&resident, Instant::now())
            .into_iter()
            .filter_map(|i| members[i].take())
            .collect();
        drop(members);
        self.unload(finished, "a newer version serves it");
        self.unload(out, "keep-alive over");
        self.changed.notify_all();
    }

    /// A request's keep-alive for model `index`, from now on; zero unloads
    /// it now if it is idle.
    pub fn set_keep_alive(&self, index: usize, keep_alive: Option<Duration>) {
        {
            let mut members = self.lock();
            members[index].keep_alive = Some(keep_alive);
            members[index].last_used = Instant::now();
        }
        if keep_alive == Some(Duration::ZERO) {
            self.reap();
        }
    }

    /// Who hears model `index`'s finished requests, now and after reloads.
    fn set_observer(&self, index: usize, observer: Arc<dyn GenerationObserver>) {
        let mut members = self.lock();
        if let Some(engine) = &members[index].engine {
            engine.set_observer(Arc::clone(&observer));
        }
        members[index].observer = Some(observer);
    }

    /// When model `index` leaves memory if no request comes: its
    /// keep-alive after its last use, counted from now while it is busy.
    /// `None` for a pinned model, one kept for ever, or one not loaded.
    fn unloads_at(&self, index: usize) -> Option<SystemTime> {
        let members = self.lock();
        let m = &members[index];
        let engine = m.engine.as_ref().filter(|_| !m.pinned)?;
        let keep = m.keep_alive.unwrap_or(Some(self.keep_alive))?;
        let now = Instant::now();
        let from = if in_use(engine) { now } else { m.last_used };
        Some(SystemTime::now() + (from + keep).saturating_duration_since(now))
    }

    /// The names of the models in memory now.
    pub fn loaded_names(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|m| m.engine.is_some())
            .map(|m| m.name.clone())
            .collect()
    }

    fn loaded(&self, index: usize) -> Option<Arc<Engine>> {
        self.lock()[index].engine.clone()
    }

    fn pinned(&self, index: usize) -> bool {
        self.lock()[index].pinned
    }
}

/// One model of the fleet, as the server sees it.
pub struct FleetModel {
    pub fleet: Arc<Fleet>,
    pub index: usize,
}

impl FleetModel {
    fn engine(&self) -> Result<Arc<Engine>, GenerateError> {
        self.fleet.acquire(self.index)
    }
}

/// Marks each generation with the version that produces it.
fn versioned(generations: Vec<Generation>, version: Option<Arc<str>>) -> Vec<Generation> {
    match version {
        Some(v) => generations
            .into_iter()
            .map(|g| g.with_fingerprint(Arc::clone(&v)))
            .collect(),
        None => generations,
    }
}

impl TextGenerator for FleetModel {
    fn submit(&self, request: GenerationRequest) -> Result<Generation, GenerateError> {
        let (engine, version) = self.fleet.acquire_version(self.index)?;
        let generation = engine.submit(request)?;
        Ok(versioned(vec![generation], version).remove(0))
    }

    fn submit_choices(
        &self,
        request: GenerationRequest,
        n: u32,
    ) -> Result<Vec<Generation>, GenerateError> {
        let (engine, version) = self.fleet.acquire_version(self.index)?;
        Ok(versioned(engine.submit_choices(request, n)?, version))
    }

    fn count_tokens(&self, request: &GenerationRequest) -> Result<u32, GenerateError> {
        self.engine()?.count_tokens(request)
    }

    fn embed(
        &self,
        request: types::EmbeddingRequest,
    ) -> Result<types::PendingEmbeddings, GenerateError> {
        self.engine()?.embed(request)
    }

    fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, GenerateError> {
        TextGenerator::tokenize(&*self.engine()?, text, special)
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, GenerateError> {
        self.engine()?.detokenize(tokens)
    }

    /// A pinned model is ready once loaded; one loaded on demand can
    /// always be asked for.
    fn is_ready(&self) -> bool {
        match self.fleet.loaded(self.index) {
            Some(engine) => engine.is_ready(),
            None => !self.fleet.pinned(self.index),
        }
    }

    fn is_loaded(&self) -> bool {
        self.fleet.loaded(self.index).is_some()
    }

    fn unloads_at(&self) -> Option<SystemTime> {
        self.fleet.unloads_at(self.index)
    }

    fn load(&self) -> LoadSnapshot {
        self.fleet
            .loaded(self.index)
            .map(|e| e.load())
            .unwrap_or_default()
    }

    fn keep_alive(&self, keep_alive: Option<Duration>) {
        self.fleet.set_keep_alive(self.index, keep_alive);
    }

    fn warm(&self) -> Result<(), GenerateError> {
        self.engine().map(drop)
    }

    fn set_observer(&self, observer: Arc<dyn GenerationObserver>) {
        self.fleet.set_observer(self.index, observer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(index: usize, bytes: u64, age_s: u64, busy: bool, pinned: bool, now: Instant) -> Resident {
        Resident {
            index,
            bytes,
            last_used: now - Duration::from_secs(age_s),
            busy,
            pinned,
            keep_alive: Some(Duration::from_secs(300)),
        }
    }

    #[test]
    fn room_is_made_least_recently_used_first_and_only_as_needed() {
        let now = Instant::now();
        let loaded = [
            r(0, 40, 10, false, false, now),
            r(1, 40, 50, false, false, now),
            r(2, 40, 30, false, false, now),
        ];
        assert_eq!(evictions(&loaded, 10, 200), Some(vec![]));
        assert_eq!(evictions(&loaded, 40, 130), Some(vec![1]));
        assert_eq!(evictions(&loaded, 80, 130), Some(vec![1, 2]));
    }

    #[test]
    fn busy_and_pinned_models_are_never_unloaded() {
        let now = Instant::now();
        let loaded = [
            r(0, 50, 90, true, false, now),
            r(1, 50, 80, false, true, now),
            r(2, 50, 10, false, false, now),
        ];
        // Only 2 may go, and that is not enough: wait for 0 to go idle.
        assert_eq!(evictions(&loaded, 100, 150), None);
        assert_eq!(evictions(&loaded, 50, 150), Some(vec![2]));
    }

    #[test]
    fn a_model_larger_than_the_budget_loads_alone() {
        let now = Instant::now();
        let loaded = [r(0, 50, 5, false, false, now)];
        assert_eq!(evictions(&loaded, 500, 100), Some(vec![0]));
        assert_eq!(evictions(&[], 500, 100), Some(vec![]));
        let busy = [r(0, 50, 5, true, false, now)];
        assert_eq!(evictions(&busy, 500, 100), None);
    }

    #[test]
    fn keep_alive_unloads_idle_models_only() {
        let now = Instant::now();
        let loaded = [
            r(0, 1, 400, false, false, now),
            r(1, 1, 400, true, false, now),
            r(2, 1, 400, false, true, now),
            r(3, 1, 10, false, false, now),
        ];
        assert_eq!(expired(&loaded, now), vec![0]);
        let forever = Resident {
            keep_alive: None,
            ..loaded[0]
        };
        assert_eq!(expired(&[forever], now), Vec::<usize>::new());
        let now_gone = Resident {
            keep_alive: Some(Duration::ZERO),
            ..loaded[3]
        };
        assert_eq!(expired(&[now_gone], now), vec![3]);
    }
}
