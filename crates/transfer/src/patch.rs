//! An object assembled from bytes this machine already holds (spans of
//! stored files with the same content, found by content-defined chunking)
//! plus a source for the rest: a new version of a model that changes one
//! tensor transfers about that tensor, whatever chunk grid the transfer
//! verifies on.
//!
//! Nothing local is trusted more than a source: every chunk is still
//! checked against its known digest by [`crate::fetch`], and a chunk whose
//! bytes were refused is read wholly from the source on its retry.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::TransferError;
use crate::source::{Remote, Sink, Source};

/// Bytes `offset..offset + length` of the object, held at `at` in the
/// local file `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub offset: u64,
    pub length: u64,
    pub path: PathBuf,
    pub at: u64,
}

/// A source with some of its object's spans served from local files.
pub struct Patched {
    remote: Box<dyn Source>,
    /// Sorted by offset, not overlapping.
    local: Vec<Local>,
    /// Ranges (by start) whose bytes were refused: read from the source.
    refused: Mutex<HashSet<u64>>,
    /// Local spans that were part of a refused range: never used again.
    bad_local: Mutex<HashSet<usize>>,
    /// The parts of each range that came from the source, to pass a
    /// refusal on to it.
    remote_parts: Mutex<HashMap<u64, Vec<(u64, u64)>>>,
    files: Mutex<HashMap<PathBuf, Arc<File>>>,
    reused: AtomicU64,
    fetched: AtomicU64,
}

/// Where a piece of a range comes from.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    /// From local span `index`: object bytes `from..to`.
    Local {
        index: usize,
        from: u64,
        to: u64,
    },
    Remote {
        from: u64,
        to: u64,
    },
}

/// Bytes read from a local file per call.
const PIECE: u64 = 1 << 20;

impl Patched {
    pub fn new(remote: Box<dyn Source>, mut local: Vec<Local>) -> Patched {
        local.sort_by_key(|l| l.offset);
        let mut kept: Vec<Local> = Vec::with_capacity(local.len());
        for l in local {
            let overlaps = kept.last().is_some_and(|k| k.offset + k.length > l.offset);
            if l.length > 0 && !overlaps {
                kept.push(l);
            }
        }
        Patched {
            remote,
            local: kept,
            refused: Mutex::default(),
            bad_local: Mutex::default(),
            remote_parts: Mutex::default(),
            files: Mutex::default(),
            reused: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
        }
    }

    /// Bytes taken from local files so far.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Bytes taken from the source so far.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// `start..end` cut into local and remote pieces, in order.
    fn pieces(&self, (start, end): (u64, u64)) -> Vec<Piece> {
        let bad = self
            .bad_local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut out = Vec::new();
        let mut at = start;
        let first = self.local.partition_point(|l| l.offset + l.length <= start);
        for (index, l) in self.local.iter().enumerate().skip(first) {
            if l.offset >= end {
                break;
            }
            if bad.contains(&index) {
                continue;
            }
            let (from, to) = (l.offset.max(at), (l.offset + l.length).min(end));
            if from > at {
                out.push(Piece::Remote { from: at, to: from });
            }
            out.push(Piece::Local { index, from, to });
            at = to;
        }
        if at < end {
            out.push(Piece::Remote { from: at, to: end });
        }
        out
    }

    fn file(&self, path: &PathBuf) -> Result<Arc<File>, TransferError> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = files.get(path) {
            return Ok(Arc::clone(f));
        }
        let f = Arc::new(File::open(path).map_err(|cause| TransferError::Io {
            path: path.clone(),
            cause,
        })?);
        files.insert(path.clone(), Arc::clone(&f));
        Ok(f)
    }

    fn read_local(
        &self,
        index: usize,
        from: u64,
        to: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), TransferError> {
        let l = &self.local[index];
        let file = self.file(&l.path)?;
        let mut buf = vec![0u8; PIECE.min(to - from) as usize];
        let mut at = from;
        while at < to {
            let n = PIECE.min(to - at) as usize;
            file.read_exact_at(&mut buf[..n], l.at + (at - l.offset))
                .map_err(|cause| TransferError::Io {
                    path: l.path.clone(),
                    cause,
                })?;
            sink(&buf[..n])?;
            self.reused.fetch_add(n as u64, Ordering::Relaxed);
            at += n as u64;
        }
        Ok(())
    }

    fn read_remote(
        &self,
        range: (u64, u64),
        of: u64,
        validator: Option<&str>,
        sink: &mut Sink<'_>,
    ) -> Result<(), TransferError> {
        self.remote_parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(of)
            .or_default()
            .push(range);
        self.remote.read(Some(range), validator, &mut |bytes| {
            sink(bytes)?;
            self.fetched
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Ok(())
        })
    }
}

