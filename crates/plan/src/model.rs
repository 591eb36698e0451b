//! What the planner knows of a model: its architecture numbers and its
//! weights, read from a GGUF header, taken from a preset, or given raw.

use serde::Serialize;

use crate::PlanError;

/// Architecture numbers that decide memory and compute, per token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    /// Weights in every tensor, embeddings included.
    pub params: u64,
    pub layers: u32,
    /// Embedding width.
    pub hidden: u32,
    /// Attention (query) heads.
    pub heads: u32,
    /// Key/value heads (fewer than `heads` with grouped-query attention).
    pub kv_heads: u32,
    /// Width of one key head and one value head.
    pub head_dim_k: u32,
    pub head_dim_v: u32,
    /// Width of the feed-forward block.
    pub ffn: u32,
    pub vocab: u32,
    /// Context the model was trained for.
    pub ctx_train: u32,
    /// The output projection reuses the token embedding. Decode then reads
    /// the embedding as a whole every step, not a row per token.
    pub tied_embeddings: bool,
    /// Some layers attend only to a sliding window of this many tokens
    /// (Gemma 3). Hearth keeps their whole cache anyway, so a prefix
    /// shared from the cache is complete, but llama.cpp builds a second
    /// attention mask for them.
    pub sliding_window: Option<u32>,
    /// Layers that attend within the window (the rest see every token).
    pub swa_layers: u32,
}

impl Shape {
    /// Checks the numbers are usable: every count positive, and the heads
    /// dividing evenly into key/value groups.
    pub fn validate(&self) -> Result<(), PlanError> {
        let positive = [
            ("parameters", self.params),
            ("layers", u64::from(self.layers)),
            ("hidden size", u64::from(self.hidden)),
            ("attention heads", u64::from(self.heads)),
            ("KV heads", u64::from(self.kv_heads)),
            ("head dimension", u64::from(self.head_dim_k)),
            ("feed-forward width", u64::from(self.ffn)),
            ("vocabulary", u64::from(self.vocab)),
            ("context", u64::from(self.ctx_train)),
        ];
        for (what, value) in positive {
            if value == 0 {
                return Err(PlanError::Shape(format!("{what} must be positive")));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(PlanError::Shape(format!(
                "{} attention heads do not split into {} KV heads",
                self.heads, self.kv_heads
            )));
        }
        Ok(())
    }

    /// Elements of K and V one token adds to one layer's cache.
    pub fn kv_elements_per_layer(&self) -> u64 {
        u64::from(self.kv_heads) * (u64::from(self.head_dim_k) + u64::from(self.head_dim_v))
    }

    /// Weights in the token embedding table.
    pub fn embedding_params(&self) -> u64 {
        u64::from(self.vocab) * u64::from(self.hidden)
    }

    /// Weights a decode step multiplies by: everything but the embedding
    /// table, which is looked up a row at a time, plus the output
    /// projection (the same table when tied).
    pub fn matmul_params(&self) -> u64 {
        let embedding = self.embedding_params();
        if self.tied_embeddings {
            self.params
        } else {
            self.params.saturating_sub(embedding)
        }
    }
}

/// A model as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    pub name: String,
    pub shape: Shape,
    /// Weight type, as llama.cpp names its file types (`Q4_K_M`, `F16`, …).
    pub weight_type: String,
    /// Bytes of tensor data: exact from a GGUF, or parameters × bits per
    /// weight for a preset.
    pub weight_bytes: u64,
    /// Bytes of the embedding table, read a row per token when untied.
    pub embedding_bytes: u64,
    /// Bytes llama.cpp's CPU backend copies into an interleaved layout at
    /// load (its "repack" buffer), on top of the mapped file.
    pub repacked_bytes: u64,
    /// CPU work per matrix weight relative to Q8_0, averaged over the
    /// matrices a decode step multiplies by ([`cpu_dot_cost`]).
    pub cpu_dot_cost: f64,
    /// The matrices a decode step multiplies by, grouped by how llama.cpp's
    /// CPU backend stores and multiplies them.
    pub matrices: Vec<MatrixGroup>,
}

/// Matrices of one tensor type (and repacking) in a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixGroup {
    pub tensor_type: String,
    /// Held in llama.cpp's repack buffer (interleaved rows).
    pub repacked: bool,
    pub elements: u64,
    pub bytes: u64,
}

impl MatrixGroup {
    /// Work per weight relative to Q8_0's dot product ([`cpu_dot_cost`]).
    pub fn dot_cost(&self) -> f64 {
        cpu_dot_cost(&self.tensor_type, self.repacked)
    }

