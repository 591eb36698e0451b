//! Peer distribution, the lending side: another Hearth node reads a
//! stored model's manifest, then byte ranges of its files, so a cluster
//! pulls a model from the outside once. Both routes are rows of the API
//! table (authenticated, decided by the policies as `replicate` on the
//! model, recorded as API requests); each file read is also recorded as a
//! `peer_transfer` audit entry and logged. A request without credentials
//! is refused even on a server that otherwise needs none: the weights are
//! the asset.

use std::net::SocketAddr;
use std::sync::Arc;

use auth::Principal;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, RANGE,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use types::{LibraryError, SharedModels};

use crate::admin::Admin;
use crate::error::ApiError;
use crate::AppState;

/// Bytes read from the file per piece of the response body.
const PIECE: usize = 256 << 10;

/// Who is asking: an authenticated principal, whom the policies decided
/// on before this handler ran. A client certificate alone is not enough:
/// without a principal no policy was asked.
fn requester(principal: &Option<Extension<Principal>>) -> Result<String, ApiError> {
    match principal {
        Some(Extension(p)) => Ok(p.id.clone()),
        None => Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_api_key",
            ..ApiError::invalid(
                "",
                "Peer routes need credentials: a key (for example `hearth keys create --role node`) or a JWT",
            )
        }),
    }
}

fn shared(app: &AppState) -> Result<Arc<dyn SharedModels>, ApiError> {
    app.shared.clone().ok_or_else(|| {
        ApiError::not_found(
            "sharing_off",
            "This node does not share its models (start it with `hearth serve --share`)",
        )
    })
}

fn library_error(name: &str, err: LibraryError) -> ApiError {
    match err {
        LibraryError::NotStored { .. } | LibraryError::NotInCatalog { .. } => ApiError::not_found(
            "model_not_found",
            format!("This node holds no model `{name}`"),
        ),
        LibraryError::Refused { reason } => {
            tracing::warn!(model = %name, %reason, "refusing to lend a stored file that no longer matches its manifest");
            ApiError {
                status: StatusCode::CONFLICT,
                code: "damaged",
                ..ApiError::invalid("", format!("This node's copy of `{name}` is damaged"))
            }
        }
        LibraryError::Failed(detail) => ApiError::internal(&detail),
    }
}

