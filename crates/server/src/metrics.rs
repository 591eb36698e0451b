//! Every metric Hearth exports, named in this one module, in Prometheus text format.
//!
//! Names follow vLLM's semantics under the `hearth_` prefix (`docs/metrics.md`
//! maps each one). Labels are the model and bounded enums only. Token-level
//! timings come from the engine through [`GenerationObserver`], never from
//! HTTP middleware; gauges and running totals are read from each generator's
//! [`LoadSnapshot`] at scrape time, so they can never drift from the engine.
//! Each finished request is also logged here, as one structured line.

use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use types::{GenerationObserver, LoadSnapshot, RequestRecord, TextGenerator};

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishLabels {
    model: String,
    finished_reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

type Histograms = Family<ModelLabel, Histogram, fn() -> Histogram>;

/// Seconds, from 1 ms to about 43 minutes, as vLLM's TTFT buckets.
fn first_token_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
    ])
}

/// Seconds between tokens, 10 ms to 80 s, as vLLM's.
fn inter_token_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        20.0, 40.0, 80.0,
    ])
}

/// Whole-request phases in seconds, 10 ms to two hours.
fn phase_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
        50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
    ])
}

/// Tokens per request, 1-2-5 steps up to a million.
fn token_buckets() -> Histogram {
    Histogram::new(
        (0..=6)
            .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
            .take_while(|&v| v <= 1e6),
    )
}

/// The registry and the per-request instruments.
pub struct Metrics {
    registry: Registry,
    ttft: Histograms,
    itl: Histograms,
    e2e: Histograms,
    queue: Histograms,
    prefill: Histograms,
    decode: Histograms,
    prompt_tokens: Histograms,
    generation_tokens: Histograms,
    finished: Family<FinishLabels, Counter>,
    http: Family<StatusLabel, Counter>,
    /// The models whose load is read at each scrape; models come and go
    /// while the server runs (pulled, deleted).
    watched: Watched,
}

type Watched = Arc<RwLock<Vec<(String, Arc<dyn TextGenerator>)>>>;

impl Metrics {
    /// Registers every metric and becomes the observer of each of `models`,
    /// whose load is also read at each scrape.
    pub fn new(models: Vec<(String, Arc<dyn TextGenerator>)>) -> Arc<Self> {
        let mut registry = Registry::default();
        let histograms = |f: fn() -> Histogram| Histograms::new_with_constructor(f);
        let m = Metrics {
            ttft: histograms(first_token_buckets),
            itl: histograms(inter_token_buckets),
            e2e: histograms(phase_buckets),
            queue: histograms(phase_buckets),
            prefill: histograms(phase_buckets),
            decode: histograms(phase_buckets),
            prompt_tokens: histograms(token_buckets),
            generation_tokens: histograms(token_buckets),
            finished: Family::default(),
            http: Family::default(),
            registry: Registry::default(),
            watched: Arc::default(),
        };
        let seconds = Some(Unit::Seconds);
        let timed = [
            ("hearth_time_to_first_token", "Time to first token", &m.ttft),
            (
                "hearth_inter_token_latency",
                "Time between consecutive generated tokens",
                &m.itl,
            ),
            (
                "hearth_e2e_request_latency",
                "Submission to last token",
                &m.e2e,
            ),
            (
                "hearth_request_queue_time",
                "Time waiting before the first admission",
                &m.queue,
            ),
            (
                "hearth_request_prefill_time",
                "Admission to first token",
                &m.prefill,
            ),
            (
                "hearth_request_decode_time",
                "First to last generated token",
                &m.decode,
            ),
        ];
        for (name, help, family) in timed {
            registry.register_with_unit(name, help, seconds.clone().unwrap(), family.clone());
        }
        registry.register(
            "hearth_request_prompt_tokens",
            "Prompt tokens per request",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "hearth_request_generation_tokens",
            "Generated tokens per request",
            m.generation_tokens.clone(),
        );
        registry.register(
            "hearth_requests_finished",
            "Requests ended, by how they ended",
            m.finished.clone(),
        );
        registry.register(
            "hearth_http_responses",
            "HTTP responses by status code",
            m.http.clone(),
        );
        registry.register_collector(Box::new(LoadCollector {
            models: Arc::clone(&m.watched),
        }));
        let metrics = Arc::new(Metrics { registry, ..m });
        for (name, generator) in models {
            metrics.watch(name, generator);
        }
        metrics
    }

    /// Observes `generator`'s requests and reads its load at each scrape,
    /// labelled `name`.
    pub fn watch(self: &Arc<Self>, name: String, generator: Arc<dyn TextGenerator>) {
        generator.set_observer(Arc::new(ModelObserver {
            metrics: Arc::clone(self),
            model: name.clone(),
        }));
        let mut watched = self.watched.write().unwrap_or_else(|e| e.into_inner());
        watched.retain(|(n, _)| *n != name);
        watched.push((name, generator));
    }

