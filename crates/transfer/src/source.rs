//! Where bytes come from: one trait, so the transfer logic (ranges, chunks,
//! journal, retries) is written once for every kind of location.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;

use crate::error::{IoContext, TransferError};

/// What a source says about its object before the transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    /// Bytes, when the source says.
    pub size: Option<u64>,
    /// Whether byte ranges can be fetched (several connections, resume).
    pub ranges: bool,
    /// What identifies this version of the object (a strong ETag, or a
    /// file's size and modification time): a resumed transfer continues
    /// only while it is unchanged.
    pub validator: Option<String>,
    /// The object's SHA-256, when the source publishes it (a hub's
    /// `X-Linked-Etag`).
    pub sha256: Option<String>,
}

/// Receives bytes as they arrive; an error stops the read.
pub type Sink<'a> = dyn FnMut(&[u8]) -> Result<(), TransferError> + 'a;

/// A place one object can be fetched from.
pub trait Source: Send + Sync {
    /// The location, for messages and journals (never with credentials).
    fn describe(&self) -> String;

    /// Asks for the object's size, range support, validator and digest.
    fn probe(&self) -> Result<Remote, TransferError>;

    /// Streams bytes `start..end` (or, with `None`, the whole object) into
    /// `sink`. With a `validator`, an object that changed since the probe
    /// is [`TransferError::Changed`]; a source that sends the whole object
    /// when asked for a range is [`TransferError::RangeIgnored`].
    fn read(
        &self,
        range: Option<(u64, u64)>,
        validator: Option<&str>,
        sink: &mut Sink<'_>,
    ) -> Result<(), TransferError>;

    /// Told that the bytes it sent for `range` were refused (they did not
    /// hash to the chunk's known digest, or fell short), before the range
    /// is asked for again: a source of several places drops the one that
    /// sent them.
    fn rejected(&self, _range: (u64, u64), _err: &TransferError) {}
}

/// A shared source, so its owner can ask it afterwards what happened
/// (a [`crate::Spread`]'s record of who served what).
impl<S: Source + ?Sized> Source for std::sync::Arc<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn probe(&self) -> Result<Remote, TransferError> {
        (**self).probe()
    }
    fn read(
        &self,
        range: Option<(u64, u64)>,
        validator: Option<&str>,
        sink: &mut Sink<'_>,
    ) -> Result<(), TransferError> {
        (**self).read(range, validator, sink)
    }
    fn rejected(&self, range: (u64, u64), err: &TransferError) {
        (**self).rejected(range, err)
    }
}

/// How HTTP sources connect.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// A read that waits longer than this for a byte is a stall.
    pub stall: Duration,
    /// PEM files of certificate authorities to trust besides the system's.
    pub extra_ca: Vec<PathBuf>,
    /// A bearer token, sent only to the origin of the URL it was given for.
    pub token: Option<String>,
    /// A PEM file holding a client certificate and its key, presented to
    /// servers that ask for one (mutual TLS between Hearth nodes).
    pub identity: Option<PathBuf>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            stall: Duration::from_secs(30),
            extra_ca: Vec::new(),
            token: None,
            identity: None,
        }
    }
}

/// A `hf://org/repo[@revision]/path` location in a Hugging Face-layout hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubLocation {
    pub repo: String,
    pub revision: String,
    pub path: String,
}

impl HubLocation {
    /// Parses `hf://org/repo[@revision]/path/to/file`.
    pub fn parse(location: &str) -> Result<HubLocation, TransferError> {
        let bad = |why: &str| {
            TransferError::BadLocation(format!(
                "{location}: {why} (expected hf://org/repo[@revision]/path)"
            ))
        };
        let rest = location
            .strip_prefix("hf://")
            .ok_or_else(|| bad("not an hf:// location"))?;
        let mut parts = rest.splitn(3, '/');
        let (org, repo_rev, path) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let (repo, revision) = match repo_rev.split_once('@') {
            Some((repo, rev)) => (repo, rev),
            None => (repo_rev, "main"),
        };
        let plain = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !plain(org) || !plain(repo) || !plain(revision) {
            return Err(bad("organisation, repository and revision are plain names"));
        }
        if path.is_empty() || !path.split('/').all(plain) {
            return Err(bad("the file's path is plain names separated by /"));
        }
        Ok(HubLocation {
            repo: format!("{org}/{repo}"),
            revision: revision.to_string(),
            path: path.to_string(),
        })
    }

