//! `verify-deploy`: after a deploy, the model must still answer a fixed
//! prompt set exactly as recorded (greedy, so any change of weights,
//! quantization, template or engine shows), the file must be the recorded
//! one, and decode must be as fast as the plan says. Drift exits non-zero
//! with a readable diff.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use engine::{Engine, EngineConfig};
use loadgen::TokenChoice;
use serde::{Deserialize, Serialize};
use types::{ChatMessage, GenerationRequest, Prompt, Role, SamplingParams, TextGenerator};

use super::{planning, resolve};
use crate::cli::VerifyDeployArgs;
use crate::config::Config;

/// What the golden set asks when no `--prompts` file is given: facts,
/// arithmetic, code, a list, translation, structure and free text, so
/// that a change anywhere in the vocabulary shows.
const PROMPTS: [&str; 8] = [
    "What is the capital of France?",
    "What is 17 plus 25? Answer with the number.",
    "Write a Python function that returns the square of a number.",
    "List three colours of the rainbow.",
    "Translate 'good morning' into Spanish.",
    "Give a JSON object with the keys name and age for a person called Ada aged 36.",
    "Describe a harbour town at dawn in one sentence.",
    "Why do leaves change colour in autumn?",
];

/// Tokens decoded for the speed check, and the depth the plan is asked
/// about (the middle of that decode).
const SPEED_TOKENS: u32 = 128;

#[derive(Debug, Serialize, Deserialize)]
struct Golden {
    model: String,
    /// SHA-256 of the file the engine loaded (local checks only).
    sha256: Option<String>,
    /// Where it was recorded: `local`, or the deployment's URL.
    recorded_from: String,
    max_tokens: u32,
    /// The server's `system_fingerprint` (`--url`): Hearth's names the
    /// model version, llama-server's its build.
    #[serde(default)]
    fingerprint: Option<String>,
    cases: Vec<Case>,
    /// Single-stream decode measured when recording.
    decode_tps: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Case {
    prompt: String,
    output: String,
    /// Each token with its log-probability and the runner-up, so a later
    /// check can tell a near-tie from a changed model.
    #[serde(default)]
    tokens: Vec<TokenChoice>,
}

/// Log-probabilities asked for per token: the chosen one and the runner-up.
const TOP_LOGPROBS: u32 = 2;

/// How one output compares with its record.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Same,
    /// The outputs part at token `at`, where the two tokens were within
    /// `gap` nats of each other; nothing after it is compared.
    NearTie {
        at: usize,
        gap: f64,
    },
    /// Parted at token `at` (when both have one there), `gap` nats apart
    /// (the larger of the two runs' gaps, when both weighed the other's token).
    Differs {
        at: Option<usize>,
        gap: Option<f64>,
    },
}

/// Compares a deployed answer with its record. The first token where they
/// part decides: a near-tie passes, where each run had the other's token
/// as its runner-up within `margin` nats.
fn compare(recorded: &Case, deployed: &Generated, margin: f64) -> Verdict {
    if recorded.output == deployed.text {
        return Verdict::Same;
    }
    let (rec, dep) = (&recorded.tokens, &deployed.tokens);
    let Some(at) = (0..rec.len().min(dep.len())).find(|&i| rec[i].token != dep[i].token) else {
        // One stopped where the other went on, or a record made before
        // tokens were kept: not a parting that can be weighed.
        return Verdict::Differs {
            at: None,
            gap: None,
        };
    };
    let gap_of = |chosen: &TokenChoice, other: &str| {
        chosen
            .top
            .iter()
            .find(|(t, _)| t == other)
            .map(|(_, lp)| chosen.logprob - lp)
    };
    // Both runs must have found the two close: rounding moves both a
    // little, while a changed model may be torn where the record was sure.
    let gap = match (
        gap_of(&rec[at], &dep[at].token),
        gap_of(&dep[at], &rec[at].token),
    ) {
        (Some(a), Some(b)) => a.max(b),
        _ => f64::INFINITY,
    };
    if gap <= margin {
        Verdict::NearTie { at, gap }
    } else {
        Verdict::Differs {
            at: Some(at),
            gap: gap.is_finite().then_some(gap),
        }
    }
}

/// What the deployment answered.
struct Generated {
    text: String,
    tokens: Vec<TokenChoice>,
    fingerprint: Option<String>,
}

