//! Serving many requests with the real model: the shared KV pool, the prefix
//! cache, admission limits, timeouts and cancellation.

use std::time::{Duration, Instant};

use engine::{Engine, EngineConfig, KvLayout};
use types::{
    ChatMessage, GenerateError, GenerationEvent, GenerationRequest, Prompt, Role, SamplingParams,
    TextGenerator,
};

fn load(config: EngineConfig) -> Engine {
    let config = EngineConfig {
        threads: 2,
        ctx_size: Some(1024),
        ..config
    };
    Engine::load(&testkit::default_model(), &config).expect("load default model")
}

fn chat(messages: &[(Role, &str)], max_tokens: u32) -> GenerationRequest {
    let messages = messages
        .iter()
        .map(|(r, t)| ChatMessage::new(*r, *t))
        .collect();
    let mut r = GenerationRequest::new(Prompt::Chat(messages));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(max_tokens);
    r
}

fn text(engine: &Engine, request: GenerationRequest) -> String {
    engine
        .submit(request)
        .unwrap()
        .blocking_collect()
        .unwrap()
        .text
}

/// Polls until `check` holds, for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}

/// Long enough to be shared (more than [`scheduler::MIN_REUSE_TOKENS`]).
const SYSTEM: &str = "You are a careful assistant for a hospital's records office. \
    Answer briefly, in plain English, and never invent facts you were not given. \
    The office keeps admission forms, discharge letters, consent forms and \
    billing records for every ward. Staff ask you where a document is filed, \
    who may see it, and how long it must be kept. When a question concerns a \
    patient, ask for the record number first, and remind the staff member \
    that records leave the office only with a signed request.";

#[test]
fn engines_crowding_the_cpu_take_turns() {
    // Two engines each with a thread per CPU: their decodes take turns
    // (two spinning thread teams on the same cores ran 1.6 times slower
    // than one after the other; bench/two_models.sh).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let crowded = EngineConfig {
        threads: cpus,
        ctx_size: Some(256),
        ..EngineConfig::default()
    };
    let load = || Engine::load(&testkit::default_model(), &crowded).unwrap();
    let (a, b) = (load(), load());
    let before = engine::cpu_turns_taken();
    let answers = std::thread::scope(|s| {
        let runs =
            [&a, &b].map(|e| s.spawn(move || text(e, chat(&[(Role::User, "Count to five.")], 8))));
        runs.map(|r| r.join().unwrap())
    });
    assert!(answers.iter().all(|t| !t.is_empty()), "{answers:?}");
    // At least a prefill and a few decode steps of each, each a turn.
    assert!(
        engine::cpu_turns_taken() >= before + 8,
        "{}",
        engine::cpu_turns_taken() - before
    );
}

#[test]
fn greedy_output_is_the_same_with_and_without_the_prefix_cache() {
    for layout in [KvLayout::Unified, KvLayout::Streams] {
        same_output_with_and_without_the_prefix_cache(layout);
    }
}