    /// The hub's download URL: `{endpoint}/{repo}/resolve/{revision}/{path}`.
    pub fn url(&self, endpoint: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            endpoint.trim_end_matches('/'),
            self.repo,
            self.revision,
            self.path
        )
    }
}

/// An object at an `http(s)://` URL, or a file in a Hugging Face-layout
/// hub (which redirects its `resolve/` URLs to where the bytes are and
/// names their SHA-256 in `X-Linked-Etag`).
pub struct HttpSource {
    described: String,
    url: String,
    hub: bool,
    client: Client,
    /// The first response's redirects are read by hand, so no redirects.
    no_redirects: Client,
    token: Option<String>,
    stall: Duration,
    /// Where the bytes are, once a hub's redirect said.
    data_url: OnceLock<String>,
}

impl HttpSource {
    pub fn new(url: &str, options: &HttpOptions) -> Result<HttpSource, TransferError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(TransferError::BadLocation(format!(
                "{url} is not an http(s) URL"
            )));
        }
        Self::build(url.to_string(), url.to_string(), false, options)
    }

    /// A file in the hub at `endpoint`.
    pub fn hub(
        location: &HubLocation,
        endpoint: &str,
        options: &HttpOptions,
    ) -> Result<HttpSource, TransferError> {
        let described = format!(
            "hf://{}@{}/{}",
            location.repo, location.revision, location.path
        );
        Self::build(described, location.url(endpoint), true, options)
    }

    fn build(
        described: String,
        url: String,
        hub: bool,
        options: &HttpOptions,
    ) -> Result<HttpSource, TransferError> {
        let client = |redirects: reqwest::redirect::Policy| {
            let mut b = Client::builder()
                .timeout(options.stall)
                .connect_timeout(options.stall)
                .redirect(redirects);
            if let Some(path) = &options.identity {
                let pem = std::fs::read(path).at(path)?;
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    TransferError::BadLocation(format!(
                        "{}: not a PEM certificate and key: {e}",
                        path.display()
                    ))
                })?;
                b = b.identity(identity);
            }
            for path in &options.extra_ca {
                let pem = std::fs::read(path).at(path)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| TransferError::BadLocation(format!("{}: {e}", path.display())))?;
                for cert in certs {
                    b = b.add_root_certificate(cert);
                }
            }
            b.build().map_err(|e| TransferError::Connection {
                url: described.clone(),
                reason: chain(&e),
            })
        };
        Ok(HttpSource {
            client: client(reqwest::redirect::Policy::limited(10))?,
            no_redirects: client(reqwest::redirect::Policy::none())?,
            described,
            url,
            hub,
            token: options.token.clone(),
            stall: options.stall,
            data_url: OnceLock::new(),
        })
    }

    fn data_url(&self) -> &str {
        self.data_url.get().map_or(&self.url, String::as_str)
    }

    fn get(&self, client: &Client, url: &str) -> reqwest::blocking::RequestBuilder {
        let request = client.get(url);
        match &self.token {
            Some(token) if same_origin(url, &self.url) => request.bearer_auth(token),
            _ => request,
        }
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<Response, TransferError> {
        request.send().map_err(|e| self.failure(&e))
    }

    fn failure(&self, e: &reqwest::Error) -> TransferError {
        if e.is_timeout() {
            TransferError::Stalled {
                url: self.described.clone(),
                secs: self.stall.as_secs(),
            }
        } else if let Some(tls) = tls_failure(e) {
            // Not retried: the certificate will be as untrusted next time.
            TransferError::Tls {
                url: self.described.clone(),
                reason: tls.to_string(),
            }
        } else {
            TransferError::Connection {
                url: self.described.clone(),
                reason: chain(e),
            }
        }
    }

    fn status(&self, status: StatusCode) -> TransferError {
        let refused = matches!(status.as_u16(), 401 | 403);
        TransferError::Status {
            url: self.described.clone(),
            status: status.as_u16(),
            hint: match (refused, self.hub, self.token.is_some()) {
                (true, true, false) => {
                    "; the hub wants a token for it: set HF_TOKEN, or hf_token_file under [pull]"
                }
                (true, true, true) => {
                    "; the hub refused the token given (HF_TOKEN or hf_token_file)"
                }
                _ => "",
            },
        }
    }

    /// A hub's `resolve/` answer: a redirect naming the digest and size
    /// of what it points at, or the bytes themselves.
    fn resolve_hub(&self) -> Result<Remote, TransferError> {
        let response = self.send(match &self.token {
            Some(t) => self.no_redirects.head(&self.url).bearer_auth(t),
            None => self.no_redirects.head(&self.url),
        })?;
        let status = response.status();
        let headers = response.headers();
        let linked = Remote {
            size: header_str(headers, "x-linked-size").and_then(|s| s.parse().ok()),
            sha256: header_str(headers, "x-linked-etag")
                .map(unquote)
                .filter(|e| is_sha256(e))
                .map(str::to_string),
            ..Remote::default()
        };
        if status.is_redirection() {
            let location = header_str(headers, "location").ok_or_else(|| self.status(status))?;
            let target = reqwest::Url::parse(&self.url)
                .and_then(|base| base.join(location))
                .map_err(|e| TransferError::BadLocation(format!("{location}: {e}")))?;
            let _ = self.data_url.set(target.to_string());
        } else if !status.is_success() {
            return Err(self.status(status));
        }
        Ok(linked)
    }
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn probe(&self) -> Result<Remote, TransferError> {
        let linked = if self.hub {
            self.resolve_hub()?
        } else {
            Remote::default()
        };
        // One byte asked for: a range-capable server answers 206 with the
        // total size, another 200 with the whole (which is not read).
        let response = self.send(
            self.get(&self.client, self.data_url())
                .header(header::RANGE, "bytes=0-0"),
        )?;
        let headers = response.headers();
        let validator = header_str(headers, "etag")
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| header_str(headers, "last-modified"))
            .map(str::to_string);
        let remote = match response.status() {
            StatusCode::PARTIAL_CONTENT => Remote {
                size: header_str(headers, "content-range")
                    .and_then(|r| r.rsplit_once('/'))
                    .and_then(|(_, total)| total.parse().ok()),
                ranges: true,
                validator,
                sha256: None,
            },
            StatusCode::OK => Remote {
                size: response.content_length(),
                ranges: false,
                validator,
                sha256: None,
            },
            StatusCode::RANGE_NOT_SATISFIABLE => Remote {
                size: Some(0),
                ranges: false,
                validator,
                sha256: None,
            },
            status => return Err(self.status(status)),
        };
        Ok(Remote {
            size: linked.size.or(remote.size),
            sha256: linked.sha256,
            ..remote
        })
    }

    fn read(
        &self,
        range: Option<(u64, u64)>,
        validator: Option<&str>,
        sink: &mut Sink<'_>,
    ) -> Result<(), TransferError> {
        let mut request = self.get(&self.client, self.data_url());
        if let Some((start, end)) = range {
            request = request.header(header::RANGE, format!("bytes={start}-{}", end - 1));
            if let Some(v) = validator {
                // The range, or (if the object changed) the whole new one.
                request = request.header(header::IF_RANGE, v);
            }
        }
        let mut response = self.send(request)?;
        let status = response.status();
        let now = header_str(response.headers(), "etag")
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| header_str(response.headers(), "last-modified"))
            .map(str::to_string);
        if let (Some(before), Some(after)) = (validator, now.as_deref()) {
            if before != after {
                return Err(TransferError::Changed {
                    what: self.described.clone(),
                    before: before.to_string(),
                    after: after.to_string(),
                });
            }
        }
        let expected = match (range, status) {
            (Some((start, end)), StatusCode::PARTIAL_CONTENT) => {
                let got_start = header_str(response.headers(), "content-range")
                    .and_then(|r| r.strip_prefix("bytes "))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if got_start != Some(start) {
                    return Err(TransferError::WrongRange {
                        url: self.described.clone(),
                        wanted_start: start,
                        got_start: got_start.unwrap_or(u64::MAX),
                    });
                }
                Some(end - start)
            }
            (Some(_), StatusCode::OK) => {
                return Err(TransferError::RangeIgnored {
                    url: self.described.clone(),
                })
            }
            (None, StatusCode::OK) => response.content_length(),
            (_, status) => return Err(self.status(status)),
        };
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0u64;
        loop {
            let want = match expected {
                Some(total) if total - got < buf.len() as u64 => (total - got) as usize,
                _ => buf.len(),
            };
            if want == 0 {
                break;
            }
            let n = match response.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) => return Err(self.read_failure(&e, got)),
            };
            if n == 0 {
                break;
            }
            sink(&buf[..n])?;
            got += n as u64;
        }
        match expected {
            Some(total) if got < total => Err(TransferError::Truncated {
                url: self.described.clone(),
                got,
                expected: total,
            }),
            _ => Ok(()),
        }
    }
}