/// One finding of a check.
#[derive(Debug, Serialize)]
struct Report {
    model: String,
    golden: PathBuf,
    outputs_checked: usize,
    outputs_differing: usize,
    /// Outputs that part from the record only at a near-tie.
    near_ties: usize,
    digest_changed: Option<(String, String)>,
    fingerprint_changed: Option<(String, String)>,
    speed: Option<SpeedCheck>,
    passed: bool,
}

#[derive(Debug, Serialize)]
struct SpeedCheck {
    measured_tps: f64,
    expected_tps: f64,
    /// Where the expectation comes from.
    source: String,
    tolerance_percent: f64,
    passed: bool,
}

/// The deployment being checked: a model loaded here, or a server.
enum Target {
    Local {
        engine: Box<Engine>,
        path: PathBuf,
        sha256: String,
    },
    /// A server, and one runtime for every request sent to it.
    Remote(loadgen::Client, tokio::runtime::Runtime),
}

pub fn verify_deploy(config: &Config, args: &VerifyDeployArgs) -> Result<()> {
    // Flags first: a bad one must not cost a model load and a prompt set.
    if !(0.0..100.0).contains(&args.speed_tolerance) {
        bail!(
            "--speed-tolerance {}: give a percentage from 0 to below 100",
            args.speed_tolerance
        );
    }
    if !(args.tie_nats.is_finite() && args.tie_nats >= 0.0) {
        bail!("--tie-nats {}: give zero or more nats", args.tie_nats);
    }
    if let Some(tps) = args.expect_decode_tps {
        if !(tps.is_finite() && tps > 0.0) {
            bail!("--expect-decode-tps {tps}: give a positive speed");
        }
    }
    let name = args.model.as_deref().unwrap_or(store::DEFAULT_MODEL);
    let golden_path = args.golden.clone().unwrap_or_else(|| {
        let file = name.replace(['/', ':'], "_");
        config.home.join("verify").join(format!("{file}.json"))
    });
    if !args.record && !golden_path.exists() {
        bail!(
            "no golden record at {}: record one first with `hearth verify-deploy {name} --record`",
            golden_path.display()
        );
    }
    let target = match &args.url {
        Some(url) => Target::Remote(
            loadgen::Client::with_api_key(url, name, args.api_key.as_deref()),
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        ),
        None => {
            let model = resolve(config, name)?;
            let readable = store::readable(&model.path, config.store_key()?.as_deref())?;
            // Every prompt computed from scratch: a prefix reused from the
            // cache was computed in a batch of another shape, which can move
            // a near-tie of greedy decoding (seen: 1 run in 3 differed).
            let engine_config = EngineConfig {
                prefix_cache: false,
                ..config.engine.clone()
            };
            let sha256 = store::Store::hash_file(readable.path(), &crate::progress::Bar::new())
                .with_context(|| format!("cannot hash {}", model.path.display()))?;
            let engine = super::load_engine(readable, &engine_config)?;
            Target::Local {
                engine: Box::new(engine),
                path: model.path,
                sha256,
            }
        }
    };
    if args.record {
        record(args, name, &golden_path, &target)
    } else {
        check(config, args, name, &golden_path, &target)
    }
}

fn record(args: &VerifyDeployArgs, name: &str, path: &Path, target: &Target) -> Result<()> {
    let prompts: Vec<String> = match &args.prompts {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the prompts in {}", file.display()))?;
            let prompts: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if prompts.is_empty() {
                bail!("{} holds no prompts (one per line)", file.display());
            }
            prompts
        }
        None => PROMPTS.iter().map(|p| p.to_string()).collect(),
    };
    let mut cases = Vec::with_capacity(prompts.len());
    let mut fingerprint = None;
    for prompt in prompts {
        let answer = generate(target, &prompt, args.max_tokens)?;
        fingerprint = fingerprint.or(answer.fingerprint);
        cases.push(Case {
            prompt,
            output: answer.text,
            tokens: answer.tokens,
        });
    }
    let decode_tps = (!args.skip_speed)
        .then(|| decode_speed(target))
        .transpose()?;
    let golden = Golden {
        model: name.to_string(),
        sha256: match target {
            Target::Local { sha256, .. } => Some(sha256.clone()),
            Target::Remote(..) => None,
        },
        recorded_from: args.url.clone().unwrap_or_else(|| "local".into()),
        max_tokens: args.max_tokens,
        fingerprint,
        cases,
        decode_tps,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Written whole and synced beside the record, then renamed over it: an
    // interrupted record leaves the old one, and no partial file behind.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut file, serde_json::to_string_pretty(&golden)?.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "recorded {} outputs of {name}{} in {}",
        golden.cases.len(),
        decode_tps.map_or(String::new(), |t| format!(" and decode at {t:.1} tok/s")),
        path.display()
    );
    Ok(())
}

