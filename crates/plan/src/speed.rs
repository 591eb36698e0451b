//! Prefill and decode speed from a roofline: bytes moved over bandwidth,
//! operations over peak throughput, each scaled by an efficiency factor
//! that defaults to typical published results and can be calibrated by
//! measuring (`hearth plan --calibrate`).
//!
//! Decode attention is modelled as llama.cpp runs it. On a GPU its kernels
//! stream the KV cache, so attention is bytes over bandwidth. On a CPU one
//! query row per sequence makes it a loop over cells for each query head:
//! work grows with heads × cells, not with KV bytes. In one unified pool
//! each row also walks (and skips, by its mask) the cells of every other
//! sequence; with a stream per sequence ([`KvLayout::Streams`]) it walks
//! only its own.
//!
//! Matrix work on a CPU depends on the kernel llama.cpp picks: a single
//! column (one sequence decoding) always goes through dot products, at a
//! rate of its own that a profile found well below a batch's per column
//! (calibrated), while more columns go through the GEMM kernel llama.cpp
//! has for that type and width, if any ([`crate::model::cpu_gemm_cost`]),
//! scaled by the tiled-column factor (typical 1.0; not calibrated).

use serde::{Deserialize, Serialize};

use crate::hardware::{Device, Kind};
use crate::model::{MatrixGroup, Model};

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
    /// CPU only: the work of one column of a batch through the tiled GEMM,
    /// as a share of the same column through dot products.
    #[serde(default = "typical_tiled_column_share")]
    pub tiled_column_share: f64,
    /// CPU only: the rate of a single column's dot products (one sequence
    /// decoding, a matrix-vector product) as a share of the rate the
    /// compute factor gives a batch of columns.
    #[serde(default = "typical_single_column_share")]
    pub single_column_share: f64,
    /// CPU only: microseconds each layer costs a step beyond its matrices
    /// and attention (norms, activations, the threads' barriers between
    /// operations).
    #[serde(default = "typical_layer_overhead_us")]
    pub layer_overhead_us: f64,
    pub source: String,
}

/// How sequences' KV cells are laid out, as `hearth serve --kv-layout`
/// says; it decides what a CPU's decode attention walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KvLayout {
    /// One pool: every query row walks every sequence's cells.
    #[default]
    Unified,
    /// A stream per sequence: a row walks only its own.
    Streams,
}

/// A column of llama.cpp's tiled GEMM against a dot product's: not
/// calibrated (see [`calibrate`]), so no discount is assumed.
const TILED_TYPICAL: f64 = 1.0;

/// A single column's dot products against a batch's, per weight: a
/// profile of one stream on the 2-core Zen 4 (docs/planning.md) put the
/// default model's Q4_1 at 45 ps a weight against 28 in its prefill, and
/// Gemma 3's Q5_0 at 43.
const SINGLE_COLUMN_TYPICAL: f64 = 0.6;

/// Microseconds a layer costs beyond its matrices and attention, on the
/// machine this was measured on (see `docs/planning.md`).
const LAYER_OVERHEAD_TYPICAL_US: f64 = 30.0;

/// Calibrations stored before this field existed read it as the typical
/// CPU value.
fn typical_tiled_column_share() -> f64 {
    Efficiency::typical(Kind::Cpu).tiled_column_share
}

fn typical_single_column_share() -> f64 {
    Efficiency::typical(Kind::Cpu).single_column_share
}

