//! The scheduler's rules, driven step by step without a model; the prefix
//! cache's rules are in `cache.rs`.

use std::time::{Duration, Instant};

use types::Priority;

use crate::{
    Config, Feed, KvOp, NewRequest, Plan, Rejected, RequestId, Scheduler, Token, CACHE_GRACE,
};

mod cache;
mod streams;

fn config() -> Config {
    Config {
        kv_cells: 1000,
        max_seqs: 16,
        max_running: 4,
        max_queue: 8,
        step_tokens: 64,
        batch_delay: Duration::from_secs(10),
        prefix_cache: true,
        cache_cells: 1000,
        stream_cells: None,
        min_reuse: 1,
        copy_tokens: 0,
        gather: Duration::ZERO,
    }
}

fn sched(config: Config) -> Scheduler {
    Scheduler::new(config).unwrap()
}

fn req(id: RequestId, tokens: impl IntoIterator<Item = Token>) -> NewRequest {
    NewRequest {
        id,
        tokens: tokens.into_iter().collect(),
        priority: Priority::Interactive,
        deadline: None,
        sibling_of: None,
        reuse_prefix: true,
    }
}

fn batch(id: RequestId, tokens: impl IntoIterator<Item = Token>) -> NewRequest {
    NewRequest {
        priority: Priority::Batch,
        ..req(id, tokens)
    }
}

/// Plays the engine: every logits row samples token 7.
fn step(s: &mut Scheduler, now: Instant) -> Plan {
    let plan = s.plan(now);
    for f in plan.feeds.iter().filter(|f| f.logits) {
        s.sampled(f.id, 7);
    }
    s.kv.check();
    plan
}

/// llama.cpp's unified KV cache as far as the scheduler's operations go:
/// cells with a position and the set of sequences holding them.
#[derive(Default)]
struct Llama {
    cells: Vec<(u32, std::collections::BTreeSet<u32>)>,
}

impl Llama {
    /// Applies a plan as the engine does: KV operations in order, then the batch.
    fn run(&mut self, plan: &Plan) {
        for op in &plan.kv_ops {
            match *op {
                KvOp::Share { src, dst, len } => {
                    for (pos, seqs) in &mut self.cells {
                        if *pos < len && seqs.contains(&src) {
                            seqs.insert(dst);
                        }
                    }
                }
                KvOp::Clear { seq } => {
                    for (_, seqs) in &mut self.cells {
                        seqs.remove(&seq);
                    }
                    self.cells.retain(|(_, seqs)| !seqs.is_empty());
                }
                KvOp::Copy { .. } | KvOp::Truncate { .. } => {
                    panic!("a stream operation on a unified pool: {op:?}")
                }
            }
        }
        for f in &plan.feeds {
            let mut held: Vec<u32> = self
                .cells
                .iter()
                .filter(|(_, seqs)| seqs.contains(&f.seq))
                .map(|(pos, _)| *pos)
                .collect();
            held.sort_unstable();
            // llama.cpp checks only that a batch continues a sequence's last
            // position; a sequence that lost its cells would be accepted at
            // any position and compute garbage, so check all of them.
            assert_eq!(
                held,
                (0..f.pos).collect::<Vec<_>>(),
                "request {} fed at {} on seq {}",
                f.id,
                f.pos,
                f.seq
            );
            for i in 0..f.tokens.len() as u32 {
                self.cells.push((f.pos + i, [f.seq].into()));
            }
        }
    }

    fn used(&self) -> u32 {
        self.cells.len() as u32
    }
}

fn fed(plan: &Plan, id: RequestId) -> Option<&Feed> {
    plan.feeds.iter().find(|f| f.id == id)
}

fn started(plan: &Plan) -> Vec<RequestId> {
    plan.started.iter().map(|s| s.id).collect()
}

#[test]
fn invalid_settings_are_refused() {
    for bad in [
        Config {
            kv_cells: 0,
            ..config()
        },
        Config {
            max_running: 0,
            ..config()
        },
        Config {
            max_seqs: 3,
            ..config()
        },
        Config {
            step_tokens: 4,
            ..config()
        },
    ] {
        assert!(Scheduler::new(bad).is_err());
    }
}

