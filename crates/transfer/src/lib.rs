//! Fetching large files safely: a [`Source`] (https, a Hugging Face-layout
//! hub, a local file) and [`fetch`], which copies one object into a partial
//! file over several ranged connections, hashing each chunk as it streams
//! and recording every verified chunk in a journal beside the file, so a
//! rerun after `kill -9`, power loss or a network error resumes from what
//! was already verified.
//!
//! This crate knows nothing of models, manifests or the store's layout: it
//! fills one file and says what it holds (size, SHA-256, chunk list). The
//! store decides where that file goes and when it becomes visible.

mod download;
mod error;
mod journal;
mod landing;
mod pace;
mod patch;
pub mod source;
mod spread;
mod staging;

use serde::{Deserialize, Serialize};

pub use download::{fetch, journal_path, repair, Expected, Fetched, Options};
pub use error::TransferError;
pub use pace::Pace;
pub use patch::{Local, Patched};
pub use source::{FileSource, HttpOptions, HttpSource, HubLocation, Remote, Source};
pub use spread::{Served, Spread};
pub use staging::{reserve, Partial, Plain, PlainFile, Staging};

/// The default chunk size: 64 MiB, large enough that a 40 GB file has a
/// manifest of a few hundred lines, small enough that a bad or interrupted
/// chunk costs little to fetch again.
pub const CHUNK_SIZE: u64 = 64 << 20;

/// One chunk of a file: where it is and what its bytes hash to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chunk {
    pub offset: u64,
    pub length: u64,
    pub sha256: String,
}

/// The chunks a file of `size` bytes is cut into: `chunk_size` each, the
/// last one shorter.
pub fn spans(size: u64, chunk_size: u64) -> Vec<(u64, u64)> {
    assert!(chunk_size > 0, "chunks have a size");
    (0..size.div_ceil(chunk_size))
        .map(|i| {
            let offset = i * chunk_size;
            (offset, chunk_size.min(size - offset))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_the_file_once() {
        assert_eq!(spans(0, 4), vec![]);
        assert_eq!(spans(4, 4), vec![(0, 4)]);
        assert_eq!(spans(10, 4), vec![(0, 4), (4, 4), (8, 2)]);
    }
}
