//! One object into one partial file: several connections each take the
//! next missing chunk, hash it as it streams, write it where it belongs,
//! sync it and record it in the journal; a rerun skips what the journal
//! holds. The whole file is hashed alongside, in file order, as bytes land
//! (see [`crate::landing`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use types::Progress;

use crate::error::{IoContext, TransferError};
use crate::journal::{Header, Journal};
use crate::landing::{self, Landing};
use crate::pace::Pace;
use crate::source::{Remote, Source};
use crate::staging::{Partial, Plain, PlainFile, Staging};
use crate::{spans, Chunk, CHUNK_SIZE};

/// How a transfer runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ranged requests in flight at once.
    pub connections: usize,
    /// Chunk size for a file whose chunks are not known yet.
    pub chunk_size: u64,
    /// Attempts after the first, per chunk, for transient failures.
    pub retries: u32,
    /// The first pause before a retry; each later one doubles (to 8 s),
    /// with jitter so connections do not retry in step.
    pub backoff: Duration,
    /// A cap on the transfer's average rate, in bytes per second.
    pub limit_rate: Option<u64>,
    /// Where the bytes land while the transfer runs; a plain partial file
    /// when `None`.
    pub staging: Option<std::sync::Arc<dyn Staging>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections: 4,
            chunk_size: CHUNK_SIZE,
            retries: 5,
            backoff: Duration::from_millis(500),
            limit_rate: None,
            staging: None,
        }
    }
}

/// What the caller already knows about the object, all checked.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// The object's chunks (from a manifest): each is checked as it
    /// arrives, and they fix the chunk size.
    pub chunks: Vec<Chunk>,
}

/// What the partial file holds once [`fetch`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub size: u64,
    pub sha256: String,
    pub chunk_size: u64,
    pub chunks: Vec<Chunk>,
    /// Chunks the journal already held.
    pub resumed_chunks: usize,
    /// Bytes received from the source by this call.
    pub received_bytes: u64,
    /// What the source said about the object.
    pub remote: Remote,
}

/// The journal kept beside `partial`.
pub fn journal_path(partial: &Path) -> PathBuf {
    let mut name = partial.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    partial.with_file_name(name)
}

