//! Where the memory goes when Hearth serves a model: weights, KV cache,
//! compute buffers and fixed overhead, and how the layers split over
//! several devices.
//!
//! The terms follow how llama.cpp allocates under Hearth's engine settings
//! (one unified KV pool, flash attention, a 512-token micro-batch). On a
//! CPU the figure is resident memory (RSS): llama.cpp reserves its compute
//! buffer for a worst case that Hearth never reaches (logits for every
//! token of a micro-batch), and untouched pages cost nothing. On a GPU the
//! whole reservation is allocated.

use serde::Serialize;

use crate::hardware::{Device, Kind};
use crate::model::Model;
use crate::PlanError;

/// Hearth's own resident memory on a CPU with no model: the mapped binary
/// (19 MiB) and its runtime's heap (42 MiB), measured with `hearth serve`
/// on this build machine (docs/planning.md).
pub const CPU_RUNTIME_BYTES: u64 = 61 << 20;

/// llama.cpp's vocabulary tables and Hearth's detokeniser, per vocabulary
/// entry: fitted to the resident memory of two models whose vocabularies
/// differ five-fold (49k and 262k entries), docs/planning.md.
pub const TOKENIZER_BYTES_PER_ENTRY: u64 = 112;

/// A GPU's fixed cost per device: the CUDA context, cuBLAS workspace and
/// allocator slack, as llama.cpp's CUDA backend typically shows it.
pub const GPU_RUNTIME_BYTES: u64 = 512 << 20;

/// Tokens per llama.cpp micro-batch (Hearth's and llama.cpp's default).
pub const UBATCH: u64 = 512;

/// Share of a device's memory the plan fills at most: the rest is for the
/// operating system (CPU) or driver fragmentation (GPU).
pub fn usable_fraction(kind: Kind) -> f64 {
    match kind {
        Kind::Cpu => 0.9,
        Kind::Gpu => 0.95,
    }
}

/// KV cache element types llama.cpp offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvType {
    F32,
    F16,
    Q8_0,
}

impl KvType {
    pub fn parse(name: &str) -> Result<Self, PlanError> {
        match name.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            _ => Err(PlanError::KvType {
                name: name.to_string(),
            }),
        }
    }

    /// Bytes per element (q8_0: 34 bytes per block of 32).
    pub fn bytes(self) -> f64 {
        match self {
            Self::F32 => 4.0,
            Self::F16 => 2.0,
            Self::Q8_0 => 34.0 / 32.0,
        }
    }
}

/// Memory of one deployment, bytes, summed over its devices.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub weights: u64,
    pub kv_type: KvType,
    pub kv_per_token: u64,
    /// Every sequence's full context.
    pub kv_total: u64,
    pub compute: u64,
    /// Runtime, tokenizer tables and output buffers.
    pub overhead: u64,
    pub total: u64,
    /// Memory the plan may fill, over all devices.
    pub available: u64,
    pub fits: bool,
    /// Which layers each device holds (one entry for a single device).
    pub split: Vec<Share>,
}

/// One device's part of a model split by layers.
#[derive(Debug, Clone, Serialize)]
pub struct Share {
    pub device: usize,
    /// First and last layer held, inclusive.
    pub first_layer: u32,
    pub last_layer: u32,
    pub bytes: u64,
}

