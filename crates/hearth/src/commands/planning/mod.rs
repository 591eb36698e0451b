//! `plan`: sizes hardware for a model from the `plan` crate's arithmetic,
//! with this machine described from the operating system and efficiency
//! factors calibrated by measuring it (`--calibrate`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plan::{Catalog, CostInputs, Device, Efficiency, KvType, Model, Request, Workload};
use types::ModelResolver;

use super::{bench, open_store};
use crate::cli::PlanArgs;
use crate::config::Config;

mod render;

pub fn plan(config: &Config, args: &PlanArgs) -> Result<()> {
    let catalog = catalog(config, args)?;
    if args.list_hardware {
        return render::hardware(&catalog, args.json);
    }
    if args.sizing {
        return render::sizing(&catalog, args.json);
    }
    let device = catalog.get(&args.hardware)?.clone();
    if args.calibrate {
        return calibrate(config, &device);
    }
    let kv_type = KvType::parse(&args.kv_type)?;
    let model = model(config, args)?;
    let efficiency = efficiency(config, &device, args.uncalibrated)?;
    let kv_layout = kv_layout(config, &model, &device, args);
    let request = Request {
        model,
        device,
        devices: args.devices,
        workload: Workload {
            context: args.context,
            concurrency: args.concurrency,
            qps: args.qps,
            prompt_tokens: args.prompt_tokens,
            output_tokens: args.output_tokens,
            peak_factor: args.peak_factor,
            min_stream_tps: args.min_stream_tps,
        },
        kv_type,
        kv_layout,
        efficiency,
        cost: CostInputs {
            years: args.cost.years,
            electricity_usd_per_kwh: args.cost.electricity,
            pue: args.cost.pue,
            operations_usd_per_server_year: args.cost.operations,
            cloud_input_usd_per_mtok: args.cost.cloud_input,
            cloud_output_usd_per_mtok: args.cost.cloud_output,
            ..CostInputs::default()
        },
    };
    let planned = plan::plan(&request, &catalog)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&planned)?);
    } else {
        render::plan(&planned);
    }
    Ok(())
}

/// The layout `hearth serve` would take for this workload on `device`,
/// with the same engine settings (`--kv-layout`, `--kv-size`): the
/// engine's own rule, with the device's memory for the machine's. A GPU
/// keeps its cache in its own memory, where the layout changes no cost
/// the plan models.
fn kv_layout(config: &Config, model: &Model, device: &Device, args: &PlanArgs) -> plan::KvLayout {
    if device.kind == plan::Kind::Gpu {
        return plan::KvLayout::Unified;
    }
    let shape = &model.shape;
    let engine = engine::EngineConfig {
        max_running: args.concurrency,
        ..config.engine.clone()
    };
    let kv = engine::ModelKv {
        bytes_per_token: shape.kv_elements_per_layer() * u64::from(shape.layers) * 2,
        recurrent: false,
    };
    let memory = (device.memory_gb * 1e9) as u64;
    match engine::KvPool::choose(&engine, args.context, kv, Some(memory)).stream_cells {
        Some(_) => plan::KvLayout::Streams,
        None => plan::KvLayout::Unified,
    }
}

/// The built-in catalog, this machine as `host`, then the user's file.
fn catalog(config: &Config, args: &PlanArgs) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    catalog.add(host(config.engine.threads));
    if let Some(path) = &args.hardware_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the hardware file {}", path.display()))?;
        catalog.extend_from_toml(&text, &path.display().to_string())?;
    }
    Ok(catalog)
}

/// This machine as the engine uses it: `threads` cores of the CPU the
/// kernel reports, and all of its memory.
fn host(threads: u32) -> Device {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let cpu = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let ghz = field("cpu MHz")
        .and_then(|v| v.parse::<f64>().ok())
        // Some virtual machines report 0 MHz; a zero clock would predict
        // infinite times.
        .filter(|mhz| mhz.is_finite() && *mhz > 0.0)
        .map_or(2.5, |mhz| mhz / 1000.0);
    let avx512 = field("flags").is_some_and(|f| f.split(' ').any(|x| x == "avx512f"));
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(8.0, |kb| kb * 1024.0 / 1e9);
    let isa = if avx512 { "AVX-512" } else { "AVX2" };
    Device::cpu(
        "host",
        &format!("this machine: {cpu}, {threads} threads ({isa}), {memory_gb:.1} GB"),
        threads,
        ghz,
        avx512,
        memory_gb,
        200.0,
    )
}

