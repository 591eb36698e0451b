//! `quantize --report`: for each weight type, made from one float source,
//! its size, bits per weight, perplexity and its change against the
//! source, and prefill and decode speed, all measured here; as a table,
//! JSON and an SVG chart.

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use types::ResolvedModel;

use super::{eval_text, perplexity, quantize_into_store, source_digest};
use crate::cli::QuantizeArgs;
use crate::commands::{bench, open_store, resolve};
use crate::config::Config;

#[derive(Serialize)]
struct Row {
    weight_type: String,
    model: String,
    bytes: u64,
    bits_per_weight: f64,
    perplexity: f64,
    std_error: f64,
    /// Against the source's perplexity, percent.
    delta_percent: f64,
    prefill_tps: f64,
    decode_tps: f64,
}

#[derive(Serialize)]
struct Report {
    source: String,
    source_sha256: String,
    source_type: String,
    source_perplexity: f64,
    text: String,
    window: u32,
    scored_tokens: u64,
    threads: u32,
    rows: Vec<Row>,
}

pub(super) fn report(config: &Config, args: &QuantizeArgs) -> Result<()> {
    let source = resolve(config, &args.model)?;
    let key = config.store_key()?;
    let header = store::headers(&source.path, key.as_deref())?.swap_remove(0);
    if !args.allow_requantize {
        if let Some(from) = engine::quantized_weights(&header) {
            bail!(
                "{} is {from}: a report compares types made from one float source (F32, F16 or BF16); \
                 make one (hearth quantize {} --type F16 --allow-requantize) or pass --allow-requantize",
                source.name,
                source.name
            );
        }
    }
    let types = args
        .types
        .iter()
        .map(|t| engine::quantize_type(t))
        .collect::<Result<Vec<_>, _>>()?;
    let source_type = header.quantization().unwrap_or_else(|| "unknown".into());
    let source_sha256 = source_digest(&source)?;
    let (text, label) = eval_text(&args.text)?;
    eprintln!("measuring {} ({source_type}) ...", source.name);
    let base = perplexity(config, &source, &text, &args.text)?;
    let mut rows = Vec::new();
    for ty in types {
        let model = if ty.eq_ignore_ascii_case(&source_type) {
            source.clone()
        } else {
            made(config, args, &source, &source_sha256, ty)?
        };
        eprintln!("measuring {} ({ty}) ...", model.name);
        let ppl = if model.path == source.path {
            base.clone()
        } else {
            perplexity(config, &model, &text, &args.text)?
        };
        let speed = bench::single(config, &model, 512, 128, 3)?;
        rows.push(Row {
            weight_type: ty.to_string(),
            model: model.name.clone(),
            bytes: model.size,
            bits_per_weight: bits_per_weight(config, &model)?,
            perplexity: ppl.perplexity,
            std_error: ppl.std_error,
            delta_percent: (ppl.perplexity / base.perplexity - 1.0) * 100.0,
            prefill_tps: speed.results[0].mean_tokens_per_second,
            decode_tps: speed.results[1].mean_tokens_per_second,
        });
    }
    let report = Report {
        source: source.name.clone(),
        source_sha256,
        source_type,
        source_perplexity: base.perplexity,
        text: label,
        window: base.window,
        scored_tokens: base.scored_tokens,
        threads: config.engine.threads,
        rows,
    };
    if let Some(path) = &args.chart {
        chart(path, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        table(&report);
    }
    Ok(())
}

/// The stored model of `ty` made from this source, made now unless an
/// earlier report made it (same name, same source digest, same type).
fn made(
    config: &Config,
    args: &QuantizeArgs,
    source: &ResolvedModel,
    source_sha256: &str,
    ty: &str,
) -> Result<ResolvedModel> {
    let name = format!("{}-{}", source.name, ty.to_ascii_lowercase());
    let store = open_store(config)?;
    let earlier = store.get(&name)?.and_then(|m| m.manifest.lineage);
    let current = earlier.is_some_and(|l| l.from_sha256 == source_sha256 && l.weight_type == ty);
    if !current {
        quantize_into_store(
            config,
            source,
            source_sha256,
            ty,
            &name,
            args.allow_requantize,
        )?;
    }
    resolve(config, &name)
}

fn table(r: &Report) {
    println!(
        "{} ({}), perplexity {:.4} over {} tokens of {} (windows of {}), {} threads",
        r.source, r.source_type, r.source_perplexity, r.scored_tokens, r.text, r.window, r.threads
    );
    println!(
        "{:<8} {:>10} {:>6} {:>11} {:>8} {:>12} {:>11}",
        "type", "size MB", "bpw", "perplexity", "Δ%", "prefill t/s", "decode t/s"
    );
    for row in &r.rows {
        println!(
            "{:<8} {:>10.1} {:>6.2} {:>11.4} {:>+8.2} {:>12.1} {:>11.1}",
            row.weight_type,
            row.bytes as f64 / 1e6,
            row.bits_per_weight,
            row.perplexity,
            row.delta_percent,
            row.prefill_tps,
            row.decode_tps
        );
    }
}

/// Two panels against bits per weight: perplexity change, and speed.
fn chart(path: &std::path::Path, r: &Report) -> Result<()> {
    use plotters::prelude::*;
    let fail = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(500);
    let bpw = |f: fn(f64, f64) -> f64, start: f64| {
        r.rows.iter().map(|row| row.bits_per_weight).fold(start, f)
    };
    let (x0, x1) = (bpw(f64::min, f64::MAX) - 0.5, bpw(f64::max, 0.0) + 0.5);
    let deltas = r.rows.iter().map(|row| row.delta_percent);
    let y1 = deltas.clone().fold(0.0, f64::max) * 1.15 + 0.5;
    let y0 = deltas.fold(0.0, f64::min) - 0.5;
    let mut quality = ChartBuilder::on(&left)
        .caption(
            format!("Perplexity change, {}", r.source),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| fail(&e))?;
    quality
        .configure_mesh()
        .x_desc("bits per weight")
        .y_desc("perplexity vs source, %")
        .draw()
        .map_err(|e| fail(&e))?;
    quality
        .draw_series(
            r.rows
                .iter()
                .map(|row| Circle::new((row.bits_per_weight, row.delta_percent), 5, BLUE.filled())),
        )
        .map_err(|e| fail(&e))?;
    quality
        .draw_series(r.rows.iter().map(|row| {
            Text::new(
                row.weight_type.clone(),
                (row.bits_per_weight, row.delta_percent + (y1 - y0) * 0.03),
                ("sans-serif", 13),
            )
        }))
        .map_err(|e| fail(&e))?;
    let top = r
        .rows
        .iter()
        .map(|row| row.prefill_tps.max(row.decode_tps))
        .fold(0.0, f64::max)
        * 1.15;
    let mut speed = ChartBuilder::on(&right)
        .caption("Speed on this machine", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(x0..x1, 0.0..top)
        .map_err(|e| fail(&e))?;
    speed
        .configure_mesh()
        .x_desc("bits per weight")
        .y_desc("tokens per second")
        .draw()
        .map_err(|e| fail(&e))?;
    let mut sorted: Vec<&Row> = r.rows.iter().collect();
    sorted.sort_by(|a, b| a.bits_per_weight.total_cmp(&b.bits_per_weight));
    for (label, color, value) in [
        (
            "prefill (pp512)",
            RED,
            (|row: &Row| row.prefill_tps) as fn(&Row) -> f64,
        ),
        ("decode (tg128)", GREEN, |row: &Row| row.decode_tps),
    ] {
        speed
            .draw_series(LineSeries::new(
                sorted.iter().map(|row| (row.bits_per_weight, value(row))),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        speed
            .draw_series(
                sorted
                    .iter()
                    .map(|row| Circle::new((row.bits_per_weight, value(row)), 4, color.filled())),
            )
            .map_err(|e| fail(&e))?;
    }
    speed
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// Tensor data bits over weights, as llama-quantize reports it: the file's
/// header, metadata and vocabulary are not weights.
fn bits_per_weight(config: &Config, model: &ResolvedModel) -> Result<f64> {
    let key = config.store_key()?;
    let headers = store::headers(&model.path, key.as_deref())?;
    let tensors = headers.iter().flat_map(|h| &h.tensors);
    let bytes: u64 = tensors.clone().map(|t| t.n_bytes).sum();
    let weights: u64 = tensors.map(|t| t.n_elements).sum();
    Ok(bytes as f64 * 8.0 / weights.max(1) as f64)
}