#[test]
fn admission_counts_free_cells_not_places() {
    let mut s = sched(Config {
        kv_cells: 100,
        ..config()
    });
    let t = Instant::now();
    s.enqueue(req(1, 0..60), t).unwrap();
    s.enqueue(req(2, 100..160), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![1], "60 + 60 cells do not fit 100");
    assert_eq!(s.load().running, 1);
    assert_eq!(s.load().waiting, 1);
    // Request 1 decodes a while; 2 still waits although places are free.
    for _ in 0..5 {
        assert!(step(&mut s, t).started.is_empty());
    }
    s.finish(1);
    let plan = step(&mut s, t);
    assert_eq!(
        plan.kv_ops.first(),
        Some(&KvOp::Clear { seq: 0 }),
        "the cached entry is evicted to make room"
    );
    assert_eq!(started(&plan), vec![2]);
    assert_eq!(s.load().prefix_evictions_total, 1);
}

#[test]
fn a_prompt_that_can_never_fit_is_refused_up_front() {
    let mut s = sched(Config {
        kv_cells: 50,
        ..config()
    });
    assert_eq!(
        s.enqueue(req(1, 0..50), Instant::now()),
        Err(Rejected::TooLong {
            tokens: 50,
            cells: 50
        })
    );
}

#[test]
fn steps_carry_decodes_first_then_prompt_chunks_within_budget() {
    let mut s = sched(Config {
        step_tokens: 16,
        ..config()
    });
    let t = Instant::now();
    s.enqueue(req(1, 0..5), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(fed(&plan, 1).unwrap().tokens.len(), 5);
    assert!(fed(&plan, 1).unwrap().logits);

    s.enqueue(req(2, 100..140), t).unwrap();
    let mut chunks = Vec::new();
    for _ in 0..3 {
        let plan = step(&mut s, t);
        let total: usize = plan.feeds.iter().map(|f| f.tokens.len()).sum();
        assert!(total <= 16, "a step never exceeds its budget");
        let decode = fed(&plan, 1).expect("the running stream gets its token every step");
        assert_eq!(decode.tokens, vec![7]);
        assert_eq!(plan.feeds[0].id, 1, "decode tokens come first");
        let chunk = fed(&plan, 2).unwrap();
        chunks.push((chunk.pos, chunk.tokens.len(), chunk.logits));
    }
    assert_eq!(
        chunks,
        vec![(0, 15, false), (15, 15, false), (30, 10, true)],
        "the 40-token prompt is prefilled in chunks; only the last wants logits"
    );
}

#[test]
fn at_most_max_running_sequences_run_and_the_rest_wait_in_order() {
    let mut s = sched(config());
    let t = Instant::now();
    for id in 1..=6 {
        s.enqueue(req(id, [id as u32 * 100]), t + Duration::from_millis(id))
            .unwrap();
    }
    let plan = step(&mut s, t + Duration::from_secs(1));
    assert_eq!(started(&plan), vec![1, 2, 3, 4]);
    s.finish(2);
    let plan = step(&mut s, t + Duration::from_secs(1));
    assert_eq!(started(&plan), vec![5]);
}

#[test]
fn a_full_queue_refuses_new_requests_but_not_paused_ones() {
    let mut s = sched(Config {
        max_queue: 2,
        max_running: 1,
        step_tokens: 8,
        ..config()
    });
    let t = Instant::now();
    s.enqueue(batch(1, [1]), t).unwrap();
    step(&mut s, t);
    s.enqueue(req(2, [2]), t).unwrap();
    s.enqueue(req(3, [3]), t).unwrap();
    assert_eq!(
        s.enqueue(req(4, [4]), t),
        Err(Rejected::QueueFull { waiting: 2 })
    );
    assert_eq!(s.load().rejected_total, 1);
    // Request 2 (interactive) pauses batch request 1, which re-enters the
    // queue beyond the bound.
    let plan = step(&mut s, t);
    assert_eq!(plan.preempted, vec![1]);
    assert_eq!(s.load().waiting, 2);
    assert_eq!(s.load().preemptions_total, 1);
}

#[test]
fn interactive_goes_first_but_batch_ages_into_line() {
    let mut s = sched(Config {
        max_running: 1,
        step_tokens: 8,
        ..config()
    });
    let t = Instant::now();
    s.enqueue(req(1, [1]), t).unwrap();
    step(&mut s, t);
    s.enqueue(batch(2, [2]), t).unwrap();
    s.enqueue(req(3, [3]), t + Duration::from_secs(1)).unwrap();
    s.enqueue(req(4, [4]), t + Duration::from_secs(11)).unwrap();
    s.finish(1);
    let now = t + Duration::from_secs(12);
    assert_eq!(
        started(&step(&mut s, now)),
        vec![3],
        "newer interactive first"
    );
    s.finish(3);
    assert_eq!(
        started(&step(&mut s, now)),
        vec![2],
        "batch that waited 10 s ranks with interactive work that arrived then"
    );
    s.finish(2);
    assert_eq!(started(&step(&mut s, now)), vec![4]);
}

#[test]
fn interactive_pauses_the_latest_batch_sequence_which_resumes_from_its_cells() {
    let mut s = sched(Config {
        max_running: 2,
        ..config()
    });
    let t = Instant::now();
    s.enqueue(batch(1, 0..20), t).unwrap();
    s.enqueue(batch(2, 100..120), t + Duration::from_millis(1))
        .unwrap();
    step(&mut s, t);
    for _ in 0..3 {
        step(&mut s, t);
    }
    s.enqueue(req(3, 200..210), t + Duration::from_secs(1))
        .unwrap();
    let plan = step(&mut s, t + Duration::from_secs(1));
    assert_eq!(plan.preempted, vec![2], "the lower-ranked batch request");
    assert_eq!(started(&plan), vec![3]);
    assert!(fed(&plan, 2).is_none());
    assert!(
        fed(&plan, 1).is_none(),
        "the other batch stream skips the interactive prefill step"
    );
    let plan = step(&mut s, t + Duration::from_secs(1));
    assert!(fed(&plan, 1).is_some(), "and then continues");

    s.finish(3);
    let plan = step(&mut s, t + Duration::from_secs(2));
    let resumed = &plan.started[0];
    assert_eq!(resumed.id, 2);
    assert!(resumed.resumed);
    assert_eq!(
        resumed.reused, 23,
        "20 prompt tokens and 3 fed generated ones come back from the cache"
    );
    assert_eq!(
        fed(&plan, 2).unwrap().tokens,
        vec![7],
        "only the pending token"
    );
}

#[test]
fn batch_is_not_paused_for_interactive_work_that_ranks_below_it() {
    let mut s = sched(Config {
        max_running: 1,
        step_tokens: 8,
        ..config()
    });
    let t = Instant::now();
    s.enqueue(batch(1, [1]), t).unwrap();
    step(&mut s, t);
    s.enqueue(req(2, [2]), t + Duration::from_secs(11)).unwrap();
    let plan = step(&mut s, t + Duration::from_secs(11));
    assert!(plan.preempted.is_empty());
    assert!(plan.started.is_empty());
}

#[test]
fn deadlines_end_queued_and_running_requests() {
    let mut s = sched(Config {
        max_running: 1,
        step_tokens: 8,
        ..config()
    });
    let t = Instant::now();
    let with_deadline = |r: NewRequest, d: u64| NewRequest {
        deadline: Some(t + Duration::from_secs(d)),
        ..r
    };
    s.enqueue(with_deadline(req(1, 0..4), 5), t).unwrap();
    s.enqueue(with_deadline(req(2, 10..14), 2), t).unwrap();
    step(&mut s, t);
    let plan = step(&mut s, t + Duration::from_secs(2));
    assert_eq!(plan.expired, vec![2], "queued request timed out");
    let plan = step(&mut s, t + Duration::from_secs(5));
    assert_eq!(plan.expired, vec![1], "running request timed out");
    assert!(plan.feeds.is_empty());
    let load = s.load();
    assert_eq!(
        (load.running, load.waiting, load.kv_active_cells),
        (0, 0, 0)
    );
    assert!(s.is_idle());
}

#[test]
fn under_memory_pressure_the_lowest_ranked_sequence_pauses() {
    let mut s = sched(Config {
        kv_cells: 40,
        max_running: 2,
        step_tokens: 8,
        prefix_cache: false,
        ..config()
    });
    let t = Instant::now();
    s.enqueue(req(1, 0..8), t).unwrap();
    step(&mut s, t);
    s.enqueue(req(2, 100..108), t + Duration::from_millis(1))
        .unwrap();
    step(&mut s, t);
    let mut paused = None;
    for _ in 0..40 {
        let plan = step(&mut s, t);
        if let Some(&id) = plan.preempted.first() {
            paused = Some(id);
            assert!(fed(&plan, 1).is_some(), "the better-ranked one goes on");
            break;
        }
    }
    assert_eq!(paused, Some(2));
    assert_eq!(s.load().waiting, 1);
    s.finish(1);
    // Request 2 resumes; with the cache off its cells were reclaimed, so it
    // recomputes prompt and generated tokens.
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![2]);
}

