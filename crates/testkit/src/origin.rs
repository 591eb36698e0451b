//! A file server on loopback for transfer tests, built on axum (a real
//! HTTP stack): byte ranges, strong ETags, a Hugging Face-layout
//! `resolve/` route that redirects and names the SHA-256 in
//! `X-Linked-Etag`, an access log of the bytes each request was sent, and
//! faults switched on while it runs.
//!
//! How it starts: [`Origin::start`] binds `127.0.0.1:0` and serves from
//! its own thread and tokio runtime, so blocking tests and child processes
//! (a `hearth pull` killed with `-9`) can use it; dropping it stops it.
//! [`Origin::start_tls`] serves the same over https (rustls) with a
//! certificate from [`crate::tls::TestCa`]. [`Origin::require_token`]
//! makes the hub route answer 401 without `Authorization: Bearer <token>`,
//! as a hub does for a gated repository.
//! Files are read from the directory it is given:
//! - `GET /files/<path>` serves `<dir>/<path>`;
//! - `HEAD|GET /<org>/<repo>/resolve/<rev>/<path>` answers 302 to
//!   `/files/<org>/<repo>/<path>` with `X-Linked-Etag` and `X-Linked-Size`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// Faults the next responses carrying file bytes get. Counters count
/// down per response; the others hold until changed.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer this many requests with 500.
    pub status_500: u32,
    /// Cut this many responses' connections after `drop_after` bytes,
    /// once `drop_skip` responses went through whole.
    pub drop_times: u32,
    pub drop_skip: u32,
    pub drop_after: u64,
    /// Stop sending (keep the connection open) after this many bytes.
    pub stall_after: Option<u64>,
    /// Flip a byte in this many responses.
    pub wrong_bytes: u32,
    /// Answer ranged requests with the whole file (200).
    pub ignore_range: bool,
    /// Each response's rate, in bytes per second.
    pub throttle: Option<u64>,
}

