//! A sealed file filled in any order: how a download into an encrypted
//! store lands without its plaintext touching the disk.
//!
//! Writes arrive at plaintext offsets, from several connections at once
//! and not on record boundaries. Each record's bytes gather in memory until
//! the record is whole, then it is sealed (a fresh nonce) and written in
//! its place; so at most a record per writer is held in memory. `sync` of
//! a range also seals the records there still incomplete (their gaps taken
//! from the record on disk when it authenticates, else zeros) and keeps
//! them open, so every byte of the range written before it is durable
//! after it, which is what a download's journal vouches for. A gap never holds a byte the
//! journal vouches for unless that byte reached the disk in an earlier
//! `sync`: then it is read back from there.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{
    io, new_header, open_record, record_at, seal_record, sealed_len, Key, VaultError, CHUNK,
    HEADER, MAGIC,
};

/// A sealed file of known plaintext size, written at plaintext offsets.
pub struct Partial {
    path: PathBuf,
    file: File,
    key: Arc<Key>,
    header: [u8; HEADER as usize],
    size: u64,
    state: Mutex<State>,
    /// Held while a sealed record is written: a record sealed from older
    /// bytes never lands after one sealed from newer.
    writing: Mutex<()>,
}

#[derive(Default)]
struct State {
    /// Records written in part since they were last sealed whole.
    open: HashMap<u64, Open>,
    /// The record last decrypted for a read, kept for the next read.
    read: Option<(u64, Vec<u8>)>,
    /// Numbers every write, across records and their reopenings: a
    /// record's version is never reused.
    writes: u64,
}

/// A record being filled; it stays here until sealed on disk, so a read
/// meanwhile finds its bytes.
struct Open {
    bytes: Vec<u8>,
    /// Start → end of the runs written, merged.
    written: BTreeMap<usize, usize>,
    /// The number of its last write (`State::writes`).
    version: u64,
}

impl Open {
    fn new(len: usize) -> Open {
        Open {
            bytes: vec![0; len],
            written: BTreeMap::new(),
            version: 0,
        }
    }

    /// Records `from..to` as written, merging it with its neighbours.
    fn mark(&mut self, from: usize, to: usize) {
        let (mut from, mut to) = (from, to);
        let touching: Vec<(usize, usize)> = self
            .written
            .range(..=to)
            .filter(|(_, &end)| end >= from)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.written.remove(&s);
            from = from.min(s);
            to = to.max(e);
        }
        self.written.insert(from, to);
    }

    fn whole(&self) -> bool {
        self.covers(0, self.bytes.len())
    }

    /// Whether `from..to` was written.
    fn covers(&self, from: usize, to: usize) -> bool {
        self.written
            .range(..=from)
            .next_back()
            .is_some_and(|(_, &end)| end >= to)
    }
}

impl Partial {
    /// Opens the sealed partial file at `path` for `size` bytes of
    /// plaintext under `key`. An existing one of the same size and key is
    /// kept, records and all, so a transfer can resume it; anything else
    /// there is replaced. Returns whether it starts empty (`true`: any
    /// record of what was there before is gone).
    pub fn open(path: &Path, key: Arc<Key>, size: u64) -> Result<(Partial, bool), VaultError> {
        let Some(len) = sealed_len(size) else {
            return Err(VaultError::BadHeader {
                path: path.to_path_buf(),
                reason: format!("{size} bytes is more than a sealed file holds"),
            });
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(path))?;
        let mut header = [0u8; HEADER as usize];
        let kept = file.metadata().map_err(io(path))?.len() == len
            && file.read_exact_at(&mut header, 0).is_ok()
            && &header[..8] == MAGIC
            && header[8..12] == 1u32.to_le_bytes()
            && header[12..16] == (CHUNK as u32).to_le_bytes()
            && header[16..24] == size.to_le_bytes()
            && &header[24..40] == key.id_bytes();
        if !kept {
            header = new_header(&key, size)?;
            file.set_len(0).map_err(io(path))?;
            file.set_len(len).map_err(io(path))?;
            file.write_all_at(&header, 0).map_err(io(path))?;
        }
        let partial = Partial {
            path: path.to_path_buf(),
            file,
            key,
            header,
            size,
            state: Mutex::default(),
            writing: Mutex::new(()),
        };
        Ok((partial, !kept))
    }

