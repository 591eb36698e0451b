//! The names of a split GGUF set, as llama.cpp's `gguf-split` writes them
//! (`<prefix>-00001-of-00003.gguf` …): llama.cpp opens the first file and
//! finds the others by these names, so the engine, the store and the test
//! helper must all agree on them.

use std::path::Path;

use crate::{Gguf, GgufError, GgufFileError};

/// A file name that is one file of a split set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitName<'a> {
    /// Everything before `-0000k-of-0000N.gguf`.
    pub prefix: &'a str,
    /// 1-based position in the set.
    pub no: u32,
    /// Files in the set.
    pub count: u32,
}

impl<'a> SplitName<'a> {
    /// `Some` for `<prefix>-NNNNN-of-MMMMM.gguf` with 1 ≤ NNNNN ≤ MMMMM;
    /// any other name is a whole model (or not a split file).
    pub fn parse(file_name: &'a str) -> Option<SplitName<'a>> {
        let stem = file_name.strip_suffix(".gguf")?;
        // "-00001-of-00003" is 15 bytes.
        let cut = stem.len().checked_sub(15)?;
        let (prefix, tail) = (stem.get(..cut)?, stem.get(cut..)?);
        let tail = tail.as_bytes();
        let digits = |b: &[u8]| -> Option<u32> {
            b.iter()
                .all(u8::is_ascii_digit)
                .then(|| std::str::from_utf8(b).ok()?.parse().ok())?
        };
        if tail[0] != b'-' || &tail[6..10] != b"-of-" {
            return None;
        }
        let no = digits(&tail[1..6])?;
        let count = digits(&tail[10..15])?;
        (!prefix.is_empty() && no >= 1 && no <= count).then_some(SplitName { prefix, no, count })
    }

    /// The name of file `no` (1-based) of this set.
    pub fn sibling(&self, no: u32) -> String {
        file_name(self.prefix, no, self.count)
    }
}

/// `<prefix>-<no>-of-<count>.gguf`, five digits each.
pub fn file_name(prefix: &str, no: u32, count: u32) -> String {
    format!("{prefix}-{no:05}-of-{count:05}.gguf")
}

/// The headers of every file of the model whose first (or only) file is
/// `path`, in order: one for a whole model; for a split set, each file
/// checked to be present, a GGUF, and numbered as the set needs it. The
/// first goes through [`crate::read_model`]; an error names the file.
pub fn read_set(path: &Path) -> Result<Vec<Gguf>, GgufFileError> {
    let first = crate::read_model(path)?;
    let count = first.get_u64("split.count").unwrap_or(1);
    if count <= 1 {
        return Ok(vec![first]);
    }
    let refuse = |path: &Path, problem: String| GgufFileError {
        path: path.to_path_buf(),
        error: GgufError::SplitSet { problem },
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let set = SplitName::parse(name).filter(|set| set.no == 1 && u64::from(set.count) == count);
    let Some(set) = set else {
        return Err(refuse(
            path,
            format!(
                "it is file {} of a split set of {count}; load the first, named {}",
                first.get_u64("split.no").map_or(0, |n| n + 1),
                file_name("<name>", 1, u32::try_from(count).unwrap_or(u32::MAX))
            ),
        ));
    };
    let mut headers = vec![first];
    for k in 2..=set.count {
        let sibling = path.with_file_name(set.sibling(k));
        let part = crate::read_file(&sibling).map_err(|e| {
            refuse(
                &sibling,
                format!("file {k} of the split set is unusable: {}", e.error),
            )
        })?;
        let no = part.get_u64("split.no");
        if no != Some(u64::from(k - 1)) {
            return Err(refuse(
                &sibling,
                format!(
                    "its split.no is {no:?}, not {} (a file of another set?)",
                    k - 1
                ),
            ));
        }
        headers.push(part);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_set_parse_and_round_trip() {
        let name = SplitName::parse("Qwen3-8B-Q4_K_M-00002-of-00003.gguf").unwrap();
        assert_eq!(
            name,
            SplitName {
                prefix: "Qwen3-8B-Q4_K_M",
                no: 2,
                count: 3
            }
        );
        assert_eq!(name.sibling(1), "Qwen3-8B-Q4_K_M-00001-of-00003.gguf");
        assert_eq!(file_name("m", 12, 100), "m-00012-of-00100.gguf");
    }

    #[test]
    fn other_names_are_not_split_files() {
        for name in [
            "model.gguf",
            "-00001-of-00002.gguf",
            "m-00001-of-00002.bin",
            "m-00003-of-00002.gguf",
            "m-00000-of-00002.gguf",
            "m-0001-of-00002.gguf",
            "m-0000a-of-00002.gguf",
            "m_00001-of-00002.gguf",
            "m-00001_of-00002.gguf",
            "é-00001-of-0002.gguf",
            "",
        ] {
            assert_eq!(SplitName::parse(name), None, "{name}");
        }
        assert!(SplitName::parse("é-00001-of-00001.gguf").is_some());
    }
}
