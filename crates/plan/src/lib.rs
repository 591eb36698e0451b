//! Capacity planning from first principles: what memory a model needs on
//! given hardware, how fast it prefills and decodes, how many servers a
//! load needs at its peak, and what they cost against a cloud API.
//!
//! Pure arithmetic over a model's shape, a device's spec sheet and a
//! workload; it loads no model and touches no hardware. Measurements come
//! in only as calibrated efficiency factors ([`speed::calibrate`]).

pub mod capacity;
pub mod hardware;
pub mod memory;
pub mod model;
pub mod speed;

use serde::Serialize;

pub use capacity::{Capacity, Cost, CostInputs};
pub use hardware::{Catalog, Device, Kind};
pub use memory::{KvType, Memory};
pub use model::{Model, Shape};
pub use speed::{Efficiency, KvLayout};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("unknown hardware {name:?}; known: {known}")]
    UnknownHardware { name: String, known: String },
    #[error("unknown weight type {name:?}; known: {known}")]
    UnknownWeightType { name: String, known: String },
    #[error("invalid model shape: {0}")]
    Shape(String),
    #[error("unknown KV type {name:?}; choose f16, q8_0 or f32")]
    KvType { name: String },
    #[error("invalid hardware: {0}")]
    Hardware(String),
    #[error("invalid workload: {0}")]
    Workload(String),
    #[error("invalid cost inputs: {0}")]
    Cost(String),
    #[error("invalid efficiency factors: {0}")]
    Efficiency(String),
    #[error("{device} cannot serve {qps} requests/s of this workload: it would need more servers than can be counted")]
    NoThroughput { device: String, qps: f64 },
    #[error("{model} needs {need:.1} GB but {devices} × {device} hold {have:.1} GB; {suggestion}")]
    DoesNotFit {
        model: String,
        device: String,
        devices: u32,
        need: f64,
        have: f64,
        suggestion: String,
    },
}

/// The load a deployment is sized for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// Tokens each sequence may hold (prompt and reply).
    pub context: u32,
    /// Sequences served at once.
    pub concurrency: u32,
    /// Average requests per second.
    pub qps: f64,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    /// Peak load over average: servers are sized for `qps × peak_factor`.
    pub peak_factor: f64,
    /// Slowest acceptable decode speed of one stream, tokens per second.
    pub min_stream_tps: f64,
}

impl Workload {
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |what: String| Err(PlanError::Workload(what));
        if self.context == 0 {
            return bad("the context must be at least one token (got 0)".into());
        }
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1 (got 0)".into());
        }
        if u64::from(self.prompt_tokens) + u64::from(self.output_tokens) > u64::from(self.context) {
            return bad(format!(
                "prompt ({}) and output ({}) tokens exceed the context ({})",
                self.prompt_tokens, self.output_tokens, self.context
            ));
        }
        if !(self.qps.is_finite() && self.qps >= 0.0) {
            return bad(format!("QPS must be zero or more (got {})", self.qps));
        }
        if !(self.peak_factor.is_finite() && self.peak_factor >= 1.0) {
            return bad(format!(
                "the peak factor must be at least 1 (got {})",
                self.peak_factor
            ));
        }
        if !(self.min_stream_tps.is_finite() && self.min_stream_tps >= 0.0) {
            return bad(format!(
                "the stream speed floor cannot be negative (got {})",
                self.min_stream_tps
            ));
        }
        Ok(())
    }
}

/// Everything a plan is computed from.
#[derive(Debug, Clone)]
pub struct Request {
    pub model: Model,
    pub device: Device,
    /// Devices per server; `None` picks the fewest that hold the model.
    pub devices: Option<u32>,
    pub workload: Workload,
    pub kv_type: KvType,
    /// How the cache is laid out (on a CPU, it decides what attention walks).
    pub kv_layout: KvLayout,
    pub efficiency: Efficiency,
    pub cost: CostInputs,
}

/// Predicted speeds.
#[derive(Debug, Clone, Serialize)]
pub struct Speed {
    /// Prompt tokens per second for one prompt of the workload's length.
    pub prefill_tps: f64,
    /// Time to first token of one request on an idle server.
    pub ttft_seconds: f64,
    /// One stream alone, at the mid-reply depth.
    pub decode_tps_single: f64,
    /// All of `concurrency` streams together, at the mid-reply depth.
    pub decode_tps_aggregate: f64,
    /// Each of those streams.
    pub decode_tps_per_stream: f64,
    /// The KV layout these speeds assume.
    pub kv_layout: KvLayout,
    pub efficiency: Efficiency,
}

/// A computed plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub model: Model,
    pub device: Device,
    pub devices: u32,
    pub workload: Workload,
    pub memory: Memory,
    pub speed: Speed,
    pub capacity: Capacity,
    pub cost: Cost,
}

/// Most devices per server the planner considers.
pub const MAX_DEVICES: u32 = 8;

