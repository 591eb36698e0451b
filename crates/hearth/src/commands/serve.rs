//! `serve`: listen at once, load the model behind `/ready`, then answer the API until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use server::{AppState, ServedModel, ServerOptions};
use types::ResolvedModel;

use super::directory::{self, AuditedLibrary, StoreDirectory};
use super::fleet::{self, Fleet};
use super::{audit_log, keys, open_store, pull_options, reload, resolve, usage};
use crate::config::Config;

pub fn serve(config: &Config) -> Result<()> {
    let settings = &config.server;
    let fleet = Fleet::new(
        config.engine.clone(),
        settings.memory_budget,
        settings.keep_alive,
        config.store_key()?,
        {
            let store = open_store(config)?;
            Box::new(move |name: &str| store.get(name).ok().flatten().map(|m| m.manifest.digest()))
        },
    );
    // The models given are loaded at start and kept (pinned).
    let mut pinned: Vec<(usize, ResolvedModel)> = Vec::with_capacity(settings.models.len());
    for reference in &settings.models {
        let model = resolve(config, reference)?;
        if let Some((_, twice)) = pinned.iter().find(|(_, m)| m.name == model.name) {
            bail!(
                "`{reference}` is the model `{}` again; give each model once",
                twice.name
            );
        }
        let bytes = super::footprint::memory_estimate(&model.path, &config.engine, fleet.key());
        let index = fleet.add(
            model.name.clone(),
            model.path.clone(),
            model.sha256.clone(),
            bytes,
            true,
        );
        pinned.push((index, model));
    }
    // Every other stored model loads on its first request, and so do
    // models stored while the server runs.
    let directory = Arc::new(StoreDirectory {
        store: open_store(config)?,
        fleet: Arc::clone(&fleet),
        engine: config.engine.clone(),
        failed: Default::default(),
    });
    let mut served: Vec<ServedModel> = pinned
        .iter()
        .map(|(index, model)| directory::served(&fleet, *index, model))
        .collect();
    for stored in directory.store.list()? {
        let name = stored.manifest.name.clone();
        if pinned.iter().any(|(_, m)| m.name == name) {
            continue;
        }
        match types::ModelResolver::resolve(&directory.store, &name) {
            Ok(model) => served.push(directory.serve(&model)),
            Err(err) => tracing::warn!(model = %name, %err, "not serving a damaged stored model"),
        }
    }
    let on_demand = served.len() - pinned.len();
    let mut state = AppState::with_metrics(served).with_directory(directory);
    if let Some(seed) = config.seed {
        state = state.with_default_seed(seed);
    }
    for (name, attrs) in &config.model_attrs {
        state = state.with_model_attrs(name, attrs.clone());
    }
    // Pulls over the API must not write pip's progress over the server's log.
    let options = store::PullOptions {
        show_pip_output: false,
        ..pull_options(config, false)
    };
    let audit = auditor(config)?;
    let store = open_store(config)?;
    if config.peers.share {
        tracing::info!(
            "lending stored models to peers under /peer/v1 (credentials allowed `replicate` only)"
        );
        state = state.with_shared(Arc::new(store::Library::new(
            store.clone(),
            options.clone(),
        )));
    }
    state = state.with_library(Arc::new(AuditedLibrary {
        library: store::Library::new(store.clone(), options.clone()),
        objects: super::directory::ObjectPulls {
            store,
            s3: config.s3.clone(),
            options,
        },
        audit: audit.as_ref().map(Arc::downgrade),
        peers: config.peers.clone(),
    }));
    let responses = config.home.join("responses.db");
    state = state.with_response_store(
        server::ResponseStore::open(&responses, server::RESPONSE_RETENTION)
            .with_context(|| format!("cannot open {}", responses.display()))?,
    );
    let state = Arc::new(state);
    let options = ServerOptions {
        max_body_bytes: settings.max_body_bytes,
    };
    let addr = SocketAddr::new(settings.host, settings.port);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hearth-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let access = access(config, addr, audit).await?;
        let tls = match &settings.tls {
            Some(files) => Some(Arc::new(server::Tls::load(files.clone())?)),
            None => None,
        };
        let app = server::secured_router(Arc::clone(&state), &options, &access);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let hangups = reload::listen();
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Scripts and tests read this line to find the port when using --port 0.
        println!("listening on {scheme}://{bound}");
        tokio::spawn(usage::persist(access.clone()));
        tokio::spawn(reload::on_hangup(
            hangups,
            config.clone(),
            access.clone(),
            tls.clone(),
        ));
        let draining = Arc::clone(&state);
        let stop = async move {
            stop_requested().await;
            draining.start_draining();
            drain_deadline();
        };
        let serving = async move {
            match tls {
                Some(tls) => server::serve_tls(listener, tls, app, stop).await,
                None => server::serve(listener, app, stop).await,
            }
        };
        tokio::pin!(serving);

        if let Some(auditor) = &access.audit {
            // Weak: the audit log is flushed and closed when the server
            // lets go of it at shutdown, which a strong reference held by
            // the fleet (alive in every model's generator) would prevent.
            let auditor = Arc::downgrade(auditor);
            fleet.on_change(move |change| {
                let Some(auditor) = auditor.upgrade() else {
                    return;
                };
                auditor.log.record(match change {
                    fleet::Change::Loaded { name, path } => audit::Event::ModelLoad {
                        model: name,
                        path: path.display().to_string(),
                        sha256: None,
                    },
                    fleet::Change::Unloaded { name } => audit::Event::ModelUnload { model: name },
                    fleet::Change::Swapped { name, from, to } => audit::Event::ModelSwap {
                        model: name,
                        from_sha256: from,
                        to_sha256: to,
                    },
                });
            });
        }
        tokio::spawn(reap(Arc::clone(&fleet)));
        if settings.model_swap == crate::config::ModelSwap::Auto {
            tokio::spawn(follow_store(Arc::clone(&state)));
        }
        // One after another: each is ready (and answers) as soon as it is
        // loaded, and two loads at once would only compete for the disk.
        for (index, model) in &pinned {
            let (fleet, index) = (Arc::clone(&fleet), *index);
            let loader = tokio::task::spawn_blocking(move || fleet.load(index));
            let info = tokio::select! {
                loaded = loader => loaded.context("the model loader stopped")??,
                stopped = &mut serving => return stopped.context("server failed"),
            };
            if let Some(auditor) = &access.audit {
                auditor.log.record(audit::Event::ModelLoad {
                    model: model.name.clone(),
                    path: info.path.display().to_string(),
                    sha256: model.sha256.clone(),
                });
            }
            tracing::info!(
                model = %model.name,
                path = %info.path.display(),
                ctx_size = info.ctx_size,
                kv_size = info.kv_size,
                kv_layout = if info.stream_cells.is_some() { "streams" } else { "unified" },
                max_running = config.engine.max_running,
                threads = config.engine.threads,
                "loaded"
            );
        }
        tracing::info!(
            pinned = pinned.len(),
            on_demand,
            memory_budget = settings.memory_budget,
            "ready on {scheme}://{bound}"
        );
        let served = serving.await.context("server failed");
        usage::flush(&access);
        if let Some(auditor) = &access.audit {
            for name in fleet.loaded_names() {
                auditor
                    .log
                    .record(audit::Event::ModelUnload { model: name });
            }
        }
        served
    })
}