impl HttpSource {
    fn read_failure(&self, e: &std::io::Error, got: u64) -> TransferError {
        let timed_out = e.kind() == std::io::ErrorKind::TimedOut
            || e.get_ref()
                .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
                .is_some_and(reqwest::Error::is_timeout);
        if timed_out {
            TransferError::Stalled {
                url: self.described.clone(),
                secs: self.stall.as_secs(),
            }
        } else {
            TransferError::Connection {
                url: self.described.clone(),
                reason: format!(
                    "the connection broke after {got} bytes of the response ({})",
                    chain(e)
                ),
            }
        }
    }
}

/// A file already on this machine (a model copied in by hand).
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub fn new(path: &Path) -> FileSource {
        FileSource {
            path: path.to_path_buf(),
        }
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn probe(&self) -> Result<Remote, TransferError> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.path).at(&self.path)?;
        if !meta.is_file() {
            return Err(TransferError::BadLocation(format!(
                "{} is not a file",
                self.path.display()
            )));
        }
        Ok(Remote {
            size: Some(meta.len()),
            ranges: true,
            validator: Some(format!(
                "{}-{}.{}",
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec()
            )),
            sha256: None,
        })
    }

    fn read(
        &self,
        range: Option<(u64, u64)>,
        _validator: Option<&str>,
        sink: &mut Sink<'_>,
    ) -> Result<(), TransferError> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&self.path).at(&self.path)?;
        let (start, end) = match range {
            Some(r) => r,
            None => (0, file.metadata().at(&self.path)?.len()),
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut at = start;
        while at < end {
            let want = buf.len().min((end - at) as usize);
            let n = file.read_at(&mut buf[..want], at).at(&self.path)?;
            if n == 0 {
                return Err(TransferError::Truncated {
                    url: self.describe(),
                    got: at - start,
                    expected: end - start,
                });
            }
            sink(&buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn unquote(s: &str) -> &str {
    s.trim_start_matches("W/").trim_matches('"')
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// An error with its causes, for messages: reqwest's own text is only the
/// outermost ("error sending request").
/// The cause of a failed connection when it is the TLS handshake (an
/// unknown issuer, a name mismatch, an expired certificate): rustls's own
/// error, which reqwest's connector hands on inside I/O errors (two deep
/// in reqwest 0.12), found by unwrapping them.
fn tls_failure(e: &reqwest::Error) -> Option<&rustls::Error> {
    if !e.is_connect() {
        return None;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let mut layer: &(dyn std::error::Error + 'static) = s;
        loop {
            if let Some(tls) = layer.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            match layer
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(inner) => layer = inner,
                None => break,
            }
        }
        source = s.source();
    }
    None
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_locations_parse_and_refuse_paths_that_escape() {
        let l = HubLocation::parse("hf://org/repo@v1.0/sub/model-Q4.gguf").unwrap();
        assert_eq!(l.repo, "org/repo");
        assert_eq!(l.revision, "v1.0");
        assert_eq!(
            l.url("http://127.0.0.1:9/"),
            "http://127.0.0.1:9/org/repo/resolve/v1.0/sub/model-Q4.gguf"
        );
        assert_eq!(
            HubLocation::parse("hf://org/repo/m.gguf").unwrap().revision,
            "main"
        );
        for bad in [
            "hf://org/repo",
            "hf://org/../m.gguf",
            "hf://org/repo/../../etc/passwd",
            "hf://org/repo/a//b",
            "https://org/repo/m.gguf",
            "hf://org/re po/m.gguf",
        ] {
            assert!(HubLocation::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_stay_with_their_origin() {
        assert!(same_origin("https://hub.test/a", "https://hub.test/b/c"));
        assert!(!same_origin("https://cdn.test/a", "https://hub.test/a"));
        assert!(!same_origin("http://hub.test/a", "https://hub.test/a"));
    }
}