#[test]
fn random_workloads_keep_the_books_straight() {
    // A small linear congruential generator keeps this deterministic.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut s = sched(Config {
        kv_cells: 300,
        max_seqs: 8,
        max_running: 4,
        max_queue: 6,
        step_tokens: 32,
        batch_delay: Duration::from_millis(50),
        prefix_cache: true,
        cache_cells: 120,
        stream_cells: None,
        min_reuse: 4,
        copy_tokens: 0,
        gather: Duration::ZERO,
    });
    let t = Instant::now();
    let mut next_id = 1;
    let mut llama = Llama::default();
    let mut in_kv = std::collections::HashMap::<RequestId, u32>::new();
    for i in 0..3000u64 {
        let now = t + Duration::from_millis(i);
        if rnd(3) == 0 {
            let prefix = rnd(3) as u32 * 1000;
            let len = 1 + rnd(60) as u32;
            let tokens = (prefix..prefix + len).chain([rnd(5) as u32]);
            let r = if rnd(2) == 0 {
                req(next_id, tokens)
            } else {
                batch(next_id, tokens)
            };
            let _ = s.enqueue(r, now);
            next_id += 1;
        }
        let plan = s.plan(now);
        for id in &plan.preempted {
            in_kv.remove(id);
        }
        for st in &plan.started {
            in_kv.insert(st.id, st.reused);
        }
        let total: usize = plan.feeds.iter().map(|f| f.tokens.len()).sum();
        assert!(total <= 32);
        for f in &plan.feeds {
            let at = in_kv.get_mut(&f.id).expect("fed requests were started");
            assert_eq!(f.pos, *at, "positions stay consecutive");
            *at += f.tokens.len() as u32;
        }
        s.kv.check();
        llama.run(&plan);
        assert_eq!(
            llama.used(),
            s.kv.used(),
            "step {i}: the books match llama.cpp's cells"
        );
        for f in plan.feeds.iter().filter(|f| f.logits) {
            match rnd(6) {
                0 => s.finish(f.id),
                1 if i % 7 == 0 => {
                    // A failed decode: the engine discards every fed request.
                    s.discard(f.id)
                }
                _ => s.sampled(f.id, rnd(5) as u32),
            }
        }
        if rnd(50) == 0 {
            let first = s.running_ids().next();
            if let Some(id) = first {
                s.finish(id);
            }
        }
        let load = s.load();
        assert!(load.running <= 4);
        assert!(load.kv_active_cells + load.kv_cached_cells <= 300);
    }
    assert!(s.load().prefix_hit_tokens_total > 0);
    assert!(s.load().preemptions_total > 0);
}

