//! The writer: one thread that seals events into lines, writes them in
//! batches with one `write` and one fsync each, signs checkpoints, and
//! rotates files.
//!
//! A batch is written whole with a single `write_all` of complete lines, so
//! a killed process leaves whole lines; only a power cut can tear the last
//! one, which the next start cuts off and records.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::chain::{self, GENESIS};
use crate::event::Event;
use crate::key::{key_id, AuditKey};
use crate::AuditError;

/// Where and how the log is written.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub key_path: PathBuf,
    /// A checkpoint after this many entries…
    pub checkpoint_every: u64,
    /// …or this long after the first unsigned entry.
    pub checkpoint_interval: Duration,
    /// The longest an entry waits for its fsync.
    pub sync_interval: Duration,
    /// A file rotates once it reaches this size.
    pub max_file_bytes: u64,
}

impl AuditConfig {
    pub fn new(dir: PathBuf, key_path: PathBuf) -> AuditConfig {
        AuditConfig {
            dir,
            key_path,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            sync_interval: Duration::from_millis(200),
            max_file_bytes: 64 << 20,
        }
    }
}

#[allow(clippy::large_enum_variant)] // as `Event`: one trip through the queue
enum Msg {
    Event(Event, SystemTime),
    /// Reply once everything sent before is on disk.
    Sync(SyncSender<()>),
}

/// The log's handle. Cheap to share behind an `Arc`; dropping the last one
/// writes a final checkpoint and syncs.
pub struct AuditLog {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
}

/// Events waiting for the writer. Past this, `record` blocks: an audited
/// server slows down rather than forget what it did.
const QUEUE: usize = 65_536;
/// Events gathered before a batch is written even if the interval has not
/// passed.
const BATCH_LINES: usize = 4096;