    /// Stops reading the load of the model `name` (no longer served).
    pub fn unwatch(&self, name: &str) {
        self.watched
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(n, _)| n != name);
    }

    /// The exposition, Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn record(&self, model: &str, r: &RequestRecord) {
        let label = ModelLabel {
            model: model.to_string(),
        };
        let secs = |ms: f64| ms / 1e3;
        if let Some(ttft) = r.ttft_ms {
            self.ttft.get_or_create(&label).observe(secs(ttft));
        }
        let itl = self.itl.get_or_create(&label);
        for &gap in &r.inter_token_ms {
            itl.observe(secs(gap));
        }
        self.e2e.get_or_create(&label).observe(secs(r.total_ms));
        self.queue.get_or_create(&label).observe(secs(r.queue_ms));
        if let (Some(prefill), Some(decode)) = (r.prefill_ms, r.decode_ms) {
            self.prefill.get_or_create(&label).observe(secs(prefill));
            self.decode.get_or_create(&label).observe(secs(decode));
        }
        self.prompt_tokens
            .get_or_create(&label)
            .observe(f64::from(r.prompt_tokens));
        self.generation_tokens
            .get_or_create(&label)
            .observe(f64::from(r.generated_tokens));
        self.finished
            .get_or_create(&FinishLabels {
                model: model.to_string(),
                finished_reason: r.outcome.as_str().to_string(),
            })
            .inc();
    }
}

struct ModelObserver {
    metrics: Arc<Metrics>,
    model: String,
}

impl GenerationObserver for ModelObserver {
    fn finished(&self, r: &RequestRecord) {
        self.metrics.record(&self.model, r);
        tracing::info!(
            target: "hearth::request",
            request_id = %r.request_id,
            model = %self.model,
            priority = r.priority.as_str(),
            prompt_tokens = r.prompt_tokens,
            cached_tokens = r.cached_tokens,
            generated_tokens = r.generated_tokens,
            queue_ms = r.queue_ms.round() as u64,
            ttft_ms = r.ttft_ms.map(|t| t.round() as u64),
            total_ms = r.total_ms.round() as u64,
            finish_reason = r.outcome.as_str(),
            "request finished"
        );
    }
}

/// Reads every generator's load at scrape time.
struct LoadCollector {
    models: Watched,
}

impl std::fmt::Debug for LoadCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadCollector").finish_non_exhaustive()
    }
}

/// A metric read from a snapshot: name, help, and how to read it.
type Reading<T> = (&'static str, &'static str, fn(&LoadSnapshot) -> T);

const GAUGES: [Reading<f64>; 5] = [
    (
        "hearth_num_requests_running",
        "Requests admitted and generating.",
        |l| f64::from(l.running),
    ),
    (
        "hearth_num_requests_waiting",
        "Requests waiting for admission.",
        |l| f64::from(l.waiting),
    ),
    (
        "hearth_kv_cache_usage_perc",
        "Fraction of the KV pool held by running requests, 0 to 1.",
        LoadSnapshot::kv_usage,
    ),
    (
        "hearth_prefix_cache_tokens",
        "KV cells held only by the prefix cache (evictable).",
        |l| f64::from(l.kv_cached_cells),
    ),
    (
        "hearth_kv_cache_tokens",
        "Size of the KV pool in tokens.",
        |l| f64::from(l.kv_cells),
    ),
];

const COUNTERS: [Reading<u64>; 8] = [
    ("hearth_prompt_tokens", "Prompt tokens admitted.", |l| {
        l.prompt_tokens_total
    }),
    ("hearth_generation_tokens", "Tokens generated.", |l| {
        l.generation_tokens_total
    }),
    (
        "hearth_prefix_cache_queries",
        "Prompt tokens looked up in the prefix cache.",
        |l| l.prefix_query_tokens_total,
    ),
    (
        "hearth_prefix_cache_hits",
        "Prompt tokens found in the prefix cache.",
        |l| l.prefix_hit_tokens_total,
    ),
    (
        "hearth_prefix_cache_requests",
        "Requests looked up in the prefix cache.",
        |l| l.prefix_queries_total,
    ),
    (
        "hearth_prefix_cache_evictions",
        "Cached prefixes evicted for room.",
        |l| l.prefix_evictions_total,
    ),
    (
        "hearth_num_preemptions",
        "Running requests paused for priority or memory.",
        |l| l.preemptions_total,
    ),
    (
        "hearth_requests_rejected",
        "Requests refused with 429 because the wait queue was full.",
        |l| l.rejected_total,
    ),
];

impl Collector for LoadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let models = self
            .models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let loads: Vec<(ModelLabel, LoadSnapshot)> = models
            .iter()
            .map(|(name, g)| {
                (
                    ModelLabel {
                        model: name.clone(),
                    },
                    g.load(),
                )
            })
            .collect();
        for (name, help, read) in GAUGES {
            per_model(&mut encoder, name, help, &loads, |l| {
                ConstGauge::new(read(l))
            })?;
        }
        for (name, help, read) in COUNTERS {
            per_model(&mut encoder, name, help, &loads, |l| {
                ConstCounter::new(read(l))
            })?;
        }
        Ok(())
    }
}

/// One metric family with a sample per model.
fn per_model<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    loads: &[(ModelLabel, LoadSnapshot)],
    metric: impl Fn(&LoadSnapshot) -> M,
) -> Result<(), std::fmt::Error> {
    let kind = metric(&LoadSnapshot::default()).metric_type();
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (label, load) in loads {
        metric(load).encode(family.encode_family(label)?)?;
    }
    Ok(())
}

/// `GET /metrics`.
pub async fn exposition(State(app): State<Arc<AppState>>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        app.metrics.render(),
    )
        .into_response()
}

/// Counts every response of the routes it wraps by status code.
pub async fn count_responses(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    app.metrics
        .http
        .get_or_create(&StatusLabel {
            status: response.status().as_u16().to_string(),
        })
        .inc();
    response
}
