//! The serving workloads, each a function from a client to a JSON report.
//!
//! W1–W5 are the comparison workloads of `bench/serving.sh` (the same
//! requests against Hearth and llama-server); the others exercise Hearth's
//! own behaviour under disconnects, overload, priorities and timeouts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use crate::client::{Answer, Ask, Client, Message};
use crate::stats::Summary;
use crate::text::{document, question};

/// Output tokens per request in every comparison workload.
pub const MAX_TOKENS: u32 = 128;

/// Aggregate figures over a set of answers that ran in `wall`.
fn summarise(answers: &[Answer], wall: Duration) -> Value {
    let tokens: u64 = answers
        .iter()
        .map(|a| u64::from(a.completion_tokens.unwrap_or(a.chunk_ms.len() as u32)))
        .sum();
    let ttft: Vec<f64> = answers.iter().filter_map(|a| a.ttft_ms).collect();
    let itl: Vec<f64> = answers.iter().flat_map(Answer::inter_chunk_ms).collect();
    let errors: Vec<&String> = answers.iter().filter_map(|a| a.error.as_ref()).collect();
    json!({
        "requests": answers.len(),
        "errors": errors.len(),
        "first_error": errors.first(),
        "generated_tokens": tokens,
        "wall_s": wall.as_secs_f64(),
        "aggregate_tokens_per_s": tokens as f64 / wall.as_secs_f64(),
        "ttft_ms": Summary::of(&ttft),
        "itl_ms": Summary::of(&itl),
    })
}

/// `clients` concurrent clients, each sending its asks one after another.
async fn run_clients(client: &Client, per_client: Vec<Vec<Ask>>) -> (Vec<Answer>, Duration) {
    let start = Instant::now();
    let runs = per_client.into_iter().map(|asks| {
        let client = client.clone();
        async move {
            let mut out = Vec::new();
            for ask in asks {
                out.push(client.chat(&ask).await);
            }
            out
        }
    });
    let answers = join_all(runs).await.into_iter().flatten().collect();
    (answers, start.elapsed())
}

/// W1: 16 clients, short distinct prompts, two requests each.
pub async fn w1(client: &Client) -> Value {
    streams(client, 16, 2, 0.0).await
}

/// 64 clients, one short prompt each, sampled at temperature 0.8 with the
/// server's default top-k/top-p/min-p chain: what sampling and
/// detokenising cost per step at 64 streams (`bench/sampling.sh`).
pub async fn streams64(client: &Client) -> Value {
    streams(client, 64, 1, 0.8).await
}

/// `clients` clients with short distinct prompts, `each` requests apiece.
async fn streams(client: &Client, clients: usize, each: usize, temperature: f32) -> Value {
    let asks = (0..clients)
        .map(|c| {
            (0..each)
                .map(|r| {
                    let mut ask = Ask::new(vec![Message::user(question(c * each + r))], MAX_TOKENS);
                    ask.temperature = temperature;
                    ask
                })
                .collect()
        })
        .collect();
    let (answers, wall) = run_clients(client, asks).await;
    summarise(&answers, wall)
}

/// About 1,000 tokens of an organisation's standing instructions.
pub fn system_prompt() -> String {
    format!(
        "You are the records assistant of a regional archive. Use the reference notes below. {}",
        document(42, 760)
    )
}

/// W2: 16 clients share one system prompt, each asking its own questions.
pub async fn w2(client: &Client) -> Value {
    let system = system_prompt();
    let asks = (0..16)
        .map(|c| {
            (0..2)
                .map(|r| {
                    Ask::new(
                        vec![Message::system(&system), Message::user(question(c * 2 + r))],
                        MAX_TOKENS,
                    )
                })
                .collect()
        })
        .collect();
    let (answers, wall) = run_clients(client, asks).await;
    let mut out = summarise(&answers, wall);
    // Each client's first question meets a cold server; its second one
    // meets whatever the first left cached. Separately, the two regimes
    // show what the overall median mixes.
    let ttft = |skip: usize| -> Vec<f64> {
        answers
            .iter()
            .skip(skip)
            .step_by(2)
            .filter_map(|a| a.ttft_ms)
            .collect()
    };
    out["ttft_ms_first_question"] = json!(Summary::of(&ttft(0)));
    out["ttft_ms_second_question"] = json!(Summary::of(&ttft(1)));
    out
}