    /// The plaintext's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's length on disk.
    pub fn sealed_len(&self) -> u64 {
        sealed_len(self.size).expect("checked at open")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record_len(&self, record: u64) -> usize {
        CHUNK.min(self.size - record * CHUNK) as usize
    }

    fn beyond(&self, offset: u64, len: usize) -> Option<VaultError> {
        (offset.saturating_add(len as u64) > self.size).then(|| VaultError::BadHeader {
            path: self.path.clone(),
            reason: format!(
                "bytes {offset}..{} lie beyond its {} bytes",
                offset.saturating_add(len as u64),
                self.size
            ),
        })
    }

    /// Writes `bytes` at plaintext `offset`; every record they complete is
    /// sealed onto the disk before this returns.
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> Result<(), VaultError> {
        if let Some(err) = self.beyond(offset, bytes.len()) {
            return Err(err);
        }
        let mut at = offset;
        let mut rest = bytes;
        while !rest.is_empty() {
            let record = at / CHUNK;
            let from = (at - record * CHUNK) as usize;
            let len = self.record_len(record);
            let n = rest.len().min(len - from);
            let whole = {
                let mut st = self.lock();
                if st.read.as_ref().is_some_and(|(r, _)| *r == record) {
                    st.read = None;
                }
                let open = st.open.entry(record).or_insert_with(|| Open::new(len));
                open.bytes[from..from + n].copy_from_slice(&rest[..n]);
                open.mark(from, from + n);
                let whole = open.whole();
                st.writes += 1;
                let version = st.writes;
                let open = st.open.get_mut(&record).expect("inserted above");
                open.version = version;
                // Copied, so the sealing runs outside the lock.
                whole.then(|| (open.bytes.clone(), version))
            };
            if let Some((plain, version)) = whole {
                let sealed = seal_record(&self.key, &self.header, record, &plain)?;
                self.put_whole(record, sealed, version)?;
            }
            at += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Writes record `record` sealed from its bytes at `version`, unless
    /// a later write changed them (that write seals them in turn), and
    /// then lets it go from memory.
    fn put_whole(&self, record: u64, sealed: Vec<u8>, version: u64) -> Result<(), VaultError> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let current = |st: &State| st.open.get(&record).map(|o| o.version);
        if current(&self.lock()) != Some(version) {
            return Ok(());
        }
        self.file
            .write_all_at(&sealed, record_at(record))
            .map_err(io(&self.path))?;
        let mut st = self.lock();
        if current(&st) == Some(version) {
            st.open.remove(&record);
        }
        if st.read.as_ref().is_some_and(|(r, _)| *r == record) {
            st.read = None;
        }
        Ok(())
    }

    fn put(&self, record: u64, plaintext: &[u8]) -> Result<(), VaultError> {
        let sealed = seal_record(&self.key, &self.header, record, plaintext)?;
        self.file
            .write_all_at(&sealed, record_at(record))
            .map_err(io(&self.path))
    }

    /// Reads plaintext at `offset` into `buf`: bytes written and not yet
    /// sealed from memory, the rest decrypted (and authenticated) from the
    /// disk.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), VaultError> {
        if let Some(err) = self.beyond(offset, buf.len()) {
            return Err(err);
        }
        let mut at = offset;
        let mut out = &mut buf[..];
        while !out.is_empty() {
            let record = at / CHUNK;
            let from = (at - record * CHUNK) as usize;
            let len = self.record_len(record);
            let n = out.len().min(len - from);
            let mut st = self.lock();
            let held = st.open.get(&record).filter(|o| o.covers(from, from + n));
            if let Some(open) = held {
                out[..n].copy_from_slice(&open.bytes[from..from + n]);
            } else {
                // Sealed bytes, or a record partly written here and partly
                // by an earlier run (whose part is on disk).
                if st.read.as_ref().is_none_or(|(r, _)| *r != record) {
                    let plain =
                        open_record(&self.file, &self.path, &self.key, &self.header, record, len)?;
                    st.read = Some((record, plain));
                }
                let (_, plain) = st.read.as_ref().expect("just read");
                out[..n].copy_from_slice(&plain[from..from + n]);
                if let Some(open) = st.open.get(&record) {
                    for (&s, &e) in &open.written {
                        let (s, e) = (s.max(from), e.min(from + n));
                        if s < e {
                            out[s - from..e - from].copy_from_slice(&open.bytes[s..e]);
                        }
                    }
                }
            }
            at += n as u64;
            out = &mut out[n..];
        }
        Ok(())
    }

    /// Makes every byte written so far in plaintext `offset..offset + len`
    /// durable: records there still incomplete are sealed as they stand
    /// (each gap from the record on disk when it authenticates, else
    /// zeros) and stay open for the rest of their bytes; then the file is
    /// synced. Records wholly outside the range are left to their own
    /// writer's sync.
    pub fn sync(&self, offset: u64, len: u64) -> Result<(), VaultError> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = self.lock();
        let (first, end) = (offset / CHUNK, offset.saturating_add(len).div_ceil(CHUNK));
        let records: Vec<u64> = st
            .open
            .keys()
            .copied()
            .filter(|r| (first..end).contains(r))
            .collect();
        for record in records {
            let len = self.record_len(record);
            // A record never sealed (or torn by a crash) fails to
            // authenticate, and its gaps are filler; a read error is not
            // that, and stops the sync.
            let on_disk =
                match open_record(&self.file, &self.path, &self.key, &self.header, record, len) {
                    Ok(old) => Some(old),
                    Err(VaultError::Tampered { .. }) => None,
                    Err(err) => return Err(err),
                };
            let open = st.open.get_mut(&record).expect("listed above");
            if let Some(old) = on_disk {
                // The gaps keep what the disk held: bytes an earlier sync
                // made durable, or filler a later write replaces.
                let mut gap_start = 0;
                let runs: Vec<(usize, usize)> =
                    open.written.iter().map(|(&s, &e)| (s, e)).collect();
                for (s, e) in runs.into_iter().chain([(len, len)]) {
                    if s > gap_start {
                        open.bytes[gap_start..s].copy_from_slice(&old[gap_start..s]);
                    }
                    gap_start = gap_start.max(e);
                }
            }
            let plain = open.bytes.clone();
            self.put(record, &plain)?;
        }
        st.read = None;
        drop(st);
        self.file.sync_data().map_err(io(&self.path))
    }

