//! Beside the connections: the whole file's SHA-256, folded in file order
//! from bytes as soon as they are written, so no second pass over the file
//! is left once the last chunk lands.
//!
//! Connections write their chunks in parallel, each from its chunk's start;
//! [`Landing`] tracks how far each chunk has been written and [`follow`]
//! reads the contiguous written prefix back (from the page cache, where the
//! bytes just went) into one hasher. A chunk rewritten behind the hasher (a
//! retry) voids the digest, and the caller hashes the file again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, TransferError};
use crate::staging::Partial;

/// How far each chunk of the file has been written.
pub(crate) struct Landing {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    /// Chunk offset → bytes written from it so far.
    written: BTreeMap<u64, u64>,
    /// The hasher has claimed every byte before this.
    claimed: u64,
    /// A chunk was rewritten behind `claimed`: the digest is void.
    void: bool,
    /// No more bytes will be written.
    closed: bool,
}

impl Landing {
    /// `done`: chunks already on disk (resumed from the journal), as
    /// (offset, length).
    pub(crate) fn new(done: impl IntoIterator<Item = (u64, u64)>) -> Self {
        Landing {
            state: Mutex::new(State {
                written: done.into_iter().collect(),
                claimed: 0,
                void: false,
                closed: false,
            }),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection starts (or restarts) the chunk at `offset`.
    pub(crate) fn start(&self, offset: u64) {
        let mut st = self.lock();
        st.written.insert(offset, 0);
        if offset < st.claimed {
            st.void = true;
            self.wake.notify_all();
        }
    }

    /// The chunk at `offset` now holds `len` bytes from its start.
    pub(crate) fn wrote(&self, offset: u64, len: u64) {
        self.lock().written.insert(offset, len);
        self.wake.notify_all();
    }

    /// Whether a chunk was rewritten behind the hasher, even after it
    /// finished: a digest it returned then covers bytes since replaced.
    pub(crate) fn is_void(&self) -> bool {
        self.lock().void
    }

    /// No more writes: the hasher finishes with what it has.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Bytes written contiguously from `at`, as far as one chunk goes.
    fn available(st: &State, at: u64) -> u64 {
        st.written
            .range(..=at)
            .next_back()
            .map_or(0, |(offset, len)| (offset + len).saturating_sub(at))
    }
}

/// Hashes `path`'s first `size` bytes as [`Landing`] reports them written.
/// Returns `None` when the digest cannot be trusted or is incomplete (a
/// chunk rewritten behind it, the transfer stopped); the caller then
/// hashes the file itself.
pub(crate) fn follow(
    landing: &Landing,
    file: &dyn Partial,
    path: &Path,
    size: u64,
    stop: &AtomicBool,
) -> Result<Option<String>, TransferError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        let take = {
            let mut st = landing.lock();
            loop {
                if st.void || stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                let ready = Landing::available(&st, at);
                if ready > 0 {
                    let take = ready.min(buf.len() as u64);
                    st.claimed = at + take;
                    break take;
                }
                if st.closed {
                    return Ok(None);
                }
                // Timed, so a stop set without a notification is seen.
                st = landing
                    .wake
                    .wait_timeout(st, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        let piece = &mut buf[..take as usize];
        file.read_exact_at(piece, at).at(path)?;
        hasher.update(&*piece);
        at += take;
    }
    let st = landing.lock();
    Ok((!st.void).then(|| hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, crate::PlainFile) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = crate::PlainFile::new(f.reopen().unwrap(), f.path());
        (f, file)
    }

    #[test]
    fn out_of_order_chunks_hash_to_the_files_digest() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (tmp, file) = file_of(&bytes);
        let landing = Landing::new([(4096, 4096)]);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let hashed = s.spawn(|| follow(&landing, &file, tmp.path(), 10_000, &stop));
            landing.start(8192);
            landing.wrote(8192, 10_000 - 8192);
            landing.start(0);
            landing.wrote(0, 100);
            landing.wrote(0, 4096);
            landing.close();
            let want = hex::encode(Sha256::digest(&bytes));
            assert_eq!(hashed.join().unwrap().unwrap(), Some(want));
        });
    }

    #[test]
    fn a_chunk_restarted_behind_the_hasher_voids_the_digest() {
        let bytes = vec![3u8; 8192];
        let (tmp, file) = file_of(&bytes);
        let landing = Landing::new([]);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            landing.start(0);
            landing.wrote(0, 4096);
            let hashed = s.spawn(|| follow(&landing, &file, tmp.path(), 8192, &stop));
            // Wait until the hasher has claimed the first bytes.
            while landing.lock().claimed == 0 {
                std::thread::yield_now();
            }
            landing.start(0);
            landing.wrote(0, 4096);
            landing.start(4096);
            landing.wrote(4096, 4096);
            landing.close();
            assert_eq!(hashed.join().unwrap().unwrap(), None);
        });
    }

    /// Regression: a bad chunk fully written (so hashed) and only then
    /// refetched left the hasher's finished digest standing, and a pull
    /// whose every chunk verified failed its whole-file check.
    #[test]
    fn a_chunk_rewritten_after_the_hasher_finished_voids_its_digest() {
        let bytes = vec![5u8; 4096];
        let (tmp, file) = file_of(&bytes);
        let landing = Landing::new([]);
        let stop = AtomicBool::new(false);
        landing.start(0);
        landing.wrote(0, 4096);
        landing.close();
        let digest = follow(&landing, &file, tmp.path(), 4096, &stop).unwrap();
        assert!(digest.is_some() && !landing.is_void());
        landing.start(0);
        assert!(landing.is_void());
    }

    #[test]
    fn an_unfinished_file_gives_no_digest() {
        let (tmp, file) = file_of(&[1u8; 100]);
        let landing = Landing::new([(0, 50)]);
        landing.close();
        let stop = AtomicBool::new(false);
        assert_eq!(
            follow(&landing, &file, tmp.path(), 100, &stop).unwrap(),
            None
        );
    }
}