    /// Work per weight and column with `columns` columns, where a GEMM
    /// kernel takes them ([`cpu_gemm_cost`]).
    pub fn gemm_cost(&self, columns: f64) -> Option<f64> {
        cpu_gemm_cost(&self.tensor_type, self.repacked, columns)
    }
}

/// Whether llama.cpp's x86 CPU backend multiplies this tensor type by two
/// or more columns with tinyBLAS, its tiled GEMM: the float types and the
/// 32-weight block types Q8_0, Q4_0, Q5_0 and IQ4_NL, unless the matrix
/// was repacked (the repack buffer takes those first). One column always
/// goes through the dot products: tinyBLAS declines a single column.
pub fn cpu_tiled(tensor_type: &str, repacked: bool) -> bool {
    !repacked
        && matches!(
            tensor_type,
            "F32" | "F16" | "BF16" | "Q8_0" | "Q4_0" | "Q5_0" | "IQ4_NL"
        )
}

/// CPU work per weight and column of the GEMM kernel llama.cpp's x86
/// backend multiplies `columns` (two or more) columns with, relative to
/// Q8_0's dot product; `None` where it keeps to the dot products:
/// - tinyBLAS ([`cpu_tiled`]) from 2 columns;
/// - the repack buffer's GEMM from 4 (a GEMV below);
/// - Q6_K's tiled path from 8.
///
/// Measured where a profile saw the kernel (Gemma 3 270M, 8 sequences,
/// `perf record` on the 2-core Zen 4, per weight and column against
/// tinyBLAS's Q8_0): tinyBLAS Q5_0 0.74, the repacked Q4_K GEMM 0.66,
/// Q6_K's tiled path 1.34. Q5_0's dot cost (2.0) had priced its batches at
/// 2.7 times what they took. Other types keep their dot cost.
pub fn cpu_gemm_cost(tensor_type: &str, repacked: bool, columns: f64) -> Option<f64> {
    if repacked {
        return (columns >= 4.0).then(|| match tensor_type {
            "Q4_K" => 0.65,
            other => cpu_dot_cost(other, true),
        });
    }
    if cpu_tiled(tensor_type, false) && columns >= 2.0 {
        return Some(match tensor_type {
            "Q5_0" => 0.75,
            other => cpu_dot_cost(other, false),
        });
    }
    (tensor_type == "Q6_K" && columns >= 8.0).then_some(1.35)
}

/// CPU work per weight of llama.cpp's AVX2 dot products relative to
/// Q8_0's, from the instructions each spends per 32 weights: Q8_0 loads and
/// multiplies bytes; 4-bit types first unpack nibbles (and Q4_1 adds a
/// minimum); 5-bit types also gather a fifth bit; K-quants apply a scale
/// per 16 or 32 weights; float types convert or move four times the bytes.
/// Matrices llama.cpp repacks into interleaved rows run about a quarter
/// faster.
pub fn cpu_dot_cost(tensor_type: &str, repacked: bool) -> f64 {
    let cost = match tensor_type {
        "Q8_0" => 1.0,
        "Q4_0" => 1.5,
        "IQ4_NL" | "IQ4_XS" | "Q4_K" => 1.6,
        "Q4_1" => 1.7,
        "Q5_0" | "Q5_K" | "Q2_K" => 2.0,
        "Q5_1" => 2.1,
        "Q3_K" | "Q6_K" => 2.2,
        // Half floats convert with F16C and multiply without unpacking. The
        // default model dequantized to F16 decoded a stream at 55 tok/s
        // here (18 ms a step, 12.8 of them reading 269 MB), which leaves
        // about Q8_0's work per weight.
        "F16" => 1.0,
        "F32" => 1.5,
        _ => 2.0,
    };
    if repacked {
        cost * 0.75
    } else {
        cost
    }
}

/// The tensor type that holds most weights of a file type.
fn main_tensor_type(weight_type: &str) -> &'static str {
    match weight_type.to_ascii_uppercase().as_str() {
        "Q4_K_M" | "Q4_K_S" => "Q4_K",
        "Q5_K_M" | "Q5_K_S" => "Q5_K",
        "Q3_K_L" | "Q3_K_M" | "Q3_K_S" => "Q3_K",
        "Q6_K" => "Q6_K",
        "Q2_K" => "Q2_K",
        "Q8_0" => "Q8_0",
        "Q5_0" => "Q5_0",
        "Q5_1" => "Q5_1",
        "Q4_0" => "Q4_0",
        "Q4_1" => "Q4_1",
        "IQ4_XS" => "IQ4_XS",
        "F32" => "F32",
        "BF16" => "BF16",
        _ => "F16",
    }
}