/// The model to plan for: a preset, a raw shape, or a stored or on-disk
/// GGUF (read without loading it).
fn model(config: &Config, args: &PlanArgs) -> Result<Model> {
    let s = &args.shape;
    if let Some(params) = s.params {
        let (Some(layers), Some(hidden), Some(heads), Some(ffn), Some(vocab)) =
            (s.layers, s.hidden, s.heads, s.ffn, s.vocab)
        else {
            bail!("--params needs --layers, --hidden, --heads, --ffn and --vocab");
        };
        let head_dim = s.head_dim.unwrap_or(hidden / heads.max(1));
        let shape = plan::Shape {
            params,
            layers,
            hidden,
            heads,
            kv_heads: s.kv_heads.unwrap_or(heads),
            head_dim_k: head_dim,
            head_dim_v: head_dim,
            ffn,
            vocab,
            ctx_train: s.ctx_train.unwrap_or(args.context),
            tied_embeddings: false,
            sliding_window: None,
            swa_layers: 0,
        };
        let name = args.model.as_deref().unwrap_or("custom");
        return Ok(Model::from_shape(name, shape, &args.weight_type)?);
    }
    let reference = args.model.as_deref().unwrap_or(store::DEFAULT_MODEL);
    if let Some(shape) = plan::model::preset(reference) {
        return Ok(Model::from_shape(reference, shape, &args.weight_type)?);
    }
    let path = gguf_path(config, reference)?;
    let key = config.store_key()?;
    let headers = store::headers(&path, key.as_deref())?;
    Model::from_gguf(reference, &headers)
        .with_context(|| format!("cannot plan for {}", path.display()))
}