/// In streams, a cached stream is taken over in place and cut after the
/// shared prefix; in the unified pool its cells are shared.
fn same_output_with_and_without_the_prefix_cache(layout: KvLayout) {
    let config = EngineConfig {
        kv_layout: layout,
        ..EngineConfig::default()
    };
    let cached = load(config.clone());
    assert_eq!(
        cached.info().stream_cells.is_some(),
        layout == KvLayout::Streams
    );
    let plain = load(EngineConfig {
        prefix_cache: false,
        ..config
    });
    // A shared system prompt, then a second question on top of it.
    let first = [
        (Role::System, SYSTEM),
        (Role::User, "What is the capital of Japan?"),
    ];
    let second = [(Role::System, SYSTEM), (Role::User, "Name a large river.")];
    for turn in [&first[..], &second[..]] {
        let a = text(&cached, chat(turn, 40));
        let b = text(&plain, chat(turn, 40));
        assert_eq!(a, b, "turn {turn:?}");
    }
    let hits = cached.load().prefix_hit_tokens_total;
    assert!(hits >= 64, "the system prompt was reused ({hits} tokens)");
    assert_eq!(plain.load().prefix_hit_tokens_total, 0);

    // A conversation that re-sends its history: the cached prefix ends in
    // the middle of the conversation, inside the first reply.
    let reply = text(&cached, chat(&first, 40));
    let follow_up = [
        (Role::System, SYSTEM),
        (Role::User, "What is the capital of Japan?"),
        (Role::Assistant, reply.as_str()),
        (Role::User, "And of France?"),
    ];
    let before = cached.load().prefix_hit_tokens_total;
    let a = text(&cached, chat(&follow_up, 40));
    let b = text(&plain, chat(&follow_up, 40));
    assert_eq!(a, b);
    let reused = cached.load().prefix_hit_tokens_total - before;
    let prompt = cached.submit(chat(&follow_up, 0)).unwrap().prompt_tokens();
    assert!(
        reused > 40 && reused < u64::from(prompt),
        "reused {reused} of {prompt} prompt tokens"
    );
}

#[test]
fn a_prefix_copied_into_another_stream_answers_as_computed_afresh() {
    let streams = load(EngineConfig {
        kv_layout: KvLayout::Streams,
        ..EngineConfig::default()
    });
    let plain = load(EngineConfig {
        kv_layout: KvLayout::Streams,
        prefix_cache: false,
        ..EngineConfig::default()
    });
    let questions = ["What is the capital of Japan?", "Name a large river."];
    let turns = questions.map(|q| [(Role::System, SYSTEM), (Role::User, q)]);
    // Both at once: the second waits for the first's prefill, then copies
    // the first's stream (still running) into its own and cuts it after the
    // system prompt.
    let first = streams.submit(chat(&turns[0], 40)).unwrap();
    let second = streams.submit(chat(&turns[1], 40)).unwrap();
    let answers = [first, second].map(|g| g.blocking_collect().unwrap().text);
    let hits = streams.load().prefix_hit_tokens_total;
    assert!(hits >= 64, "the system prompt was copied ({hits} tokens)");
    for (turn, answer) in turns.iter().zip(&answers) {
        assert_eq!(*answer, text(&plain, chat(turn, 40)), "{turn:?}");
    }
}

#[test]
fn no_more_than_max_running_sequences_decode_at_once() {
    let e = load(EngineConfig {
        max_running: 2,
        ..EngineConfig::default()
    });
    let handles: Vec<_> = (0..5)
        .map(|i| {
            let mut r = chat(&[(Role::User, &format!("Count to {}.", i + 3))], 24);
            r.ignore_eos = true;
            e.submit(r).unwrap()
        })
        .collect();
    let mut most = 0;
    let mut queued_seen = false;
    let watcher = eventually(Duration::from_secs(60), || {
        let load = e.load();
        most = most.max(load.running);
        queued_seen |= load.waiting > 0;
        load.running == 0 && load.waiting == 0
    });
    assert!(watcher);
    for h in handles {
        assert_eq!(h.blocking_collect().unwrap().usage.completion_tokens, 24);
    }
    assert_eq!(most, 2);
    assert!(queued_seen, "more requests than places: some waited");
}

#[test]
fn a_prompt_longer_than_the_step_budget_is_prefilled_in_chunks() {
    let e = load(EngineConfig {
        step_tokens: 32,
        max_running: 4,
        ..EngineConfig::default()
    });
    let preamble = "The archive holds letters, maps and ledgers from many towns. ".repeat(12);
    let question = format!("{preamble}\nWhat is the capital of Japan?");
    let req = chat(&[(Role::User, &question)], 48);
    let prompt_tokens = e.submit(req.clone()).unwrap().prompt_tokens();
    assert!(prompt_tokens > 4 * 32, "{prompt_tokens} tokens");
    let answer = text(&e, req);
    assert!(answer.contains("Tokyo"), "{answer}");
}

