//! `serve`: load the model, then answer the OpenAI-compatible API until told to stop.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use server::{AppState, ServedModel, ServerOptions};

use super::load;
use crate::config::Config;

pub fn serve(config: &Config) -> Result<()> {
    let settings = &config.server;
    let (model, engine) = load(config, &settings.model)?;
    let info = engine.info().clone();
    let aliases = store::catalog::find(&model.name)
        .map(|e| e.aliases.iter().map(|a| a.to_string()).collect())
        .unwrap_or_default();
    let mut state = AppState::new(vec![ServedModel {
        id: model.name.clone(),
        aliases,
        created: server_now(),
        generator: Arc::new(engine),
    }]);
    if let Some(seed) = config.seed {
        state = state.with_default_seed(seed);
    }
    let options = ServerOptions {
        max_body_bytes: settings.max_body_bytes,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hearth-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let addr = SocketAddr::new(settings.host, settings.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(
            model = %model.name,
            path = %info.path.display(),
            ctx_size = info.ctx_size,
            threads = config.engine.threads,
            "serving on http://{bound}"
        );
        // Scripts and tests read this line to find the port when using --port 0.
        println!("listening on http://{bound}");
        server::serve(listener, state, &options, shutdown_signal())
            .await
            .context("server failed")
    })
}

fn server_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long in-flight requests get to finish after a stop signal.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Resolves on Ctrl-C or SIGTERM, so in-flight requests can finish. A second
/// Ctrl-C, or the drain period running out, ends the process at once: a long
/// stream must not keep a server someone asked to stop.
async fn shutdown_signal() {
    stop_requested().await;
    tracing::info!(
        "shutting down; waiting up to {}s for in-flight requests",
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