/// Memory for `model` serving `concurrency` sequences of `context` tokens
/// each on `count` devices like `device`, when each sequence holds at most
/// `filled` tokens.
pub fn memory(
    model: &Model,
    device: &Device,
    count: u32,
    context: u32,
    concurrency: u32,
    filled: u32,
    kv_type: KvType,
) -> Memory {
    let shape = &model.shape;
    let count = count.max(1);
    let kv_per_token =
        (f64::from(shape.layers) * shape.kv_elements_per_layer() as f64 * kv_type.bytes()).round()
            as u64;
    let cells = u64::from(context) * u64::from(concurrency);
    // Saturating throughout: absurd inputs (a billion sequences) must read
    // as "does not fit", not wrap around to a small number that fits.
    let kv_total = kv_per_token.saturating_mul(cells);
    let vocab = u64::from(shape.vocab);
    let f32 = 4;
    // Activations of one micro-batch: the feed-forward block's two wide
    // tensors and a few hidden-width ones live at once.
    let activations = UBATCH * f32 * (2 * u64::from(shape.ffn) + 4 * u64::from(shape.hidden));
    // The f16 attention mask spans every cell in use for each token of the
    // micro-batch; sliding-window models get a second one.
    let masks = if shape.sliding_window.is_some() { 2 } else { 1 };
    let in_use = u64::from(filled.min(context)) * u64::from(concurrency);
    let mask = (masks * UBATCH * 2).saturating_mul(in_use);
    // llama.cpp's sequence ids: the running ones plus Hearth's 64 for
    // cached prefixes, at most 256 (engine::seq_ids).
    let seqs = (u64::from(concurrency) + 64).min(256);
    let (weights, compute, overhead) = match device.kind {
        Kind::Cpu => {
            // Logits touched: one row per running sequence, not a whole
            // micro-batch's.
            let logits = u64::from(concurrency).saturating_mul(vocab * f32);
            let output_buffer = seqs * vocab * f32;
            let tokenizer = vocab * TOKENIZER_BYTES_PER_ENTRY;
            (
                model.weight_bytes + model.repacked_bytes,
                activations.saturating_add(mask).saturating_add(logits),
                CPU_RUNTIME_BYTES + output_buffer + tokenizer,
            )
        }
        Kind::Gpu => {
            // Each device reserves activations and masks for its layers;
            // the last one also logits for a whole micro-batch. The untied
            // embedding table stays in host memory (llama.cpp looks rows
            // up on the CPU), so it is not in the devices' total.
            let logits = UBATCH * vocab * f32;
            let host_embedding = if shape.tied_embeddings {
                0
            } else {
                model.embedding_bytes
            };
            (
                model.weight_bytes - host_embedding.min(model.weight_bytes),
                activations
                    .saturating_add(mask)
                    .saturating_mul(u64::from(count))
                    .saturating_add(logits),
                GPU_RUNTIME_BYTES * u64::from(count),
            )
        }
    };
    let total = weights
        .saturating_add(kv_total)
        .saturating_add(compute)
        .saturating_add(overhead);
    let per_device = (device.memory_bytes() as f64 * usable_fraction(device.kind)) as u64;
    let available = per_device.saturating_mul(u64::from(count));
    let split = split_layers(shape.layers, count, total, weights.saturating_add(kv_total));
    let fits = split.iter().all(|s| s.bytes <= per_device);
    Memory {
        weights,
        kv_type,
        kv_per_token,
        kv_total,
        compute,
        overhead,
        total,
        available,
        fits,
        split,
    }
}

