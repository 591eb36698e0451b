//! A safe GGUF reader: header, metadata and tensor infos, bounds-checked against the file.
//!
//! llama.cpp's own loader is C++ and `mmap`s tensor data; a lying header can
//! make it read past the end of the mapping (SIGBUS) or allocate absurd
//! amounts. Hearth therefore runs every model file through this reader first.
//! It never allocates more than the file could justify, caps every count and
//! length, and checks that each tensor's data lies inside the file. The tensor
//! data itself is not read.

mod error;
mod ggml_type;
mod hparams;
mod reader;
pub mod split;
mod value;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

pub use error::{GgufError, GgufFileError};
pub use ggml_type::{file_type_name, GgmlType};
pub use value::{Value, ValueType};

use reader::Reader;

/// Hard caps on what a header may declare. The defaults are far above any real
/// model (the largest public GGUFs have a few thousand tensors and under a
/// thousand keys) and far below what would exhaust memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_tensors: u64,
    pub max_kv: u64,
    /// Longest key, tensor name excepted (ggml caps those at 63 bytes).
    pub max_key_len: u64,
    pub max_string_len: u64,
    pub max_array_len: u64,
    /// Total bytes kept for keys and string values.
    pub max_metadata_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tensors: 1 << 16,
            max_kv: 1 << 16,
            max_key_len: u16::MAX as u64,
            max_string_len: 64 << 20,
            max_array_len: 1 << 26,
            max_metadata_bytes: 256 << 20,
        }
    }
}

/// ggml's `GGML_MAX_NAME`: tensor names are shorter than this.
const MAX_TENSOR_NAME: u64 = 63;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor's shape, type and place in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Relative to the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

/// A parsed and validated GGUF header.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub file_size: u64,
    pub alignment: u64,
    /// Absolute byte offset where tensor data begins.
    pub data_offset: u64,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
}