/// `GET /peer/v1/models/{name}`: the stored manifest (files, sizes,
/// every chunk's SHA-256, the origin it came from).
pub(crate) async fn manifest(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    principal: Option<Extension<Principal>>,
) -> Result<Response, ApiError> {
    requester(&principal)?;
    let shared = shared(&app)?;
    let wanted = name.clone();
    let bytes = tokio::task::spawn_blocking(move || shared.manifest(&wanted))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| library_error(&name, e))?;
    Ok(([(CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// `GET /peer/v1/models/{name}/files/sha256-{hex}`: the file, or the one
/// byte range asked for (206). The node checks the file against its
/// chunks first when it changed since last checked, so it never lends
/// bytes it would refuse to load.
pub(crate) async fn file(
    State(app): State<Arc<AppState>>,
    Path((name, file)): Path<(String, String)>,
    headers: HeaderMap,
    principal: Option<Extension<Principal>>,
    connection: Option<Extension<ConnectInfo<SocketAddr>>>,
    admin: Option<Extension<Admin>>,
) -> Result<Response, ApiError> {
    let who = requester(&principal)?;
    let shared = shared(&app)?;
    let sha256 = file
        .strip_prefix("sha256-")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ApiError::not_found("not_found", format!("No file `{file}`")))?
        .to_ascii_lowercase();
    let (opened, size) = {
        let (wanted, sha256) = (name.clone(), sha256.clone());
        tokio::task::spawn_blocking(move || shared.open(&wanted, &sha256))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(|e| library_error(&name, e))?
    };
    let etag = format!("\"sha256-{sha256}\"");
    let if_range_holds = headers
        .get(IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let asked = headers
        .get(RANGE)
        .filter(|_| if_range_holds)
        .map(|v| v.to_str().map_or(Asked::Ignored, |v| byte_range(v, size)));
    let range = match asked {
        None | Some(Asked::Ignored) => None,
        Some(Asked::Range(start, end)) => Some((start, end)),
        Some(Asked::Unsatisfiable) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response())
        }
    };
    let (start, end) = range.unwrap_or((0, size));
    let length = end - start;
    tracing::info!(target: "hearth::peer", model = %name, sha256 = %sha256, offset = start, length, peer = %who, "lending bytes to a peer");
    if let Some(auditor) = admin.and_then(|Extension(a)| a.audit) {
        auditor.log.record(audit::Event::PeerTransfer {
            model: name.clone(),
            sha256: sha256.clone(),
            offset: start,
            length,
            principal: Some(who),
            source_ip: connection.map(|Extension(c)| c.0.ip().to_string()),
        });
    }
    // Read a piece at a time on the blocking pool: a sealed file is
    // decrypted as it goes.
    let opened: Arc<dyn types::SharedFile> = Arc::from(opened);
    let body = futures::stream::unfold((opened, start, length), |(file, at, left)| async move {
        if left == 0 {
            return None;
        }
        let want = PIECE.min(left as usize);
        let reader = Arc::clone(&file);
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; want];
            reader.read_at(&mut buf, at).map(|n| {
                buf.truncate(n);
                buf
            })
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match read {
            // Shorter than promised: end the body, so the client sees a
            // truncated response rather than a hang.
            Ok(buf) if buf.is_empty() => None,
            Ok(buf) => {
                let n = buf.len() as u64;
                Some((Ok::<_, std::io::Error>(buf), (file, at + n, left - n)))
            }
            Err(e) => Some((Err(e), (file, at, 0))),
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let h = response.headers_mut();
    h.insert(ACCEPT_RANGES, "bytes".parse().expect("a valid header"));
    h.insert(ETAG, etag.parse().expect("a hex ETag is a valid header"));
    h.insert(CONTENT_LENGTH, length.into());
    h.insert(
        CONTENT_TYPE,
        "application/octet-stream".parse().expect("a valid header"),
    );
    if range.is_some() {
        h.insert(
            CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1)
                .parse()
                .expect("a valid header"),
        );
    }
    Ok(response)
}

/// What a `Range` header asks of a file.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    /// Bytes `start..end`.
    Range(u64, u64),
    /// Nothing inside the file: 416.
    Unsatisfiable,
    /// Not one `bytes=` range this server reads (several, another unit,
    /// malformed): answered with the whole file, as RFC 9110 allows.
    Ignored,
}

/// One `bytes=` range of a file of `size` bytes: `a-b`, `a-` or `-n`
/// (the last n).
fn byte_range(header: &str, size: u64) -> Asked {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Asked::Ignored;
    };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return Asked::Ignored;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        (true, false) => match number(last) {
            Some(n) => (size.saturating_sub(n), size),
            None => return Asked::Ignored,
        },
        (false, true) => match number(first) {
            Some(a) => (a, size),
            None => return Asked::Ignored,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => (a, b.saturating_add(1).min(size)),
            _ => return Asked::Ignored,
        },
        (true, true) => return Asked::Ignored,
    };
    if start < end && start < size {
        Asked::Range(start, end)
    } else {
        Asked::Unsatisfiable
    }
}

#[cfg(test)]
mod tests {
    use super::{byte_range, Asked};

    #[test]
    fn byte_ranges_parse_as_rfc_9110_says() {
        use Asked::*;
        assert_eq!(byte_range("bytes=0-0", 10), Range(0, 1));
        assert_eq!(byte_range("bytes=2-5", 10), Range(2, 6));
        assert_eq!(byte_range("bytes=8-", 10), Range(8, 10));
        assert_eq!(byte_range("bytes=-3", 10), Range(7, 10));
        assert_eq!(byte_range("bytes=5-100", 10), Range(5, 10));
        assert_eq!(byte_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(byte_range("bytes=5-2", 10), Ignored);
        assert_eq!(byte_range("bytes=0-1,3-4", 10), Ignored);
        assert_eq!(byte_range("items=0-1", 10), Ignored);
        assert_eq!(byte_range("bytes=-", 10), Ignored);
        assert_eq!(byte_range("bytes=x-2", 10), Ignored);
    }
}