/// How often `--model-swap auto` looks for new versions in the store.
const SWAP_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves each served model's newly stored version (after `hearth sync`,
/// or a `hearth pull` beside the server) as it appears: a manifest read per
/// model per round, the files verified only when the version changed.
async fn follow_store(state: Arc<server::AppState>) {
    let mut tick = tokio::time::interval(SWAP_POLL);
    loop {
        tick.tick().await;
        let state = Arc::clone(&state);
        let _ = tokio::task::spawn_blocking(move || {
            for id in state.model_ids() {
                state.reload_model(&id, true);
            }
        })
        .await;
    }
}

/// Unloads models whose keep-alive ran out, once a second.
async fn reap(fleet: Arc<Fleet>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let fleet = Arc::clone(&fleet);
        let _ = tokio::task::spawn_blocking(move || fleet.reap()).await;
    }
}

/// Who may reach what: the API behind authentication unless
/// `--insecure-no-auth`, `/metrics` behind it unless open. Refuses to listen
/// off loopback when nobody could authenticate.
async fn access(
    config: &Config,
    addr: SocketAddr,
    audit: Option<Arc<server::Auditor>>,
) -> Result<server::Access> {
    let settings = &config.server;
    if settings.insecure_no_auth {
        tracing::warn!(
            "--insecure-no-auth: every API route answers anyone who can reach {addr}, without credentials"
        );
        return Ok(server::Access {
            audit,
            ..server::Access::open()
        });
    }
    let jwt = auth::JwtVerifier::new(config.jwt_issuers.clone())?;
    let authenticator = Arc::new(auth::Authenticator::with_jwt(
        keys::open_key_store(config)?,
        jwt,
    ));
    if !settings.host.is_loopback() && !authenticator.required() {
        bail!(
            "refusing to listen on {addr} without authentication: create a key with \
             `hearth keys create --name NAME`, or configure a JWT issuer under [[auth.jwt]] \
             (or pass --insecure-no-auth to serve everyone)"
        );
    }
    let jwks = server::JwksRefresher::start(Arc::clone(&authenticator)).await;
    let quotas = usage::restore(&authenticator);
    let policies = load_policies(config)?;
    tracing::info!(
        policies = policies.len(),
        files = policies.files().len(),
        "authorization policies loaded"
    );
    record_policies(audit.as_deref(), &policies);
    Ok(server::Access {
        authenticator: Some(authenticator),
        open_metrics: settings.open_metrics,
        policies: Some(Arc::new(auth::LivePolicies::new(policies))),
        jwks,
        audit,
        quotas: Some(quotas),
    })
}