#[test]
fn a_timeout_ends_a_running_request_and_frees_its_cells() {
    let e = load(EngineConfig::default());
    // Keep the engine busy.
    let mut busy = chat(&[(Role::User, "Write a long story.")], 400);
    busy.ignore_eos = true;
    let busy = e.submit(busy).unwrap();
    let long = "Every ledger lists the date, the sender and the receiver. ".repeat(60);
    let mut req = chat(&[(Role::User, &long)], 400);
    req.ignore_eos = true;
    req.timeout = Some(Duration::from_millis(300));
    // 3,600 prompt tokens and 400 more cannot be done in 300 ms here: the
    // deadline, not the end of the work, ends it.
    let err = e.submit(req).unwrap().blocking_collect().unwrap_err();
    assert_eq!(err, GenerateError::Timeout { timeout_ms: 300 });
    drop(busy);
    assert!(eventually(Duration::from_secs(5), || {
        let l = e.load();
        l.running == 0 && l.kv_active_cells == 0
    }));
}

#[test]
fn a_full_queue_refuses_with_a_retry_hint() {
    let e = load(EngineConfig {
        max_running: 1,
        max_queue: 1,
        ..EngineConfig::default()
    });
    let mut long = chat(&[(Role::User, "Write a long story.")], 200);
    long.ignore_eos = true;
    let running = e.submit(long.clone()).unwrap();
    assert!(eventually(Duration::from_secs(5), || e.load().running == 1));
    let queued = e.submit(long.clone()).unwrap();
    match e.submit(long) {
        Err(GenerateError::QueueFull {
            waiting,
            retry_after_secs,
        }) => {
            assert_eq!(waiting, 1);
            assert!((1..=60).contains(&retry_after_secs));
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(e.load().rejected_total, 1);
    drop(queued);

    // Choices are queued all or none: two of three would fit.
    let e2 = load(EngineConfig {
        max_running: 1,
        max_queue: 2,
        ..EngineConfig::default()
    });
    let mut long = chat(&[(Role::User, "Write a long story.")], 200);
    long.ignore_eos = true;
    let busy = e2.submit(long.clone()).unwrap();
    assert!(eventually(Duration::from_secs(5), || e2.load().running == 1));
    let refused = e2.submit_choices(long.clone(), 3);
    assert!(
        matches!(refused, Err(GenerateError::QueueFull { .. })),
        "{refused:?}"
    );
    assert_eq!(e2.load().waiting, 0, "no choice stayed queued");
    let two = e2.submit_choices(long, 2).unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(e2.load().waiting, 2);
    drop((running, busy, two));
}

#[test]
fn dropping_handles_frees_every_sequence_within_a_step() {
    let e = load(EngineConfig::default());
    let mut handles: Vec<_> = (0..8)
        .map(|_| {
            let mut r = chat(&[(Role::User, "Write a very long story.")], 900);
            r.ignore_eos = true;
            e.submit(r).unwrap()
        })
        .collect();
    // Wait until every stream has produced something, then hang up.
    for h in &mut handles {
        match h.blocking_next() {
            Some(GenerationEvent::Text(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(handles);
    assert!(eventually(Duration::from_secs(5), || e.load().running == 0));
    let load = e.load();
    assert_eq!(load.kv_active_cells, 0);
    assert!(
        load.generation_tokens_total < 8 * 900,
        "cancelled long before the end ({} tokens)",
        load.generation_tokens_total
    );
    assert!(load.kv_cached_cells > 0, "their prompts stay cached");
}

/// Forty prompts prefilled in one step: more than 32 sequences, and more than
/// the 63 rows llama.cpp gets per call then, so the step is split, and some
/// prompts straddle two calls. Each answer must still be its own.
#[test]
fn a_step_split_into_several_calls_answers_every_sequence() {
    let e = load(EngineConfig {
        max_running: 40,
        kv_size: Some(8192),
        // Room for every prompt in the first step.
        step_tokens: 2048,
        ..EngineConfig::default()
    });
    let asks = [
        ("France", "Paris"),
        ("Japan", "Tokyo"),
        ("Italy", "Rome"),
        ("Germany", "Berlin"),
        ("England", "London"),
    ];
    let prompt = |country: &str| {
        format!("Answer in one short sentence. What is the capital city of {country}?")
    };
    // Eight times over, so that forty prompts go in at once.
    let handles: Vec<_> = asks
        .iter()
        .cycle()
        .take(asks.len() * 8)
        .map(|(country, _)| {
            e.submit(chat(&[(Role::User, &prompt(country))], 12))
                .unwrap()
        })
        .collect();
    let prompt_rows: u32 = handles.iter().map(|h| h.prompt_tokens()).sum();
    assert!(prompt_rows > 63 * 8, "{prompt_rows} prompt tokens");
    // Each answer is its own question's: a sequence fed from another's
    // rows, or cut off, would name another city or none. Greedy answers are
    // not compared with the same prompt decoded alone: llama.cpp's float
    // sums depend on the batch's shape and a row's place in it, and the
    // first token for "Italy" is such a near tie ("The capital…" against
    // "Italina's capital…", both naming Rome).
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.blocking_collect().unwrap();
        let (country, city) = asks[i % asks.len()];
        assert!(out.text.contains(city), "{country}: {:?}", out.text);
        assert_eq!(
            out.finish_reason,
            types::FinishReason::Stop,
            "{country}: {:?}",
            out.text
        );
    }
}

/// Embeddings run between the steps of running streams: a batch of 40
/// inputs is answered while a long stream is still decoding, the stream
/// still finishes in full, and an input's vector does not depend on the
/// batch it was in.
#[test]
fn embeddings_interleave_with_running_streams() {
    use types::{EmbedInput, EmbeddingRequest};
    let engine = load(EngineConfig::default());
    let mut story = chat(
        &[(Role::User, "Tell me a long story about a lighthouse.")],
        400,
    );
    story.ignore_eos = true;
    let texts: Vec<String> = (0..40)
        .map(|i| format!("Sentence number {i} about ward {}.", i % 7))
        .collect();
    let generation = engine.submit(story).unwrap();
    assert!(eventually(Duration::from_secs(10), || engine
        .load()
        .running
        == 1));
    let batch = EmbeddingRequest::new(texts.iter().cloned().map(EmbedInput::Text).collect());
    let together = engine.embed(batch).unwrap().blocking_wait().unwrap();
    assert_eq!(
        engine.load().running,
        1,
        "the embeddings did not wait for the stream to end"
    );
    let out = generation.blocking_collect().unwrap();
    assert_eq!(out.usage.completion_tokens, 400, "the stream ran in full");
    assert_eq!(together.vectors.len(), 40);
    // Input 17 alone gives the vector it got among 40 (split over batches).
    let single = engine
        .embed(EmbeddingRequest::new(vec![EmbedInput::Text(
            texts[17].clone(),
        )]))
        .unwrap()
        .blocking_wait()
        .unwrap();
    let dot: f32 = single.vectors[0]
        .iter()
        .zip(&together.vectors[17])
        .map(|(a, b)| a * b)
        .sum();
    assert!(dot > 0.999, "cosine {dot}");
    // A caller that stops waiting costs nothing and breaks nothing.
    drop(
        engine
            .embed(EmbeddingRequest::new(vec![EmbedInput::Text("gone".into())]))
            .unwrap(),
    );
    let after = engine
        .embed(EmbeddingRequest::new(vec![EmbedInput::Tokens(vec![
            1, 2, 3,
        ])]))
        .unwrap()
        .blocking_wait()
        .unwrap();
    assert_eq!(after.prompt_tokens, 3);
}
