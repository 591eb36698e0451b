//! Tables for people: a plan, the hardware catalog, and the sizing table of
//! the preset model classes across GPU classes.

use anyhow::Result;
use plan::{Catalog, Efficiency, KvType, Model, Plan, Request, Workload};
use serde::Serialize;

fn gb(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} KB", b / 1e3)
    }
}

fn usd(v: f64) -> String {
    if v >= 1e6 {
        format!("${:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("${:.1}k", v / 1e3)
    } else {
        format!("${v:.2}")
    }
}

fn tokens(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}B", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else {
        format!("{v:.0}")
    }
}

pub(super) fn plan(p: &Plan) {
    let (m, w, mem, sp, cap, c) = (
        &p.model,
        &p.workload,
        &p.memory,
        &p.speed,
        &p.capacity,
        &p.cost,
    );
    let s = &m.shape;
    println!(
        "Model     {} ({}, {:.2}B parameters, {} layers, {}/{} heads)",
        m.name,
        m.weight_type,
        s.params as f64 / 1e9,
        s.layers,
        s.heads,
        s.kv_heads
    );
    println!(
        "Hardware  {} × {}: {}",
        p.devices,
        p.device.name,
        if p.device.description.is_empty() {
            "custom"
        } else {
            &p.device.description
        }
    );
    println!(
        "Workload  {} sequences × {} tokens; prompt {}, output {}; {} QPS average, {}× at peak",
        w.concurrency, w.context, w.prompt_tokens, w.output_tokens, w.qps, w.peak_factor
    );
    println!();
    println!("Memory");
    println!("  weights              {:>12}", gb(mem.weights));
    println!(
        "  KV cache ({:?})        {:>12}   ({} per token × {} tokens)",
        mem.kv_type,
        gb(mem.kv_total),
        gb(mem.kv_per_token),
        u64::from(w.context) * u64::from(w.concurrency)
    );
    println!("  compute buffers      {:>12}", gb(mem.compute));
    println!("  runtime and tables   {:>12}", gb(mem.overhead));
    println!(
        "  total                {:>12}   of {} usable: {}",
        gb(mem.total),
        gb(mem.available),
        if mem.fits { "fits" } else { "does not fit" }
    );
    if mem.split.len() > 1 {
        for share in &mem.split {
            println!(
                "  device {:<2}            {:>12}   layers {}–{}",
                share.device,
                gb(share.bytes),
                share.first_layer,
                share.last_layer
            );
        }
    }
    println!();
    println!("Speed ({})", sp.efficiency.source);
    println!(
        "  prefill              {:>9.1} tok/s   time to first token {:.2} s",
        sp.prefill_tps, sp.ttft_seconds
    );
    println!("  decode, 1 stream     {:>9.1} tok/s", sp.decode_tps_single);
    println!(
        "  decode, {:<3} streams {:>9.1} tok/s   {:.1} each ({} KV)",
        w.concurrency,
        sp.decode_tps_aggregate,
        sp.decode_tps_per_stream,
        match sp.kv_layout {
            plan::KvLayout::Unified => "unified",
            plan::KvLayout::Streams => "a stream per sequence",
        }
    );
    println!();
    println!("Capacity");
    println!("  most sequences       {:>9}", cap.max_concurrency);
    println!(
        "  batch per server     {:>9}   (each stream ≥ {} tok/s)",
        cap.batch, w.min_stream_tps
    );
    println!("  requests/s a server  {:>9.2}", cap.requests_per_second);
    println!(
        "  servers              {:>9}   for {:.2} QPS at peak",
        cap.servers, cap.peak_qps
    );
    println!();
    println!("Cost over {} years", c.years);
    println!(
        "  hardware {}  power {}  operations {}  total {}",
        usd(c.hardware_usd),
        usd(c.power_usd),
        usd(c.operations_usd),
        usd(c.tco_usd)
    );
    println!(
        "  {} tokens: {} per million self-hosted, {} from the cloud API",
        tokens(c.tokens),
        usd(c.self_hosted_usd_per_mtok),
        usd(c.cloud_usd)
    );
    println!(
        "  break-even at {} tokens a month; above it, owning is cheaper",
        tokens(c.break_even_tokens_per_month)
    );
}

