//! A tiny GGUF writer for tests: builds valid files, and invalid ones on purpose.
#![allow(dead_code)]

/// Raw little-endian byte builder with GGUF's building blocks.
#[derive(Default, Clone)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn u8(self, v: u8) -> Self {
        self.raw(&[v])
    }
    pub fn u32(self, v: u32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn u64(self, v: u64) -> Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    pub fn header(self, version: u32, n_tensors: u64, n_kv: u64) -> Self {
        self.raw(b"GGUF").u32(version).u64(n_tensors).u64(n_kv)
    }
    /// A key with a string value.
    pub fn kv_str(self, key: &str, value: &str) -> Self {
        self.str(key).u32(8).str(value)
    }
    pub fn kv_u32(self, key: &str, value: u32) -> Self {
        self.str(key).u32(4).u32(value)
    }
    /// A tensor info record.
    pub fn tensor(self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> Self {
        let mut b = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            b = b.u64(d);
        }
        b.u32(ggml_type).u64(offset)
    }
    /// Pads to `align` and appends `n` bytes of tensor data.
    pub fn data(mut self, align: usize, n: usize) -> Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self.0.extend(std::iter::repeat_n(0x11u8, n));
        self
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A small but complete, valid GGUF v3: metadata of every scalar kind, a
/// string array, and two F32 tensors laid out with the default alignment.
pub fn valid_model() -> Vec<u8> {
    model_with(0, Bytes::default())
}

/// [`valid_model`] with `n_extra` more key/value pairs, already encoded in `extra`.
pub fn model_with(n_extra: u64, extra: Bytes) -> Vec<u8> {
    Bytes::default()
        .header(3, 2, 6 + n_extra)
        .kv_str("general.architecture", "llama")
        .kv_str("general.name", "tiny-test")
        .kv_u32("llama.context_length", 256)
        .kv_u32("general.file_type", 0)
        .str("tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(3)
        .str("<s>")
        .str("hé")
        .str("llo")
        .str("general.flag")
        .u32(7)
        .u8(1)
        .raw(&extra.0)
        .tensor("tok_embd.weight", &[4, 3], 0, 0)
        .tensor("output_norm.weight", &[4], 0, 64)
        .data(32, 64 + 16)
        .0
}