fn check(
    config: &Config,
    args: &VerifyDeployArgs,
    name: &str,
    path: &Path,
    target: &Target,
) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let golden: Golden = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a verify-deploy record", path.display()))?;
    let mut lines = Vec::new();
    let where_now = args.url.clone().unwrap_or_else(|| "local".into());
    if golden.recorded_from != where_now {
        lines.push(format!(
            "note: recorded from {}, checking {where_now}; batching on a server can change \
             greedy outputs",
            golden.recorded_from
        ));
    }
    let digest_changed = match (target, &golden.sha256) {
        (Target::Local { sha256, .. }, Some(recorded)) if sha256 != recorded => {
            Some((recorded.clone(), sha256.clone()))
        }
        _ => None,
    };
    if let Some((was, now)) = &digest_changed {
        lines.push(format!(
            "model file changed: recorded sha256 {was}, deployed {now}"
        ));
    }
    let (mut differing, mut near_ties) = (0, 0);
    let mut fingerprint = None;
    for (i, case) in golden.cases.iter().enumerate() {
        let answer = generate(target, &case.prompt, golden.max_tokens)?;
        fingerprint = fingerprint.or(answer.fingerprint.clone());
        match compare(case, &answer, args.tie_nats) {
            Verdict::Same => {}
            Verdict::NearTie { at, gap } => {
                near_ties += 1;
                lines.push(format!(
                    "output {} parts from the record at token {} between two near-equal \
                     choices ({gap:.4} nats apart); not compared beyond",
                    i + 1,
                    at + 1
                ));
            }
            Verdict::Differs { at, gap } => {
                differing += 1;
                let how = match (at, gap) {
                    (Some(at), Some(gap)) => {
                        format!(" (from token {}, {gap:.3} nats apart)", at + 1)
                    }
                    (Some(at), None) => format!(" (from token {}, not a runner-up)", at + 1),
                    _ if case.tokens.is_empty() => {
                        " (the record keeps no tokens; record again to tell near-ties)".into()
                    }
                    _ => " (one stopped where the other went on)".into(),
                };
                lines.push(format!(
                    "output {} differs{how} for: {}",
                    i + 1,
                    case.prompt
                ));
                lines.extend(diff(&case.output, &answer.text));
            }
        }
    }
    let fingerprint_changed = match (&golden.fingerprint, fingerprint) {
        (Some(was), Some(now)) if *was != now => Some((was.clone(), now)),
        _ => None,
    };
    if let Some((was, now)) = &fingerprint_changed {
        lines.push(format!(
            "the deployment changed: recorded system_fingerprint {was}, now {now}"
        ));
    }
    let speed = if args.skip_speed {
        None
    } else {
        Some(speed_check(config, args, name, &golden, target)?)
    };
    if let Some(s) = &speed {
        lines.push(format!(
            "decode {:.1} tok/s against {:.1} expected ({}; may be {:.0}% lower): {}",
            s.measured_tps,
            s.expected_tps,
            s.source,
            s.tolerance_percent,
            if s.passed { "ok" } else { "TOO SLOW" }
        ));
    }
    let passed = differing == 0
        && digest_changed.is_none()
        && fingerprint_changed.is_none()
        && speed.as_ref().is_none_or(|s| s.passed);
    let report = Report {
        model: name.to_string(),
        golden: path.to_path_buf(),
        outputs_checked: golden.cases.len(),
        outputs_differing: differing,
        near_ties,
        digest_changed,
        fingerprint_changed,
        speed,
        passed,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for line in &lines {
            println!("{line}");
        }
        println!(
            "{} of {} outputs match the record{}",
            report.outputs_checked - differing,
            report.outputs_checked,
            if near_ties > 0 {
                format!(" ({near_ties} up to a near-tie)")
            } else {
                String::new()
            }
        );
    }
    if !passed {
        bail!(
            "{name} has drifted from {}: {}",
            path.display(),
            [
                (differing > 0).then(|| {
                    format!("{differing} of {} outputs differ", report.outputs_checked)
                }),
                report
                    .digest_changed
                    .as_ref()
                    .map(|_| "the model file changed".into()),
                report
                    .fingerprint_changed
                    .as_ref()
                    .map(|_| "the system fingerprint changed".into()),
                report
                    .speed
                    .as_ref()
                    .filter(|s| !s.passed)
                    .map(|_| "decode is too slow".into()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<String>>()
            .join(", ")
        );
    }
    Ok(())
}

/// A word-level diff a person can read: the shared start once, then what
/// the record says and what the deployment said from the first difference.
fn diff(expected: &str, got: &str) -> Vec<String> {
    let common: usize = expected
        .char_indices()
        .zip(got.chars())
        .take_while(|((_, a), b)| a == b)
        .last()
        .map_or(0, |((i, a), _)| i + a.len_utf8());
    // Back to a word boundary, so neither side starts mid-word.
    let at_boundary = |s: &str| s[common..].chars().next().is_none_or(char::is_whitespace);
    let cut = if at_boundary(expected) || at_boundary(got) {
        common
    } else {
        // After the whitespace character, whatever its width (a no-break
        // space is two bytes).
        expected[..common]
            .char_indices()
            .rfind(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8())
    };
    let show = |s: &str| format!("{:?}", s);
    vec![
        format!("  same:     {}", show(&expected[..cut])),
        format!("  recorded: {}", show(&expected[cut..])),
        format!("  deployed: {}", show(&got[cut..])),
    ]
}

/// One greedy answer to a user message, as the deployment gives it.
fn generate(target: &Target, prompt: &str, max_tokens: u32) -> Result<Generated> {
    match target {
        Target::Local { engine, .. } => {
            let mut req =
                GenerationRequest::new(Prompt::Chat(vec![ChatMessage::new(Role::User, prompt)]));
            req.sampling = SamplingParams::greedy();
            req.max_tokens = Some(max_tokens);
            req.logprobs = Some(TOP_LOGPROBS);
            let out = engine.submit(req)?.blocking_collect()?;
            let tokens = out
                .logprobs
                .iter()
                .map(|t| TokenChoice {
                    token: t.text(),
                    logprob: f64::from(t.logprob),
                    top: t
                        .top
                        .iter()
                        .map(|a| (a.text(), f64::from(a.logprob)))
                        .collect(),
                })
                .collect();
            Ok(Generated {
                text: out.text,
                tokens,
                fingerprint: None,
            })
        }
        Target::Remote(client, runtime) => {
            let mut ask = loadgen::Ask::new(vec![loadgen::Message::user(prompt)], max_tokens);
            ask.fixed_length = false;
            // The answer must not depend on what the server ran before.
            ask.cache_prompt = Some(false);
            ask.top_logprobs = Some(TOP_LOGPROBS);
            let answer = runtime.block_on(client.chat(&ask));
            if !answer.ok() {
                bail!(
                    "{} did not answer: {}",
                    client.base(),
                    answer.describe_error()
                );
            }
            Ok(Generated {
                text: answer.text,
                tokens: answer.tokens,
                fingerprint: answer.fingerprint,
            })
        }
    }
}

/// Decode speed of one stream: the best of two runs of SPEED_TOKENS after
/// a warm-up (the fastest run is the machine's speed; slower ones measure
/// whatever else it was doing).
fn decode_speed(target: &Target) -> Result<f64> {
    let run = || -> Result<f64> {
        match target {
            Target::Local { engine, .. } => {
                let mut req = GenerationRequest::new(Prompt::Text("Once upon a time".into()));
                req.sampling = SamplingParams::greedy();
                req.max_tokens = Some(SPEED_TOKENS);
                req.ignore_eos = true;
                Ok(engine
                    .submit(req)?
                    .blocking_collect()?
                    .timings
                    .decode_tokens_per_second)
            }
            Target::Remote(client, runtime) => {
                let ask = loadgen::Ask::new(
                    vec![loadgen::Message::user(
                        "Tell a long story about a harbour town.",
                    )],
                    SPEED_TOKENS,
                );
                let answer = runtime.block_on(client.chat(&ask));
                let (Some(first), Some(last)) = (answer.chunk_ms.first(), answer.chunk_ms.last())
                else {
                    bail!(
                        "{} streamed no tokens: {}",
                        client.base(),
                        answer.describe_error()
                    );
                };
                let tokens = answer
                    .completion_tokens
                    .unwrap_or(answer.chunk_ms.len() as u32);
                Ok(f64::from(tokens.saturating_sub(1)) / ((last - first) / 1e3).max(1e-9))
            }
        }
    };
    run()?;
    Ok(run()?.max(run()?))
}

/// The speed a deployment must reach: the one given, else for a model
/// loaded here the plan's prediction for this machine, else (a server,
/// whose hardware this node does not know) the speed recorded with it.
fn speed_check(
    config: &Config,
    args: &VerifyDeployArgs,
    name: &str,
    golden: &Golden,
    target: &Target,
) -> Result<SpeedCheck> {
    let (expected_tps, source) = match (args.expect_decode_tps, target) {
        (Some(tps), _) => (tps, "--expect-decode-tps".to_string()),
        (None, Target::Local { path, .. }) => {
            let (tps, source) = planning::predicted_decode(config, name, path, SPEED_TOKENS / 2)?;
            (tps, format!("the plan, {source}"))
        }
        (None, Target::Remote(client, _)) => match golden.decode_tps {
            Some(tps) => (tps, format!("recorded from {}", golden.recorded_from)),
            None => bail!(
                "the record holds no speed for {} (recorded with --skip-speed); give \
                 --expect-decode-tps, or --skip-speed",
                client.base()
            ),
        },
    };
    if !(expected_tps.is_finite() && expected_tps > 0.0) {
        bail!("expected decode speed {expected_tps} tok/s ({source}) is not a positive speed");
    }
    let measured_tps = decode_speed(target)?;
    Ok(SpeedCheck {
        passed: measured_tps >= expected_tps * (1.0 - args.speed_tolerance / 100.0),
        measured_tps,
        expected_tps,
        source,
        tolerance_percent: args.speed_tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(token: &str, logprob: f64, runner_up: (&str, f64)) -> TokenChoice {
        TokenChoice {
            token: token.into(),
            logprob,
            top: vec![(token.into(), logprob), (runner_up.0.into(), runner_up.1)],
        }
    }

    #[test]
    fn a_parting_at_a_near_tie_passes_and_a_real_one_does_not() {
        let record = Case {
            prompt: "p".into(),
            output: "A B".into(),
            tokens: vec![tok("A", -0.1, ("Z", -3.0)), tok(" B", -0.70, (" C", -0.72))],
        };
        let answer = |tokens: Vec<TokenChoice>| Generated {
            text: tokens.iter().map(|t| t.token.as_str()).collect(),
            tokens,
            fingerprint: None,
        };
        let same = answer(record.tokens.clone());
        assert_eq!(compare(&record, &same, 0.25), Verdict::Same);
        // " C" was the record's runner-up, 0.02 nats behind.
        let tie = answer(vec![
            tok("A", -0.1, ("Z", -3.0)),
            tok(" C", -0.69, (" B", -0.71)),
        ]);
        match compare(&record, &tie, 0.25) {
            Verdict::NearTie { at, gap } => assert_eq!((at, (gap * 100.0).round()), (1, 2.0)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            compare(&record, &tie, 0.01),
            Verdict::Differs { at: Some(1), .. }
        ));
        // "Z" at the first token was 2.9 nats behind: a changed model.
        let changed = answer(vec![
            tok("Z", -0.2, ("A", -0.3)),
            tok(" B", -0.7, (" C", -0.8)),
        ]);
        assert!(matches!(
            compare(&record, &changed, 0.25),
            Verdict::Differs { at: Some(0), .. }
        ));
        // A token neither side weighed, and an answer that stops early.
        let unseen = answer(vec![
            tok("A", -0.1, ("Z", -3.0)),
            tok(" Q", -0.5, (" R", -0.6)),
        ]);
        assert_eq!(
            compare(&record, &unseen, 0.25),
            Verdict::Differs {
                at: Some(1),
                gap: None
            }
        );
        let short = answer(vec![tok("A", -0.1, ("Z", -3.0))]);
        assert_eq!(
            compare(&record, &short, 0.25),
            Verdict::Differs {
                at: None,
                gap: None
            }
        );
    }

    #[test]
    fn the_diff_starts_at_the_word_where_the_outputs_part() {
        let lines = diff("The capital is Paris, a city", "The capital is Lyon.");
        assert_eq!(lines[0], r#"  same:     "The capital is ""#);
        assert_eq!(lines[1], r#"  recorded: "Paris, a city""#);
        assert_eq!(lines[2], r#"  deployed: "Lyon.""#);
        // One side a prefix of the other; multi-byte text.
        let lines = diff("café au lait", "café");
        assert_eq!(lines[1], r#"  recorded: " au lait""#);
        assert_eq!(lines[2], r#"  deployed: """#);
    }
}