pub(super) fn hardware(catalog: &Catalog, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(catalog.devices())?);
        return Ok(());
    }
    println!(
        "{:<12} {:>4} {:>8} {:>9} {:>9} {:>9} {:>7} {:>9}  description",
        "name", "kind", "mem GB", "GB/s", "fp16 TF", "int8 TO", "W", "USD"
    );
    for d in catalog.devices() {
        println!(
            "{:<12} {:>4} {:>8.1} {:>9.0} {:>9.2} {:>9.2} {:>7.0} {:>9.0}  {}",
            d.name,
            format!("{:?}", d.kind).to_lowercase(),
            d.memory_gb,
            d.bandwidth_gb_s,
            d.fp16_tflops,
            d.int8_tops,
            d.power_w,
            d.price_usd,
            d.description
        );
    }
    Ok(())
}

/// Devices and weight types of the sizing table.
const SIZING_DEVICES: &[&str] = &["a100-40gb", "a100-80gb", "h100-80gb", "rtx-4090"];
const SIZING_TYPES: &[&str] = &["F16", "Q8_0", "Q4_K_M"];
const SIZING_MODELS: &[&str] = &["llama-7b", "llama-13b", "llama-70b"];

#[derive(Serialize)]
struct SizingCell {
    model: String,
    weight_type: String,
    weights_gb: f64,
    device: String,
    /// Fewest devices that hold it (4k context, one sequence).
    devices: Option<u32>,
    decode_tps: Option<f64>,
    prefill_tps: Option<f64>,
}

/// The seeds' sizing table: each preset class at each weight type, on each
/// GPU class, for one 4k-token sequence with typical efficiency.
pub(super) fn sizing(catalog: &Catalog, json: bool) -> Result<()> {
    let mut cells = Vec::new();
    for name in SIZING_MODELS {
        for ty in SIZING_TYPES {
            let shape = plan::model::preset(name).expect("a known preset");
            let model = Model::from_shape(name, shape, ty)?;
            for dev in SIZING_DEVICES {
                let device = catalog.get(dev)?.clone();
                let request = Request {
                    model: model.clone(),
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
                        min_stream_tps: 0.0,
                    },
                    kv_type: KvType::F16,
                    // One sequence: the layout changes nothing.
                    kv_layout: plan::KvLayout::Unified,
                    cost: plan::CostInputs::default(),
                };
                let planned = plan::plan(&request, catalog).ok();
                cells.push(SizingCell {
                    model: name.to_string(),
                    weight_type: ty.to_string(),
                    weights_gb: model.weight_bytes as f64 / 1e9,
                    device: dev.to_string(),
                    devices: planned.as_ref().map(|p| p.devices),
                    decode_tps: planned.as_ref().map(|p| p.speed.decode_tps_single),
                    prefill_tps: planned.as_ref().map(|p| p.speed.prefill_tps),
                });
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&cells)?);
        return Ok(());
    }
    print!("{:<10} {:<7} {:>8}", "model", "type", "weights");
    for dev in SIZING_DEVICES {
        print!(" {:>18}", dev);
    }
    println!();
    for row in cells.chunks(SIZING_DEVICES.len()) {
        print!(
            "{:<10} {:<7} {:>5.1} GB",
            row[0].model, row[0].weight_type, row[0].weights_gb
        );
        for cell in row {
            let text = match (cell.devices, cell.decode_tps) {
                (Some(n), Some(tps)) => format!("{n}× {tps:.0} tok/s"),
                _ => "> 8 devices".to_string(),
            };
            print!(" {text:>18}");
        }
        println!();
    }
    println!("\n(4k context, one sequence, decode at 640 tokens deep; typical efficiency: 75% of bandwidth)");
    Ok(())
}