impl AuditLog {
    /// Opens (or starts) the chain in `config.dir`, repairing a torn tail,
    /// and starts the writer thread.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        let key = AuditKey::load_or_create(&config.key_path)?;
        let mut state = Chain::open(&config)?;
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("hearth-audit".into())
            .spawn(move || state.run(&rx, &key))
            .map_err(|source| AuditError::Io {
                path: config.dir.clone(),
                source,
            })?;
        let log = AuditLog {
            tx: Some(tx),
            thread: Some(thread),
            dir: config.dir.clone(),
        };
        log.record(Event::LogOpened {
            version: env!("CARGO_PKG_VERSION").into(),
        });
        Ok(log)
    }

    /// The directory the log files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues `event`, stamped now. Returns at once unless the queue is full.
    pub fn record(&self, event: Event) {
        if let Some(tx) = &self.tx {
            // The writer only stops when this handle drops.
            let _ = tx.send(Msg::Event(event, SystemTime::now()));
        }
    }

    /// Waits until everything recorded so far is fsynced.
    pub fn sync(&self) {
        let (tx, rx) = sync_channel(1);
        if let Some(log) = &self.tx {
            if log.send(Msg::Sync(tx)).is_ok() {
                let _ = rx.recv();
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The log files in chain order: `audit-000001.jsonl`, `audit-000002.jsonl`…
pub fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("audit-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            files.push((n, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

fn file_name(n: u64) -> String {
    format!("audit-{n:06}.jsonl")
}

/// The writer thread's state: where the chain stands.
///
/// Several processes may append to one chain (the server, and `hearth keys`
/// beside it): every batch is sealed and written under an exclusive `flock`
/// on `<dir>/.lock`, after catching up with whatever another process wrote.
struct Chain {
    config: AuditConfig,
    lock: Arc<File>,
    file: File,
    path: PathBuf,
    number: u64,
    size: u64,
    /// Sequence number and hash of the last line on disk.
    seq: u64,
    head: String,
    /// Entries this process wrote since its last checkpoint, and when the
    /// first of them was queued.
    unsigned: u64,
    unsigned_since: Option<Instant>,
    /// Events queued, sealed only under the lock at the next flush.
    pending: Vec<(Event, SystemTime)>,
    pending_since: Option<Instant>,
    want_checkpoint: bool,
    recovered: Option<(String, u64)>,
    /// Writes that failed in a row, and when to try again: a log whose
    /// disk is full or whose directory vanished is retried with growing
    /// pauses, not in a loop that burns a core and floods the log.
    failures: u32,
    retry_at: Option<Instant>,
}

/// Lines being sealed for one write, and the chain's head after them.
struct Batch {
    seq: u64,
    head: String,
    lines: Vec<u8>,
}

impl Batch {
    fn seal(&mut self, event: &Event, at: SystemTime) {
        let time = humantime::format_rfc3339_millis(at).to_string();
        let (line, hash) = chain::seal(self.seq + 1, &time, &self.head, event);
        self.seq += 1;
        self.head = hash;
        self.lines.extend_from_slice(line.as_bytes());
        self.lines.push(b'\n');
    }

    /// Signs the head as it stands: everything sealed so far.
    fn checkpoint(&mut self, key: &AuditKey) {
        let event = Event::Checkpoint {
            covers: self.seq,
            key_id: key_id(&key.verifying()),
            signature: key.sign(&chain::checkpoint_message(self.seq, &self.head)),
        };
        self.seal(&event, SystemTime::now());
    }
}

/// Where the chain's head is on disk.
struct Head {
    number: u64,
    seq: u64,
    hash: String,
    recovered: Option<(String, u64)>,
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError {
    let path = path.to_path_buf();
    move |source| AuditError::Io { path, source }
}

impl Chain {
    fn open(config: &AuditConfig) -> Result<Chain, AuditError> {
        std::fs::create_dir_all(&config.dir).map_err(io_at(&config.dir))?;
        let lock_path = config.dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        let (head, path, file, size) = {
            let _held = Locked::new(&lock).map_err(io_at(&lock_path))?;
            let head = locate(&config.dir)?;
            let path = config.dir.join(file_name(head.number));
            let file = open_append(&path, &config.dir)?;
            let size = file.metadata().map_err(io_at(&path))?.len();
            (head, path, file, size)
        };
        Ok(Chain {
            config: config.clone(),
            file,
            path,
            number: head.number,
            size,
            seq: head.seq,
            head: head.hash,
            unsigned: 0,
            unsigned_since: None,
            pending: Vec::new(),
            pending_since: None,
            want_checkpoint: false,
            recovered: head.recovered,
            failures: 0,
            retry_at: None,
            lock: Arc::new(lock),
        })
    }

    fn run(&mut self, rx: &Receiver<Msg>, key: &AuditKey) {
        loop {
            // Wake for whichever comes first: the batch's fsync, or the
            // checkpoint the oldest unsigned entry is owed.
            let sync_due = self.pending_since.map(|t| t + self.config.sync_interval);
            let sign_due = self
                .unsigned_since
                .map(|t| t + self.config.checkpoint_interval);
            let mut deadline = match (sync_due, sign_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let (Some(d), Some(retry)) = (&mut deadline, self.retry_at) {
                *d = (*d).max(retry);
            }
            let msg = match deadline {
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Event(event, at)) => {
                    self.pending.push((event, at));
                    self.pending_since.get_or_insert_with(Instant::now);
                    self.unsigned_since.get_or_insert_with(Instant::now);
                    if self.pending.len() >= BATCH_LINES && self.retry_at.is_none() {
                        self.flush(key);
                    }
                }
                Ok(Msg::Sync(done)) => {
                    self.flush(key);
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    if sign_due.is_some_and(|d| d <= Instant::now()) {
                        self.want_checkpoint = true;
                    }
                    self.flush(key);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.want_checkpoint = true;
                    self.flush(key);
                    return;
                }
            }
        }
    }

    /// Writes what is queued; after a failure, waits longer before each
    /// retry (0.4 s doubling up to 10 s).
    fn flush(&mut self, key: &AuditKey) {
        if self.write_batch(key) {
            (self.failures, self.retry_at) = (0, None);
        } else {
            self.failures = self.failures.saturating_add(1);
            let pause = self.config.sync_interval * 2u32.pow(self.failures.min(6));
            self.retry_at = Some(Instant::now() + pause.min(Duration::from_secs(10)));
        }
    }

    /// Seals the queued events (with the checkpoints they are owed), writes
    /// them with one `write_all` and fsyncs, all under the lock. On a write
    /// error nothing is committed: the events stay queued, in order, and the
    /// next flush retries after cutting off whatever part reached the file.
    /// Returns whether the queue was written (or there was nothing to do).
    fn write_batch(&mut self, key: &AuditKey) -> bool {
        let signing = self.want_checkpoint && (self.unsigned > 0 || !self.pending.is_empty());
        if self.pending.is_empty() && !signing {
            self.want_checkpoint = false;
            return true;
        }
        let lock = Arc::clone(&self.lock);
        let _held = match Locked::new(&lock) {
            Ok(h) => h,
            Err(err) => {
                tracing::error!(%err, "cannot lock the audit log; retrying");
                return false;
            }
        };
        if let Err(err) = self.catch_up() {
            tracing::error!(%err, "cannot read the audit log's head; retrying");
            return false;
        }
        if self.size >= self.config.max_file_bytes {
            self.next_file();
        }
        let mut b = Batch {
            seq: self.seq,
            head: self.head.clone(),
            lines: Vec::new(),
        };
        let mut unsigned = self.unsigned;
        if let Some((file, dropped_bytes)) = self.recovered.take() {
            let event = Event::LogRecovered {
                file,
                dropped_bytes,
            };
            b.seal(&event, SystemTime::now());
            unsigned += 1;
        }
        for (event, at) in &self.pending {
            b.seal(event, *at);
            unsigned += 1;
            if unsigned >= self.config.checkpoint_every {
                b.checkpoint(key);
                unsigned = 0;
            }
        }
        if self.want_checkpoint && unsigned > 0 {
            b.checkpoint(key);
            unsigned = 0;
        }
        let Batch {
            seq,
            head,
            lines: batch,
        } = b;
        let written = self
            .file
            .write_all(&batch)
            .and_then(|()| self.file.sync_data());
        if let Err(err) = written {
            tracing::error!(path = %self.path.display(), %err, "cannot write the audit log; retrying");
            let _ = self.file.set_len(self.size);
            let _ = self.file.seek(SeekFrom::End(0));
            return false;
        }
        self.size += batch.len() as u64;
        (self.seq, self.head, self.unsigned) = (seq, head, unsigned);
        self.pending.clear();
        self.pending_since = None;
        self.want_checkpoint = false;
        if self.unsigned == 0 {
            self.unsigned_since = None;
        }
        if self.size >= self.config.max_file_bytes && self.unsigned > 0 {
            // Each full file ends signed; the next one opens when needed.
            self.want_checkpoint = true;
            drop(_held);
            return self.write_batch(key);
        }
        true
    }

    /// Follows the chain if another process appended (or rotated) since
    /// this one last wrote.
    fn catch_up(&mut self) -> Result<(), AuditError> {
        // Two cheap checks per batch instead of listing the directory: our
        // file grew, or someone rotated past it.
        let len = std::fs::metadata(&self.path)
            .map_err(io_at(&self.path))?
            .len();
        let rotated = self.config.dir.join(file_name(self.number + 1)).exists();
        if len == self.size && !rotated {
            return Ok(());
        }
        let head = locate(&self.config.dir)?;
        if let Some(r) = head.recovered {
            self.recovered = Some(r);
        }
        let path = self.config.dir.join(file_name(head.number));
        self.file = open_append(&path, &self.config.dir)?;
        self.size = self.file.metadata().map_err(io_at(&path))?.len();
        self.path = path;
        self.number = head.number;
        self.seq = head.seq;
        self.head = head.hash;
        Ok(())
    }

    fn next_file(&mut self) {
        let path = self.config.dir.join(file_name(self.number + 1));
        match open_append(&path, &self.config.dir) {
            Ok(file) => {
                self.file = file;
                self.path = path;
                self.number += 1;
                self.size = 0;
            }
            Err(err) => {
                tracing::error!(%err, "cannot rotate the audit log; continuing in the full file")
            }
        }
    }
}

/// The chain's head on disk (call with the lock held): the last line of the
/// newest file that has one, after cutting off a torn last line.
fn locate(dir: &Path) -> Result<Head, AuditError> {
    let files = log_files(dir).map_err(io_at(dir))?;
    let number = files
        .last()
        .and_then(|p| {
            p.file_name()?
                .to_str()?
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()
        })
        .unwrap_or(1);
    let mut head = Head {
        number,
        seq: 0,
        hash: GENESIS.to_string(),
        recovered: None,
    };
    for path in files.iter().rev() {
        let (last, torn) = last_line(path)?;
        if torn > 0 {
            let len = std::fs::metadata(path).map_err(io_at(path))?.len();
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_at(path))?;
            f.set_len(len - torn).map_err(io_at(path))?;
            f.sync_all().map_err(io_at(path))?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            tracing::warn!(file = %name, bytes = torn, "cut off a torn last audit line");
            head.recovered = Some((name.into_owned(), torn));
        }
        if let Some((line_no, line)) = last {
            let parsed = chain::parse(&line).map_err(|reason| AuditError::Damaged {
                path: path.clone(),
                line: line_no,
                reason,
            })?;
            head.seq = parsed.seq;
            head.hash = parsed.hash;
            break;
        }
    }
    Ok(head)
}

/// An exclusive `flock`, released on drop.
struct Locked<'a>(&'a File);

impl<'a> Locked<'a> {
    fn new(file: &'a File) -> std::io::Result<Locked<'a>> {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this File owns for its lifetime.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Locked(file))
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn open_append(path: &Path, dir: &Path) -> Result<File, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let existed = path.exists();
    let mut options = OpenOptions::new();
    options.append(true).create(true).read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    let file = options.open(path).map_err(io)?;
    if !existed {
        // The new name must survive a crash too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(file)
}

/// The last complete line of `path` with its 1-based number, and how many
/// bytes follow the last newline (a torn write).
fn last_line(path: &Path) -> Result<(Option<(u64, String)>, u64), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io)?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let torn = (bytes.len() - complete) as u64;
    let body = &bytes[..complete];
    let lines = body.iter().filter(|b| **b == b'\n').count() as u64;
    let last = body
        .strip_suffix(b"\n")
        .map(|b| b.rsplit(|c| *c == b'\n').next().unwrap_or(b));
    let last = match last {
        Some(l) => Some((
            lines,
            String::from_utf8(l.to_vec()).map_err(|_| AuditError::Damaged {
                path: path.to_path_buf(),
                line: lines,
                reason: "not UTF-8".into(),
            })?,
        )),
        None => None,
    };
    Ok((last, torn))
}
