//! Prefill and decode speed from a roofline: bytes moved over bandwidth,
//! operations over peak throughput, each scaled by an efficiency factor
//! that defaults to typical published results and can be calibrated by
//! measuring (`hearth plan --calibrate`).
//!
//! Decode attention is modelled as llama.cpp runs it. On a GPU its kernels
//! stream the KV cache, so attention is bytes over bandwidth. On a CPU one
//! query row per sequence makes it a loop over cells for each query head:
//! work grows with heads × cells, not with KV bytes, and because Hearth
//! keeps every sequence in one unified pool, each row also walks (and
//! skips, by its mask) the cells of every other sequence.

use serde::{Deserialize, Serialize};

use crate::hardware::{Device, Kind};
use crate::model::Model;

/// Shares of a device's peak bandwidth and throughput that llama.cpp
/// reaches, and where those numbers come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Efficiency {
    /// Share of peak memory bandwidth decode reaches reading weights.
    pub bandwidth: f64,
    /// Share of peak throughput (int8 for quantized weights, fp16 for
    /// float weights) matrix multiplication reaches.
    pub compute: f64,
    /// Decode attention's share: of peak bandwidth on a GPU (reading the
    /// cache), of fp16 peak on a CPU (the per-head loop over cells).
    pub attention: f64,
    /// CPU only: operations' worth of time one query head spends skipping
    /// one masked cell (another sequence's, or outside a sliding window).
    pub masked_cell_cost: f64,
    pub source: String,
}

impl Efficiency {
    /// Factors must be positive (the masked-cell cost may be zero): a
    /// hand-edited calibration of 0 would predict infinite times. Above 1
    /// is allowed: calibration finds that where a catalog's peak is low.
    pub fn validate(&self) -> Result<(), crate::PlanError> {
        for (name, value) in [
            ("bandwidth", self.bandwidth),
            ("compute", self.compute),
            ("attention", self.attention),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(crate::PlanError::Efficiency(format!(
                    "{name} = {value}: a share of peak must be above 0"
                )));
            }
        }
        if !(self.masked_cell_cost.is_finite() && self.masked_cell_cost >= 0.0) {
            return Err(crate::PlanError::Efficiency(format!(
                "masked_cell_cost = {}: must be zero or more",
                self.masked_cell_cost
            )));
        }
        Ok(())
    }

    /// Uncalibrated factors. GPUs: llama.cpp's CUDA decode reads weights
    /// and KV at about 75% of peak bandwidth, and its quantized matrix
    /// kernels reach about 30% of int8 peak in prefill (llama.cpp's
    /// published RTX 4090 and A100 results for Llama 7B Q4_0: about 160
    /// and 150 tok/s decode, 14,000 and 9,000 tok/s prefill); its CUDA
    /// attention skips masked tiles. CPUs: a vector core streams weights at
    /// about 60% of the bandwidth the catalog credits it; llama.cpp's int8
    /// dot products run at about 15% of the multiply-add peak (shuffles,
    /// dequantization and scales between the multiplies; a 2-core Zen 3
    /// prefills the default model at 220-400 tok/s, 10-20%); its one-row
    /// flash attention converts f16 and reduces as it goes, about 5% of
    /// the fp16 peak; and a masked cell costs a head about as much as a
    /// few operations (the mask is read and compared, K and V are not).
    pub fn typical(kind: Kind) -> Self {
        match kind {
            Kind::Gpu => Self {
                bandwidth: 0.75,
                compute: 0.3,
                attention: 0.75,
                masked_cell_cost: 0.0,
                source: "typical llama.cpp CUDA results (uncalibrated)".into(),
            },
            Kind::Cpu => Self {
                bandwidth: 0.6,
                compute: 0.15,
                attention: 0.05,
                masked_cell_cost: 8.0,
                source: "typical llama.cpp CPU results (uncalibrated)".into(),
            },
        }
    }
}