/// Computes the plan, or says why the model cannot be served as asked.
pub fn plan(request: &Request, catalog: &Catalog) -> Result<Plan, PlanError> {
    let Request {
        model,
        device,
        workload,
        kv_type,
        efficiency,
        ..
    } = request;
    workload.validate()?;
    model.shape.validate()?;
    request.cost.validate()?;
    request.efficiency.validate()?;
    let (context, concurrency) = (workload.context, workload.concurrency);
    // Validated above: at most the context.
    let filled = workload.prompt_tokens + workload.output_tokens;
    let devices = match request.devices {
        Some(0) => {
            return Err(PlanError::Hardware(
                "the device count must be at least 1".into(),
            ))
        }
        Some(n) => n,
        None => (1..=MAX_DEVICES)
            .find(|&n| {
                memory::memory(model, device, n, context, concurrency, filled, *kv_type).fits
            })
            .unwrap_or(MAX_DEVICES),
    };
    let mem = memory::memory(
        model,
        device,
        devices,
        context,
        concurrency,
        filled,
        *kv_type,
    );
    if !mem.fits {
        return Err(PlanError::DoesNotFit {
            model: model.name.clone(),
            device: device.name.clone(),
            devices,
            need: mem.total as f64 / 1e9,
            have: mem.available as f64 / 1e9,
            suggestion: suggest(
                model,
                catalog,
                device.kind,
                context,
                concurrency,
                filled,
                *kv_type,
            ),
        });
    }
    let kv = speed::Cache {
        kv_bytes: kv_type.bytes(),
        layout: request.kv_layout,
    };
    let depth = workload.prompt_tokens + workload.output_tokens / 2;
    let prefill = speed::prefill_tps(model, device, efficiency, workload.prompt_tokens.max(1));
    let single = speed::decode_tps(model, device, efficiency, 1, depth, kv);
    let aggregate = speed::decode_tps(model, device, efficiency, concurrency, depth, kv);
    let max_concurrency = largest_fitting(|n| {
        memory::memory(model, device, devices, context, n, filled, *kv_type).fits
    });
    // The batch a server runs: as many as fit, but no more than keep each
    // stream at the floor speed.
    let per_stream =
        |b: u32| speed::decode_tps(model, device, efficiency, b, depth, kv) / f64::from(b);
    let batch = (1..=max_concurrency.max(1))
        .rev()
        .find(|&b| per_stream(b) >= workload.min_stream_tps)
        .unwrap_or(1);
    let batch_tps = speed::decode_tps(model, device, efficiency, batch, depth, kv);
    let rps = capacity::requests_per_second(
        workload.prompt_tokens,
        workload.output_tokens,
        prefill,
        batch_tps,
    );
    let servers =
        capacity::servers_needed(workload.qps, workload.peak_factor, rps).ok_or_else(|| {
            PlanError::NoThroughput {
                device: device.name.clone(),
                qps: workload.qps,
            }
        })?;
    let cost = capacity::cost(
        &request.cost,
        device,
        devices,
        servers,
        workload.qps,
        workload.prompt_tokens,
        workload.output_tokens,
    );
    Ok(Plan {
        model: model.clone(),
        device: device.clone(),
        devices,
        workload: workload.clone(),
        memory: mem,
        speed: Speed {
            prefill_tps: prefill,
            ttft_seconds: f64::from(workload.prompt_tokens) / prefill + 1.0 / single,
            decode_tps_single: single,
            decode_tps_aggregate: aggregate,
            decode_tps_per_stream: aggregate / f64::from(concurrency),
            kv_layout: request.kv_layout,
            efficiency: efficiency.clone(),
        },
        capacity: Capacity {
            max_concurrency,
            batch,
            requests_per_second: rps,
            peak_qps: workload.qps * workload.peak_factor,
            servers,
        },
        cost,
    })
}