/// Reads and validates the GGUF file at `path`; errors name the file.
pub fn read_file(path: &Path) -> Result<Gguf, GgufFileError> {
    let wrap = |error| GgufFileError {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(|e| wrap(GgufError::Io(e)))?;
    let len = file.metadata().map_err(|e| wrap(GgufError::Io(e)))?.len();
    parse(
        BufReader::with_capacity(1 << 16, file),
        len,
        Limits::default(),
    )
    .map_err(wrap)
}

/// Reads a file meant for llama.cpp: [`read_file`] plus the hyperparameter
/// checks that stand in for llama.cpp's process-aborting assertions. Every
/// model file goes through this before llama.cpp opens it.
pub fn read_model(path: &Path) -> Result<Gguf, GgufFileError> {
    let gguf = read_file(path)?;
    gguf.check_hparams().map_err(|error| GgufFileError {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(gguf)
}

/// Validates GGUF bytes held in memory (tests and the fuzz target use this).
pub fn parse_bytes(bytes: &[u8]) -> Result<Gguf, GgufError> {
    parse(bytes, bytes.len() as u64, Limits::default())
}

/// Parses a GGUF stream whose total length is `len` bytes.
pub fn parse(input: impl Read, len: u64, limits: Limits) -> Result<Gguf, GgufError> {
    Parser {
        r: Reader::new(input, len),
        limits,
        metadata_bytes: 0,
    }
    .run()
}

struct Parser<R> {
    r: Reader<R>,
    limits: Limits,
    metadata_bytes: u64,
}

impl<R: Read> Parser<R> {
    fn run(mut self) -> Result<Gguf, GgufError> {
        let file_size = self.r.len();
        if file_size < 4 {
            return Err(GgufError::TooShort { size: file_size });
        }
        let magic: [u8; 4] = self.r.array("magic")?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic {
                found: format!("{:?}", String::from_utf8_lossy(&magic)),
            });
        }
        let version = self.r.u32("version")?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(GgufError::BigEndian);
        }
        if !(version == 2 || version == 3) {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let n_tensors = self.r.u64("tensor count")?;
        let n_kv = self.r.u64("metadata count")?;
        check_limit("tensor", n_tensors, self.limits.max_tensors)?;
        check_limit("metadata key/value", n_kv, self.limits.max_kv)?;

        // Counts are only trusted as far as the remaining bytes could hold
        // them (a key/value takes at least 14 bytes, a tensor info 32), so a
        // lying header cannot make us reserve memory up front.
        let n = self.r.remaining();
        let mut metadata = Vec::with_capacity(n_kv.min(n / 14) as usize);
        let mut index = HashMap::with_capacity(n_kv.min(n / 14) as usize);
        for i in 0..n_kv {
            let offset = self.r.pos();
            let what = format!("metadata key #{i} of {n_kv}");
            let key = self.r.string(&what, self.limits.max_key_len)?;
            if key.is_empty() {
                return Err(GgufError::EmptyKey { index: i, offset });
            }
            self.charge(key.len() as u64)?;
            if index.contains_key(&key) {
                return Err(GgufError::DuplicateKey { key });
            }
            let value = self.value(&key)?;
            index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(other) => {
                return Err(GgufError::BadAlignment {
                    found: format!("{other} ({other:?})"),
                })
            }
        };

        let n = self.r.remaining();
        let mut tensors = Vec::with_capacity(n_tensors.min(n / 32) as usize);
        let mut names = HashSet::with_capacity(n_tensors.min(n / 32) as usize);
        for i in 0..n_tensors {
            let t = self.tensor_info(i, n_tensors, alignment)?;
            if !names.insert(t.name.clone()) {
                return Err(GgufError::DuplicateTensor { name: t.name });
            }
            tensors.push(t);
        }

        let data_offset = self.r.pos().next_multiple_of(alignment);
        check_tensor_extents(&mut tensors, data_offset, file_size)?;

        Ok(Gguf {
            version,
            file_size,
            alignment,
            data_offset,
            metadata,
            index,
            tensors,
        })
    }

    fn charge(&mut self, bytes: u64) -> Result<(), GgufError> {
        self.metadata_bytes += bytes;
        if self.metadata_bytes > self.limits.max_metadata_bytes {
            return Err(GgufError::MetadataTooLarge {
                limit: self.limits.max_metadata_bytes,
            });
        }
        Ok(())
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType, GgufError> {
        let type_id = self.r.u32(&format!("value type of `{key}`"))?;
        ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            type_id,
        })
    }

    fn value(&mut self, key: &str) -> Result<Value, GgufError> {
        let ty = self.value_type(key)?;
        if ty != ValueType::Array {
            return self.scalar(key, ty);
        }
        let element = self.value_type(key)?;
        if element == ValueType::Array {
            return Err(GgufError::NestedArray {
                key: key.to_string(),
            });
        }
        let len = self.r.u64(&format!("array length of `{key}`"))?;
        if len > self.limits.max_array_len {
            return Err(GgufError::TooMany {
                what: "array element",
                count: len,
                limit: self.limits.max_array_len,
            });
        }
        let what = format!("array `{key}`");
        self.r
            .need(len.saturating_mul(element.min_encoded_len()), || {
                format!("{what} of {len} {element:?} elements")
            })?;
        match element {
            ValueType::String => {
                let item = format!("string in array `{key}`");
                for _ in 0..len {
                    self.r.skip_string(&item, self.limits.max_string_len)?;
                }
            }
            ValueType::Bool => {
                for _ in 0..len {
                    self.bool(key)?;
                }
            }
            _ => self.r.skip(len * element.min_encoded_len(), &what)?,
        }
        Ok(Value::Array { element, len })
    }

    fn bool(&mut self, key: &str) -> Result<bool, GgufError> {
        let offset = self.r.pos();
        match self.r.u8(&format!("value of `{key}`"))? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(GgufError::BadBool {
                key: key.to_string(),
                byte,
                offset,
            }),
        }
    }

    fn scalar(&mut self, key: &str, ty: ValueType) -> Result<Value, GgufError> {
        let what = format!("value of `{key}`");
        let w = what.as_str();
        let r = &mut self.r;
        Ok(match ty {
            ValueType::U8 => Value::U8(r.u8(w)?),
            ValueType::I8 => Value::I8(r.u8(w)? as i8),
            ValueType::U16 => Value::U16(r.u16(w)?),
            ValueType::I16 => Value::I16(r.u16(w)? as i16),
            ValueType::U32 => Value::U32(r.u32(w)?),
            ValueType::I32 => Value::I32(r.u32(w)? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(r.u32(w)?)),
            ValueType::U64 => Value::U64(r.u64(w)?),
            ValueType::I64 => Value::I64(r.u64(w)? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(r.u64(w)?)),
            ValueType::Bool => Value::Bool(self.bool(key)?),
            ValueType::String => {
                let s = r.string(w, self.limits.max_string_len)?;
                self.charge(s.len() as u64)?;
                Value::String(s)
            }
            ValueType::Array => unreachable!("arrays are handled by Parser::value"),
        })
    }

    fn tensor_info(
        &mut self,
        index: u64,
        count: u64,
        alignment: u64,
    ) -> Result<TensorInfo, GgufError> {
        let what = format!("name of tensor #{index} of {count}");
        let name = self.r.string(&what, MAX_TENSOR_NAME)?;
        self.charge(name.len() as u64)?;
        let bad = |problem: String| GgufError::BadTensor {
            index,
            name: name.clone(),
            problem,
        };
        let n_dims = self.r.u32(&format!("dimension count of `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(bad(format!(
                "{n_dims} dimensions; at most {MAX_DIMS} are allowed"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for _ in 0..n_dims {
            let d = self.r.u64(&format!("dimensions of `{name}`"))?;
            n_elements = n_elements
                .checked_mul(d)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| bad(format!("shape {dims:?}×{d} overflows the element count")))?;
            dims.push(d);
        }
        let type_id = self.r.u32(&format!("type of `{name}`"))?;
        let ggml_type = GgmlType::from_id(type_id)
            .ok_or_else(|| bad(format!("unknown ggml type {type_id}")))?;
        let row = dims.first().copied().unwrap_or(1);
        if row % ggml_type.block_size() != 0 {
            return Err(bad(format!(
                "rows of {row} elements are not a multiple of the {} block size {}",
                ggml_type.name(),
                ggml_type.block_size()
            )));
        }
        let n_bytes = (n_elements / ggml_type.block_size())
            .checked_mul(ggml_type.block_bytes())
            .ok_or_else(|| bad("byte size overflows".to_string()))?;
        let offset = self.r.u64(&format!("data offset of `{name}`"))?;
        if offset % alignment != 0 {
            return Err(bad(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_elements,
            n_bytes,
        })
    }
}

fn check_limit(what: &'static str, count: u64, limit: u64) -> Result<(), GgufError> {
    if count > limit {
        return Err(GgufError::TooMany { what, count, limit });
    }
    Ok(())
}

/// Every tensor's bytes must lie inside the file and not overlap another's.
fn check_tensor_extents(
    tensors: &mut [TensorInfo],
    data_offset: u64,
    file_size: u64,
) -> Result<(), GgufError> {
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_size => spans.push((start, end, i)),
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    name: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_size,
                })
            }
        }
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let ((_, end_a, a), (start_b, _, b)) = (pair[0], pair[1]);
        if start_b < end_a {
            return Err(GgufError::TensorsOverlap {
                first: tensors[a].name.clone(),
                second: tensors[b].name.clone(),
            });
        }
    }
    Ok(())
}