/// The peak matrix work runs against. On a CPU it is the int8 peak divided
/// by the model's dot-product cost, which is relative to Q8_0 for every
/// type, floats included, so that efficiency factors measured with one
/// weight type carry over to another. (Dividing the fp16 peak, a quarter
/// of it, by a float type's cost as well counted floats' slowness twice:
/// the default model dequantized to F16 was planned at 23.5 tok/s and ran
/// at 55.) A GPU runs float weights on its fp16 units.
fn peak_ops(model: &Model, device: &Device) -> f64 {
    let float = matches!(model.weight_type.as_str(), "F16" | "BF16" | "F32");
    match device.kind {
        Kind::Cpu => device.int8_tops * 1e12 / model.cpu_dot_cost.max(0.1),
        Kind::Gpu if float => device.fp16_tflops * 1e12,
        Kind::Gpu => device.int8_tops * 1e12,
    }
}

/// Attention operations for one query token over `depth` cached tokens:
/// QK^T and softmax·V across every layer and head (prefill's attention,
/// a matrix product).
fn attention_ops(model: &Model, depth: f64) -> f64 {
    let s = &model.shape;
    2.0 * depth
        * f64::from(s.layers)
        * f64::from(s.heads)
        * (f64::from(s.head_dim_k) + f64::from(s.head_dim_v))
}

/// Cells one query row attends to, summed over layers, at `depth`:
/// sliding-window layers see at most their window.
fn visible_layer_cells(model: &Model, depth: f64) -> f64 {
    let s = &model.shape;
    let global = f64::from(s.layers - s.swa_layers.min(s.layers));
    let window = s.sliding_window.map_or(depth, |w| depth.min(f64::from(w)));
    global * depth + f64::from(s.swa_layers) * window
}

fn kv_bytes_per_layer_cell(model: &Model, kv_bytes: f64) -> f64 {
    model.shape.kv_elements_per_layer() as f64 * kv_bytes
}

/// Weight bytes one decode step reads: all but an untied embedding table,
/// of which it looks up a row per sequence.
fn step_weight_bytes(model: &Model) -> f64 {
    if model.shape.tied_embeddings {
        model.weight_bytes as f64
    } else {
        (model.weight_bytes - model.embedding_bytes.min(model.weight_bytes)) as f64
    }
}

/// The parts of one decode step's time, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeStep {
    pub weights: f64,
    pub compute: f64,
    /// Each sequence attending to its own cells.
    pub attention: f64,
    /// Each sequence skipping cells it must not see (CPU).
    pub masked: f64,
}

impl DecodeStep {
    /// On a CPU the same cores stream, multiply and attend, so the parts
    /// add. A GPU overlaps memory traffic with compute across its warps, so
    /// the slower of the two bounds the step.
    pub fn seconds(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Cpu => self.weights + self.compute + self.attention + self.masked,
            Kind::Gpu => (self.weights + self.attention).max(self.compute),
        }
    }
}

/// Each part of a decode step with `batch` sequences each `depth` tokens
/// deep. Layers split over devices run one after another (llama.cpp's
/// layer split), each device reading only its share: the sum is the time
/// of one device reading everything, so the device count does not enter.
pub fn decode_step(
    model: &Model,
    device: &Device,
    eff: &Efficiency,
    batch: u32,
    depth: u32,
    kv_bytes: f64,
) -> DecodeStep {
    let b = f64::from(batch.max(1));
    let d = f64::from(depth);
    let bandwidth = device.bandwidth_gb_s * 1e9;
    let weights = step_weight_bytes(model) / (bandwidth * eff.bandwidth);
    let compute =
        b * 2.0 * model.shape.matmul_params() as f64 / (peak_ops(model, device) * eff.compute);
    let visible = visible_layer_cells(model, d);
    let (attention, masked) = match device.kind {
        Kind::Gpu => (
            b * visible * kv_bytes_per_layer_cell(model, kv_bytes) / (bandwidth * eff.attention),
            0.0,
        ),
        Kind::Cpu => {
            let s = &model.shape;
            let heads = f64::from(s.heads);
            let fp16 = device.fp16_tflops * 1e12 * eff.attention;
            let per_cell = 2.0 * (f64::from(s.head_dim_k) + f64::from(s.head_dim_v));
            // Every row walks every cell in use: b × d cells per layer.
            let walked = f64::from(s.layers) * b * d;
            (
                b * heads * visible * per_cell / fp16,
                b * heads * (walked - visible).max(0.0) * eff.masked_cell_cost / fp16,
            )
        }
    };
    DecodeStep {
        weights,
        compute,
        attention,
        masked,
    }
}

