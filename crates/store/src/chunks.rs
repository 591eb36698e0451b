//! Per-chunk SHA-256 of a stored file: what lets `hearth verify` name the
//! bad chunk (file, offset) instead of only saying the whole file differs,
//! and what resumable and repairing transfers will fetch by.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, StoreError};
use crate::Progress;

/// Chunks are what transfers fetch by, so one type serves both.
pub use transfer::{Chunk, CHUNK_SIZE};

/// The file's chunks of `chunk_size` bytes (the last one shorter) and the
/// whole file's SHA-256, in one read.
pub fn digest(
    path: &Path,
    chunk_size: u64,
    key: Option<&vault::Key>,
    progress: &dyn Progress,
) -> Result<(Vec<Chunk>, String), StoreError> {
    assert!(chunk_size > 0, "chunks have a size");
    // A sealed file is hashed as its plaintext.
    let mut file = vault::Reader::open(path, key)?;
    let len = file.size();
    progress.start(&format!("hashing {}", path.display()), len);
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let length = chunk_size.min(len - offset);
        let mut part = Sha256::new();
        let mut left = length;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file.read(&mut buf[..want]).at(path)?;
            if n == 0 {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    cause: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            part.update(&buf[..n]);
            whole.update(&buf[..n]);
            progress.advance(n as u64);
            left -= n as u64;
        }
        chunks.push(Chunk {
            offset,
            length,
            sha256: hex::encode(part.finalize()),
        });
        offset += length;
    }
    progress.finish();
    Ok((chunks, hex::encode(whole.finalize())))
}

/// The recorded chunks whose bytes in `path` do not hash to their
/// SHA-256 (or are missing), hashed on every core: loading a model checks
/// it, and a large file should not take a core-second per gigabyte more.
pub fn check(
    path: &Path,
    recorded: &[Chunk],
    key: Option<&vault::Key>,
) -> Result<Vec<Chunk>, StoreError> {
    use std::os::unix::fs::FileExt;
    if vault::is_sealed(path)? {
        return check_sealed(path, recorded, key);
    }
    let file = std::fs::File::open(path).at(path)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(recorded.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Vec<Chunk>, StoreError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut bad = Vec::new();
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(chunk) = recorded.get(i) else {
                            return Ok(bad);
                        };
                        let mut hasher = Sha256::new();
                        let mut at = chunk.offset;
                        let end = chunk.offset + chunk.length;
                        let mut short = false;
                        while at < end {
                            let want = buf
                                .len()
                                .min(usize::try_from(end - at).unwrap_or(usize::MAX));
                            let n = file.read_at(&mut buf[..want], at).at(path)?;
                            if n == 0 {
                                short = true;
                                break;
                            }
                            hasher.update(&buf[..n]);
                            at += n as u64;
                        }
                        if short || hex::encode(hasher.finalize()) != chunk.sha256 {
                            bad.push(chunk.clone());
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a hashing thread does not panic"))
            .collect()
    });
    let mut bad = Vec::new();
    for r in results {
        bad.extend(r?);
    }
    bad.sort_by_key(|c| c.offset);
    Ok(bad)
}

/// [`check`] of a sealed file: decrypted in order (authenticated record
/// by record); a record that fails authentication makes its chunk bad.
fn check_sealed(
    path: &Path,
    recorded: &[Chunk],
    key: Option<&vault::Key>,
) -> Result<Vec<Chunk>, StoreError> {
    let mut reader = vault::Reader::open(path, key)?;
    let mut bad = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for chunk in recorded {
        reader.seek_to(chunk.offset);
        let mut hasher = Sha256::new();
        let mut left = chunk.length;
        let mut ok = true;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            match reader.read_plain(&mut buf[..want]) {
                Ok(0) => {
                    ok = false;
                    break;
                }
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    left -= n as u64;
                }
                Err(vault::VaultError::Tampered { .. }) => {
                    ok = false;
                    break;
                }
                Err(err) => return Err(err.into()),
            }
        }
        if !ok || hex::encode(hasher.finalize()) != chunk.sha256 {
            bad.push(chunk.clone());
        }
    }
    Ok(bad)
}

/// The recorded chunks that the file's `actual` chunks do not match.
pub fn mismatches<'a>(recorded: &'a [Chunk], actual: &[Chunk]) -> Vec<&'a Chunk> {
    recorded
        .iter()
        .filter(|r| !actual.iter().any(|a| a == *r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;

    #[test]
    fn chunks_cover_the_file_and_name_the_changed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut bytes: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let (chunks, whole) = digest(&path, 1000, None, &NoProgress).unwrap();
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.offset, c.length))
                .collect::<Vec<_>>(),
            [(0, 1000), (1000, 1000), (2000, 500)]
        );
        assert_eq!(whole, hex::encode(Sha256::digest(&bytes)));
        bytes[1500] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (after, _) = digest(&path, 1000, None, &NoProgress).unwrap();
        let bad: Vec<u64> = mismatches(&chunks, &after)
            .iter()
            .map(|c| c.offset)
            .collect();
        assert_eq!(bad, [1000]);
        let checked: Vec<u64> = check(&path, &chunks, None)
            .unwrap()
            .iter()
            .map(|c| c.offset)
            .collect();
        assert_eq!(checked, [1000]);
        // A file cut short: its last chunk is missing, and named.
        std::fs::write(&path, &bytes[..2000]).unwrap();
        let (short, _) = digest(&path, 1000, None, &NoProgress).unwrap();
        let bad: Vec<u64> = mismatches(&chunks, &short)
            .iter()
            .map(|c| c.offset)
            .collect();
        assert_eq!(bad, [1000, 2000]);
        let checked: Vec<u64> = check(&path, &chunks, None)
            .unwrap()
            .iter()
            .map(|c| c.offset)
            .collect();
        assert_eq!(checked, [1000, 2000]);
    }

    #[test]
    fn an_empty_file_has_no_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        let (chunks, whole) = digest(&path, 64, None, &NoProgress).unwrap();
        assert!(chunks.is_empty());
        assert_eq!(whole, hex::encode(Sha256::digest(b"")));
    }
}