impl Model {
    /// A model of `shape` stored as `weight_type`, sized from that type's
    /// typical bits per weight.
    pub fn from_shape(name: &str, shape: Shape, weight_type: &str) -> Result<Self, PlanError> {
        shape.validate()?;
        let bits = bits_per_weight(weight_type)?;
        let bytes = |params: u64| (params as f64 * bits / 8.0).round() as u64;
        let main = main_tensor_type(weight_type);
        // A preset's main type stands for every matrix. Its shapes have
        // row counts llama.cpp repacks, where the type allows.
        let repacked = matches!(main, "Q4_0" | "Q4_K" | "IQ4_NL");
        let matrices = vec![MatrixGroup {
            tensor_type: main.to_string(),
            repacked,
            elements: shape.matmul_params(),
            bytes: bytes(shape.matmul_params()),
        }];
        Ok(Self {
            name: name.to_string(),
            weight_type: weight_type.to_ascii_uppercase(),
            weight_bytes: bytes(shape.params),
            embedding_bytes: bytes(shape.embedding_params()),
            repacked_bytes: 0,
            cpu_dot_cost: cpu_dot_cost(main, repacked),
            matrices,
            shape,
        })
    }

    /// The model GGUF headers describe (one, or each file of a split set),
    /// with their tensors' exact sizes.
    pub fn from_gguf(name: &str, set: &[gguf::Gguf]) -> Result<Self, PlanError> {
        let header = set
            .first()
            .ok_or_else(|| PlanError::Shape("no GGUF header".into()))?;
        let tensors = || set.iter().flat_map(|h| h.tensors.iter());
        let arch = header
            .architecture()
            .ok_or_else(|| PlanError::Shape("the GGUF names no architecture".into()))?
            .to_string();
        let get = |key: &str| header.get_u64(&format!("{arch}.{key}"));
        let need = |key: &str| {
            get(key).ok_or_else(|| PlanError::Shape(format!("the GGUF has no {arch}.{key}")))
        };
        let small = |value: u64, key: &str| {
            u32::try_from(value).map_err(|_| PlanError::Shape(format!("{arch}.{key} is too large")))
        };
        let hidden = small(need("embedding_length")?, "embedding_length")?;
        let heads = small(need("attention.head_count")?, "attention.head_count")?;
        let kv_heads = match get("attention.head_count_kv") {
            Some(n) => small(n, "attention.head_count_kv")?,
            None => heads,
        };
        let per_head = hidden / heads.max(1);
        let head_dim_k = match get("attention.key_length") {
            Some(n) => small(n, "attention.key_length")?,
            None => per_head,
        };
        let head_dim_v = match get("attention.value_length") {
            Some(n) => small(n, "attention.value_length")?,
            None => per_head,
        };
        let embedding = tensors().find(|t| t.name == "token_embd.weight");
        let vocab = header
            .vocab_size()
            .or_else(|| embedding.and_then(|t| t.dims.get(1).copied()))
            .ok_or_else(|| PlanError::Shape("the GGUF gives no vocabulary size".into()))?;
        let shape = Shape {
            params: tensors().map(|t| t.n_elements).sum(),
            layers: small(need("block_count")?, "block_count")?,
            hidden,
            heads,
            kv_heads,
            head_dim_k,
            head_dim_v,
            ffn: small(need("feed_forward_length")?, "feed_forward_length")?,
            vocab: small(vocab, "vocabulary")?,
            ctx_train: small(need("context_length")?, "context_length")?,
            tied_embeddings: !tensors().any(|t| t.name == "output.weight"),
            sliding_window: get("attention.sliding_window")
                .map(|n| small(n, "attention.sliding_window"))
                .transpose()?,
            swa_layers: 0,
        };
        let mut shape = shape;
        if shape.sliding_window.is_some() {
            // Every `pattern`-th layer attends globally. GGUFs rarely
            // record the pattern; llama.cpp fixes it per architecture.
            let pattern = get("attention.sliding_window_pattern")
                .or(match arch.as_str() {
                    "gemma2" => Some(2),
                    "gemma3" | "gemma3n" => Some(6),
                    "cohere2" | "llama4" => Some(4),
                    _ => None,
                })
                .unwrap_or(1)
                .max(1);
            let global = u64::from(shape.layers) / pattern;
            shape.swa_layers = shape.layers - u32::try_from(global).unwrap_or(shape.layers);
        }
        shape.validate()?;
        // Matrices a decode step multiplies by: all 2-D weights but an
        // untied embedding table (looked up by row).
        let tied = shape.tied_embeddings;
        let matrices = || {
            tensors().filter(move |t| t.dims.len() >= 2 && (tied || t.name != "token_embd.weight"))
        };
        let mut groups: Vec<MatrixGroup> = Vec::new();
        for t in matrices() {
            let (ty, packed) = (t.ggml_type.name(), repacked(t));
            match groups
                .iter_mut()
                .find(|g| g.tensor_type == ty && g.repacked == packed)
            {
                Some(g) => {
                    g.elements += t.n_elements;
                    g.bytes += t.n_bytes;
                }
                None => groups.push(MatrixGroup {
                    tensor_type: ty.to_string(),
                    repacked: packed,
                    elements: t.n_elements,
                    bytes: t.n_bytes,
                }),
            }
        }
        let weights: u64 = groups.iter().map(|g| g.elements).sum();
        let work: f64 = groups
            .iter()
            .map(|g| g.elements as f64 * g.dot_cost())
            .sum();
        Ok(Self {
            name: name.to_string(),
            weight_type: header.quantization().unwrap_or_else(|| "unknown".into()),
            weight_bytes: tensors().map(|t| t.n_bytes).sum(),
            embedding_bytes: embedding.map_or(0, |t| t.n_bytes),
            repacked_bytes: tensors().filter(|t| repacked(t)).map(|t| t.n_bytes).sum(),
            cpu_dot_cost: if weights > 0 {
                work / weights as f64
            } else {
                1.0
            },
            matrices: groups,
            shape,
        })
    }
}