/// Aggregate decode tokens per second with `batch` sequences decoding
/// together, each `depth` tokens deep.
pub fn decode_tps(
    model: &Model,
    device: &Device,
    eff: &Efficiency,
    batch: u32,
    depth: u32,
    kv_bytes: f64,
) -> f64 {
    let step = decode_step(model, device, eff, batch, depth, kv_bytes);
    f64::from(batch.max(1)) / step.seconds(device.kind)
}

/// Prompt tokens per second for one prompt of `tokens` tokens on an empty
/// context: the weights stream once per 512-token micro-batch, and
/// attention, whose many query rows make it a matrix product, grows with
/// the prompt (each token attends to those before it).
pub fn prefill_tps(model: &Model, device: &Device, eff: &Efficiency, tokens: u32) -> f64 {
    let n = f64::from(tokens.max(1));
    n / prefill_seconds(model, device, eff.bandwidth, eff.compute, n)
}

/// Operations of a prompt of `n` tokens: every token through every layer,
/// but the output projection only for the last one (a prompt needs logits
/// only where generation starts), plus attention to the tokens before.
fn prefill_ops(model: &Model, n: f64) -> f64 {
    let output = model.shape.embedding_params() as f64;
    let layers = model.shape.matmul_params() as f64 - output;
    n * 2.0 * layers + 2.0 * output + attention_ops(model, n / 2.0) * n
}

fn prefill_seconds(
    model: &Model,
    device: &Device,
    bandwidth_eff: f64,
    compute_eff: f64,
    n: f64,
) -> f64 {
    let ubatches = (n / crate::memory::UBATCH as f64).ceil();
    let memory =
        ubatches * step_weight_bytes(model) / (device.bandwidth_gb_s * 1e9 * bandwidth_eff);
    let ops = prefill_ops(model, n);
    let compute = ops / (peak_ops(model, device) * compute_eff);
    match device.kind {
        Kind::Cpu => memory + compute,
        Kind::Gpu => memory.max(compute),
    }
}

/// What calibration measures on one device, all with the same model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// Prefill of `pp_tokens` on an empty context.
    pub pp_tokens: u32,
    pub pp_tps: f64,
    /// One sequence decoding `tg_tokens` from a one-token prompt.
    pub tg_tokens: u32,
    pub tg_tps: f64,
    /// One sequence decoding at about `depth`.
    pub depth: u32,
    pub tg_deep_tps: f64,
    /// `batch` sequences decoding together, each at about `depth` (aggregate).
    pub batch: u32,
    pub tg_batch_tps: f64,
}

