//! Model files encrypted at rest ("sealed"), knowing nothing of models or
//! the store's layout.
//!
//! A sealed file is a 64-byte header (magic, version, chunk size, the
//! plaintext's size, the key's id, a random file id) and then one record
//! per 1 MiB of plaintext: a random 96-bit nonce, the AES-256-GCM
//! ciphertext, its tag. Each record's associated data is the whole header
//! and the record's index, so records cannot be reordered, dropped, or
//! moved into another file (even one of the same size under the same key)
//! without failing authentication. Digests elsewhere in Hearth stay
//! over the plaintext; GCM authenticates the ciphertext.
//!
//! Plaintext leaves only as a stream ([`Reader`]) or in an in-memory file
//! ([`in_memory`], Linux `memfd`); this crate writes none to disk. (Memory
//! can still reach swap or a core dump: a host that must prevent that
//! turns swap off and core dumps off.)

mod key;
mod partial;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, Nonce, Tag, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

pub use key::Key;
pub use partial::Partial;

/// What a sealed file starts with.
pub const MAGIC: &[u8; 8] = b"HTHSEAL1";
/// Plaintext bytes per record.
pub const CHUNK: u64 = 1 << 20;
const HEADER: u64 = 64;
const TAG: u64 = 16;
const RECORD_EXTRA: u64 = NONCE_LEN as u64 + TAG;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the encryption key is unusable: {0}")]
    BadKey(String),
    #[error("the key command failed: {0}")]
    KeyCommand(String),
    #[error("{} is encrypted, and no key is configured (set key_file or key_command under [store])", path.display())]
    NoKey { path: PathBuf },
    #[error("{} was encrypted with key {sealed_with}, not with the configured key {configured}", path.display())]
    WrongKey {
        path: PathBuf,
        sealed_with: String,
        configured: String,
    },
    #[error("{}: record {record} (plaintext bytes {}..) fails authentication: the file was altered or damaged", path.display(), record * CHUNK)]
    Tampered { path: PathBuf, record: u64 },
    #[error("{}: not a sealed file Hearth can read: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> VaultError + '_ {
    move |cause| VaultError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Whether the file at `path` is sealed.
pub fn is_sealed(path: &Path) -> Result<bool, VaultError> {
    let file = File::open(path).map_err(io(path))?;
    let mut magic = [0u8; 8];
    match file.read_exact_at(&mut magic, 0) {
        Ok(()) => Ok(&magic == MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

/// The plaintext's size: a plain file's length, or what a sealed file's
/// header says (readable without the key).
pub fn plaintext_len(path: &Path) -> Result<u64, VaultError> {
    let file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    let mut header = [0u8; 24];
    if file.read_exact_at(&mut header, 0).is_err() || &header[..8] != MAGIC {
        return Ok(len);
    }
    let size = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    if sealed_len(size) != Some(len) {
        return Err(VaultError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("{len} bytes do not hold the {size} bytes of plaintext it claims"),
        });
    }
    Ok(size)
}

/// The largest plaintext a sealed file may claim (1 PiB): a header is
/// checked against it before any length is computed from it.
const MAX_SIZE: u64 = 1 << 50;

/// A record's associated data: the file's header, and its place.
fn aad(header: &[u8; HEADER as usize], record: u64) -> [u8; HEADER as usize + 8] {
    let mut a = [0u8; HEADER as usize + 8];
    a[..HEADER as usize].copy_from_slice(header);
    a[HEADER as usize..].copy_from_slice(&record.to_le_bytes());
    a
}

/// The length a sealed file of `size` plaintext bytes has.
fn sealed_len(size: u64) -> Option<u64> {
    (size <= MAX_SIZE).then(|| HEADER + size + size.div_ceil(CHUNK) * RECORD_EXTRA)
}

/// Encrypts `src` (plaintext) into `dst` (created or truncated), synced.
pub fn seal(src: &Path, dst: &Path, key: &Key) -> Result<(), VaultError> {
    let mut input = File::open(src).map_err(io(src))?;
    let size = input.metadata().map_err(io(src))?.len();
    let mut out = std::io::BufWriter::with_capacity(4 << 20, File::create(dst).map_err(io(dst))?);
    let header = new_header(key, size)?;
    out.write_all(&header).map_err(io(dst))?;
    let mut buf = vec![0u8; CHUNK as usize];
    for record in 0..size.div_ceil(CHUNK) {
        let len = CHUNK.min(size - record * CHUNK) as usize;
        input.read_exact(&mut buf[..len]).map_err(io(src))?;
        out.write_all(&seal_record(key, &header, record, &buf[..len])?)
            .map_err(io(dst))?;
    }
    let file = out.into_inner().map_err(|e| io(dst)(e.into_error()))?;
    file.sync_all().map_err(io(dst))?;
    Ok(())
}

/// A new sealed file's header for `size` bytes of plaintext under `key`,
/// with a fresh random file id.
fn new_header(key: &Key, size: u64) -> Result<[u8; HEADER as usize], VaultError> {
    let mut header = [0u8; HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    header[12..16].copy_from_slice(&(CHUNK as u32).to_le_bytes());
    header[16..24].copy_from_slice(&size.to_le_bytes());
    header[24..40].copy_from_slice(key.id_bytes());
    SystemRandom::new()
        .fill(&mut header[40..56])
        .map_err(|_| VaultError::BadKey("the system's random source failed".into()))?;
    Ok(header)
}

/// Record `record` of the file with `header`, holding `plaintext`, as it
/// is stored: a fresh random nonce, the ciphertext, the tag.
fn seal_record(
    key: &Key,
    header: &[u8; HEADER as usize],
    record: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| VaultError::BadKey("the system's random source failed".into()))?;
    let mut out = Vec::with_capacity(plaintext.len() + RECORD_EXTRA as usize);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(header, record)),
            &mut out[NONCE_LEN..],
        )
        .map_err(|_| VaultError::BadKey("encryption failed".into()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Where record `record` starts in a sealed file.
fn record_at(record: u64) -> u64 {
    HEADER + record * (CHUNK + RECORD_EXTRA)
}

/// Reads record `record` (`len` plaintext bytes) of the sealed file
/// `file` (at `path`) and returns its plaintext, authenticated.
fn open_record(
    file: &File,
    path: &Path,
    key: &Key,
    header: &[u8; HEADER as usize],
    record: u64,
    len: usize,
) -> Result<Vec<u8>, VaultError> {
    let mut raw = vec![0u8; len + RECORD_EXTRA as usize];
    file.read_exact_at(&mut raw, record_at(record))
        .map_err(io(path))?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&raw[..NONCE_LEN]);
    let (body, tag) = raw[NONCE_LEN..].split_at_mut(len);
    let tag: [u8; TAG as usize] = (&*tag).try_into().expect("16 bytes");
    key.aead
        .open_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(header, record)),
            Tag::from(tag),
            body,
            0..,
        )
        .map_err(|_| VaultError::Tampered {
            path: path.to_path_buf(),
            record,
        })?;
    Ok(body.to_vec())
}