/// Fetches `source`'s object into `partial`, resuming from its journal,
/// and checks it against `expected` and the source's own digest. On a
/// whole-file mismatch the partial file and journal are removed (which
/// chunk was wrong is unknown); on other errors they stay for a rerun.
pub fn fetch(
    source: &dyn Source,
    partial: &Path,
    expected: &Expected,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Fetched, TransferError> {
    let what = source.describe();
    let remote = with_retries(options, || source.probe())?;
    let size = match (remote.size, expected.size) {
        (Some(actual), Some(expected)) if actual != expected => {
            return Err(TransferError::SizeMismatch {
                what,
                expected,
                actual,
            })
        }
        (Some(size), _) | (None, Some(size)) => Some(size),
        (None, None) => None,
    };
    let sha256 = match (&expected.sha256, &remote.sha256) {
        (Some(e), Some(r)) if !e.eq_ignore_ascii_case(r) => {
            return Err(TransferError::ChecksumMismatch {
                what: format!("{what} (as its server publishes it)"),
                expected: e.clone(),
                actual: r.clone(),
            })
        }
        (Some(s), _) | (None, Some(s)) => Some(s.to_ascii_lowercase()),
        (None, None) => None,
    };
    let chunk_size = expected
        .chunks
        .first()
        .map_or(options.chunk_size, |c| c.length.max(1));
    let known: BTreeMap<u64, &Chunk> = expected.chunks.iter().map(|c| (c.offset, c)).collect();
    let staging: &dyn Staging = options.staging.as_deref().unwrap_or(&Plain);
    let (file, fresh) = staging.open(partial, size)?;
    if fresh {
        // A journal must never vouch for chunks of another file.
        let _ = std::fs::remove_file(journal_path(partial));
    }
    let file = &*file;
    let pace = Pace::new(options.limit_rate);
    let (chunks, whole, resumed) = match size {
        Some(size) if remote.ranges && size > 0 => {
            let header = Header {
                version: 1,
                source: what.clone(),
                size,
                chunk_size,
                validator: remote.validator.clone(),
                sha256: sha256.clone(),
            };
            let (journal, mut done) = Journal::open(&journal_path(partial), &header)?;
            // A chunk the manifest knows and the journal disagrees with is
            // fetched again.
            done.retain(|offset, c| known.get(offset).is_none_or(|k| k.sha256 == c.sha256));
            let resumed = done.len();
            file.prepare(size)?;
            progress.start(&format!("fetching {what}"), size);
            progress.advance(done.values().map(|c| c.length).sum());
            let parallel = Parallel {
                source,
                file,
                partial,
                what: &what,
                validator: remote.validator.as_deref(),
                known: &known,
                options,
                pace: &pace,
                journal: Mutex::new(Some(journal)),
                whole_of: Some(size),
            };
            let missing = spans(size, chunk_size)
                .into_iter()
                .filter(|(offset, _)| !done.contains_key(offset))
                .collect();
            match parallel.run(missing, done, progress) {
                Err(TransferError::RangeIgnored { .. }) => {
                    tracing::warn!(source = %what, "the server ignores byte ranges; fetching it whole over one connection");
                    let (chunks, whole) = sequential(
                        source, file, partial, &what, chunk_size, &known, options, &pace, progress,
                    )?;
                    (chunks, Some(whole), 0)
                }
                other => {
                    let (chunks, whole) = other?;
                    (chunks, whole, resumed)
                }
            }
        }
        _ => {
            progress.start(&format!("fetching {what}"), size.unwrap_or(0));
            let (chunks, whole) = sequential(
                source, file, partial, &what, chunk_size, &known, options, &pace, progress,
            )?;
            (chunks, Some(whole), 0)
        }
    };
    progress.finish();
    let actual_size: u64 = chunks.iter().map(|c| c.length).sum();
    if let Some(size) = size {
        if actual_size != size {
            return Err(TransferError::SizeMismatch {
                what,
                expected: size,
                actual: actual_size,
            });
        }
    }
    let whole = match whole {
        Some(whole) => whole,
        // A chunk was fetched again behind the running digest.
        None => hash_file(file, partial, actual_size)?,
    };
    if let Some(expected) = sha256 {
        if whole != expected {
            // Some chunk hashed as it arrived was not the publisher's;
            // nothing says which, so none of them can be trusted again.
            let _ = std::fs::remove_file(journal_path(partial));
            let _ = std::fs::remove_file(partial);
            return Err(TransferError::ChecksumMismatch {
                what,
                expected,
                actual: whole,
            });
        }
    }
    Ok(Fetched {
        size: actual_size,
        sha256: whole,
        chunk_size,
        chunks,
        resumed_chunks: resumed,
        received_bytes: pace.total(),
        remote,
    })
}

/// Fetches `bad` chunks of `source`'s object again, in place in `path` (a
/// published file whose other chunks are good), each checked against its
/// recorded SHA-256 before the call returns. Returns the bytes received.
/// Nothing else of the file is read or written.
pub fn repair(
    source: &dyn Source,
    path: &Path,
    bad: &[Chunk],
    options: &Options,
    progress: &dyn Progress,
) -> Result<u64, TransferError> {
    let what = source.describe();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .at(path)?;
    let file = PlainFile::new(file, path);
    let known: BTreeMap<u64, &Chunk> = bad.iter().map(|c| (c.offset, c)).collect();
    let pace = Pace::new(options.limit_rate);
    progress.start(
        &format!("repairing from {what}"),
        bad.iter().map(|c| c.length).sum(),
    );
    let parallel = Parallel {
        source,
        file: &file,
        partial: path,
        what: &what,
        validator: None,
        known: &known,
        options,
        pace: &pace,
        journal: Mutex::new(None),
        whole_of: None,
    };
    let wanted = bad.iter().map(|c| (c.offset, c.length)).collect();
    parallel.run(wanted, BTreeMap::new(), progress)?;
    progress.finish();
    Ok(pace.total())
}

/// The chunks still missing, fetched over several connections.
struct Parallel<'a> {
    source: &'a dyn Source,
    file: &'a dyn Partial,
    partial: &'a Path,
    what: &'a str,
    validator: Option<&'a str>,
    known: &'a BTreeMap<u64, &'a Chunk>,
    options: &'a Options,
    pace: &'a Pace,
    /// `None` when repairing a published file: nothing to resume.
    journal: Mutex<Option<Journal>>,
    /// The file's size when its whole digest is wanted alongside.
    whole_of: Option<u64>,
}