/// Efficiency factors that make the roofline reproduce the measurements on
/// a CPU `device` (the parts of a step add there, so each measurement
/// isolates one factor in turn):
/// - prefill is compute-bound: it fixes the compute factor;
/// - shallow decode's time left after its compute is weight traffic: the
///   bandwidth factor;
/// - deep decode's extra time is attention: the attention factor;
/// - the batch's time beyond its sequences' own work is skipping each
///   other's cells: the masked-cell cost.
///
/// Shallow decode attends a little too, so the last two steps repeat until
/// the factors settle. `None` when the measurements contradict the model
/// (a part would take negative time).
pub fn calibrate(
    model: &Model,
    device: &Device,
    m: &Measurements,
    kv_bytes: f64,
    source: &str,
) -> Option<Efficiency> {
    let n = f64::from(m.pp_tokens.max(1));
    let peak = peak_ops(model, device);
    let bandwidth = device.bandwidth_gb_s * 1e9;
    // Prefill's weight traffic is small at this size; the typical
    // bandwidth factor is close enough for it.
    let ops_pp = prefill_ops(model, n);
    let pp_memory =
        (n / crate::memory::UBATCH as f64).ceil() * step_weight_bytes(model) / (bandwidth * 0.6);
    let compute_seconds = (n / m.pp_tps - pp_memory).max(n / m.pp_tps * 0.5);
    let mut eff = Efficiency {
        bandwidth: 1.0,
        compute: ops_pp / (peak * compute_seconds),
        attention: 1.0,
        masked_cell_cost: 0.0,
        source: source.to_string(),
    };
    let usable = |x: f64| x.is_finite() && x > 0.0;
    // The mean depth of tg: its tokens follow a one-token prompt.
    let shallow = (m.tg_tokens / 2).max(1);
    for _ in 0..8 {
        let tg = decode_step(model, device, &eff, 1, shallow, kv_bytes);
        let weight_seconds = 1.0 / m.tg_tps - tg.compute - tg.attention;
        if !usable(weight_seconds) {
            return None;
        }
        eff.bandwidth = step_weight_bytes(model) / (bandwidth * weight_seconds);
        let deep = decode_step(model, device, &eff, 1, m.depth, kv_bytes);
        let attention_seconds = 1.0 / m.tg_deep_tps - deep.weights - deep.compute;
        if !usable(attention_seconds) {
            return None;
        }
        eff.attention *= deep.attention / attention_seconds;
    }
    let b = f64::from(m.batch.max(2));
    let batch = decode_step(model, device, &eff, m.batch.max(2), m.depth, kv_bytes);
    let masked_seconds = b / m.tg_batch_tps - batch.weights - batch.compute - batch.attention;
    let unit = Efficiency {
        masked_cell_cost: 1.0,
        ..eff.clone()
    };
    let per_unit = decode_step(model, device, &unit, m.batch.max(2), m.depth, kv_bytes).masked;
    eff.masked_cell_cost = if per_unit > 0.0 {
        (masked_seconds / per_unit).max(0.0)
    } else {
        0.0
    };
    (usable(eff.compute) && usable(eff.bandwidth) && usable(eff.attention)).then_some(eff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::Catalog;
    use crate::model::preset;

    fn q4_7b() -> Model {
        Model::from_shape("7b", preset("llama-7b").unwrap(), "q4_0").unwrap()
    }

    #[test]
    fn a_cpu_charges_float_weights_their_dot_cost_once() {
        // Regression: F16 on a CPU ran against the fp16 peak (a quarter of
        // int8's) and paid its dot cost on top; planned 23.5 tok/s for a
        // model that ran at 55.
        use crate::hardware::{Catalog, Kind};
        use crate::model::{preset, Model};
        let catalog = Catalog::default();
        let model = |ty| Model::from_shape("7b", preset("llama-7b").unwrap(), ty).unwrap();
        let (f16, q8) = (model("F16"), model("Q8_0"));
        let eff = Efficiency::typical(Kind::Cpu);
        let compute = |m: &Model, device| decode_step(m, device, &eff, 1, 0, 2.0).compute;
        let cpu = catalog.get("epyc-2c").unwrap();
        assert!((compute(&f16, cpu) / compute(&q8, cpu) - 1.0).abs() < 1e-9);
        // A GPU still runs floats on its fp16 units, slower than int8.
        let gpu = catalog.get("h100-80gb").unwrap();
        assert!(compute(&f16, gpu) > compute(&q8, gpu));
    }

    #[test]
    fn a_zero_or_runaway_factor_is_refused() {
        let mut e = Efficiency::typical(crate::hardware::Kind::Cpu);
        assert!(e.validate().is_ok());
        e.bandwidth = 0.0;
        assert!(e.validate().unwrap_err().to_string().contains("bandwidth"));
        let mut e = Efficiency::typical(crate::hardware::Kind::Gpu);
        e.masked_cell_cost = -1.0;
        assert!(e
            .validate()
            .unwrap_err()
            .to_string()
            .contains("masked_cell_cost"));
    }

    #[test]
    fn gpu_decode_is_bandwidth_over_bytes() {
        let m = q4_7b();
        let d = Catalog::default().get("rtx-4090").unwrap().clone();
        let eff = Efficiency::typical(Kind::Gpu);
        let tps = decode_tps(&m, &d, &eff, 1, 0, 2.0);
        let expect = 1008e9 * 0.75 / step_weight_bytes(&m);
        assert!((tps - expect).abs() / expect < 1e-9, "{tps} vs {expect}");
        // Depth adds KV traffic, so decode slows as the context fills.
        assert!(decode_tps(&m, &d, &eff, 1, 4096, 2.0) < tps * 0.9);
    }

    #[test]
    fn batching_raises_aggregate_decode_until_compute_bounds_it() {
        let m = q4_7b();
        let d = Catalog::default().get("a100-80gb").unwrap().clone();
        let eff = Efficiency::typical(Kind::Gpu);
        let one = decode_tps(&m, &d, &eff, 1, 512, 2.0);
        let eight = decode_tps(&m, &d, &eff, 8, 512, 2.0);
        assert!(eight > one * 4.0, "{one} {eight}");
        let huge = decode_tps(&m, &d, &eff, 4096, 16, 2.0);
        let bound = 624e12 * 0.3 / (2.0 * m.shape.matmul_params() as f64);
        assert!(huge <= bound * 1.0001, "{huge} {bound}");
    }

    #[test]
    fn masked_cells_slow_a_cpu_batch() {
        let m = q4_7b();
        let d = Catalog::default().get("epyc-2c").unwrap().clone();
        let mut eff = Efficiency::typical(Kind::Cpu);
        let shared = decode_tps(&m, &d, &eff, 32, 2048, 2.0);
        eff.masked_cell_cost = 0.0;
        let apart = decode_tps(&m, &d, &eff, 32, 2048, 2.0);
        assert!(apart > shared * 1.1, "{apart} {shared}");
    }

    #[test]
    fn calibration_recovers_the_factors_that_made_the_measurements() {
        let m = q4_7b();
        let d = Catalog::default().get("epyc-2c").unwrap().clone();
        let truth = Efficiency {
            // The bandwidth factor prefill's small weight traffic assumes.
            bandwidth: 0.6,
            compute: 0.4,
            attention: 0.05,
            masked_cell_cost: 6.0,
            source: "truth".into(),
        };
        let measured = Measurements {
            pp_tokens: 512,
            pp_tps: prefill_tps(&m, &d, &truth, 512),
            tg_tokens: 128,
            tg_tps: decode_tps(&m, &d, &truth, 1, 64, 2.0),
            depth: 1024,
            tg_deep_tps: decode_tps(&m, &d, &truth, 1, 1024, 2.0),
            batch: 4,
            tg_batch_tps: decode_tps(&m, &d, &truth, 4, 1024, 2.0),
        };
        let eff = calibrate(&m, &d, &measured, 2.0, "test").unwrap();
        let close = |a: f64, b: f64| (a - b).abs() / b < 1e-6;
        assert!(close(eff.compute, 0.4), "{eff:?}");
        assert!(close(eff.bandwidth, 0.6), "{eff:?}");
        assert!(close(eff.attention, 0.05), "{eff:?}");
        assert!(close(eff.masked_cell_cost, 6.0), "{eff:?}");
        // Impossible measurements (decode faster than compute allows) give none.
        let fast = Measurements {
            tg_tps: 1e6,
            ..measured
        };
        assert!(calibrate(&m, &d, &fast, 2.0, "test").is_none());
    }
}