/// Replaces the records of sealed file `path` that hold plaintext bytes
/// `offset..offset + plaintext.len()` (whole records: `offset` on a record
/// boundary, the end on one or at the file's end) with `plaintext` sealed
/// anew, each with a fresh nonce: how a repaired chunk goes back into an
/// encrypted file without any plaintext reaching the disk.
pub fn reseal(path: &Path, key: &Key, offset: u64, plaintext: &[u8]) -> Result<(), VaultError> {
    let reader = Reader::open(path, Some(key))?;
    if !reader.is_sealed() {
        return Err(VaultError::BadHeader {
            path: path.to_path_buf(),
            reason: "it is not sealed".into(),
        });
    }
    let (size, header) = (reader.size, reader.header);
    let end = offset + plaintext.len() as u64;
    if !offset.is_multiple_of(CHUNK) || end > size || (!end.is_multiple_of(CHUNK) && end != size) {
        return Err(VaultError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("bytes {offset}..{end} are not whole records"),
        });
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    for (i, piece) in plaintext.chunks(CHUNK as usize).enumerate() {
        let record = offset / CHUNK + i as u64;
        file.write_all_at(
            &seal_record(key, &header, record, piece)?,
            record_at(record),
        )
        .map_err(io(path))?;
    }
    file.sync_data().map_err(io(path))
}

/// A file's plaintext as a stream: a plain file as it is, a sealed one
/// decrypted record by record, each authenticated before any of it is
/// returned.
pub struct Reader<'k> {
    path: PathBuf,
    file: File,
    /// The key, for a sealed file.
    sealed: Option<&'k Key>,
    /// The header, every record's associated data.
    header: [u8; HEADER as usize],
    /// Plaintext position.
    at: u64,
    size: u64,
    /// The current record's plaintext, and where it starts.
    buf: Vec<u8>,
    buf_at: u64,
}