/// One request for file bytes.
#[derive(Debug, Clone)]
pub struct Access {
    pub path: String,
    /// The bytes asked for (`start..end`).
    pub start: u64,
    pub end: u64,
    pub status: u16,
    /// Bytes handed to the connection before it ended.
    pub sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Access {
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Shared {
    dir: PathBuf,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Access>>,
    digests: Mutex<HashMap<PathBuf, String>>,
    token: Mutex<Option<String>>,
}

pub struct Origin {
    pub base: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Origin {
    pub fn start(dir: &Path) -> Origin {
        Origin::launch(dir, None)
    }

    /// The origin over https, with the PEM certificate chain and key given
    /// (one for 127.0.0.1, from [`crate::tls::TestCa::server`]).
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Origin {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Origin::launch(dir, Some(Arc::new(config)))
    }

    fn launch(dir: &Path, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Origin {
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            digests: Mutex::new(HashMap::new()),
            token: Mutex::new(None),
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let state = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the origin");
            rt.block_on(async move {
                let app = axum::Router::new()
                    .route("/files/{*path}", get(file))
                    .route("/{org}/{repo}/resolve/{rev}/{*path}", get(resolve))
                    .with_state(state);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                match tls {
                    None => axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .unwrap(),
                    Some(config) => serve_tls(listener, config, app, stopped).await,
                }
            });
            // Stalled responses never end: do not wait for them.
            rt.shutdown_background();
        });
        let addr = ready.recv().expect("the origin starts");
        Origin {
            base: format!("{scheme}://{addr}"),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// From now on the hub route wants `Authorization: Bearer <token>`
    /// (`None`: no more).
    pub fn require_token(&self, token: Option<&str>) {
        *self.shared.token.lock().unwrap() = token.map(str::to_string);
    }

    /// The URL of `<dir>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/files/{path}", self.base)
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Every request for file bytes so far.
    pub fn log(&self) -> Vec<Access> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Bytes sent for `path` so far.
    pub fn sent(&self, path: &str) -> u64 {
        self.log()
            .iter()
            .filter(|a| a.path == path)
            .map(Access::sent)
            .sum()
    }

    pub fn clear_log(&self) {
        self.shared.log.lock().unwrap().clear();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A path under the served directory, or `None` for one that escapes it.
fn local(shared: &Shared, path: &str) -> Option<PathBuf> {
    let plain = path
        .split('/')
        .all(|p| !p.is_empty() && p != "." && p != "..");
    let full = shared.dir.join(path);
    (plain && full.is_file()).then_some(full)
}

fn etag(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    format!("\"{:x}-{:x}-{:x}\"", m.len(), m.mtime(), m.mtime_nsec())
}

/// Each connection's TLS handshake, then HTTP as under `axum::serve`,
/// until `stopped`.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
    app: axum::Router,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::pin!(stopped);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A client that distrusts the certificate hangs up here.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn resolve(
    State(shared): State<Arc<Shared>>,
    UrlPath((org, repo, _rev, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let wanted = shared.token.lock().unwrap().clone();
    if let Some(token) = wanted {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let rel = format!("{org}/{repo}/{path}");
    let Some(full) = local(&shared, &rel) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cached = shared.digests.lock().unwrap().get(&full).cloned();
    let sha = match cached {
        Some(sha) => sha,
        None => {
            let f = full.clone();
            let sha = tokio::task::spawn_blocking(move || {
                let mut hasher = Sha256::new();
                std::io::copy(&mut std::fs::File::open(&f).unwrap(), &mut hasher).unwrap();
                hex::encode(hasher.finalize())
            })
            .await
            .unwrap();
            shared
                .digests
                .lock()
                .unwrap()
                .insert(full.clone(), sha.clone());
            sha
        }
    };
    let size = std::fs::metadata(&full).unwrap().len();
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, format!("/files/{rel}")),
            (
                header::HeaderName::from_static("x-linked-etag"),
                format!("\"{sha}\""),
            ),
            (
                header::HeaderName::from_static("x-linked-size"),
                size.to_string(),
            ),
        ],
    )
        .into_response()
}

async fn file(
    State(shared): State<Arc<Shared>>,
    method: Method,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let Some(full) = local(&shared, &path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let size = std::fs::metadata(&full).unwrap().len();
    let tag = etag(&full);
    // A one-byte probe (`bytes=0-0`, how clients ask for the size) can get
    // a 500 but never a body fault, and does not use one up.
    let probe = headers
        .get(header::RANGE)
        .is_some_and(|v| v.as_bytes() == b"bytes=0-0");
    let faults = {
        let mut f = shared.faults.lock().unwrap();
        let mut now = f.clone();
        f.status_500 = f.status_500.saturating_sub(1);
        if probe {
            now = Faults {
                status_500: now.status_500,
                ignore_range: now.ignore_range,
                ..Faults::default()
            };
        } else if method != Method::HEAD && f.drop_skip > 0 {
            f.drop_skip -= 1;
        } else if method != Method::HEAD {
            f.drop_times = f.drop_times.saturating_sub(1);
            f.wrong_bytes = f.wrong_bytes.saturating_sub(1);
        }
        now
    };
    if faults.status_500 > 0 {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut faults = faults;
    if faults.drop_skip > 0 {
        faults.drop_times = 0;
    }
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == tag);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            let start: u64 = a.parse().ok()?;
            let end: u64 = if b.is_empty() {
                size - 1
            } else {
                b.parse().ok()?
            };
            Some((start, end.min(size.saturating_sub(1)) + 1))
        })
        .filter(|_| if_range_ok && !faults.ignore_range);
    let (status, start, end) = match range {
        Some((start, end)) if start >= end || start >= size => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response()
        }
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        None => (StatusCode::OK, 0, size),
    };
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    shared.log.lock().unwrap().push(Access {
        path: path.clone(),
        start,
        end,
        status: status.as_u16(),
        sent: Arc::clone(&sent),
    });
    let mut builder = Response::builder()
        .status(status)
        .header(header::ETAG, &tag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, end - start);
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    if method == Method::HEAD {
        return builder.body(Body::empty()).unwrap();
    }
    let stream = body(full, start, end, faults, sent);
    builder.body(Body::from_stream(stream)).unwrap()
}

/// The bytes `start..end` of `path`, with the faults applied.
fn body(
    path: PathBuf,
    start: u64,
    end: u64,
    faults: Faults,
    sent: Arc<std::sync::atomic::AtomicU64>,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(2);
    tokio::spawn(async move {
        let mut file = std::fs::File::open(&path).unwrap();
        file.seek(SeekFrom::Start(start)).unwrap();
        let mut at = start;
        let mut flipped = faults.wrong_bytes == 0;
        while at < end {
            let done = at - start;
            if faults.drop_times > 0 && done >= faults.drop_after {
                let _ = tx
                    .send(Err(std::io::Error::other(
                        "origin fault: connection dropped",
                    )))
                    .await;
                return;
            }
            if faults.stall_after.is_some_and(|n| done >= n) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            let mut limit = (64u64 << 10).min(end - at);
            if faults.drop_times > 0 && done < faults.drop_after {
                limit = limit.min(faults.drop_after - done);
            }
            if let Some(n) = faults.stall_after {
                limit = limit.min(n - done);
            }
            let mut buf = vec![0u8; limit as usize];
            file.read_exact(&mut buf).unwrap();
            if !flipped {
                let middle = buf.len() / 2;
                buf[middle] ^= 0x01;
                flipped = true;
            }
            if let Some(rate) = faults.throttle {
                tokio::time::sleep(Duration::from_secs_f64(limit as f64 / rate as f64)).await;
            }
            at += limit;
            if tx.send(Ok(buf)).await.is_err() {
                return;
            }
            sent.fetch_add(limit, std::sync::atomic::Ordering::Relaxed);
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