impl Source for Patched {
    fn describe(&self) -> String {
        self.remote.describe()
    }

    fn probe(&self) -> Result<Remote, TransferError> {
        self.remote.probe()
    }

    fn read(
        &self,
        range: Option<(u64, u64)>,
        validator: Option<&str>,
        sink: &mut Sink<'_>,
    ) -> Result<(), TransferError> {
        let Some(range) = range else {
            // Read whole (a source without ranges): nothing to patch in.
            return self.remote.read(None, validator, sink);
        };
        self.remote_parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&range.0);
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&range.0);
        if refused {
            return self.read_remote(range, range.0, validator, sink);
        }
        for piece in self.pieces(range) {
            match piece {
                Piece::Remote { from, to } => {
                    self.read_remote((from, to), range.0, validator, sink)?
                }
                Piece::Local { index, from, to } => {
                    if let Err(err) = self.read_local(index, from, to, sink) {
                        if matches!(err, TransferError::Io { .. }) {
                            // A local file gone or unreadable: the retry
                            // takes the range from the source.
                            self.refused
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(range.0);
                            return Err(TransferError::Connection {
                                url: self.local[index].path.display().to_string(),
                                reason: format!("cannot reuse local bytes: {err}"),
                            });
                        }
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }

    fn rejected(&self, range: (u64, u64), err: &TransferError) {
        let first_refusal = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(range.0);
        let used: Vec<usize> = self
            .pieces(range)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Local { index, .. } => Some(index),
                Piece::Remote { .. } => None,
            })
            .collect();
        if first_refusal && !used.is_empty() {
            // Local bytes took part: they are suspected first, never used
            // again, and the retry reads the range from the source alone.
            // Only if those bytes are refused too is the source to blame.
            self.bad_local
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(used);
            self.remote_parts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&range.0);
            return;
        }
        let parts = self
            .remote_parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&range.0)
            .unwrap_or_default();
        for part in parts {
            self.remote.rejected(part, err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileSource;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn read(p: &Patched, range: (u64, u64)) -> Vec<u8> {
        let mut got = Vec::new();
        p.read(Some(range), None, &mut |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        got
    }

    #[test]
    fn local_spans_fill_the_range_and_the_source_the_gaps() {
        let object: Vec<u8> = (0..100u8).collect();
        let remote = file_of(&object);
        // Bytes 10..30 and 50..60 of the object sit elsewhere locally.
        let mut local_bytes = vec![0u8; 5];
        local_bytes.extend_from_slice(&object[10..30]);
        local_bytes.extend_from_slice(&object[50..60]);
        let local = file_of(&local_bytes);
        let spans = vec![
            Local {
                offset: 50,
                length: 10,
                path: local.path().into(),
                at: 25,
            },
            Local {
                offset: 10,
                length: 20,
                path: local.path().into(),
                at: 5,
            },
        ];
        let p = Patched::new(Box::new(FileSource::new(remote.path())), spans);
        assert_eq!(read(&p, (0, 100)), object);
        assert_eq!((p.reused(), p.fetched()), (30, 70));
        assert_eq!(read(&p, (15, 55)), &object[15..55]);
        // A refused range comes from the source alone next time.
        p.rejected((15, 55), &TransferError::NoPlaceLeft { what: "x".into() });
        let before = p.fetched();
        assert_eq!(read(&p, (15, 55)), &object[15..55]);
        assert_eq!(p.fetched() - before, 40);
    }

    #[test]
    fn pieces_cover_a_range_once_in_order() {
        let l = |offset, length| Local {
            offset,
            length,
            path: "x".into(),
            at: 0,
        };
        let p = Patched::new(
            Box::new(FileSource::new(std::path::Path::new("/nonexistent"))),
            vec![l(10, 10), l(15, 10), l(30, 5)],
        );
        // The overlapping span is dropped.
        assert_eq!(
            p.pieces((0, 40)),
            vec![
                Piece::Remote { from: 0, to: 10 },
                Piece::Local {
                    index: 0,
                    from: 10,
                    to: 20
                },
                Piece::Remote { from: 20, to: 30 },
                Piece::Local {
                    index: 1,
                    from: 30,
                    to: 35
                },
                Piece::Remote { from: 35, to: 40 },
            ]
        );
        assert_eq!(
            p.pieces((12, 14)),
            vec![Piece::Local {
                index: 0,
                from: 12,
                to: 14
            }]
        );
    }
}