impl<'k> Reader<'k> {
    /// Opens `path` for reading its plaintext; a sealed file needs `key`.
    pub fn open(path: &Path, key: Option<&'k Key>) -> Result<Reader<'k>, VaultError> {
        let file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        let mut header = [0u8; HEADER as usize];
        let mut magic = [0u8; 8];
        let sealed = file.read_exact_at(&mut magic, 0).is_ok() && &magic == MAGIC;
        if sealed {
            file.read_exact_at(&mut header, 0)
                .map_err(|_| VaultError::BadHeader {
                    path: path.to_path_buf(),
                    reason: "its header is cut short".into(),
                })?;
        }
        if !sealed {
            return Ok(Reader {
                path: path.to_path_buf(),
                file,
                header,
                sealed: None,
                at: 0,
                size: len,
                buf: Vec::new(),
                buf_at: 0,
            });
        }
        let bad = |reason: &str| VaultError::BadHeader {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
        if word(8) != 1 {
            return Err(bad("an unknown version"));
        }
        if u64::from(word(12)) != CHUNK {
            return Err(bad("an unknown record size"));
        }
        let size = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        let Some(expected_len) = sealed_len(size) else {
            return Err(bad("it claims an impossible size"));
        };
        if len != expected_len {
            return Err(bad(&format!(
                "{len} bytes where {size} bytes of plaintext take {expected_len}: cut short or extended"
            )));
        }
        let key = key.ok_or_else(|| VaultError::NoKey {
            path: path.to_path_buf(),
        })?;
        if &header[24..40] != key.id_bytes() {
            return Err(VaultError::WrongKey {
                path: path.to_path_buf(),
                sealed_with: hex::encode(&header[24..40]),
                configured: key.id(),
            });
        }
        Ok(Reader {
            path: path.to_path_buf(),
            file,
            header,
            sealed: Some(key),
            at: 0,
            size,
            buf: Vec::new(),
            buf_at: 0,
        })
    }

    /// The plaintext's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    /// Continues from plaintext byte `at`.
    pub fn seek_to(&mut self, at: u64) {
        self.at = at.min(self.size);
    }

    /// Decrypts record `record` into `buf`.
    fn load(&mut self, record: u64) -> Result<(), VaultError> {
        let Some(key) = self.sealed else {
            unreachable!("only sealed files have records")
        };
        let len = CHUNK.min(self.size - record * CHUNK) as usize;
        self.buf = open_record(&self.file, &self.path, key, &self.header, record, len)?;
        self.buf_at = record * CHUNK;
        Ok(())
    }

    /// Plaintext bytes from the current position into `out`.
    pub fn read_plain(&mut self, out: &mut [u8]) -> Result<usize, VaultError> {
        if self.at >= self.size || out.is_empty() {
            return Ok(0);
        }
        if self.sealed.is_none() {
            let n = self.file.read_at(out, self.at).map_err(io(&self.path))?;
            self.at += n as u64;
            return Ok(n);
        }
        let record = self.at / CHUNK;
        if self.buf.is_empty() || self.buf_at != record * CHUNK {
            self.load(record)?;
        }
        let from = (self.at - self.buf_at) as usize;
        let n = out.len().min(self.buf.len() - from);
        out[..n].copy_from_slice(&self.buf[from..from + n]);
        self.at += n as u64;
        Ok(n)
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.read_plain(out).map_err(|e| match e {
            VaultError::Io { cause, .. } => cause,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        })
    }
}

/// A new, empty in-memory file (Linux `memfd`) named `name`.
fn memfd(name: &str) -> std::io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name.replace('\0', "_")).expect("no NUL left");
    // SAFETY: a plain syscall with a valid C string; the result is checked.
    let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// An empty in-memory file for plaintext another program writes by path
/// (llama.cpp's quantizer): its bytes never reach the disk.
pub fn empty_in_memory(name: &str) -> Result<InMemory, VaultError> {
    let fd = memfd(name).map_err(io(Path::new(name)))?;
    Ok(InMemory { fd })
}

/// A file's plaintext in memory (a Linux `memfd`), reachable by the path
/// `/proc/self/fd/N` while this value lives: how an encrypted model is
/// loaded without its weights ever being written to disk. Its pages count
/// in the process's memory like the mapped file they replace.
pub struct InMemory {
    fd: OwnedFd,
}

impl InMemory {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        std::fs::metadata(self.path()).map_or(0, |m| m.len())
    }

    /// A path other code (llama.cpp) can open the plaintext by.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Decrypts (or copies) the file at `path` into a new in-memory file
/// named `name` (shown in `/proc/PID/fd`).
pub fn in_memory(path: &Path, key: Option<&Key>, name: &str) -> Result<InMemory, VaultError> {
    let mut reader = Reader::open(path, key)?;
    let fd = memfd(name).map_err(io(path))?;
    let mut file = File::from(fd.try_clone().map_err(io(path))?);
    file.set_len(reader.size()).map_err(io(path))?;
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        let n = reader.read_plain(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(io(path))?;
    }
    Ok(InMemory { fd })
}

#[cfg(test)]
mod tests;