/// Whether llama.cpp's x86 CPU backend (AVX2) re-lays this tensor out in
/// its repack buffer: 2-D weight matrices of Q4_0, Q4_K or IQ4_NL whose row
/// count is a multiple of 8 (its interleaved kernels work on 8 rows), never
/// the embedding, which is read by row lookup.
fn repacked(t: &gguf::TensorInfo) -> bool {
    let kind = matches!(t.ggml_type.name(), "Q4_0" | "Q4_K" | "IQ4_NL");
    kind && t.name != "token_embd.weight" && t.dims.len() == 2 && t.dims[1].is_multiple_of(8)
}

/// Typical bits per weight of llama.cpp's file types, over a whole
/// Llama-family model (tensors a mix keeps at higher precision included),
/// from the sizes llama.cpp's quantize tool reports for Llama 3 8B.
const BITS_PER_WEIGHT: &[(&str, f64)] = &[
    ("F32", 32.0),
    ("F16", 16.0),
    ("BF16", 16.0),
    ("Q8_0", 8.5),
    ("Q6_K", 6.56),
    ("Q5_K_M", 5.69),
    ("Q5_K_S", 5.54),
    ("Q5_1", 6.0),
    ("Q5_0", 5.5),
    ("Q4_K_M", 4.89),
    ("Q4_K_S", 4.67),
    ("Q4_1", 5.0),
    ("Q4_0", 4.55),
    ("IQ4_XS", 4.46),
    ("Q3_K_L", 4.27),
    ("Q3_K_M", 3.91),
    ("Q3_K_S", 3.5),
    ("Q2_K", 3.35),
];

/// The weight types the planner can size from a shape, for error messages.
pub fn weight_types() -> impl Iterator<Item = &'static str> {
    BITS_PER_WEIGHT.iter().map(|&(name, _)| name)
}

/// Bits per weight of a llama.cpp file type (case-insensitive).
pub fn bits_per_weight(weight_type: &str) -> Result<f64, PlanError> {
    BITS_PER_WEIGHT
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(weight_type))
        .map(|&(_, bits)| bits)
        .ok_or_else(|| PlanError::UnknownWeightType {
            name: weight_type.to_string(),
            known: weight_types().collect::<Vec<_>>().join(", "),
        })
}