/// W3: 12 clients stream short prompts for `secs`, while a new unique
/// ~2,000-token prompt arrives every 3 s.
pub async fn w3(client: &Client, secs: u64) -> Value {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let next = Arc::new(AtomicUsize::new(0));
    let streams = (0..12).map(|_| {
        let (client, next) = (client.clone(), Arc::clone(&next));
        async move {
            let mut out = Vec::new();
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::Relaxed);
                out.push(
                    client
                        .chat(&Ask::new(vec![Message::user(question(i))], MAX_TOKENS))
                        .await,
                );
            }
            out
        }
    });
    let longs = (0..secs / 3).map(|i| {
        let client = client.clone();
        async move {
            tokio::time::sleep_until((start + Duration::from_secs(3 * i)).into()).await;
            let ask = Ask::new(
                vec![Message::user(format!(
                    "Summarise this record in one line: {}",
                    document(1000 + i, 1500)
                ))],
                16,
            );
            client.chat(&ask).await
        }
    });
    let (streams, longs) = tokio::join!(join_all(streams), join_all(longs));
    let streams: Vec<Answer> = streams.into_iter().flatten().collect();
    let wall = start.elapsed();
    let long_ttft: Vec<f64> = longs.iter().filter_map(|a| a.ttft_ms).collect();
    json!({
        "streams": summarise(&streams, wall),
        "long_prompts": {
            "requests": longs.len(),
            "errors": longs.iter().filter(|a| !a.ok()).count(),
            "ttft_ms": Summary::of(&long_ttft),
        },
    })
}

/// W4: 8 conversations of 6 turns, each turn re-sending the history.
/// The report keeps each conversation's last prompt for [`w4_cold`].
pub async fn w4(client: &Client) -> Value {
    let runs = (0..8).map(|c| {
        let client = client.clone();
        async move {
            let mut history = Vec::new();
            let mut ttft = Vec::new();
            let mut last_prompt = Vec::new();
            for turn in 0..6 {
                history.push(Message::user(question(c * 6 + turn)));
                last_prompt = history.clone();
                let answer = client.chat(&Ask::new(history.clone(), MAX_TOKENS)).await;
                ttft.push(answer.ttft_ms.unwrap_or(f64::NAN));
                history.push(Message::assistant(answer.text));
            }
            (ttft, last_prompt)
        }
    });
    let results = join_all(runs).await;
    let per_turn: Vec<Summary> = (0..6)
        .map(|t| Summary::of(&results.iter().map(|r| r.0[t]).collect::<Vec<_>>()))
        .collect();
    let last: Vec<Value> = results.iter().map(|r| json!(r.1)).collect();
    json!({"ttft_ms_by_turn": per_turn, "turn6_prompts": last})
}