fn typical_layer_overhead_us() -> f64 {
    Efficiency::typical(Kind::Cpu).layer_overhead_us
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
            ("tiled_column_share", self.tiled_column_share),
            ("single_column_share", self.single_column_share),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(crate::PlanError::Efficiency(format!(
                    "{name} = {value}: a share of peak must be above 0"
                )));
            }
        }
        if !(self.layer_overhead_us.is_finite() && self.layer_overhead_us >= 0.0) {
            return Err(crate::PlanError::Efficiency(format!(
                "layer_overhead_us = {}: must be zero or more",
                self.layer_overhead_us
            )));
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
    /// dot products run at about 10% of the multiply-add peak (shuffles,
    /// dequantization and scales between the multiplies; calibration found
    /// 13% on a 2-core Zen 3 with AVX2 and 8-9% on a 2-core Zen 4, whose
    /// peak counts AVX-512 lanes the Q4_1 dot products do not fill); its one-row
    /// flash attention converts f16 and reduces as it goes, about 5% of
    /// the fp16 peak; a masked cell costs a head about as much as a few
    /// operations (the mask is read and compared, K and V are not); a
    /// column of the tiled GEMM is taken to cost what a dot product's does
    /// (`TILED_TYPICAL`); and a single column runs at
    /// `SINGLE_COLUMN_TYPICAL` of a batch's rate.
    pub fn typical(kind: Kind) -> Self {
        match kind {
            Kind::Gpu => Self {
                bandwidth: 0.75,
                compute: 0.3,
                attention: 0.75,
                masked_cell_cost: 0.0,
                // A GPU's batch cost is not split by kernel here, and its
                // layers' small kernels overlap.
                tiled_column_share: 1.0,
                single_column_share: 1.0,
                layer_overhead_us: 0.0,
                source: "typical llama.cpp CUDA results (uncalibrated)".into(),
            },
            Kind::Cpu => Self {
                bandwidth: 0.6,
                compute: 0.1,
                attention: 0.05,
                masked_cell_cost: 8.0,
                tiled_column_share: TILED_TYPICAL,
                single_column_share: SINGLE_COLUMN_TYPICAL,
                layer_overhead_us: LAYER_OVERHEAD_TYPICAL_US,
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
///
/// `columns` is the batch each matrix multiplies, which decides a CPU's
/// kernel ([`column_cost`]).
fn peak_ops(model: &Model, device: &Device, eff: &Efficiency, columns: f64) -> f64 {
    let float = matches!(model.weight_type.as_str(), "F16" | "BF16" | "F32");
    let weights: f64 = model.matrices.iter().map(|g| g.elements as f64).sum();
    let cost = if weights > 0.0 {
        let work = |g: &MatrixGroup| g.elements as f64 * column_cost(g, columns, eff);
        model.matrices.iter().map(work).sum::<f64>() / weights
    } else if columns < 2.0 {
        model.cpu_dot_cost / eff.single_column_share
    } else {
        model.cpu_dot_cost
    };
    match device.kind {
        Kind::Cpu => device.int8_tops * 1e12 / cost.max(0.1),
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
    /// Reading the weights.
    pub weights: f64,
    /// Multiplying by them.
    pub compute: f64,
    /// CPU: the matrices, each taking the slower of its read and its work.
    pub matrices: f64,
    /// CPU: every layer's fixed cost.
    pub layers: f64,
    /// Each sequence attending to its own cells.
    pub attention: f64,
    /// Each sequence skipping cells it must not see (CPU).
    pub masked: f64,
}

impl DecodeStep {
    /// On a CPU the hardware prefetcher streams a matrix while the cores
    /// multiply it, so each matrix takes the slower of the two; the other
    /// parts follow one another. A GPU overlaps memory traffic with compute
    /// across its warps, so the slower of the two bounds the step.
    pub fn seconds(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Cpu => self.matrices + self.layers + self.attention + self.masked,
            Kind::Gpu => (self.weights + self.attention).max(self.compute),
        }
    }
}

/// CPU work per weight and column of a group multiplied by `columns`
/// columns, relative to Q8_0's dot product: one column runs the dot
/// products at `single_column_share` of their rate; more run the kernel
/// llama.cpp picks for that many ([`crate::model::cpu_gemm_cost`]), whose
/// cost `tiled_column_share` scales, or the dot products where none does.
fn column_cost(g: &MatrixGroup, columns: f64, eff: &Efficiency) -> f64 {
    if columns < 2.0 {
        return g.dot_cost() / eff.single_column_share;
    }
    match g.gemm_cost(columns) {
        Some(cost) => cost * eff.tiled_column_share,
        None => g.dot_cost(),
    }
}

/// A CPU's matrix time for `b` columns: per group, reads at the calibrated
/// bandwidth against work at its kernel's rate ([`column_cost`]). Returns
/// (reads, work, each group's slower summed).
fn cpu_matrices(model: &Model, device: &Device, eff: &Efficiency, b: f64) -> (f64, f64, f64) {
    let bandwidth = device.bandwidth_gb_s * 1e9 * eff.bandwidth;
    let ops = device.int8_tops * 1e12 * eff.compute;
    let mut parts = (0.0, 0.0, 0.0);
    for g in &model.matrices {
        let read = g.bytes as f64 / bandwidth;
        let work = b * 2.0 * g.elements as f64 * column_cost(g, b, eff) / ops;
        parts.0 += read;
        parts.1 += work;
        parts.2 += read.max(work);
    }
    parts
}

/// The cache a decode step reads: bytes per K or V element, and layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cache {
    pub kv_bytes: f64,
    pub layout: KvLayout,
}

impl Cache {
    pub fn unified(kv_bytes: f64) -> Self {
        Self {
            kv_bytes,
            layout: KvLayout::Unified,
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
    cache: Cache,
) -> DecodeStep {
    let b = f64::from(batch.max(1));
    let d = f64::from(depth);
    let bandwidth = device.bandwidth_gb_s * 1e9;
    let (weights, compute, matrices, layers) =
        if device.kind == Kind::Cpu && !model.matrices.is_empty() {
            let (weights, compute, matrices) = cpu_matrices(model, device, eff, b);
            let layers = f64::from(model.shape.layers) * eff.layer_overhead_us * 1e-6;
            (weights, compute, matrices, layers)
        } else {
            // A GPU, or a model without its tensor list: the whole model at once.
            let weights = step_weight_bytes(model) / (bandwidth * eff.bandwidth);
            let compute = b * 2.0 * model.shape.matmul_params() as f64
                / (peak_ops(model, device, eff, b) * eff.compute);
            (weights, compute, weights + compute, 0.0)
        };
    let visible = visible_layer_cells(model, d);
    let (attention, masked) = match device.kind {
        Kind::Gpu => (
            b * visible * kv_bytes_per_layer_cell(model, cache.kv_bytes)
                / (bandwidth * eff.attention),
            0.0,
        ),
        Kind::Cpu => {
            let s = &model.shape;
            let heads = f64::from(s.heads);
            let fp16 = device.fp16_tflops * 1e12 * eff.attention;
            let per_cell = 2.0 * (f64::from(s.head_dim_k) + f64::from(s.head_dim_v));
            // In one pool every row walks every cell in use, b × d per
            // layer; in its own stream, its d cells.
            let rows_cells = match cache.layout {
                KvLayout::Unified => b * d,
                KvLayout::Streams => d,
            };
            let walked = f64::from(s.layers) * rows_cells;
            (
                b * heads * visible * per_cell / fp16,
                b * heads * (walked - visible).max(0.0) * eff.masked_cell_cost / fp16,
            )
        }
    };
    DecodeStep {
        weights,
        compute,
        matrices,
        layers,
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
    cache: Cache,
) -> f64 {
    let step = decode_step(model, device, eff, batch, depth, cache);
    f64::from(batch.max(1)) / step.seconds(device.kind)
}

/// Prompt tokens per second for one prompt of `tokens` tokens on an empty
/// context: the weights stream once per 512-token micro-batch, and
/// attention, whose many query rows make it a matrix product, grows with
/// the prompt (each token attends to those before it).
pub fn prefill_tps(model: &Model, device: &Device, eff: &Efficiency, tokens: u32) -> f64 {
    let n = f64::from(tokens.max(1));
    n / prefill_seconds(model, device, eff, eff.bandwidth, n)
}

/// Operations of a prompt of `n` tokens: every token through every layer,
/// but the output projection only for the last one (a prompt needs logits
/// only where generation starts), plus attention to the tokens before.
fn prefill_ops(model: &Model, n: f64) -> f64 {
    let output = model.shape.embedding_params() as f64;
    let layers = model.shape.matmul_params() as f64 - output;
    n * 2.0 * layers + 2.0 * output + attention_ops(model, n / 2.0) * n
}

/// A prompt's `n` tokens run in micro-batches of up to [`UBATCH`]
/// columns, each streaming the weights once (at `bandwidth_eff`, which
/// calibration fixes before it knows the decode factor).
///
/// [`UBATCH`]: crate::memory::UBATCH
fn prefill_seconds(
    model: &Model,
    device: &Device,
    eff: &Efficiency,
    bandwidth_eff: f64,
    n: f64,
) -> f64 {
    let ubatch = crate::memory::UBATCH as f64;
    let ubatches = (n / ubatch).ceil();
    let memory =
        ubatches * step_weight_bytes(model) / (device.bandwidth_gb_s * 1e9 * bandwidth_eff);
    let ops = prefill_ops(model, n);
    let compute = ops / (peak_ops(model, device, eff, n.min(ubatch)) * eff.compute);
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

/// One stream of a copy of the calibration model in Q8_0 at about
/// `depth`: its cheap dot products leave it waiting on its reads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReadMeasurement {
    pub depth: u32,
    pub tps: f64,
}

/// Efficiency factors that make the roofline reproduce the measurements on
/// a CPU `device`. Each measurement fixes one factor, the others given,
/// and the steps repeat until the factors settle:
/// - prefill is compute-bound: the compute factor;
/// - with `reads` (one stream of the same model requantized to Q8_0,
///   whose cheap dot products leave it waiting on its reads): it fixes
///   the bandwidth, and the default model's one stream the rate of a
///   single column's dot products. Without it the single-column rate
///   stays typical and the default model's stream fixes the bandwidth;
/// - the per-layer cost stays typical: it is what a profile measured
///   (libgomp's barriers), and solving it from one stream, as calibration
///   once did, put 110 µs on a layer where the profile found 30, the
///   stream's slow single column standing in for it;
/// - deep decode's extra time is attention: the attention factor;
/// - the batch's time beyond its sequences' own work is skipping each
///   other's cells: the masked-cell cost.
///
/// The tiled column share stays typical: measured with a batch of the
/// Q8_0 copy, whose matrices are small, it came out at 2.0 and made Gemma
/// 3's batches 40-45% slower in the plan than measured (docs/planning.md).
///
/// Every measurement runs in one unified pool (`hearth bench --batch`
/// sets a pool size). `None` when the measurements contradict the model
/// (a part would take negative time).
pub fn calibrate(
    model: &Model,
    device: &Device,
    m: &Measurements,
    reads: Option<(&Model, ReadMeasurement)>,
    kv_bytes: f64,
    source: &str,
) -> Option<Efficiency> {
    let cache = Cache::unified(kv_bytes);
    let n = f64::from(m.pp_tokens.max(1));
    let bandwidth = device.bandwidth_gb_s * 1e9;
    let mut eff = Efficiency {
        bandwidth: 1.0,
        compute: 1.0,
        attention: 1.0,
        source: source.to_string(),
        ..Efficiency::typical(Kind::Cpu)
    };
    // Prefill's weight traffic is small at this size; the typical
    // bandwidth factor is close enough for it.
    let ops_pp = prefill_ops(model, n);
    let pp_memory =
        (n / crate::memory::UBATCH as f64).ceil() * step_weight_bytes(model) / (bandwidth * 0.6);
    let compute_seconds = (n / m.pp_tps - pp_memory).max(n / m.pp_tps * 0.5);
    let usable = |x: f64| x.is_finite() && x > 0.0;
    // The mean depth of tg: its tokens follow a one-token prompt.
    let shallow = (m.tg_tokens / 2).max(1);
    let b = m.batch.max(2);
    let step = |model: &Model, eff: &Efficiency, batch: u32, depth: u32| {
        decode_step(model, device, eff, batch, depth, cache)
    };
    let seconds = |s: DecodeStep| s.seconds(Kind::Cpu);
    for _ in 0..60 {
        let columns = n.min(crate::memory::UBATCH as f64);
        eff.compute = ops_pp / (peak_ops(model, device, &eff, columns) * compute_seconds);
        // Bandwidth: the one stream that waits most on its reads.
        let (reader, reader_depth, reader_tps) = match reads {
            Some((q8, r)) => (q8, r.depth, r.tps),
            None => (model, shallow, m.tg_tps),
        };
        eff.bandwidth = solve(
            |bw| {
                let e = Efficiency {
                    bandwidth: bw,
                    ..eff.clone()
                };
                -seconds(step(reader, &e, 1, reader_depth))
            },
            -1.0 / reader_tps,
            (0.01, 100.0),
        )?;
        if reads.is_some() {
            // A stream the share does not decide (its reads bound every
            // matrix) keeps the share it has.
            if let Some(share) = solve(
                |share| {
                    let e = Efficiency {
                        single_column_share: share,
                        ..eff.clone()
                    };
                    -seconds(step(model, &e, 1, shallow))
                },
                -1.0 / m.tg_tps,
                (0.01, 100.0),
            ) {
                eff.single_column_share = share;
            }
        }
        let deep = step(model, &eff, 1, m.depth);
        let attention_seconds = 1.0 / m.tg_deep_tps - deep.matrices - deep.layers - deep.masked;
        if !usable(attention_seconds) {
            return None;
        }
        eff.attention *= deep.attention / attention_seconds;
        let batch = step(model, &eff, b, m.depth);
        let masked_seconds =
            f64::from(b) / m.tg_batch_tps - batch.matrices - batch.layers - batch.attention;
        let unit = Efficiency {
            masked_cell_cost: 1.0,
            ..eff.clone()
        };
        let per_unit = step(model, &unit, b, m.depth).masked;
        eff.masked_cell_cost = if per_unit > 0.0 {
            (masked_seconds / per_unit).max(0.0)
        } else {
            0.0
        };
    }
    (usable(eff.compute) && usable(eff.bandwidth) && usable(eff.attention)).then_some(eff)
}

/// The x within `range` where `f`, rising with x, reaches `target`
/// (bisection: the roofline's maxima leave no closed form). `None` when
/// the target is out of reach or `f` does not rise over the range: that
/// factor does not decide the measured time.
fn solve(f: impl Fn(f64) -> f64, target: f64, range: (f64, f64)) -> Option<f64> {
    let (mut lo, mut hi) = range;
    let (f_lo, f_hi) = (f(lo), f(hi));
    if !(f_lo.is_finite() && f_hi.is_finite() && f_lo < f_hi && (f_lo..=f_hi).contains(&target)) {
        return None;
    }
    for _ in 0..100 {
        let mid = (lo * hi).sqrt();
        if f(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some((lo * hi).sqrt())
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
        let compute =
            |m: &Model, device| decode_step(m, device, &eff, 1, 0, Cache::unified(2.0)).compute;
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
        let tps = decode_tps(&m, &d, &eff, 1, 0, Cache::unified(2.0));
        let expect = 1008e9 * 0.75 / step_weight_bytes(&m);
        assert!((tps - expect).abs() / expect < 1e-9, "{tps} vs {expect}");
        // Depth adds KV traffic, so decode slows as the context fills.
        assert!(decode_tps(&m, &d, &eff, 1, 4096, Cache::unified(2.0)) < tps * 0.9);
    }

    #[test]
    fn batching_raises_aggregate_decode_until_compute_bounds_it() {
        let m = q4_7b();
        let d = Catalog::default().get("a100-80gb").unwrap().clone();
        let eff = Efficiency::typical(Kind::Gpu);
        let one = decode_tps(&m, &d, &eff, 1, 512, Cache::unified(2.0));
        let eight = decode_tps(&m, &d, &eff, 8, 512, Cache::unified(2.0));
        assert!(eight > one * 4.0, "{one} {eight}");
        let huge = decode_tps(&m, &d, &eff, 4096, 16, Cache::unified(2.0));
        let bound = 624e12 * 0.3 / (2.0 * m.shape.matmul_params() as f64);
        assert!(huge <= bound * 1.0001, "{huge} {bound}");
    }

    #[test]
    fn masked_cells_slow_a_cpu_batch() {
        let m = q4_7b();
        let d = Catalog::default().get("epyc-2c").unwrap().clone();
        let mut eff = Efficiency::typical(Kind::Cpu);
        let shared = decode_tps(&m, &d, &eff, 32, 2048, Cache::unified(2.0));
        eff.masked_cell_cost = 0.0;
        let apart = decode_tps(&m, &d, &eff, 32, 2048, Cache::unified(2.0));
        assert!(apart > shared * 1.1, "{apart} {shared}");
    }

    #[test]
    fn a_stream_per_sequence_skips_no_other_sequences_cells() {
        let m = q4_7b();
        let d = Catalog::default().get("epyc-2c").unwrap().clone();
        let eff = Efficiency::typical(Kind::Cpu);
        let streams = Cache {
            kv_bytes: 2.0,
            layout: KvLayout::Streams,
        };
        let own = decode_step(&m, &d, &eff, 8, 2048, streams);
        assert_eq!(own.masked, 0.0, "no sliding window: every cell is seen");
        let shared = decode_step(&m, &d, &eff, 8, 2048, Cache::unified(2.0));
        assert!(shared.masked > 0.0);
        assert_eq!(own.attention, shared.attention);
        // One sequence walks the same cells either way.
        assert_eq!(
            decode_step(&m, &d, &eff, 1, 2048, streams),
            decode_step(&m, &d, &eff, 1, 2048, Cache::unified(2.0))
        );
    }

    #[test]
    fn only_a_batch_of_two_or_more_takes_the_tiled_gemm() {
        let m = Model::from_shape("7b", preset("llama-7b").unwrap(), "Q8_0").unwrap();
        let d = Catalog::default().get("epyc-2c").unwrap().clone();
        let eff = Efficiency::typical(Kind::Cpu);
        let cheap = Efficiency {
            tiled_column_share: eff.tiled_column_share / 2.0,
            ..eff.clone()
        };
        let compute = |e: &Efficiency, b| decode_step(&m, &d, e, b, 0, Cache::unified(2.0)).compute;
        assert_eq!(compute(&eff, 1), compute(&cheap, 1));
        assert!((compute(&cheap, 2) / compute(&eff, 2) - 0.5).abs() < 1e-9);
        // A type without a GEMM kernel keeps its dot products.
        let q4 = Model::from_shape("7b", preset("llama-7b").unwrap(), "Q4_1").unwrap();
        let dot = |e: &Efficiency| decode_step(&q4, &d, e, 4, 0, Cache::unified(2.0)).compute;
        assert_eq!(dot(&eff), dot(&cheap));
    }

    #[test]
    fn only_one_column_runs_at_the_single_column_rate() {
        let m = q4_7b();
        let d = Catalog::default().get("epyc-2c").unwrap().clone();
        let eff = Efficiency::typical(Kind::Cpu);
        let slow = Efficiency {
            single_column_share: eff.single_column_share / 2.0,
            ..eff.clone()
        };
        let compute = |e: &Efficiency, b| decode_step(&m, &d, e, b, 0, Cache::unified(2.0)).compute;
        assert!((compute(&slow, 1) / compute(&eff, 1) - 2.0).abs() < 1e-9);
        assert_eq!(compute(&slow, 2), compute(&eff, 2));
        assert_eq!(
            prefill_tps(&m, &d, &slow, 512),
            prefill_tps(&m, &d, &eff, 512)
        );
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
            tiled_column_share: TILED_TYPICAL,
            // Low enough that the 7B's one stream waits on its work, which
            // is what lets its time fix the share.
            single_column_share: 0.15,
            // Calibration keeps the typical per-layer cost.
            layer_overhead_us: LAYER_OVERHEAD_TYPICAL_US,
            source: "truth".into(),
        };
        let measured = Measurements {
            pp_tokens: 512,
            pp_tps: prefill_tps(&m, &d, &truth, 512),
            tg_tokens: 128,
            tg_tps: decode_tps(&m, &d, &truth, 1, 64, Cache::unified(2.0)),
            depth: 1024,
            tg_deep_tps: decode_tps(&m, &d, &truth, 1, 1024, Cache::unified(2.0)),
            batch: 4,
            tg_batch_tps: decode_tps(&m, &d, &truth, 4, 1024, Cache::unified(2.0)),
        };
        let q8 = Model::from_shape("7b", preset("llama-7b").unwrap(), "Q8_0").unwrap();
        let reads = ReadMeasurement {
            depth: 144,
            tps: decode_tps(&q8, &d, &truth, 1, 144, Cache::unified(2.0)),
        };
        let eff = calibrate(&m, &d, &measured, Some((&q8, reads)), 2.0, "test").unwrap();
        let close = |a: f64, b: f64| (a - b).abs() / b < 1e-6;
        assert!(close(eff.compute, 0.4), "{eff:?}");
        assert!(close(eff.bandwidth, 0.6), "{eff:?}");
        assert!(close(eff.attention, 0.05), "{eff:?}");
        assert!(close(eff.masked_cell_cost, 6.0), "{eff:?}");
        assert!(close(eff.single_column_share, 0.15), "{eff:?}");
        // Impossible measurements (decode faster than compute allows) give none.
        let fast = Measurements {
            tg_tps: 1e6,
            ..measured
        };
        assert!(calibrate(&m, &d, &fast, None, 2.0, "test").is_none());
    }
}
