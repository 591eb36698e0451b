//! A real Prometheus scrapes a real `hearth serve` under load; its query API
//! must then hold TTFT and inter-token histograms and a KV usage in [0, 1].

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

mod support;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn prometheus_binary() -> Option<PathBuf> {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_hearth() -> (support::Server, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.env("HEARTH_HOME", testkit::hearth_home())
        .env_remove("HEARTH_CONFIG")
        .args([
            "serve",
            "--port",
            "0",
            "--threads",
            "2",
            "--ctx-size",
            "1024",
        ]);
    support::spawn_server(cmd)
}

fn get(url: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .get(url)
        .send()
        .unwrap()
}

fn query(prom: &str, q: &str) -> Vec<Value> {
    let url =
        reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", q)]).unwrap();
    let body: Value = get(url.as_str()).json().unwrap();
    assert_eq!(body["status"], "success", "{body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

#[test]
fn prometheus_scrapes_latency_histograms_and_kv_usage_under_load() {
    let Some(prometheus) = prometheus_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs Prometheus (scripts/prereqs.sh); it is missing"
        );
        eprintln!(
            "SKIPPED: Prometheus is not installed (Debian package `prometheus`; \
             scripts/prereqs.sh installs it)"
        );
        return;
    };
    testkit::default_model();
    let (_hearth, base) = start_hearth();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&format!("{base}/ready")).status() != 200 {
        assert!(Instant::now() < deadline, "hearth never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let dir = tempfile::tempdir().unwrap();
    let target = base.trim_start_matches("http://");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hearth\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let prom = format!("http://127.0.0.1:{port}");
    let _prometheus = support::Server::new(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    // Load: eight concurrent streams for a few seconds of scrapes.
    let load: Vec<_> = (0..8)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let body = json!({
                    "messages": [{"role": "user", "content": format!("Tell story number {i}.")}],
                    "max_tokens": 200, "ignore_eos": true, "temperature": 0,
                });
                let resp = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap()
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&body)
                    .send()
                    .unwrap();
                assert_eq!(resp.status(), 200);
            })
        })
        .collect();
    for l in load {
        l.join().unwrap();
    }

    // Wait for Prometheus to have scraped the finished requests.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ttft = loop {
        let up = query(&prom, "up{job=\"hearth\"}");
        let ttft = query(
            &prom,
            "hearth_time_to_first_token_seconds_count{model=\"smollm2\"}",
        );
        if up.first().map(value) == Some(1.0) && ttft.first().map(value) == Some(8.0) {
            break ttft;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the requests: up={up:?} ttft={ttft:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(ttft[0]["metric"]["model"], "smollm2");

    let itl_buckets = query(
        &prom,
        "hearth_inter_token_latency_seconds_bucket{model=\"smollm2\"}",
    );
    assert!(itl_buckets.len() > 5, "{itl_buckets:?}");
    let itl_count = query(
        &prom,
        "hearth_inter_token_latency_seconds_count{model=\"smollm2\"}",
    );
    assert_eq!(value(&itl_count[0]), 8.0 * 199.0);
    let p99 = query(
        &prom,
        "histogram_quantile(0.99, sum by (le) (hearth_inter_token_latency_seconds_bucket{model=\"smollm2\"}))",
    );
    let p99 = value(&p99[0]);
    assert!(p99 > 0.0 && p99.is_finite(), "ITL p99 {p99}");

    let kv = query(
        &prom,
        "max_over_time(hearth_kv_cache_usage_perc{model=\"smollm2\"}[5m])",
    );
    let kv = value(&kv[0]);
    assert!(kv > 0.0 && kv <= 1.0, "KV usage under load was {kv}");
    let now = value(&query(&prom, "hearth_kv_cache_usage_perc{model=\"smollm2\"}")[0]);
    assert!((0.0..=1.0).contains(&now));
}
