//! The journal beside a partial file: what the transfer is (source, size,
//! chunk size, validator) on its first line, then one line per chunk whose
//! bytes were written, hashed and synced. A rerun trusts exactly those.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, TransferError};
use crate::Chunk;

/// What a journal's chunks belong to; a different header starts over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub version: u32,
    pub source: String,
    pub size: u64,
    pub chunk_size: u64,
    pub validator: Option<String>,
    pub sha256: Option<String>,
}

pub(crate) struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Opens the journal at `path` for `header`, returning the chunks it
    /// records as done (keyed by offset), or starts a new one. A torn last
    /// line (a crash while appending) is cut off.
    pub(crate) fn open(
        path: &Path,
        header: &Header,
    ) -> Result<(Journal, BTreeMap<u64, Chunk>), TransferError> {
        let mut done = BTreeMap::new();
        let mut good_len = 0u64;
        let mut same = false;
        if let Ok(f) = File::open(path) {
            let mut lines = BufReader::new(f);
            let mut line = String::new();
            let mut first = true;
            while lines.read_line(&mut line).at(path)? > 0 {
                if !line.ends_with('\n') {
                    break;
                }
                if first {
                    same = serde_json::from_str::<Header>(&line).is_ok_and(|h| h == *header);
                    first = false;
                    if !same {
                        break;
                    }
                } else {
                    match serde_json::from_str::<Chunk>(&line) {
                        Ok(chunk) if fits(&chunk, header) => {
                            done.insert(chunk.offset, chunk);
                        }
                        _ => break,
                    }
                }
                good_len += line.len() as u64;
                line.clear();
            }
        }
        let file = if same {
            let file = OpenOptions::new().write(true).open(path).at(path)?;
            file.set_len(good_len).at(path)?;
            let mut file = file;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).at(path)?;
            file
        } else {
            done.clear();
            let mut file = File::create(path).at(path)?;
            let mut line = serde_json::to_vec(header).expect("a header serialises");
            line.push(b'\n');
            file.write_all(&line).at(path)?;
            file.sync_data().at(path)?;
            file
        };
        Ok((
            Journal {
                file,
                path: path.to_path_buf(),
            },
            done,
        ))
    }

    /// Records a chunk whose bytes are already synced in the partial file.
    pub(crate) fn record(&mut self, chunk: &Chunk) -> Result<(), TransferError> {
        let mut line = serde_json::to_vec(chunk).expect("a chunk serialises");
        line.push(b'\n');
        self.file.write_all(&line).at(&self.path)?;
        self.file.sync_data().at(&self.path)
    }
}

/// A recorded chunk is one of the header's spans.
fn fits(chunk: &Chunk, header: &Header) -> bool {
    chunk.offset.is_multiple_of(header.chunk_size)
        && chunk.offset < header.size
        && chunk.length == header.chunk_size.min(header.size - chunk.offset)
        && chunk.sha256.len() == 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: 1,
            source: "https://example.test/m.gguf".into(),
            size: 10,
            chunk_size: 4,
            validator: Some("\"v1\"".into()),
            sha256: None,
        }
    }

    fn chunk(offset: u64, length: u64) -> Chunk {
        Chunk {
            offset,
            length,
            sha256: "a".repeat(64),
        }
    }

    #[test]
    fn chunks_survive_reopening_and_a_torn_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, done) = Journal::open(&path, &header()).unwrap();
        assert!(done.is_empty());
        j.record(&chunk(0, 4)).unwrap();
        j.record(&chunk(8, 2)).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"offset\":4,\"len").unwrap();
        let (mut j, done) = Journal::open(&path, &header()).unwrap();
        assert_eq!(done.keys().copied().collect::<Vec<_>>(), [0, 8]);
        j.record(&chunk(4, 4)).unwrap();
        let (_, done) = Journal::open(&path, &header()).unwrap();
        assert_eq!(done.len(), 3);
    }

    #[test]
    fn another_version_of_the_object_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, _) = Journal::open(&path, &header()).unwrap();
        j.record(&chunk(0, 4)).unwrap();
        let mut changed = header();
        changed.validator = Some("\"v2\"".into());
        let (_, done) = Journal::open(&path, &changed).unwrap();
        assert!(done.is_empty());
        // And the old one's chunks are gone for good.
        let (_, done) = Journal::open(&path, &header()).unwrap();
        assert!(done.is_empty());
    }

    #[test]
    fn chunks_that_are_not_the_headers_spans_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, _) = Journal::open(&path, &header()).unwrap();
        j.record(&chunk(0, 4)).unwrap();
        j.record(&chunk(2, 4)).unwrap();
        j.record(&chunk(8, 2)).unwrap();
        let (_, done) = Journal::open(&path, &header()).unwrap();
        assert_eq!(done.keys().copied().collect::<Vec<_>>(), [0]);
    }
}