impl Parallel<'_> {
    /// Fetches the `missing` spans; returns them with the `done` ones, and
    /// the whole file's digest when it was wanted and could be followed.
    fn run(
        &self,
        missing: VecDeque<(u64, u64)>,
        done: BTreeMap<u64, Chunk>,
        progress: &dyn Progress,
    ) -> Result<(Vec<Chunk>, Option<String>), TransferError> {
        let landing = Landing::new(done.values().map(|c| (c.offset, c.length)));
        let queue = Mutex::new(missing);
        let finished = Mutex::new(done);
        let failed: Mutex<Option<TransferError>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let workers = self.options.connections.max(1);
        let running = AtomicUsize::new(workers);
        // `Progress` is not `Sync`: this thread reports what the workers
        // count.
        let whole = std::thread::scope(|scope| {
            let (followed, stopped) = (&landing, &stop);
            let hasher = self.whole_of.map(|size| {
                scope.spawn(move || {
                    landing::follow(followed, self.file, self.partial, size, stopped)
                })
            });
            for _ in 0..workers {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(span) =
                            queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                        else {
                            break;
                        };
                        match self.chunk_with_retries(span, &stop, &landing) {
                            Ok(chunk) => {
                                finished
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(chunk.offset, chunk);
                            }
                            Err(err) => {
                                stop.store(true, Ordering::Relaxed);
                                let mut first = failed.lock().unwrap_or_else(|e| e.into_inner());
                                if first.is_none()
                                    || matches!(*first, Some(TransferError::Cancelled))
                                {
                                    *first = Some(err);
                                }
                                break;
                            }
                        }
                    }
                    running.fetch_sub(1, Ordering::Relaxed);
                });
            }
            let mut reported = 0;
            while running.load(Ordering::Relaxed) > 0 {
                std::thread::sleep(Duration::from_millis(100));
                let total = self.pace.total();
                progress.advance(total - reported);
                reported = total;
            }
            progress.advance(self.pace.total() - reported);
            landing.close();
            // A failed read-back only costs the running digest: the file is
            // hashed again at the end. So does a chunk refetched after the
            // hasher had already passed it (or finished).
            hasher
                .and_then(|h| h.join().ok()?.ok().flatten())
                .filter(|_| !landing.is_void())
        });
        if let Some(err) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(err);
        }
        let chunks = finished
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_values()
            .collect();
        Ok((chunks, whole))
    }

    fn chunk_with_retries(
        &self,
        span: (u64, u64),
        stop: &AtomicBool,
        landing: &Landing,
    ) -> Result<Chunk, TransferError> {
        let mut attempt = 0;
        loop {
            let result = self.chunk(span, stop, landing);
            if let Err(
                err @ (TransferError::ChunkMismatch { .. } | TransferError::Truncated { .. }),
            ) = &result
            {
                self.source.rejected(span, err);
            }
            match result {
                Ok(chunk) => return Ok(chunk),
                Err(err)
                    if err.is_transient()
                        && attempt < self.options.retries
                        && !stop.load(Ordering::Relaxed) =>
                {
                    let pause = backoff(self.options.backoff, attempt);
                    tracing::warn!(source = %self.what, offset = span.0, %err, retry_in_ms = pause.as_millis() as u64, "chunk failed; retrying");
                    std::thread::sleep(pause);
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One chunk: streamed into place and hashed, checked against the
    /// manifest when it knows the chunk, synced, then journaled.
    fn chunk(
        &self,
        (offset, length): (u64, u64),
        stop: &AtomicBool,
        landing: &Landing,
    ) -> Result<Chunk, TransferError> {
        let mut hasher = Sha256::new();
        let mut at = offset;
        // Written back from here on: the chunk's sync then only waits for
        // its tail, instead of the disk writing the whole file at the end.
        let mut flushed = offset;
        landing.start(offset);
        self.source.read(
            Some((offset, offset + length)),
            self.validator,
            &mut |bytes| {
                if stop.load(Ordering::Relaxed) {
                    return Err(TransferError::Cancelled);
                }
                let room = (offset + length - at).min(bytes.len() as u64) as usize;
                let bytes = &bytes[..room];
                self.file.write_at(bytes, at).at(self.partial)?;
                hasher.update(bytes);
                at += bytes.len() as u64;
                landing.wrote(offset, at - offset);
                if at - flushed >= WRITEBACK_STEP {
                    self.file.write_back(flushed, at - flushed);
                    flushed = at;
                }
                self.pace.received(bytes.len() as u64);
                Ok(())
            },
        )?;
        if at != offset + length {
            return Err(TransferError::Truncated {
                url: self.what.to_string(),
                got: at - offset,
                expected: length,
            });
        }
        let chunk = Chunk {
            offset,
            length,
            sha256: hex::encode(hasher.finalize()),
        };
        check_known(self.what, &chunk, self.known)?;
        self.file.sync(offset, length).at(self.partial)?;
        if let Some(journal) = self
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            journal.record(&chunk)?;
        }
        Ok(chunk)
    }
}

fn check_known(
    what: &str,
    chunk: &Chunk,
    known: &BTreeMap<u64, &Chunk>,
) -> Result<(), TransferError> {
    match known.get(&chunk.offset) {
        Some(k) if k.sha256 != chunk.sha256 || k.length != chunk.length => {
            Err(TransferError::ChunkMismatch {
                what: what.to_string(),
                offset: chunk.offset,
                length: chunk.length,
                expected: k.sha256.clone(),
                actual: chunk.sha256.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// Bytes a connection writes between asking the kernel to start writing
/// them back.
const WRITEBACK_STEP: u64 = 8 << 20;

/// The whole object over one connection, from the start: for sources
/// without ranges (or an unknown size). Retries start over. Returns the
/// chunks and the whole digest.
#[allow(clippy::too_many_arguments)]
fn sequential(
    source: &dyn Source,
    file: &dyn Partial,
    partial: &Path,
    what: &str,
    chunk_size: u64,
    known: &BTreeMap<u64, &Chunk>,
    options: &Options,
    pace: &Pace,
    progress: &dyn Progress,
) -> Result<(Vec<Chunk>, String), TransferError> {
    // No journal can describe a transfer that cannot resume.
    let _ = std::fs::remove_file(journal_path(partial));
    with_retries(options, || {
        file.restart().at(partial)?;
        let mut chunks = Vec::new();
        let mut hasher = Sha256::new();
        let mut whole = Sha256::new();
        let mut in_chunk = 0u64;
        let mut at = 0u64;
        source.read(None, None, &mut |mut bytes| {
            while !bytes.is_empty() {
                let take = (chunk_size - in_chunk).min(bytes.len() as u64) as usize;
                file.write_at(&bytes[..take], at).at(partial)?;
                hasher.update(&bytes[..take]);
                whole.update(&bytes[..take]);
                (at, in_chunk) = (at + take as u64, in_chunk + take as u64);
                pace.received(take as u64);
                progress.advance(take as u64);
                bytes = &bytes[take..];
                if in_chunk == chunk_size {
                    let chunk = Chunk {
                        offset: at - in_chunk,
                        length: in_chunk,
                        sha256: hex::encode(std::mem::take(&mut hasher).finalize()),
                    };
                    check_known(what, &chunk, known)?;
                    chunks.push(chunk);
                    in_chunk = 0;
                }
            }
            Ok(())
        })?;
        if in_chunk > 0 {
            let chunk = Chunk {
                offset: at - in_chunk,
                length: in_chunk,
                sha256: hex::encode(hasher.finalize()),
            };
            check_known(what, &chunk, known)?;
            chunks.push(chunk);
        }
        file.sync(0, at).at(partial)?;
        Ok((chunks, hex::encode(whole.finalize())))
    })
}

fn with_retries<T>(
    options: &Options,
    mut attempt: impl FnMut() -> Result<T, TransferError>,
) -> Result<T, TransferError> {
    let mut n = 0;
    loop {
        match attempt() {
            Err(err) if err.is_transient() && n < options.retries => {
                let pause = backoff(options.backoff, n);
                tracing::warn!(%err, retry_in_ms = pause.as_millis() as u64, "retrying");
                std::thread::sleep(pause);
                n += 1;
            }
            other => return other,
        }
    }
}

/// `base` doubled per attempt, at most 8 s, times a random 0.5–1.0 so
/// connections that failed together do not retry together.
fn backoff(base: Duration, attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let full = base
        .saturating_mul(1 << attempt.min(16))
        .min(Duration::from_secs(8));
    // A random number without a dependency: std seeds each RandomState
    // from the OS.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    full.mul_f64(0.5 + (random % 1000) as f64 / 2000.0)
}

/// The whole file's SHA-256, read back once (from the page cache, as it
/// was just written).
fn hash_file(file: &dyn Partial, path: &Path, size: u64) -> Result<String, TransferError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        let n = buf.len().min((size - at) as usize);
        file.read_exact_at(&mut buf[..n], at).at(path)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_ceiling() {
        let base = Duration::from_millis(100);
        for attempt in 0..20 {
            let d = backoff(base, attempt);
            let full = base
                .saturating_mul(1 << attempt.min(16))
                .min(Duration::from_secs(8));
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }
}