/// The turn-6 prompts of a [`w4`] report, sent cold, all at once as in W4.
pub async fn w4_cold(client: &Client, w4_report: &Value) -> Value {
    let prompts: Vec<Vec<Message>> = w4_report["turn6_prompts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    p.as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| {
                            let content = m["content"].as_str().unwrap_or_default().to_string();
                            match m["role"].as_str() {
                                Some("assistant") => Message::assistant(content),
                                _ => Message::user(content),
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    let answers = join_all(prompts.into_iter().map(|messages| {
        let client = client.clone();
        async move { client.chat(&Ask::new(messages, MAX_TOKENS)).await }
    }))
    .await;
    let ttft: Vec<f64> = answers.iter().filter_map(|a| a.ttft_ms).collect();
    json!({"ttft_ms": Summary::of(&ttft), "errors": answers.iter().filter(|a| !a.ok()).count()})
}

/// W5: one client; decode speed seen by the client.
pub async fn w5(client: &Client) -> Value {
    let mut rates = Vec::new();
    // Eight requests: one 128-token answer lasts about a second, too short
    // for a median of three to rise above the machine's noise.
    for i in 0..8 {
        let a = client
            .chat(&Ask::new(vec![Message::user(question(i))], MAX_TOKENS))
            .await;
        if let (Some(first), Some(last), Some(n)) =
            (a.chunk_ms.first(), a.chunk_ms.last(), a.completion_tokens)
        {
            rates.push(f64::from(n - 1) * 1e3 / (last - first));
        }
    }
    json!({"decode_tokens_per_s": Summary::of(&rates)})
}

/// Resident and peak memory of a local process, in MiB.
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A gauge's value in a Prometheus exposition.
pub fn gauge(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// 64 concurrent streams, half of which hang up after a few chunks, for
/// `rounds` rounds; after each, the running gauge and the server's memory.
pub async fn disconnect(client: &Client, rounds: usize, pid: Option<u32>) -> Value {
    let mut per_round = Vec::new();
    for round in 0..rounds {
        let answers = join_all((0..64).map(|i| {
            let client = client.clone();
            async move {
                let mut ask = Ask::new(vec![Message::user(question(round * 64 + i))], MAX_TOKENS);
                if i % 2 == 1 {
                    ask.hang_up_after = Some(3);
                }
                client.chat(&ask).await
            }
        }))
        .await;
        let complete = answers
            .iter()
            .filter(|a| !a.hung_up)
            .filter(|a| a.ok() && a.completion_tokens == Some(MAX_TOKENS))
            .count();
        let settled = Instant::now();
        let mut running = f64::NAN;
        while settled.elapsed() < Duration::from_secs(10) {
            running = gauge(
                &client.get_text("/metrics").await,
                "hearth_num_requests_running",
            )
            .unwrap_or(f64::NAN);
            if running == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The engine hands free heap back once it goes idle, just after the
        // gauge drops: read the memory of a settled server.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss, hwm) = pid.map_or((0.0, 0.0), memory_mib);
        per_round.push(json!({
            "completed_of_32": complete,
            "running_after": running,
            "rss_mib": rss,
            "peak_rss_mib": hwm,
        }));
    }
    json!({"rounds": per_round})
}

/// `n` simultaneous requests; counts answers by status.
pub async fn overload(client: &Client, n: usize) -> Value {
    let answers = join_all((0..n).map(|i| {
        let client = client.clone();
        async move {
            client
                .chat(&Ask::new(vec![Message::user(question(i))], 32))
                .await
        }
    }))
    .await;
    let count = |f: &dyn Fn(&Answer) -> bool| answers.iter().filter(|a| f(a)).count();
    let after = client
        .chat(&Ask::new(vec![Message::user(question(0))], 8))
        .await;
    json!({
        "requests": n,
        "ok": count(&|a| a.ok()),
        "status_429": count(&|a| a.status == 429),
        "status_429_with_retry_after": count(&|a| a.status == 429 && a.retry_after.is_some()),
        "status_5xx": count(&|a| a.status >= 500),
        "other": count(&|a| !a.ok() && a.status != 429 && a.status < 500),
        "after_ok": after.ok(),
    })
}

/// Interactive TTFT on an idle server, then while 32 batch streams run for
/// `secs`; and how much batch work completes meanwhile.
pub async fn priority(client: &Client, secs: u64) -> Value {
    let interactive = |i: usize| {
        let mut ask = Ask::new(vec![Message::user(question(i))], 8);
        ask.priority = Some("interactive");
        ask
    };
    let mut idle = Vec::new();
    for i in 0..5 {
        idle.push(
            client
                .chat(&interactive(i))
                .await
                .ttft_ms
                .unwrap_or(f64::NAN),
        );
    }
    let end = Instant::now() + Duration::from_secs(secs);
    let batch = (0..32).map(|c| {
        let client = client.clone();
        async move {
            let mut done = 0usize;
            let mut i = 0;
            while Instant::now() < end {
                let mut ask = Ask::new(vec![Message::user(question(1000 + c * 100 + i))], 128);
                ask.priority = Some("batch");
                if client.chat(&ask).await.ok() {
                    done += 1;
                }
                i += 1;
            }
            done
        }
    });
    let probes = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut busy = Vec::new();
        let mut i = 100;
        while Instant::now() + Duration::from_secs(2) < end {
            busy.push(
                client
                    .chat(&interactive(i))
                    .await
                    .ttft_ms
                    .unwrap_or(f64::NAN),
            );
            i += 1;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        busy
    };
    let (done, busy) = tokio::join!(join_all(batch), probes);
    let idle_s = Summary::of(&idle);
    let busy_s = Summary::of(&busy);
    json!({
        "idle_ttft_ms": idle_s,
        "busy_ttft_ms": busy_s,
        "ratio_p50": busy_s.p50 / idle_s.p50,
        "ratio_max": busy_s.max / idle_s.p50,
        "batch_completed": done.iter().sum::<usize>(),
    })
}

/// A request with `timeout: 1` and a ~2,000-token prompt on a busy server.
pub async fn timeout(client: &Client) -> Value {
    let busy = join_all((0..16).map(|i| {
        let client = client.clone();
        async move {
            client
                .chat(&Ask::new(vec![Message::user(question(i))], 256))
                .await
        }
    }));
    let probe = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut ask = Ask::new(
            vec![Message::user(format!("Summarise: {}", document(7, 1500)))],
            64,
        );
        ask.timeout_secs = Some(1.0);
        let started = Instant::now();
        let answer = client.chat(&ask).await;
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let running = gauge(
            &client.get_text("/metrics").await,
            "hearth_num_requests_running",
        );
        (answer, elapsed, running)
    };
    let (busy, (answer, elapsed, running)) = tokio::join!(busy, probe);
    json!({
        "status": answer.status,
        "error": answer.error,
        "elapsed_ms": elapsed,
        "running_after": running,
        "busy_completed": busy.iter().filter(|a| a.ok()).count(),
    })
}