/// Shapes of the model classes sizing tables quote, as published in each
/// model's configuration: Llama 2 7B and 13B (multi-head attention, 4k
/// context) and Llama 3 70B (grouped-query attention, 8k context).
const PRESETS: &[(&str, Shape)] = &[
    (
        "llama-7b",
        Shape {
            params: 6_738_415_616,
            layers: 32,
            hidden: 4096,
            heads: 32,
            kv_heads: 32,
            head_dim_k: 128,
            head_dim_v: 128,
            ffn: 11008,
            vocab: 32_000,
            ctx_train: 4096,
            tied_embeddings: false,
            sliding_window: None,
            swa_layers: 0,
        },
    ),
    (
        "llama-13b",
        Shape {
            params: 13_015_864_320,
            layers: 40,
            hidden: 5120,
            heads: 40,
            kv_heads: 40,
            head_dim_k: 128,
            head_dim_v: 128,
            ffn: 13824,
            vocab: 32_000,
            ctx_train: 4096,
            tied_embeddings: false,
            sliding_window: None,
            swa_layers: 0,
        },
    ),
    (
        "llama-70b",
        Shape {
            params: 70_553_706_496,
            layers: 80,
            hidden: 8192,
            heads: 64,
            kv_heads: 8,
            head_dim_k: 128,
            head_dim_v: 128,
            ffn: 28672,
            vocab: 128_256,
            ctx_train: 8192,
            tied_embeddings: false,
            sliding_window: None,
            swa_layers: 0,
        },
    ),
    (
        "llama-8b",
        Shape {
            params: 8_030_261_248,
            layers: 32,
            hidden: 4096,
            heads: 32,
            kv_heads: 8,
            head_dim_k: 128,
            head_dim_v: 128,
            ffn: 14336,
            vocab: 128_256,
            ctx_train: 8192,
            tied_embeddings: false,
            sliding_window: None,
            swa_layers: 0,
        },
    ),
];

/// The preset names, for help and error messages.
pub fn presets() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|&(name, _)| name)
}

/// A preset's shape (`llama-7b`, `llama-13b`, `llama-70b`, `llama-8b`).
pub fn preset(name: &str) -> Option<Shape> {
    PRESETS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, shape)| shape.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_add_up_to_their_parameter_counts() {
        // Each preset's parameter count must follow from its shape (Llama's
        // SwiGLU blocks), so a typo in one number shows.
        for name in presets() {
            let s = preset(name).unwrap();
            let ffn = u64::from(s.ffn);
            let (h, l) = (u64::from(s.hidden), u64::from(s.layers));
            let kv = u64::from(s.kv_heads * s.head_dim_k);
            let attention = h * h * 2 + h * kv * 2;
            let mlp = 3 * h * ffn;
            let norms = 2 * h;
            let total = l * (attention + mlp + norms) + 2 * u64::from(s.vocab) * h + h;
            assert_eq!(total, s.params, "{name}");
        }
    }

    #[test]
    fn seven_b_at_f16_is_about_13_and_a_half_gb() {
        let m = Model::from_shape("7b", preset("llama-7b").unwrap(), "f16").unwrap();
        assert_eq!(m.weight_bytes, 13_476_831_232);
        assert_eq!(m.weight_type, "F16");
    }

    #[test]
    fn unknown_weight_types_are_named_with_the_known_ones() {
        let e = bits_per_weight("Q9_Z").unwrap_err().to_string();
        assert!(e.contains("Q9_Z") && e.contains("Q4_K_M"), "{e}");
    }

    #[test]
    fn the_tiled_gemm_takes_block_and_float_types_that_were_not_repacked() {
        for ty in ["Q8_0", "Q5_0", "Q4_0", "IQ4_NL", "F16", "BF16", "F32"] {
            assert!(cpu_tiled(ty, false), "{ty}");
        }
        // Repacked matrices run the repack buffer's kernels instead.
        assert!(!cpu_tiled("Q4_0", true));
        for ty in ["Q4_1", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "Q2_K"] {
            assert!(!cpu_tiled(ty, false), "{ty}");
        }
        // Each kernel from the columns llama.cpp gives it.
        assert_eq!(cpu_gemm_cost("Q8_0", false, 1.0), None);
        assert_eq!(cpu_gemm_cost("Q5_0", false, 2.0), Some(0.75));
        assert_eq!(cpu_gemm_cost("Q4_K", true, 3.0), None);
        assert_eq!(cpu_gemm_cost("Q4_K", true, 4.0), Some(0.65));
        assert_eq!(cpu_gemm_cost("Q6_K", false, 7.0), None);
        assert_eq!(cpu_gemm_cost("Q6_K", false, 8.0), Some(1.35));
        assert_eq!(cpu_gemm_cost("Q4_1", false, 512.0), None);
    }

    #[test]
    fn invalid_shapes_are_refused() {
        let mut s = preset("llama-70b").unwrap();
        s.kv_heads = 7;
        assert!(s.validate().unwrap_err().to_string().contains("KV heads"));
        s.kv_heads = 8;
        s.layers = 0;
        assert!(s.validate().unwrap_err().to_string().contains("layers"));
    }
}