/// Splits `layers` evenly over `count` devices (the first ones take the
/// remainder), each carrying its layers' share of the per-layer bytes plus
/// an even share of the rest.
fn split_layers(layers: u32, count: u32, total: u64, layered: u64) -> Vec<Share> {
    let count = count.min(layers.max(1));
    let base = layers / count;
    let extra = layers % count;
    let per_layer = layered as f64 / f64::from(layers.max(1));
    let fixed = (total - layered) / u64::from(count);
    let mut first = 0;
    (0..count)
        .map(|i| {
            let n = base + u32::from(i < extra);
            let share = Share {
                device: i as usize,
                first_layer: first,
                last_layer: (first + n).saturating_sub(1),
                bytes: ((per_layer * f64::from(n)).round() as u64).saturating_add(fixed),
            };
            first += n;
            share
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::Catalog;
    use crate::model::{preset, Model};

    #[test]
    fn absurd_sizes_do_not_fit_rather_than_wrap() {
        // Regression: a 70B model with u32::MAX × u32::MAX cells overflowed
        // u64 (a panic in debug builds, a small total that "fit" in release).
        let m = Model::from_shape("70b", preset("llama-70b").unwrap(), "f16").unwrap();
        let catalog = Catalog::default();
        for device in ["h200", "epyc-2c"] {
            let mem = memory(
                &m,
                catalog.get(device).unwrap(),
                u32::MAX,
                u32::MAX,
                u32::MAX,
                u32::MAX,
                KvType::F32,
            );
            assert!(!mem.fits, "{device}");
            assert_eq!(mem.total, u64::MAX, "{device}");
        }
    }

    #[test]
    fn kv_per_token_follows_the_shape() {
        // Llama 2 7B: 32 layers × 32 heads × 128 × (K + V) × 2 bytes = 512 KiB.
        let m = Model::from_shape("7b", preset("llama-7b").unwrap(), "f16").unwrap();
        let catalog = Catalog::default();
        let mem = memory(
            &m,
            catalog.get("a100-80gb").unwrap(),
            1,
            4096,
            1,
            u32::MAX,
            KvType::F16,
        );
        assert_eq!(mem.kv_per_token, 524_288);
        assert_eq!(mem.kv_total, 524_288 * 4096);
        let q8 = memory(
            &m,
            catalog.get("a100-80gb").unwrap(),
            1,
            4096,
            1,
            u32::MAX,
            KvType::Q8_0,
        );
        assert_eq!(q8.kv_per_token, 524_288 * 17 / 32);
    }

    #[test]
    fn seventy_b_at_f16_needs_two_80_gb_cards_and_splits_its_layers() {
        let m = Model::from_shape("70b", preset("llama-70b").unwrap(), "f16").unwrap();
        let h100 = Catalog::default().get("h100-80gb").unwrap().clone();
        assert!(!memory(&m, &h100, 1, 4096, 1, u32::MAX, KvType::F16).fits);
        assert!(!memory(&m, &h100, 1, 4096, 1, u32::MAX, KvType::F16)
            .split
            .is_empty());
        let two = memory(&m, &h100, 2, 4096, 1, u32::MAX, KvType::F16);
        assert!(two.fits, "{two:?}");
        assert_eq!(two.split.len(), 2);
        assert_eq!((two.split[0].first_layer, two.split[0].last_layer), (0, 39));
        assert_eq!(
            (two.split[1].first_layer, two.split[1].last_layer),
            (40, 79)
        );
        let sum: u64 = two.split.iter().map(|s| s.bytes).sum();
        assert!(sum.abs_diff(two.total) < 4, "{sum} vs {}", two.total);
    }

    #[test]
    fn uneven_splits_give_the_remainder_to_the_first_devices() {
        let split = split_layers(30, 4, 1000, 600);
        let counts: Vec<u32> = split
            .iter()
            .map(|s| s.last_layer - s.first_layer + 1)
            .collect();
        assert_eq!(counts, [8, 8, 7, 7]);
        assert_eq!(split[3].last_layer, 29);
    }

    #[test]
    fn a_cpu_counts_only_the_logits_it_touches() {
        let m = Model::from_shape("7b", preset("llama-7b").unwrap(), "q4_k_m").unwrap();
        let catalog = Catalog::default();
        let cpu = memory(
            &m,
            catalog.get("epyc-2c").unwrap(),
            1,
            2048,
            1,
            u32::MAX,
            KvType::F16,
        );
        let gpu = memory(
            &m,
            catalog.get("rtx-4090").unwrap(),
            1,
            2048,
            1,
            u32::MAX,
            KvType::F16,
        );
        // 512 rows of 32k logits (64 MiB) reserved on a GPU, one row on a CPU.
        assert!(
            gpu.compute > cpu.compute + 60_000_000,
            "{} {}",
            gpu.compute,
            cpu.compute
        );
    }
}
