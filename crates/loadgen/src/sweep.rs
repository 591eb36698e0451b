//! Concurrency sweeps against any OpenAI-compatible endpoint: closed-loop
//! clients, prompt and output lengths fixed or sampled, an optional shared
//! system prompt, and per level the latency percentiles, throughput,
//! goodput under a latency objective and errors, beside the server's own
//! timings of the same requests.
//!
//! Planning the requests and summarising the answers are pure functions;
//! only [`calibrate`] and [`run_level`] talk to the network.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::client::{Answer, Ask, Client, Message};
use crate::stats::Summary;
use crate::text::document;

/// A length in tokens: fixed (`128`) or sampled uniformly from a range
/// (`64-256`, both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lengths {
    pub min: u32,
    pub max: u32,
}

impl Lengths {
    pub fn fixed(n: u32) -> Self {
        Self { min: n, max: n }
    }

    pub fn is_fixed(&self) -> bool {
        self.min == self.max
    }

    fn sample(&self, rng: &mut Rng) -> u32 {
        let span = u64::from(self.max - self.min) + 1;
        self.min + (rng.next() % span) as u32
    }
}

impl fmt::Display for Lengths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_fixed() {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

impl FromStr for Lengths {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let number = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{s}` is not a token count: give N or MIN-MAX"))
        };
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(s)?, number(s)?),
        };
        if min == 0 {
            return Err(format!("`{s}`: lengths start at 1 token"));
        }
        if min > max {
            return Err(format!(
                "`{s}`: the range's lower end is above its upper end"
            ));
        }
        Ok(Self { min, max })
    }
}

/// The latency a request must meet to count towards goodput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// Time to first token, milliseconds.
    pub ttft_ms: f64,
    /// Time per output token after the first, milliseconds.
    pub tpot_ms: f64,
}

/// What a sweep sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sweep {
    /// Clients at each level, each sending its requests one after another.
    pub concurrency: Vec<usize>,
    /// Requests per level [default: three per client, at least 8].
    pub requests: Option<usize>,
    /// Prompt length as the server counts it (chat template included).
    pub prompt_tokens: Lengths,
    pub output_tokens: Lengths,
    /// Let the model stop before `output_tokens` (no `ignore_eos`): for
    /// endpoints that refuse llama.cpp's field, such as cloud APIs. A
    /// shorter answer is then not an error.
    #[serde(default)]
    pub natural_stop: bool,
    /// Tokens of one system prompt every request shares (0: none).
    pub system_prompt_tokens: u32,
    pub objective: Objective,
    /// Seeds the sampled lengths and the texts: the same seed sends the
    /// same requests to every endpoint.
    pub seed: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SweepError {
    #[error("{0}")]
    Invalid(String),
    #[error("{url}: {reason}")]
    Endpoint { url: String, reason: String },
}

/// Most clients one level may run: each is a task and a connection.
pub const MAX_CLIENTS: usize = 4096;

impl Sweep {
    pub fn requests_at(&self, concurrency: usize) -> usize {
        self.requests.unwrap_or((3 * concurrency).max(8))
    }

    /// Checks what can be checked before any request goes out.
    pub fn validate(&self) -> Result<(), SweepError> {
        let bad = |m: &str| Err(SweepError::Invalid(m.to_string()));
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            return bad("--concurrency needs levels of at least 1 client");
        }
        if let Some(&c) = self.concurrency.iter().find(|&&c| c > MAX_CLIENTS) {
            return Err(SweepError::Invalid(format!(
                "--concurrency {c}: at most {MAX_CLIENTS} clients"
            )));
        }
        let most = self.concurrency.iter().copied().max().unwrap_or(1);
        if let Some(n) = self.requests.filter(|&n| n < most) {
            return Err(SweepError::Invalid(format!(
                "--requests {n} cannot keep {most} clients busy: give at least one request each"
            )));
        }
        let positive = |ms: f64| ms.is_finite() && ms > 0.0;
        if !(positive(self.objective.ttft_ms) && positive(self.objective.tpot_ms)) {
            return bad("latency objectives must be positive milliseconds");
        }
        if self.system_prompt_tokens >= self.prompt_tokens.min {
            return bad("the shared system prompt must be shorter than the shortest prompt");
        }
        Ok(())
    }
}

/// How this endpoint counts the workload's text: tokens per word, and the
/// prompt tokens a request has before its own words (chat template, and the
/// shared system prompt when there is one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub tokens_per_word: f64,
    pub base_tokens: u32,
}

/// Words of text for a target number of tokens.
fn words_for(tokens: f64, calibration: &Calibration) -> usize {
    (tokens / calibration.tokens_per_word).round().max(1.0) as usize
}

/// The shared system prompt: the same for every request and endpoint.
fn system_text(sweep: &Sweep, tokens_per_word: f64) -> Option<String> {
    (sweep.system_prompt_tokens > 0).then(|| {
        let words = (f64::from(sweep.system_prompt_tokens) / tokens_per_word)
            .round()
            .max(1.0) as usize;
        format!(
            "You are a records assistant. Reference notes: {}",
            document(sweep.seed ^ 0x5157, words)
        )
    })
}

/// Measures the endpoint's tokens per word with three short requests (one
/// output token each). Token counts then come from the server itself, so
/// the sweep needs no tokenizer and works for any model.
pub async fn calibrate(client: &Client, sweep: &Sweep) -> Result<Calibration, SweepError> {
    let count = |messages: Vec<Message>| async move {
        let answer = client.chat(&Ask::new(messages, 1)).await;
        match (answer.ok(), answer.prompt_tokens) {
            (true, Some(n)) => Ok(f64::from(n)),
            (true, None) => Err("its answers carry no usage.prompt_tokens".to_string()),
            (false, _) => Err(answer.describe_error()),
        }
    };
    let fail = |reason| SweepError::Endpoint {
        url: client.base().to_string(),
        reason,
    };
    const WORDS: usize = 400;
    // As the requests will be: a numbered head, then words.
    let short = count(vec![Message::user("Request 0:")])
        .await
        .map_err(fail)?;
    let long = count(vec![Message::user(format!(
        "Request 0: {}",
        document(7, WORDS)
    ))])
    .await
    .map_err(fail)?;
    let tokens_per_word = ((long - short) / WORDS as f64).max(0.1);
    let base = match system_text(sweep, tokens_per_word) {
        Some(system) => count(vec![Message::system(system), Message::user("Request 0:")])
            .await
            .map_err(fail)?,
        None => short,
    };
    let calibration = Calibration {
        tokens_per_word,
        base_tokens: base as u32,
    };
    if sweep.prompt_tokens.min <= calibration.base_tokens {
        return Err(SweepError::Invalid(format!(
            "a prompt of {} tokens is too short for {}: its chat template{} alone takes {}",
            sweep.prompt_tokens.min,
            client.base(),
            if sweep.system_prompt_tokens > 0 {
                " and the system prompt"
            } else {
                ""
            },
            calibration.base_tokens
        )));
    }
    Ok(calibration)
}

/// One request of a level, and the client that sends it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub client: usize,
    pub ask: Ask,
}

/// The requests of one level, dealt round-robin to its clients. Texts
/// differ between levels, so no level meets another's prompts in a prefix
/// cache; the shared system prompt is the one thing they share.
pub fn plan_level(sweep: &Sweep, calibration: &Calibration, concurrency: usize) -> Vec<Planned> {
    let system = system_text(sweep, calibration.tokens_per_word);
    let mut rng = Rng::new(sweep.seed ^ (concurrency as u64).wrapping_mul(0x9E37_79B9));
    (0..sweep.requests_at(concurrency))
        .map(|i| {
            let prompt = sweep.prompt_tokens.sample(&mut rng);
            let output = sweep.output_tokens.sample(&mut rng);
            let own = f64::from(prompt) - f64::from(calibration.base_tokens);
            let text = document(rng.next(), words_for(own, calibration));
            let mut messages = Vec::with_capacity(2);
            if let Some(system) = &system {
                messages.push(Message::system(system.clone()));
            }
            messages.push(Message::user(format!("Request {i}: {text}")));
            let mut ask = Ask::new(messages, output);
            ask.fixed_length = !sweep.natural_stop;
            Planned {
                client: i % concurrency,
                ask,
            }
        })
        .collect()
}

/// A finished request: what was asked and what came back.
#[derive(Debug, Clone)]
pub struct Done {
    pub client: usize,
    /// The exact length asked for; 0 when the model may stop early.
    pub wanted_tokens: u32,
    pub answer: Answer,
}

/// Runs one level: each client sends its requests back to back; `done` is
/// called as each request ends (a progress bar).
pub async fn run_level(
    client: &Client,
    planned: Vec<Planned>,
    done: &(dyn Fn(&Done) + Sync),
) -> (Vec<Done>, Duration) {
    let clients = planned.iter().map(|p| p.client + 1).max().unwrap_or(0);
    let mut queues: Vec<Vec<Ask>> = vec![Vec::new(); clients];
    for p in planned {
        queues[p.client].push(p.ask);
    }
    let start = Instant::now();
    let runs = queues.into_iter().enumerate().map(|(c, asks)| async move {
        let mut out = Vec::with_capacity(asks.len());
        for ask in asks {
            let answer = client.chat(&ask).await;
            let finished = Done {
                client: c,
                wanted_tokens: if ask.fixed_length { ask.max_tokens } else { 0 },
                answer,
            };
            done(&finished);
            out.push(finished);
        }
        out
    });
    let results = join_all(runs).await.into_iter().flatten().collect();
    (results, start.elapsed())
}

/// Request and token rates of the requests that met the objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    pub requests_per_s: f64,
    pub tokens_per_s: f64,
    /// Share of all requests that met it.
    pub fraction: f64,
}

/// The same level as the server timed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    /// Requests whose answers carried the server's timings.
    pub requests: usize,
    pub ttft_ms: Summary,
    /// Output tokens over the busiest client's span on the server's clocks
    /// (the sum of its requests' server-side durations).
    pub output_tokens_per_s: f64,
    /// Client figure against server figure, in percent (+: the client saw more).
    pub ttft_p50_diff_percent: f64,
    pub output_tokens_per_s_diff_percent: f64,
}

/// One concurrency level's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub concurrency: usize,
    pub requests: usize,
    pub errors: usize,
    /// Errors by kind: `http 429`, `transport`, `short output`, …
    pub error_kinds: BTreeMap<String, usize>,
    pub first_error: Option<String>,
    pub wall_s: f64,
    /// Mean prompt length the server counted.
    pub prompt_tokens_mean: f64,
    pub output_tokens: u64,
    pub output_tokens_per_s: f64,
    pub requests_per_s: f64,
    pub goodput: Goodput,
    pub ttft_ms: Summary,
    pub itl_ms: Summary,
    pub tpot_ms: Summary,
    pub e2e_ms: Summary,
    pub server: Option<ServerView>,
}

fn error_kind(d: &Done) -> Option<String> {
    let a = &d.answer;
    if a.status == 0 {
        return Some("transport".into());
    }
    if a.status != 200 {
        return Some(format!("http {}", a.status));
    }
    if a.error.is_some() {
        return Some("stream error".into());
    }
    // Every request asks for exactly its length (ignore_eos): fewer tokens
    // is a server that stopped early.
    if tokens(a) < u64::from(d.wanted_tokens) {
        return Some("short output".into());
    }
    None
}

fn tokens(a: &Answer) -> u64 {
    u64::from(a.completion_tokens.unwrap_or(a.chunk_ms.len() as u32))
}

/// Time per output token after the first: the span from first to last
/// chunk over the tokens after the first (vLLM's TPOT).
fn tpot_ms(a: &Answer) -> Option<f64> {
    let (first, last) = (a.chunk_ms.first()?, a.chunk_ms.last()?);
    let n = tokens(a);
    (n > 1).then(|| (last - first) / (n - 1) as f64)
}

fn diff_percent(client: f64, server: f64) -> f64 {
    if server > 0.0 {
        (client / server - 1.0) * 100.0
    } else {
        0.0
    }
}

/// Summarises one level's requests, which ran for `wall`.
pub fn summarise(
    concurrency: usize,
    done: &[Done],
    wall: Duration,
    objective: &Objective,
) -> Level {
    let wall_s = wall.as_secs_f64().max(1e-9);
    let mut error_kinds = BTreeMap::new();
    let mut first_error = None;
    let mut good = (0usize, 0u64);
    for d in done {
        match error_kind(d) {
            Some(kind) => {
                *error_kinds.entry(kind).or_insert(0) += 1;
                first_error.get_or_insert_with(|| {
                    if d.answer.ok() {
                        format!(
                            "stopped after {} of {} tokens (finish_reason {})",
                            tokens(&d.answer),
                            d.wanted_tokens,
                            d.answer.finish_reason.as_deref().unwrap_or("none")
                        )
                    } else {
                        d.answer.describe_error()
                    }
                });
            }
            None => {
                let ttft = d.answer.ttft_ms.unwrap_or(f64::INFINITY);
                let tpot = tpot_ms(&d.answer).unwrap_or(0.0);
                if ttft <= objective.ttft_ms && tpot <= objective.tpot_ms {
                    good = (good.0 + 1, good.1 + tokens(&d.answer));
                }
            }
        }
    }
    let ok: Vec<&Answer> = done
        .iter()
        .filter(|d| error_kind(d).is_none())
        .map(|d| &d.answer)
        .collect();
    let output_tokens: u64 = ok.iter().map(|a| tokens(a)).sum();
    let prompts: Vec<f64> = ok
        .iter()
        .filter_map(|a| a.prompt_tokens.map(f64::from))
        .collect();
    let ttft: Vec<f64> = ok.iter().filter_map(|a| a.ttft_ms).collect();
    let itl: Vec<f64> = ok.iter().flat_map(|a| a.inter_chunk_ms()).collect();
    let tpot: Vec<f64> = ok.iter().filter_map(|a| tpot_ms(a)).collect();
    let e2e: Vec<f64> = ok.iter().map(|a| a.total_ms).collect();
    let ttft_ms = Summary::of(&ttft);
    let output_tokens_per_s = output_tokens as f64 / wall_s;
    Level {
        concurrency,
        requests: done.len(),
        errors: done.len() - ok.len(),
        error_kinds,
        first_error,
        wall_s,
        prompt_tokens_mean: mean(&prompts),
        output_tokens,
        output_tokens_per_s,
        requests_per_s: ok.len() as f64 / wall_s,
        goodput: Goodput {
            requests_per_s: good.0 as f64 / wall_s,
            tokens_per_s: good.1 as f64 / wall_s,
            fraction: good.0 as f64 / done.len().max(1) as f64,
        },
        ttft_ms,
        itl_ms: Summary::of(&itl),
        tpot_ms: Summary::of(&tpot),
        e2e_ms: Summary::of(&e2e),
        server: server_view(done, &ttft_ms, output_tokens_per_s),
    }
}

/// The server's account of the level, when every successful answer
/// carried its timings.
fn server_view(done: &[Done], client_ttft: &Summary, client_tps: f64) -> Option<ServerView> {
    let ok: Vec<&Done> = done.iter().filter(|d| error_kind(d).is_none()).collect();
    if ok.is_empty() || ok.iter().any(|d| d.answer.server.is_none()) {
        return None;
    }
    let timed = |d: &Done| d.answer.server.expect("checked above");
    let ttft: Vec<f64> = ok.iter().map(|d| timed(d).ttft_ms).collect();
    // The level lasts as long as its busiest client; on the server's clocks
    // that client was busy for the sum of its requests' durations.
    let mut busy: BTreeMap<usize, f64> = BTreeMap::new();
    for d in &ok {
        *busy.entry(d.client).or_insert(0.0) += timed(d).e2e_ms();
    }
    let span_s = busy.values().copied().fold(0.0, f64::max) / 1e3;
    let tokens: u64 = ok.iter().map(|d| tokens(&d.answer)).sum();
    let ttft_ms = Summary::of(&ttft);
    let tps = if span_s > 0.0 {
        tokens as f64 / span_s
    } else {
        0.0
    };
    Some(ServerView {
        requests: ok.len(),
        ttft_p50_diff_percent: diff_percent(client_ttft.p50, ttft_ms.p50),
        output_tokens_per_s_diff_percent: diff_percent(client_tps, tps),
        ttft_ms,
        output_tokens_per_s: tps,
    })
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// splitmix64. Hand-written rather than `rand`: a recorded sweep must send
/// the same lengths and texts again after a dependency update, and `rand`
/// does not promise its generators' values across versions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ServerTimings;

    fn sweep() -> Sweep {
        Sweep {
            concurrency: vec![1, 4],
            requests: None,
            prompt_tokens: "100-300".parse().unwrap(),
            output_tokens: Lengths::fixed(16),
            natural_stop: false,
            system_prompt_tokens: 0,
            objective: Objective {
                ttft_ms: 500.0,
                tpot_ms: 50.0,
            },
            seed: 1,
        }
    }

    const CAL: Calibration = Calibration {
        tokens_per_word: 1.25,
        base_tokens: 20,
    };

    #[test]
    fn lengths_parse_fixed_and_ranges_and_refuse_nonsense() {
        assert_eq!("128".parse::<Lengths>(), Ok(Lengths::fixed(128)));
        assert_eq!(
            "64-256".parse::<Lengths>(),
            Ok(Lengths { min: 64, max: 256 })
        );
        assert_eq!("64-256".parse::<Lengths>().unwrap().to_string(), "64-256");
        for bad in ["0", "300-100", "x", "5-", ""] {
            assert!(bad.parse::<Lengths>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sampled_lengths_stay_in_range_and_vary() {
        let plan = plan_level(&sweep(), &CAL, 4);
        assert_eq!(plan.len(), 12, "three requests per client");
        let words: Vec<usize> = plan
            .iter()
            .map(|p| p.ask.messages[0].content.split_whitespace().count())
            .collect();
        // 100..=300 tokens less 20 of template, at 1.25 tokens a word,
        // plus the two words of "Request i:".
        assert!(
            words.iter().all(|w| (64 + 2..=224 + 2).contains(w)),
            "{words:?}"
        );
        assert!(
            words.iter().max() > words.iter().min(),
            "lengths were not sampled"
        );
        assert_eq!(
            plan.iter().map(|p| p.client).collect::<Vec<_>>(),
            [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]
        );
    }

    #[test]
    fn a_natural_stop_sends_no_ignore_eos_and_short_answers_are_no_error() {
        assert!(plan_level(&sweep(), &CAL, 1)
            .iter()
            .all(|p| p.ask.fixed_length));
        let mut s = sweep();
        s.natural_stop = true;
        assert!(plan_level(&s, &CAL, 1).iter().all(|p| !p.ask.fixed_length));
        // run_level records a wanted length of 0 for such asks.
        let stopped = answer(0, 100.0, 10.0, 5, None).with_wanted(0);
        let level = summarise(1, &[stopped], Duration::from_secs(1), &s.objective);
        assert_eq!((level.errors, level.output_tokens), (0, 5));
    }

    #[test]
    fn the_same_seed_sends_the_same_requests_and_levels_differ() {
        let text = |c| {
            plan_level(&sweep(), &CAL, c)
                .into_iter()
                .map(|p| p.ask.messages[0].content.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(text(4), text(4));
        assert_ne!(text(4)[0], text(1)[0], "levels would share cached prompts");
    }

    #[test]
    fn a_shared_system_prompt_is_identical_in_every_request() {
        let mut s = sweep();
        s.system_prompt_tokens = 80;
        let plan = plan_level(&s, &CAL, 4);
        let system = &plan[0].ask.messages[0];
        assert_eq!(system.role, "system");
        assert!(plan
            .iter()
            .all(|p| p.ask.messages[0].content == system.content));
        assert_ne!(
            plan[0].ask.messages[1].content,
            plan[1].ask.messages[1].content
        );
    }

    #[test]
    fn bad_sweeps_are_refused_before_any_request() {
        let mut s = sweep();
        s.concurrency = vec![1, 0];
        assert!(s.validate().is_err());
        let mut s = sweep();
        s.system_prompt_tokens = 100;
        assert!(s.validate().is_err(), "system prompt as long as the prompt");
        let mut s = sweep();
        s.requests = Some(0);
        assert!(s.validate().is_err());
        assert_eq!(sweep().validate(), Ok(()));
    }

    fn answer(client: usize, ttft: f64, gap: f64, n: u32, server: Option<(f64, f64)>) -> Done {
        let chunk_ms: Vec<f64> = (0..n).map(|i| ttft + gap * f64::from(i)).collect();
        Done {
            client,
            wanted_tokens: n,
            answer: Answer {
                status: 200,
                ttft_ms: Some(ttft),
                total_ms: chunk_ms.last().copied().unwrap_or(ttft) + 1.0,
                chunk_ms,
                completion_tokens: Some(n),
                prompt_tokens: Some(100),
                server: server.map(|(ttft_ms, decode_ms)| ServerTimings { ttft_ms, decode_ms }),
                ..Answer::default()
            },
        }
    }

    #[test]
    fn goodput_counts_only_requests_within_the_objective() {
        let objective = sweep().objective;
        let done = vec![
            answer(0, 100.0, 10.0, 11, None), // good
            answer(1, 900.0, 10.0, 11, None), // first token too late
            answer(0, 100.0, 80.0, 11, None), // too slow per token
            Done {
                client: 1,
                wanted_tokens: 11,
                answer: Answer {
                    status: 429,
                    error: Some("queue full".into()),
                    ..Answer::default()
                },
            },
            answer(1, 100.0, 10.0, 5, None).with_wanted(11), // stopped early
        ];
        let level = summarise(2, &done, Duration::from_secs(2), &objective);
        assert_eq!(level.requests, 5);
        assert_eq!(level.errors, 2);
        assert_eq!(level.error_kinds["http 429"], 1);
        assert_eq!(level.error_kinds["short output"], 1);
        assert!(level.first_error.as_deref().unwrap().contains("HTTP 429"));
        assert_eq!(level.goodput.requests_per_s, 0.5);
        assert_eq!(level.goodput.tokens_per_s, 5.5);
        assert_eq!(level.goodput.fraction, 0.2);
        assert_eq!(level.output_tokens, 33);
        assert_eq!(level.tpot_ms.p50, 10.0);
        assert!(level.server.is_none(), "no answer carried timings");
    }

    impl Done {
        fn with_wanted(mut self, n: u32) -> Self {
            self.wanted_tokens = n;
            self
        }
    }

    #[test]
    fn the_server_view_uses_the_busiest_clients_span_on_server_clocks() {
        let objective = sweep().objective;
        // Client 0: two requests of 1 s each on the server; client 1: one.
        let done = vec![
            answer(0, 50.0, 10.0, 10, Some((48.0, 952.0))),
            answer(0, 50.0, 10.0, 10, Some((48.0, 952.0))),
            answer(1, 50.0, 10.0, 10, Some((48.0, 952.0))),
        ];
        let level = summarise(2, &done, Duration::from_millis(2100), &objective);
        let server = level.server.expect("every answer was timed");
        assert_eq!(server.requests, 3);
        assert!((server.output_tokens_per_s - 15.0).abs() < 1e-9);
        assert_eq!(server.ttft_ms.p50, 48.0);
        assert!((server.ttft_p50_diff_percent - (50.0 / 48.0 - 1.0) * 100.0).abs() < 1e-9);
        // The client saw 30 tokens in 2.1 s: 5% below the server's 15/s.
        assert!((server.output_tokens_per_s_diff_percent + 4.7619).abs() < 1e-3);
    }
}
