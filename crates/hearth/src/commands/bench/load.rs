//! `bench --url`: concurrency sweeps against one or two OpenAI-compatible
//! endpoints, level by level in turn, with progress, a table, JSON and a chart.

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use loadgen::sweep::{self, Calibration, Level, Objective, Sweep};
use serde::{Deserialize, Serialize};

use crate::cli::BenchArgs;

/// Everything one run measured; `--from` reads it back.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LoadReport {
    pub endpoints: Vec<EndpointReport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EndpointReport {
    pub label: String,
    pub url: String,
    pub model: String,
    pub sweep: Sweep,
    pub calibration: Calibration,
    pub levels: Vec<Level>,
}

/// Sweeps every `--url`, alternating endpoints at each level so that both
/// meet the machine in the same state.
pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    let sweep = Sweep {
        concurrency: args.concurrency.clone(),
        requests: args.requests,
        prompt_tokens: args.prompt_tokens,
        output_tokens: args.gen_tokens,
        natural_stop: args.natural_stop,
        system_prompt_tokens: args.system_prompt_tokens,
        objective: Objective {
            ttft_ms: args.slo_ttft_ms,
            tpot_ms: args.slo_tpot_ms,
        },
        seed: args.load_seed,
    };
    sweep.validate()?;
    if let Some(dir) = args.chart.as_deref().and_then(std::path::Path::parent) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            bail!(
                "cannot draw the chart: {} is not a directory",
                dir.display()
            );
        }
    }
    if args.url.len() > 2 {
        bail!("--url compares at most two endpoints");
    }
    if !args.label.is_empty() && args.label.len() != args.url.len() {
        bail!(
            "give one --label per --url ({} labels for {} URLs)",
            args.label.len(),
            args.url.len()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(sweep_all(args, &sweep))?;
    finish(&report, args)
}

async fn sweep_all(args: &BenchArgs, sweep: &Sweep) -> Result<LoadReport> {
    let total: usize = sweep
        .concurrency
        .iter()
        .map(|&c| sweep.requests_at(c))
        .sum();
    let bar = progress_bar((total * args.url.len()) as u64);
    let mut endpoints = Vec::new();
    let mut clients = Vec::new();
    for (i, url) in args.url.iter().enumerate() {
        let label = args.label.get(i).cloned().unwrap_or_else(|| host_of(url));
        let probe = loadgen::Client::with_api_key(url, "", args.api_key.as_deref());
        let model = match &args.model {
            Some(m) => m.clone(),
            None => probe
                .models()
                .await
                .map_err(anyhow::Error::msg)?
                .into_iter()
                .next()
                .with_context(|| format!("{url} lists no model; name one"))?,
        };
        let client = loadgen::Client::with_api_key(url, &model, args.api_key.as_deref());
        bar.set_message(format!("{label}: counting tokens"));
        let calibration = sweep::calibrate(&client, sweep).await?;
        endpoints.push(EndpointReport {
            label,
            url: url.clone(),
            model,
            sweep: sweep.clone(),
            calibration,
            levels: Vec::new(),
        });
        clients.push(client);
    }
    for &c in &sweep.concurrency {
        for (endpoint, client) in endpoints.iter_mut().zip(&clients) {
            bar.set_message(format!("{} at concurrency {c}", endpoint.label));
            let planned = sweep::plan_level(sweep, &endpoint.calibration, c);
            let (done, wall) = sweep::run_level(client, planned, &|_| bar.inc(1)).await;
            let level = sweep::summarise(c, &done, wall, &sweep.objective);
            let line = format!(
                "{} c={c}: {:.1} tok/s, TTFT p50 {:.0} ms, {} errors",
                endpoint.label, level.output_tokens_per_s, level.ttft_ms.p50, level.errors
            );
            // A hidden bar (stderr not a terminal) swallows its lines.
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
            endpoint.levels.push(level);
        }
    }
    bar.finish_and_clear();
    Ok(LoadReport { endpoints })
}

/// `--from`: earlier reports, merged, printed and charted again.
pub(crate) fn replay(args: &BenchArgs) -> Result<()> {
    let mut endpoints = Vec::new();
    for path in &args.from {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: LoadReport = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a `hearth bench --url --json` report",
                path.display()
            )
        })?;
        endpoints.extend(report.endpoints);
    }
    finish(&LoadReport { endpoints }, args)
}

/// Prints the report, then draws it: a chart that cannot be written must
/// not cost the measurements.
fn finish(report: &LoadReport, args: &BenchArgs) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", table(report));
    }
    if let Some(path) = &args.chart {
        super::chart::draw(path, report)?;
    }
    Ok(())
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} requests ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// `host:port` of a URL, for a default label.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// One block per endpoint: the client's view, then the server's own.
pub(crate) fn table(report: &LoadReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for e in &report.endpoints {
        let s = &e.sweep;
        let _ = writeln!(
            out,
            "{} ({}, model {}): prompt {} tokens, output {}, shared system prompt {}; \
             goodput: TTFT <= {} ms and TPOT <= {} ms",
            e.label,
            e.url,
            e.model,
            s.prompt_tokens,
            s.output_tokens,
            s.system_prompt_tokens,
            s.objective.ttft_ms,
            s.objective.tpot_ms
        );
        let _ = writeln!(
            out,
            "{:>4} {:>5} {:>4} {:>9} {:>6} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>7} {:>7} | {:>8} {:>9} {:>6} {:>6}",
            "conc", "req", "err", "out tok/s", "req/s", "goodput", "TTFT50", "TTFT90", "TTFT99",
            "ITL50", "ITL99", "E2E50", "E2E99", "srvTTFT50", "srv tok/s", "dTTFT%", "dtok%"
        );
        for l in &e.levels {
            let server = match &l.server {
                Some(v) => format!(
                    "{:>9.0} {:>9.1} {:>+6.1} {:>+6.1}",
                    v.ttft_ms.p50,
                    v.output_tokens_per_s,
                    v.ttft_p50_diff_percent,
                    v.output_tokens_per_s_diff_percent
                ),
                None => format!("{:>9} {:>9} {:>6} {:>6}", "-", "-", "-", "-"),
            };
            let _ = writeln!(
                out,
                "{:>4} {:>5} {:>4} {:>9.1} {:>6.2} {:>7.0}% {:>7.0} {:>7.0} {:>7.0} {:>6.1} {:>6.1} {:>7.0} {:>7.0} | {server}",
                l.concurrency,
                l.requests,
                l.errors,
                l.output_tokens_per_s,
                l.requests_per_s,
                l.goodput.fraction * 100.0,
                l.ttft_ms.p50,
                l.ttft_ms.p90,
                l.ttft_ms.p99,
                l.itl_ms.p50,
                l.itl_ms.p99,
                l.e2e_ms.p50,
                l.e2e_ms.p99,
            );
            if let Some(first) = &l.first_error {
                let kinds: Vec<String> = l
                    .error_kinds
                    .iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect();
                let _ = writeln!(out, "     errors: {}; first: {first}", kinds.join(", "));
            }
        }
        let _ = writeln!(out);
    }
    out.push_str(
        "Times in ms at the client. srv: the server's own timings of the same requests \
         (dTTFT%, dtok%: client against server).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_labels_are_host_and_port() {
        assert_eq!(host_of("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(host_of("https://api.example/v1"), "api.example");
        assert_eq!(host_of("localhost:9"), "localhost:9");
    }
}
