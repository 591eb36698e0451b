//! Per-chunk SHA-256 of a stored file: what lets `hearth verify` name the
//! bad chunk (file, offset) instead of only saying the whole file differs,
//! and what resumable and repairing transfers will fetch by.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{IoContext, StoreError};
use crate::Progress;

/// The default chunk size: 64 MiB, large enough that a 40 GB file has a
/// manifest of a few hundred lines, small enough that a bad chunk costs
/// little to fetch again.
pub const CHUNK_SIZE: u64 = 64 << 20;

/// One chunk of a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub offset: u64,
    pub length: u64,
    pub sha256: String,
}

/// The file's chunks of `chunk_size` bytes (the last one shorter) and the
/// whole file's SHA-256, in one read.
pub fn digest(
    path: &Path,
    chunk_size: u64,
    progress: &dyn Progress,
) -> Result<(Vec<Chunk>, String), StoreError> {
    assert!(chunk_size > 0, "chunks have a size");
    let mut file = std::fs::File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
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
        let (chunks, whole) = digest(&path, 1000, &NoProgress).unwrap();
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
        let (after, _) = digest(&path, 1000, &NoProgress).unwrap();
        let bad: Vec<u64> = mismatches(&chunks, &after)
            .iter()
            .map(|c| c.offset)
            .collect();
        assert_eq!(bad, [1000]);
        // A file cut short: its last chunk is missing, and named.
        std::fs::write(&path, &bytes[..2000]).unwrap();
        let (short, _) = digest(&path, 1000, &NoProgress).unwrap();
        let bad: Vec<u64> = mismatches(&chunks, &short)
            .iter()
            .map(|c| c.offset)
            .collect();
        assert_eq!(bad, [1000, 2000]);
    }

    #[test]
    fn an_empty_file_has_no_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        let (chunks, whole) = digest(&path, 64, &NoProgress).unwrap();
        assert!(chunks.is_empty());
        assert_eq!(whole, hex::encode(Sha256::digest(b"")));
    }
}
