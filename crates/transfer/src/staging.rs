//! Where a transfer's bytes land while it runs: a plain partial file by
//! default, or what the caller stages instead (the store's encrypted
//! partial file, so a pull into an encrypted store never puts plaintext on
//! the disk). Offsets are always the object's; how the bytes are kept is
//! the [`Partial`]'s business.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{IoContext, TransferError};

/// Opens the partial files a transfer fills.
pub trait Staging: Send + Sync + std::fmt::Debug {
    /// Opens the partial file at `path` for an object of `size` bytes
    /// (`None`: unknown until its bytes have arrived). Also returns `true`
    /// when it holds nothing from an earlier run, so a journal beside it
    /// vouches for nothing.
    fn open(
        &self,
        path: &Path,
        size: Option<u64>,
    ) -> Result<(Box<dyn Partial>, bool), TransferError>;
}

/// One object's bytes, written and read back at the object's offsets,
/// from several connections at once.
pub trait Partial: Send + Sync {
    fn write_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()>;

    /// Bytes written earlier (in this run, or vouched for by the journal).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;

    /// Sizes it for `size` bytes and reserves their space on the disk.
    fn prepare(&self, size: u64) -> Result<(), TransferError>;

    /// Starts over from the first byte (a transfer that cannot resume).
    fn restart(&self) -> std::io::Result<()>;

    /// Makes every byte written so far in `offset..offset + len` durable
    /// (a plain file syncs all of them).
    fn sync(&self, offset: u64, len: u64) -> std::io::Result<()>;

    /// A hint that `len` bytes from `offset` are final and may be written
    /// back to the disk now.
    fn write_back(&self, _offset: u64, _len: u64) {}
}

/// Plain partial files: the bytes as they arrive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Staging for Plain {
    fn open(
        &self,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<(Box<dyn Partial>, bool), TransferError> {
        let fresh = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        Ok((Box::new(PlainFile::new(file, path)), fresh))
    }
}

/// A plain file as a [`Partial`].
pub struct PlainFile {
    file: File,
    path: std::path::PathBuf,
}

impl PlainFile {
    pub fn new(file: File, path: &Path) -> PlainFile {
        PlainFile {
            file,
            path: path.to_path_buf(),
        }
    }
}

impl Partial for PlainFile {
    fn write_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn prepare(&self, size: u64) -> Result<(), TransferError> {
        self.file.set_len(size).at(&self.path)?;
        reserve(&self.file, &self.path, size)
    }

    fn restart(&self) -> std::io::Result<()> {
        self.file.set_len(0)
    }

    fn sync(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn write_back(&self, offset: u64, len: u64) {
        start_writeback(&self.file, offset, len)
    }
}

/// Allocates `size` bytes of `file`'s blocks now, so a disk too small
/// fails before the transfer starts instead of after gigabytes. Blocks
/// already written stay; file systems without the call are left to fail
/// on write.
pub fn reserve(file: &File, path: &Path, size: u64) -> Result<(), TransferError> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(size).unwrap_or(libc::off_t::MAX);
    // SAFETY: a valid open descriptor and plain integers; no memory is shared.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match r {
        0 | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL => Ok(()),
        libc::ENOSPC => Err(TransferError::NoSpace {
            path: path.to_path_buf(),
            needed: size,
        }),
        errno => Err(TransferError::Io {
            path: path.to_path_buf(),
            cause: std::io::Error::from_raw_os_error(errno),
        }),
    }
}

/// Starts writing `len` bytes of `file` from `offset` back to disk without
/// waiting (Linux `sync_file_range`); a later sync still makes them
/// durable. Best effort: an error here surfaces at that sync.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: a valid open descriptor and plain integers; no memory is shared.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}