/// The largest n in 1..=65536 for which `fits(n)` holds (it must be
/// monotone), or 0.
fn largest_fitting(fits: impl Fn(u32) -> bool) -> u32 {
    if !fits(1) {
        return 0;
    }
    let (mut lo, mut hi) = (1u32, 65_536u32);
    if fits(hi) {
        return hi;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The cheapest catalog configuration (device × count) of the same kind
/// as `asked` that holds the model, as advice for one that does not fit.
/// Devices without a price are left out: nothing says what they cost.
pub fn suggest(
    model: &Model,
    catalog: &Catalog,
    asked: Kind,
    context: u32,
    concurrency: u32,
    filled: u32,
    kv_type: KvType,
) -> String {
    // (devices, price, name) of each device's fewest that fit.
    let fitting: Vec<(u32, f64, &str)> = catalog
        .devices()
        .iter()
        .filter(|d| d.kind == asked && d.price_usd > 0.0)
        .filter_map(|device| {
            (1..=MAX_DEVICES)
                .find(|&n| {
                    memory::memory(model, device, n, context, concurrency, filled, kv_type).fits
                })
                .map(|n| (n, f64::from(n) * device.price_usd, device.name.as_str()))
        })
        .collect();
    let cheapest = fitting.iter().min_by(|a, b| a.1.total_cmp(&b.1));
    let fewest = fitting
        .iter()
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    match (cheapest, fewest) {
        (Some(c), Some(f)) if c.2 == f.2 => {
            format!("the smallest configuration that fits is {} × {}", c.0, c.2)
        }
        (Some(c), Some(f)) => format!(
            "the smallest configurations that fit are {} × {} (fewest devices) and {} × {} (cheapest)",
            f.0, f.2, c.0, c.2
        ),
        _ => format!(
            "no listed device holds it even {MAX_DEVICES} to a server; try a smaller weight type, context or concurrency"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(model: &str, weight: &str, device: &str) -> Request {
        let catalog = Catalog::default();
        let device = catalog.get(device).unwrap().clone();
        Request {
            model: Model::from_shape(model, model::preset(model).unwrap(), weight).unwrap(),
            efficiency: Efficiency::typical(device.kind),
            device,
            devices: None,
            workload: Workload {
                context: 4096,
                concurrency: 1,
                qps: 1.0,
                prompt_tokens: 512,
                output_tokens: 256,
                peak_factor: 3.0,
                min_stream_tps: 10.0,
            },
            kv_type: KvType::F16,
            kv_layout: KvLayout::Unified,
            cost: CostInputs::default(),
        }
    }

    #[test]
    fn a_model_too_big_for_the_device_gets_the_smallest_fitting_configuration() {
        let mut r = request("llama-70b", "f16", "rtx-4090");
        r.devices = Some(1);
        let e = plan(&r, &Catalog::default()).unwrap_err().to_string();
        assert!(
            e.contains("needs")
                && e.contains("2 × a100-80gb (fewest devices)")
                && e.contains("(cheapest)"),
            "{e}"
        );
        // Left to choose, the planner takes as many cards as it needs.
        r.devices = None;
        r.model =
            Model::from_shape("llama-13b", model::preset("llama-13b").unwrap(), "f16").unwrap();
        let p = plan(&r, &Catalog::default()).unwrap();
        assert_eq!(p.devices, 2, "{:?}", p.memory);
    }

    #[test]
    fn nothing_fits_says_so() {
        let mut r = request("llama-70b", "f32", "t4");
        r.workload.context = 8192;
        r.workload.concurrency = 512;
        let e = plan(&r, &Catalog::default()).unwrap_err().to_string();
        assert!(e.contains("no listed device holds it"), "{e}");
    }

    #[test]
    fn token_counts_too_large_to_add_are_refused_not_overflowed() {
        let mut r = request("llama-7b", "q4_0", "rtx-4090");
        r.workload.prompt_tokens = u32::MAX;
        r.workload.output_tokens = 2;
        let e = plan(&r, &Catalog::default()).unwrap_err().to_string();
        assert!(e.contains("exceed the context"), "{e}");
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let mut r = request("llama-7b", "q4_0", "rtx-4090");
        r.workload.concurrency = 0;
        let e = plan(&r, &Catalog::default()).unwrap_err().to_string();
        assert!(e.contains("concurrency must be at least 1"), "{e}");
    }

    #[test]
    fn more_load_needs_more_servers() {
        let mut r = request("llama-7b", "q4_k_m", "rtx-4090");
        let one = plan(&r, &Catalog::default()).unwrap();
        r.workload.qps = 100.0;
        let many = plan(&r, &Catalog::default()).unwrap();
        assert!(many.capacity.servers > one.capacity.servers);
        assert!(many.cost.tco_usd > one.cost.tco_usd);
        assert!(many.capacity.max_concurrency >= many.capacity.batch);
        // Each stream of the chosen batch decodes at least at the floor.
        let w = &r.workload;
        let depth = w.prompt_tokens + w.output_tokens / 2;
        let batch = many.capacity.batch;
        let batch_tps = speed::decode_tps(
            &many.model,
            &many.device,
            &many.speed.efficiency,
            batch,
            depth,
            speed::Cache::unified(r.kv_type.bytes()),
        );
        assert!(batch > 1, "the floor allows batching here");
        assert!(batch_tps / f64::from(batch) >= w.min_stream_tps);
        let more = speed::decode_tps(
            &many.model,
            &many.device,
            &many.speed.efficiency,
            batch + 1,
            depth,
            speed::Cache::unified(r.kv_type.bytes()),
        );
        assert!(
            batch == many.capacity.max_concurrency
                || more / f64::from(batch + 1) < w.min_stream_tps,
            "the largest batch above the floor"
        );
    }

    #[test]
    fn largest_fitting_finds_the_boundary() {
        assert_eq!(largest_fitting(|n| n <= 37), 37);
        assert_eq!(largest_fitting(|_| false), 0);
        assert_eq!(largest_fitting(|_| true), 65_536);
    }
}