#[test]
fn batch_decodes_skip_the_step_that_prefills_an_interactive_prompt() {
    let mut s = sched(config());
    let t = Instant::now();
    s.enqueue(batch(1, [1, 2]), t).unwrap();
    s.enqueue(req(2, [3, 4]), t).unwrap();
    step(&mut s, t);
    // Both decode now; then an interactive prompt arrives.
    let plan = step(&mut s, t);
    assert!(fed(&plan, 1).is_some() && fed(&plan, 2).is_some());
    s.enqueue(req(3, 10..30), t + Duration::from_millis(1))
        .unwrap();
    let plan = step(&mut s, t + Duration::from_millis(1));
    assert!(fed(&plan, 1).is_none(), "the batch stream waits one step");
    assert!(fed(&plan, 2).is_some(), "interactive streams go on");
    assert_eq!(fed(&plan, 3).unwrap().tokens.len(), 20);
    let plan = step(&mut s, t + Duration::from_millis(1));
    assert!(fed(&plan, 1).is_some(), "and then resumes");
}

#[test]
fn batch_prompts_take_a_quarter_of_a_step_while_interactive_work_is_about() {
    let mut s = sched(config());
    let t = Instant::now();
    // A batch-only server prefills with whole steps.
    s.enqueue(batch(1, 0..200), t).unwrap();
    assert_eq!(fed(&step(&mut s, t), 1).unwrap().tokens.len(), 64);
    // Once interactive work is seen, batch prompts take a quarter: an
    // interactive request arriving mid-step waits for a short step.
    s.enqueue(req(2, [7, 8]), t).unwrap();
    step(&mut s, t);
    let plan = step(&mut s, t);
    assert_eq!(fed(&plan, 1).unwrap().tokens.len(), 16);
    assert_eq!(fed(&plan, 2).unwrap().tokens.len(), 1);
    // Interactive prompts still take the whole budget.
    s.enqueue(req(3, 1000..1100), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(fed(&plan, 3).unwrap().tokens.len(), 63);
    // Long after the last interactive request, whole steps again.
    s.finish(2);
    s.finish(3);
    let later = t + super::INTERACTIVE_RECENT;
    let plan = step(&mut s, later);
    assert_eq!(fed(&plan, 1).unwrap().tokens.len(), 64);
}

#[test]
fn batch_prompt_chunks_skip_the_step_that_prefills_an_interactive_prompt() {
    let mut s = sched(config());
    let t = Instant::now();
    // A long batch prompt is being prefilled when an interactive one arrives.
    s.enqueue(batch(1, 0..200), t).unwrap();
    step(&mut s, t);
    let later = t + Duration::from_millis(1);
    s.enqueue(req(2, 1000..1020), later).unwrap();
    let plan = step(&mut s, later);
    assert_eq!(fed(&plan, 2).unwrap().tokens.len(), 20);
    assert!(
        fed(&plan, 1).is_none(),
        "the interactive prompt's step carries no batch chunk"
    );
    let plan = step(&mut s, later);
    assert!(fed(&plan, 1).is_some(), "the batch prompt goes on after");
}

/// A scheduler that holds an idle engine's first step up to 10 ms.
fn gathering() -> (Scheduler, Instant) {
    let s = sched(Config {
        gather: Duration::from_millis(10),
        ..config()
    });
    (s, Instant::now())
}

#[test]
fn a_burst_arriving_at_an_idle_engine_is_admitted_together() {
    let (mut s, t0) = gathering();
    let ms = |n| t0 + Duration::from_millis(n);
    s.enqueue(req(1, [1, 2, 3]), t0).unwrap();
    let held = step(&mut s, ms(1));
    assert!(held.is_empty(), "{held:?}");
    assert_eq!(held.hold_until, Some(ms(2)));
    // Another arrival extends the wait; at its end both start in one step.
    s.enqueue(req(2, [4, 5, 6]), ms(1)).unwrap();
    assert_eq!(step(&mut s, ms(2)).hold_until, Some(ms(3)));
    let plan = step(&mut s, ms(3));
    assert_eq!(plan.hold_until, None);
    assert_eq!(plan.started.len(), 2, "{plan:?}");
    // While they run, a new request starts at the next step.
    s.enqueue(req(3, [7, 8]), ms(4)).unwrap();
    let plan = step(&mut s, ms(4));
    assert_eq!(plan.hold_until, None);
    assert_eq!(plan.started.len(), 1, "{plan:?}");
}

#[test]
fn a_burst_that_fills_every_running_place_is_not_held() {
    let (mut s, t0) = gathering();
    for id in 1..=4 {
        s.enqueue(req(id, [id as Token, 9]), t0).unwrap();
    }
    let plan = step(&mut s, t0);
    assert_eq!(plan.started.len(), 4, "{plan:?}");
}