/// Notes a policy set put in force in the audit log, if there is one.
pub fn record_policies(auditor: Option<&server::Auditor>, policies: &auth::Policies) {
    if let Some(a) = auditor {
        a.log.record(audit::Event::PolicyLoaded {
            files: policies
                .files()
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            policies: policies.len(),
            sha256: policies.digest().to_string(),
        });
    }
}

/// The audit log as the server records into it, unless turned off.
fn auditor(config: &Config) -> Result<Option<Arc<server::Auditor>>> {
    Ok(audit_log::open(config)?.map(|log| {
        Arc::new(server::Auditor {
            log,
            record_text: config.audit.as_ref().is_some_and(|a| a.record_text),
        })
    }))
}

/// `$HEARTH_HOME/policies/*.cedar`, validated. A home without the directory
/// gets the default policies (users use models, admins do anything) and the
/// radiology example, so a first key with the default `user` role works.
pub fn load_policies(config: &Config) -> Result<auth::Policies> {
    let dir = config.home.join("policies");
    if !dir.exists() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("default.cedar"), auth::policy::DEFAULT_POLICIES)
            .with_context(|| format!("cannot write {}", dir.display()))?;
        std::fs::write(
            dir.join("radiology.cedar.example"),
            auth::policy::EXAMPLE_POLICIES,
        )
        .with_context(|| format!("cannot write {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), "installed the default policies");
    }
    Ok(auth::Policies::load_dir(&dir)?)
}

/// How long in-flight requests get to finish after a stop signal.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// After a stop signal, in-flight requests get [`DRAIN`] to finish. A
/// second Ctrl-C, or the drain period running out, ends the process at once:
/// a long stream must not keep a server someone asked to stop.
fn drain_deadline() {
    tracing::info!(
        "shutting down; not ready any more, waiting up to {}s for in-flight requests",
        DRAIN.as_secs()
    );
    tokio::spawn(async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = tokio::time::sleep(DRAIN) => {},
        }
        tracing::warn!("stopping with requests still in flight");
        std::process::exit(1);
    });
}

async fn stop_requested() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