    /// Forgets every record being filled (a transfer starting over from
    /// its first byte); what is sealed on disk stays until overwritten.
    pub fn restart(&self) {
        let mut st = self.lock();
        st.open.clear();
        st.read = None;
    }

    /// The open file, for hints to the kernel (write-back) on its sealed
    /// bytes.
    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<Key> {
        Arc::new(Key::from_bytes(&[9u8; 32]).unwrap())
    }

    fn plain(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 % 251) as u8).collect()
    }

    fn read_back(path: &Path, k: &Key) -> Vec<u8> {
        let mut r = crate::Reader::open(path, Some(k)).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut out).unwrap();
        out
    }

    #[test]
    fn writes_in_any_order_and_size_make_the_sealed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let bytes = plain(3 * CHUNK as usize + 12345);
        let k = key();
        let (p, fresh) = Partial::open(&path, Arc::clone(&k), bytes.len() as u64).unwrap();
        assert!(fresh);
        // Pieces that straddle records, out of order, one written twice.
        let cuts = [
            0,
            7000,
            CHUNK as usize + 3,
            2 * CHUNK as usize - 1,
            bytes.len(),
        ];
        for w in [3, 1, 0, 2, 1] {
            let (a, b) = (cuts[w], cuts[w + 1]);
            for piece in (a..b).step_by(65_536) {
                let end = (piece + 65_536).min(b);
                p.write_at(&bytes[piece..end], piece as u64).unwrap();
            }
        }
        let mut back = vec![0u8; 100_000];
        p.read_exact_at(&mut back, CHUNK - 50_000).unwrap();
        assert_eq!(back, bytes[CHUNK as usize - 50_000..][..100_000]);
        p.sync(0, p.size()).unwrap();
        drop(p);
        assert_eq!(read_back(&path, &k), bytes);
        assert!(crate::is_sealed(&path).unwrap());
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(64).any(|w| w == &bytes[5000..5064]));
    }

    #[test]
    fn a_sync_keeps_what_was_written_and_a_reopen_resumes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let bytes = plain(2 * CHUNK as usize + 100);
        let k = key();
        let half = CHUNK as usize / 2;
        {
            let (p, _) = Partial::open(&path, Arc::clone(&k), bytes.len() as u64).unwrap();
            // The first half of record 0 and all of record 2: record 0
            // is incomplete when synced.
            p.write_at(&bytes[..half], 0).unwrap();
            p.write_at(&bytes[2 * CHUNK as usize..], 2 * CHUNK).unwrap();
            p.sync(0, p.size()).unwrap();
        }
        // Reopened (a rerun after a crash): the same file is kept.
        let (p, fresh) = Partial::open(&path, Arc::clone(&k), bytes.len() as u64).unwrap();
        assert!(!fresh);
        let mut first = vec![0u8; half];
        p.read_exact_at(&mut first, 0).unwrap();
        assert_eq!(first, bytes[..half]);
        // The rest of record 0 arrives: its first half comes back from the
        // disk at the next sync instead of being lost to zeros.
        p.write_at(&bytes[half..2 * CHUNK as usize], half as u64)
            .unwrap();
        p.sync(0, p.size()).unwrap();
        drop(p);
        assert_eq!(read_back(&path, &k), bytes);
    }

    /// Regression: a record completed by one connection was let go from
    /// memory before its sealed bytes were on disk, so a read of its
    /// earlier bytes in between (the whole-file hasher's) failed
    /// authentication.
    #[test]
    fn bytes_read_while_their_record_is_being_sealed_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let bytes = plain(8 * CHUNK as usize);
        let (p, _) = Partial::open(&path, key(), bytes.len() as u64).unwrap();
        let landed = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for at in (0..bytes.len()).step_by(16_384) {
                    p.write_at(&bytes[at..at + 16_384], at as u64).unwrap();
                    landed.store(at + 16_384, std::sync::atomic::Ordering::Release);
                }
            });
            let mut buf = vec![0u8; 4096];
            loop {
                let upto = landed.load(std::sync::atomic::Ordering::Acquire);
                if upto >= 4096 {
                    // The last landed bytes' record is often the one
                    // being completed.
                    let at = upto - 4096;
                    p.read_exact_at(&mut buf, at as u64).unwrap();
                    assert_eq!(buf, bytes[at..upto]);
                }
                if upto == bytes.len() {
                    break;
                }
            }
        });
        p.sync(0, p.size()).unwrap();
        drop(p);
        assert_eq!(read_back(&path, &key()), bytes);
    }

    #[test]
    fn another_size_or_key_starts_over_and_writes_beyond_the_end_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let (p, _) = Partial::open(&path, key(), 1000).unwrap();
        p.write_at(&[1; 1000], 0).unwrap();
        assert!(p.write_at(&[1; 2], 999).is_err());
        drop(p);
        assert!(!Partial::open(&path, key(), 1000).unwrap().1);
        assert!(Partial::open(&path, key(), 1001).unwrap().1);
        let other = Arc::new(Key::from_bytes(&[8u8; 32]).unwrap());
        assert!(Partial::open(&path, other, 1001).unwrap().1);
    }
}