/// A stored model's file, or a path; never pulls.
fn gguf_path(config: &Config, reference: &str) -> Result<PathBuf> {
    let as_path = Path::new(reference);
    if as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    let store = open_store(config)?;
    match store.resolve(reference) {
        Ok(model) => Ok(model.path),
        Err(e) => bail!(
            "{e}; plan takes a stored model, a GGUF file, or a preset ({})",
            plan::model::presets().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Where calibrations are kept: one table per device name.
fn calibration_file(config: &Config) -> PathBuf {
    config.home.join("plan").join("calibration.toml")
}

fn stored_calibrations(config: &Config) -> Result<toml::Table> {
    let path = calibration_file(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e: toml::de::Error| {
            anyhow::anyhow!("cannot parse {}: {}", path.display(), e.message())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The device's stored calibration, else typical factors for its kind.
fn efficiency(config: &Config, device: &Device, uncalibrated: bool) -> Result<Efficiency> {
    if !uncalibrated {
        if let Some(entry) = stored_calibrations(config)?.get(&device.name) {
            let eff: Efficiency = entry.clone().try_into().map_err(|e: toml::de::Error| {
                // TOML's messages span lines; an error here is one.
                let reason = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                anyhow::anyhow!(
                    "the calibration of {} in {} is damaged: {reason}",
                    device.name,
                    calibration_file(config).display()
                )
            })?;
            return Ok(eff);
        }
    }
    Ok(Efficiency::typical(device.kind))
}

/// Depth and batch of calibration's deep-decode measurements: deep enough
/// that attention is a large share of a step (and the cache outgrows the
/// CPU's caches), small enough to take a minute or two.
const CALIBRATION_DEPTH: u32 = 2048;
const CALIBRATION_BATCH: u32 = 4;
/// Tokens each deep measurement decodes: several seconds of decode over
/// its repetitions, so that a shared machine's brief slowdowns average out
/// (32 tokens, 1.4 s in all, once measured 50.7 tok/s where the same
/// point ran at 64-79 in the minutes after).
const CALIBRATION_GEN: u32 = 64;
/// Repetitions of each deep measurement.
const CALIBRATION_REPS: u32 = 4;
/// The read-bound copy's stream: shallow enough that matrices are most of
/// each step.
const READ_DEPTH: u32 = 128;
/// A type whose dot products are cheap enough that one stream waits on
/// its reads, and whose every matrix llama.cpp keeps in that type.
const READ_TYPE: &str = "Q8_0";

/// Measures this machine with `hearth bench` on the default model and
/// stores the factors that make the plan reproduce the measurements.
fn calibrate(config: &Config, device: &Device) -> Result<()> {
    if device.kind != plan::Kind::Cpu {
        bail!(
            "calibration measures this machine's CPU; {} is a GPU (plan it with typical factors)",
            device.name
        );
    }
    let model = super::resolve(config, store::DEFAULT_MODEL)?;
    let key = config.store_key()?;
    let planned = Model::from_gguf(&model.name, &store::headers(&model.path, key.as_deref())?)?;
    eprintln!("measuring prefill and decode of {} ...", model.name);
    let single = bench::single(config, &model, 512, 128, 3)?;
    eprintln!(
        "measuring decode at depth {CALIBRATION_DEPTH}, 1 and {CALIBRATION_BATCH} sequences ..."
    );
    let deep = bench::batched::measure(
        config,
        &model,
        1,
        CALIBRATION_DEPTH,
        CALIBRATION_GEN,
        CALIBRATION_REPS,
    )?;
    let batch = bench::batched::measure(
        config,
        &model,
        CALIBRATION_BATCH,
        CALIBRATION_DEPTH,
        CALIBRATION_GEN,
        CALIBRATION_REPS,
    )?;
    // The default model's Q4_1 stream is bound by its dot products as much
    // as by its reads: a Q8_0 copy's stream measures the bandwidth.
    eprintln!(
        "measuring one stream of {} requantized to {READ_TYPE} ...",
        model.name
    );
    let copy = super::quality::quantize_to_scratch(
        config,
        &open_store(config)?,
        &model,
        READ_TYPE,
        &format!("calibration-{}", model.name),
        true,
    )?;
    let read_model = types::ResolvedModel {
        name: format!("{} as {READ_TYPE}", model.name),
        path: copy.path().to_path_buf(),
        size: std::fs::metadata(copy.path())?.len(),
        sha256: None,
    };
    let read_planned = Model::from_gguf(
        &read_model.name,
        &store::headers(copy.path(), key.as_deref())?,
    )?;
    let read_single = bench::batched::measure(
        config,
        &read_model,
        1,
        READ_DEPTH,
        CALIBRATION_GEN,
        CALIBRATION_REPS,
    )?;
    drop(copy);
    let rate = |r: &bench::Report| r.results[0].mean_tokens_per_second;
    let reads = plan::speed::ReadMeasurement {
        depth: READ_DEPTH + CALIBRATION_GEN / 2,
        tps: rate(&read_single),
    };
    let measured = plan::speed::Measurements {
        pp_tokens: 512,
        pp_tps: single.results[0].mean_tokens_per_second,
        tg_tokens: 128,
        tg_tps: single.results[1].mean_tokens_per_second,
        // Decode runs from the depth to the depth plus its tokens.
        depth: CALIBRATION_DEPTH + CALIBRATION_GEN / 2,
        tg_deep_tps: rate(&deep),
        batch: CALIBRATION_BATCH,
        tg_batch_tps: rate(&batch),
    };
    let source = format!(
        "calibrated with {} ({} threads, {}): pp512 {:.1}, tg128 {:.1}, tg{CALIBRATION_GEN}@d{} {:.1}, x{} {:.1}, {READ_TYPE} @d{READ_DEPTH} {:.1} tok/s",
        model.name,
        config.engine.threads,
        device.description,
        measured.pp_tps,
        measured.tg_tps,
        CALIBRATION_DEPTH,
        measured.tg_deep_tps,
        CALIBRATION_BATCH,
        measured.tg_batch_tps,
        reads.tps,
    );
    let Some(eff) = plan::speed::calibrate(
        &planned,
        device,
        &measured,
        Some((&read_planned, reads)),
        2.0,
        &source,
    ) else {
        bail!("the measurements do not fit the speed model ({source}); nothing was stored");
    };
    let mut table = stored_calibrations(config)?;
    table.insert(device.name.clone(), toml::Value::try_from(&eff)?);
    let path = calibration_file(config);
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    let staged = path.with_extension("toml.tmp");
    std::fs::write(&staged, toml::to_string(&table)?)?;
    std::fs::rename(&staged, &path)?;
    println!(
        "{}: bandwidth {:.3}, compute {:.3}, attention {:.3}, masked cell {:.3}, tiled column {:.3}, single column {:.3}, layer {:.1} µs\n{source}\nstored in {}",
        device.name,
        eff.bandwidth,
        eff.compute,
        eff.attention,
        eff.masked_cell_cost,
        eff.tiled_column_share,
        eff.single_column_share,
        eff.layer_overhead_us,
        path.display()
    );
    Ok(())
}

/// The plan's decode speed of one stream `depth` tokens deep, for a model
/// file on this machine (with its stored calibration when there is one),
/// and where the factors come from: what `verify-deploy` holds speed to.
pub(super) fn predicted_decode(
    config: &Config,
    name: &str,
    path: &Path,
    depth: u32,
) -> Result<(f64, String)> {
    let key = config.store_key()?;
    let model = Model::from_gguf(name, &store::headers(path, key.as_deref())?)
        .with_context(|| format!("cannot plan for {}", path.display()))?;
    let device = host(config.engine.threads);
    let efficiency = efficiency(config, &device, false)?;
    efficiency.validate()?;
    // The engine's cache holds F16 keys and values.
    let tps = plan::speed::decode_tps(
        &model,
        &device,
        &efficiency,
        1,
        depth,
        plan::speed::Cache::unified(KvType::F16.bytes()),
    );
    Ok((tps, efficiency.source))
}