impl Gguf {
    /// The hyperparameter values llama.cpp would abort on rather than refuse.
    pub fn check_hparams(&self) -> Result<(), GgufError> {
        hparams::check(self)
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// `general.architecture`, e.g. `llama` or `gemma3`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `general.name`, the model's human name.
    pub fn model_name(&self) -> Option<&str> {
        self.get_str("general.name")
    }

    /// Training context length, `<arch>.context_length`.
    pub fn context_length(&self) -> Option<u64> {
        self.get_u64(&format!("{}.context_length", self.architecture()?))
    }

    /// Total number of weights across all tensors.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_elements).sum()
    }

    /// The quantisation name from `general.file_type`, or else the type
    /// holding the most weights.
    pub fn quantization(&self) -> Option<String> {
        if let Some(name) = self
            .get_u64("general.file_type")
            .and_then(|t| u32::try_from(t).ok())
            .and_then(file_type_name)
        {
            return Some(name.to_string());
        }
        let mut by_type: HashMap<GgmlType, u64> = HashMap::new();
        for t in &self.tensors {
            *by_type.entry(t.ggml_type).or_default() += t.n_elements;
        }
        by_type
            .into_iter()
            .max_by_key(|&(_, n)| n)
            .map(|(t, _)| t.name().to_string())
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// Vocabulary size, from the length of `tokenizer.ggml.tokens`.
    pub fn vocab_size(&self) -> Option<u64> {
        self.get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map(|(_, len)| len)
    }
}
