//! Serving many users over HTTP: metrics, readiness, backpressure, timeouts
//! and hang-ups, each on its own engine so its counters are its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Engine, EngineConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use server::{AppState, ServedModel, ServerOptions};
use types::TextGenerator;

struct Served {
    base: String,
    engine: Arc<Engine>,
    state: Arc<AppState>,
}

async fn start(config: EngineConfig) -> Served {
    let config = EngineConfig {
        threads: 2,
        ctx_size: Some(1024),
        ..config
    };
    let engine = tokio::task::spawn_blocking(move || {
        Arc::new(Engine::load(&testkit::default_model(), &config).expect("load model"))
    })
    .await
    .unwrap();
    let state = AppState::with_metrics(vec![ServedModel {
        id: "smollm2".into(),
        aliases: vec![],
        created: 1,
        generator: engine.clone(),
        info: None,
    }]);
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = server::router(Arc::clone(&state), &ServerOptions::default());
    tokio::spawn(async move {
        server::serve(listener, app, std::future::pending())
            .await
            .unwrap()
    });
    Served {
        base,
        engine,
        state,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn chat(text: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn post(base: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// The value of one sample line in the exposition, e.g. `name{model="smollm2"}`.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_stream_frees_its_sequence() {
    let s = start(EngineConfig::default()).await;
    let body = chat(
        "Write a very long story.",
        json!({"stream": true, "ignore_eos": true, "max_tokens": 900}),
    );
    let mut resp = post(&s.base, &body).await;
    let _ = resp.chunk().await.unwrap();
    let _ = resp.chunk().await.unwrap();
    assert_eq!(s.engine.load().running, 1);
    drop(resp);
    assert!(eventually(Duration::from_secs(10), || s.engine.load().running == 0).await);
    let generated = s.engine.load().generation_tokens_total;
    assert!(generated < 900, "stopped early, after {generated} tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_latency_histograms_load_gauges_and_counters() {
    let s = start(EngineConfig::default()).await;
    for q in ["Name a fruit.", "Name a colour."] {
        let resp = post(
            &s.base,
            &chat(q, json!({"max_tokens": 8, "ignore_eos": true})),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let m = r#"{model="smollm2"}"#;
    // Scraped once, right after the replies: a request is counted before its
    // caller hears the end of it (regressions: models.rs missed the second
    // request's latency, and this test the last step's tokens).
    let resp = client()
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    let get = |name: &str| {
        sample(&text, &format!("{name}{m}")).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(get("hearth_time_to_first_token_seconds_count"), 2.0);
    assert_eq!(get("hearth_inter_token_latency_seconds_count"), 14.0);
    assert_eq!(get("hearth_e2e_request_latency_seconds_count"), 2.0);
    assert_eq!(get("hearth_request_generation_tokens_sum"), 16.0);
    assert_eq!(get("hearth_generation_tokens_total"), 16.0);
    assert_eq!(get("hearth_num_requests_running"), 0.0);
    assert_eq!(get("hearth_num_requests_waiting"), 0.0);
    assert_eq!(get("hearth_kv_cache_usage_perc"), 0.0);
    assert!(get("hearth_prefix_cache_tokens") > 0.0);
    assert!(get("hearth_prefix_cache_queries_total") > get("hearth_prefix_cache_hits_total"));
    let finished = r#"hearth_requests_finished_total{model="smollm2",finished_reason="length"}"#;
    assert_eq!(sample(&text, finished), Some(2.0));
    let ok = sample(&text, r#"hearth_http_responses_total{status="200"}"#).unwrap();
    assert!(
        ok >= 2.0,
        "the two completions and the scrapes before this one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after_and_recovers() {
    let s = start(EngineConfig {
        max_running: 1,
        max_queue: 2,
        ..EngineConfig::default()
    })
    .await;
    let long = chat(
        "Write a long story.",
        json!({"max_tokens": 64, "ignore_eos": true}),
    );
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let (base, body) = (s.base.clone(), long.clone());
            tokio::spawn(async move {
                let resp = post(&base, &body).await;
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (resp.status(), retry, resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for send in sends {
        let (status, retry, body) = send.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                let secs: u32 = retry.expect("Retry-After").parse().unwrap();
                assert!((1..=60).contains(&secs));
                assert_eq!(body["error"]["code"], "server_overloaded");
                assert_eq!(body["error"]["type"], "rate_limit_error");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // Whatever the engine had admitted when the burst arrived, the two
    // queue places were taken and everything beyond was refused.
    assert!(ok >= 2, "at least the queued ones are served ({ok})");
    assert!(refused >= 1);
    assert_eq!(ok + refused, 8);
    assert_eq!(s.engine.load().rejected_total, refused);
    let after = post(&s.base, &chat("Say hi.", json!({"max_tokens": 4}))).await;
    assert_eq!(after.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_turns_off_while_draining_and_new_work_is_refused() {
    let s = start(EngineConfig::default()).await;
    let ready = |base: String| async move {
        client()
            .get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(ready(s.base.clone()).await, StatusCode::OK);
    s.state.start_draining();
    assert_eq!(ready(s.base.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
    let resp = post(&s.base, &chat("Say hi.", json!({"max_tokens": 4}))).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = client()
        .get(format!("{}/health", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "still alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_ends_it_with_408_and_frees_its_cells() {
    let s = start(EngineConfig::default()).await;
    let busy = chat(
        "Write a long story.",
        json!({"max_tokens": 300, "ignore_eos": true}),
    );
    let base = s.base.clone();
    let background = tokio::spawn(async move { post(&base, &busy).await.status() });
    let long = "Every ledger lists the date, the sender and the receiver. ".repeat(60);
    let resp = post(
        &s.base,
        &chat(
            &long,
            json!({"timeout": 1, "max_tokens": 300, "ignore_eos": true}),
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout");
    assert_eq!(body["error"]["param"], "timeout");
    assert_eq!(background.await.unwrap(), StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(5), || {
            let l = s.engine.load();
            l.running == 0 && l.kv_active_cells == 0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_and_timeout_fields_are_checked() {
    let s = start(EngineConfig::default()).await;
    for (extra, param) in [
        (json!({"priority": "urgent"}), "priority"),
        (json!({"timeout": 0}), "timeout"),
        (json!({"timeout": -3}), "timeout"),
    ] {
        let resp = post(&s.base, &chat("hi", extra)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    let resp = post(
        &s.base,
        &chat("Say hi.", json!({"priority": "batch", "max_tokens": 4})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_the_prompt_tokens_taken_from_the_prefix_cache() {
    let s = start(EngineConfig::default()).await;
    // Longer than the cache's minimum match, so the second request reuses it.
    let question = "List the planets of the solar system in order from the sun, \
        with one fact about each, and say which of them have rings, which have \
        moons, and which could be seen from Earth without a telescope. "
        .repeat(2);
    let mut cached = Vec::new();
    for _ in 0..2 {
        let resp = post(&s.base, &chat(&question, json!({"max_tokens": 2}))).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        let usage = &body["usage"];
        let prompt = usage["prompt_tokens"].as_u64().unwrap();
        let hit = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or_else(|| panic!("no cached_tokens: {body}"));
        assert!(hit < prompt, "{body}");
        cached.push(hit);
    }
    assert_eq!(cached[0], 0);
    assert!(
        cached[1] >= 64,
        "second request reused {} tokens",
        cached[1]
    );
}
