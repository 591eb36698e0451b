//! Why a file was refused: every variant says where, and what was wrong.

use std::path::PathBuf;

/// A structural problem in GGUF bytes. Offsets are byte positions in the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file: it starts with {found}, not the magic \"GGUF\"")]
    BadMagic { found: String },
    #[error("not a GGUF file: it is only {size} bytes long")]
    TooShort { size: u64 },
    #[error("GGUF version {version} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion { version: u32 },
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("truncated: {what} at byte {offset} needs {needed} bytes, but the file ends at byte {file_size}")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        file_size: u64,
    },
    #[error("{what} count {count} is over the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: u64,
        limit: u64,
    },
    #[error("{what} at byte {offset} claims {len} bytes, over the limit of {limit}")]
    StringTooLong {
        what: String,
        offset: u64,
        len: u64,
        limit: u64,
    },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("metadata key #{index} at byte {offset} is empty")]
    EmptyKey { index: u64, offset: u64 },
    #[error("metadata key `{key}` appears more than once")]
    DuplicateKey { key: String },
    #[error("metadata key `{key}` has unknown value type {type_id}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("metadata key `{key}` holds an array of arrays, which GGUF readers do not support")]
    NestedArray { key: String },
    #[error("metadata key `{key}` holds boolean byte {byte} at byte {offset}; only 0 and 1 are booleans")]
    BadBool { key: String, byte: u8, offset: u64 },
    #[error("metadata needs more than {limit} bytes of memory")]
    MetadataTooLarge { limit: u64 },
    #[error("`general.alignment` is {found}; it must be a u32 power of two")]
    BadAlignment { found: String },
    #[error("tensor `{name}` appears more than once")]
    DuplicateTensor { name: String },
    #[error("tensor #{index} `{name}`: {problem}")]
    BadTensor {
        index: u64,
        name: String,
        problem: String,
    },
    #[error("tensor `{name}` data spans bytes {start}..{end}, past the end of the file at byte {file_size} (truncated?)")]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        file_size: u64,
    },
    #[error("tensors `{first}` and `{second}` overlap in the data section")]
    TensorsOverlap { first: String, second: String },
    #[error("`{key}` is {value}: {problem}")]
    BadHyperparameter {
        key: String,
        value: String,
        problem: String,
    },
    /// A file of a split set that is not the one the set needs there.
    #[error("{problem}")]
    SplitSet { problem: String },
    #[error("read failed: {0}")]
    Io(std::io::Error),
}

// By hand rather than `#[from]`, which would also make the I/O error this
// one's `source()`: messages here already include their cause, and a
// reporter walking the chain would print it twice.
impl From<std::io::Error> for GgufError {
    fn from(err: std::io::Error) -> Self {
        GgufError::Io(err)
    }
}

/// A [`GgufError`] with the file it came from, so messages name the file.
///
/// Errors in Hearth put their cause in their own message instead of
/// exposing it as `source()`, so chains print each cause once.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", path.display())]
pub struct GgufFileError {
    pub path: PathBuf,
    pub error: GgufError,
}
