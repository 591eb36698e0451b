//! The scheduler over a stream per sequence ([`Config::stream_cells`]):
//! admission by free streams, prefixes taken over in place or copied whole,
//! and the streams' contents checked against every request's tokens.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{batch, req, sched, started, step};
use crate::{Config, KvOp, Plan, Rejected, RequestId, Scheduler, Token};

fn streams() -> Config {
    Config {
        kv_cells: 400,
        max_seqs: 4,
        max_running: 4,
        max_queue: 8,
        step_tokens: 64,
        batch_delay: Duration::from_secs(10),
        prefix_cache: true,
        cache_cells: 0,
        stream_cells: Some(100),
        min_reuse: 1,
        copy_tokens: 0,
        gather: Duration::ZERO,
    }
}

/// llama.cpp's KV with a stream per sequence, as far as the scheduler's
/// operations go: each stream's tokens by position. A cross-stream copy
/// copies the whole stream, as llama.cpp does.
struct Streams {
    cells: Vec<Vec<Token>>,
    capacity: usize,
}

impl Streams {
    fn new(config: &Config) -> Self {
        Self {
            cells: vec![Vec::new(); config.max_seqs as usize],
            capacity: config.stream_cells.unwrap() as usize,
        }
    }

    /// Applies a plan as the engine does, checking that every feed continues
    /// exactly the tokens of its own request (`tokens`: each request's
    /// prompt and sampled tokens so far).
    fn run(&mut self, plan: &Plan, tokens: &HashMap<RequestId, Vec<Token>>) {
        for op in &plan.kv_ops {
            match *op {
                KvOp::Clear { seq } => self.cells[seq as usize].clear(),
                KvOp::Copy { src, dst, len } => {
                    assert_ne!(src, dst);
                    let mut copy = self.cells[src as usize].clone();
                    assert!(copy.len() >= len as usize, "{op:?} copies cells src lacks");
                    copy.truncate(len as usize);
                    self.cells[dst as usize] = copy;
                }
                KvOp::Truncate { seq, len } => {
                    let cells = &mut self.cells[seq as usize];
                    assert!(cells.len() >= len as usize, "{op:?} keeps cells seq lacks");
                    cells.truncate(len as usize);
                }
                KvOp::Share { .. } => panic!("a unified-pool share in streams: {op:?}"),
            }
        }
        for f in &plan.feeds {
            let held = &mut self.cells[f.seq as usize];
            let want = &tokens[&f.id][..f.pos as usize];
            assert_eq!(
                held.as_slice(),
                want,
                "request {} fed at {} on stream {} holds other tokens",
                f.id,
                f.pos,
                f.seq
            );
            held.extend_from_slice(&f.tokens);
            assert!(held.len() <= self.capacity, "stream {} overflows", f.seq);
        }
    }
}

#[test]
fn a_prompt_longer_than_its_stream_is_refused_up_front() {
    let mut s = sched(streams());
    assert_eq!(
        s.enqueue(req(1, 0..100), Instant::now()),
        Err(Rejected::TooLong {
            tokens: 100,
            cells: 100
        })
    );
    assert!(s.enqueue(req(2, 0..99), Instant::now()).is_ok());
}

#[test]
fn invalid_streams_are_refused() {
    for cells in [0, 101] {
        let bad = Config {
            stream_cells: Some(cells),
            ..streams()
        };
        assert!(Scheduler::new(bad).is_err(), "{cells} cells per stream");
    }
}

#[test]
fn admission_needs_a_stream_and_cached_streams_give_way() {
    let mut s = sched(streams());
    let t = Instant::now();
    for id in 1..=5 {
        s.enqueue(req(id, id as u32 * 1000..id as u32 * 1000 + 10), t)
            .unwrap();
    }
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![1, 2, 3, 4], "one stream each");
    let seqs: Vec<u32> = plan.started.iter().map(|st| st.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3], "the lowest free streams first");
    assert_eq!(s.load().waiting, 1, "40 cells of 400 used, yet no stream");
    s.finish(2);
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![5]);
    assert_eq!(plan.kv_ops, vec![KvOp::Clear { seq: 1 }]);
    assert_eq!(plan.started[0].seq, 1);
    assert_eq!(s.load().prefix_evictions_total, 1);
}

#[test]
fn a_follow_up_takes_over_its_cached_stream_in_place() {
    let mut s = sched(streams());
    let t = Instant::now();
    s.enqueue(req(1, 0..50), t).unwrap();
    s.enqueue(req(2, 500..510), t).unwrap();
    step(&mut s, t);
    step(&mut s, t);
    s.finish(1);
    // The next turn re-sends the history (and one sampled token) plus more.
    let turn: Vec<Token> = (0..50).chain([7, 60, 61]).collect();
    s.enqueue(req(3, turn), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![3]);
    assert_eq!(plan.started[0].seq, 0, "the stream request 1 left");
    assert_eq!(plan.started[0].reused, 51);
    assert_eq!(plan.kv_ops, vec![KvOp::Truncate { seq: 0, len: 51 }]);
    assert_eq!(s.load().prefix_hit_tokens_total, 51);
}

#[test]
fn a_prefix_a_running_sequence_holds_is_copied_once_it_is_computed() {
    let mut s = sched(streams());
    let t = Instant::now();
    let system: Vec<Token> = (0..40).collect();
    s.enqueue(req(1, system.iter().copied().chain([900])), t)
        .unwrap();
    s.enqueue(req(2, system.iter().copied().chain([901])), t)
        .unwrap();
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![1], "2 waits for 1's prefill");
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![2]);
    assert_eq!(
        plan.kv_ops,
        vec![KvOp::Copy {
            src: 0,
            dst: 1,
            len: 40
        }]
    );
    assert_eq!(plan.started[0].reused, 40);
    assert_eq!(s.load().kv_cached_cells, 0);
}

/// Four short distinct prompts, one on each stream, admitted.
fn every_stream_running() -> (Scheduler, Instant) {
    let mut s = sched(streams());
    let t = Instant::now();
    for id in 1..=4 {
        s.enqueue(req(id, id as u32 * 1000..id as u32 * 1000 + 5), t)
            .unwrap();
    }
    step(&mut s, t);
    (s, t)
}

#[test]
fn a_running_stream_counts_whole_in_the_usage_gauge() {
    let (mut s, _) = every_stream_running();
    // 20 tokens of 400 cells, but no stream is free: a gateway must see a
    // full server.
    let load = s.load();
    assert_eq!((load.kv_active_cells, load.kv_usage()), (400, 1.0));
    s.finish(1);
    let load = s.load();
    assert_eq!((load.kv_active_cells, load.kv_cached_cells), (300, 5));
}

#[test]
fn a_prefix_shorter_than_a_copy_is_computed_without_waiting() {
    let mut s = sched(Config {
        copy_tokens: 50,
        gather: Duration::ZERO,
        ..streams()
    });
    let t = Instant::now();
    let system: Vec<Token> = (0..40).collect();
    for id in 1..=2 {
        s.enqueue(req(id, system.iter().copied().chain([900 + id as u32])), t)
            .unwrap();
    }
    let plan = step(&mut s, t);
    assert_eq!(
        started(&plan),
        vec![1, 2],
        "2 does not wait for 1's prefill"
    );
    // Computed by 1 and 2 now, yet still shorter than a copy.
    s.enqueue(req(3, system.iter().copied().chain([903])), t)
        .unwrap();
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![3]);
    assert_eq!(plan.started[0].reused, 0);
    assert!(plan.kv_ops.is_empty(), "{:?}", plan.kv_ops);
    // A longer prefix is worth its copy.
    for id in 1..=3 {
        s.finish(id);
    }
    let long: Vec<Token> = (100..160).collect();
    s.enqueue(req(4, long.iter().copied().chain([900])), t)
        .unwrap();
    step(&mut s, t);
    s.enqueue(req(5, long.iter().copied().chain([901])), t)
        .unwrap();
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![5]);
    assert_eq!(plan.started[0].reused, 60);
    assert!(
        matches!(
            plan.kv_ops[..],
            [KvOp::Clear { .. }, KvOp::Copy { len: 60, .. }]
        ),
        "{:?}",
        plan.kv_ops
    );
}

#[test]
fn a_cached_prefix_is_copied_rather_than_taken_over_where_it_would_run_alone() {
    let mut s = sched(streams());
    let t = Instant::now();
    for (id, first) in [(1, 0), (2, 1000), (3, 2000), (4, 3000)] {
        s.enqueue(req(id, first..first + 50), t).unwrap();
    }
    // Four prompts of 50 in steps of 64 tokens.
    for _ in 0..4 {
        step(&mut s, t);
    }
    s.discard(1);
    s.discard(3);
    s.finish(4);
    // Stream 3 holds the prefix but has no running neighbour; free stream 0
    // runs beside 2's stream 1.
    s.enqueue(req(5, (3000..3050).chain([7])), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!((plan.started[0].seq, plan.started[0].reused), (0, 50));
    assert!(
        plan.kv_ops.contains(&KvOp::Copy {
            src: 3,
            dst: 0,
            len: 50
        }),
        "{:?}",
        plan.kv_ops
    );
}

#[test]
fn a_new_sequence_takes_the_stream_that_keeps_running_ids_consecutive() {
    let (mut s, t) = every_stream_running();
    // Streams 0 and 2 become cached, 0 first: least recently used, but
    // running 1 and 3 beside 0 would make two micro-batches.
    s.finish(1);
    s.finish(3);
    s.enqueue(req(5, 9000..9005), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(plan.started[0].seq, 2, "joins streams 1 and 3");
    assert_eq!(plan.kv_ops, vec![KvOp::Clear { seq: 2 }]);
}

#[test]
fn a_cached_conversation_keeps_its_tail_when_a_free_stream_exists() {
    let mut s = sched(Config {
        copy_tokens: 10,
        gather: Duration::ZERO,
        ..streams()
    });
    let t = Instant::now();
    s.enqueue(req(1, 0..50), t).unwrap();
    step(&mut s, t);
    s.finish(1);
    // Shares 30 of the 50 tokens stream 0 holds: the 20 after them are
    // worth a copy into a free stream.
    s.enqueue(req(2, (0..30).chain([999])), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(plan.started[0].seq, 1);
    assert_eq!(
        plan.kv_ops,
        vec![KvOp::Copy {
            src: 0,
            dst: 1,
            len: 30
        }]
    );
    // The conversation comes back and finds all of it.
    s.enqueue(req(3, (0..50).chain([7])), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!((plan.started[0].seq, plan.started[0].reused), (0, 50));
    assert_eq!(plan.kv_ops, vec![KvOp::Truncate { seq: 0, len: 50 }]);
    // A tail shorter than a copy is given up: taken over in place.
    s.finish(3);
    s.enqueue(req(4, (0..45).chain([999])), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(plan.kv_ops, vec![KvOp::Truncate { seq: 0, len: 45 }]);
}

#[test]
fn idle_streams_stay_cached_until_their_stream_is_needed() {
    let mut s = sched(streams());
    let t = Instant::now();
    s.enqueue(req(1, 0..60), t).unwrap();
    step(&mut s, t);
    s.finish(1);
    // Long past the grace period and over cache_cells (0): still kept,
    // since an idle stream slows no one else's steps.
    let later = t + Duration::from_secs(60);
    let plan = step(&mut s, later);
    assert!(plan.kv_ops.is_empty());
    assert_eq!(s.load().kv_cached_cells, 60);
    s.enqueue(req(2, (0..60).chain([5])), later).unwrap();
    let plan = step(&mut s, later);
    assert_eq!(plan.started[0].reused, 60);
}

#[test]
fn random_workloads_keep_every_stream_true_to_its_request() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let config = Config {
        max_queue: 6,
        step_tokens: 32,
        batch_delay: Duration::from_millis(50),
        min_reuse: 4,
        ..streams()
    };
    let mut llama = Streams::new(&config);
    let mut s = sched(config);
    let t = Instant::now();
    let mut next_id = 1;
    let mut tokens: HashMap<RequestId, Vec<Token>> = HashMap::new();
    let mut copies = 0;
    let mut takeovers = 0;
    for i in 0..4000u64 {
        let now = t + Duration::from_millis(i);
        if rnd(3) == 0 {
            let prefix = rnd(3) as u32 * 1000;
            let len = 1 + rnd(60) as u32;
            let prompt: Vec<Token> = (prefix..prefix + len).chain([rnd(5) as u32]).collect();
            let r = if rnd(2) == 0 {
                req(next_id, prompt.clone())
            } else {
                batch(next_id, prompt.clone())
            };
            if s.enqueue(r, now).is_ok() {
                tokens.insert(next_id, prompt);
            }
            next_id += 1;
        }
        let plan = s.plan(now);
        copies += plan
            .kv_ops
            .iter()
            .filter(|op| matches!(op, KvOp::Copy { .. }))
            .count();
        takeovers += plan
            .kv_ops
            .iter()
            .filter(|op| matches!(op, KvOp::Truncate { .. }))
            .count();
        s.kv.check();
        llama.run(&plan, &tokens);
        for f in plan.feeds.iter().filter(|f| f.logits) {
            // Replies end at the stream's size, as the engine ends them at
            // its context per sequence.
            let full = tokens[&f.id].len() + 1 >= 100;
            match rnd(6) {
                _ if full => s.finish(f.id),
                0 => s.finish(f.id),
                1 if i % 7 == 0 => s.discard(f.id),
                _ => {
                    let token = rnd(5) as u32;
                    s.sampled(f.id, token);
                    tokens.get_mut(&f.id).unwrap().push(token);
                }
            }
        }
        let load = s.load();
        assert!(load.running <= 4);
        assert!(load.kv_active_cells + load.kv_cached_cells <= 400);
    }
    assert!(
        copies > 0 && takeovers > 0,
        "{copies} copies, {takeovers} takeovers"
    );
    assert!(s.load().preemptions_total > 0);
}

/// Streams as the engine runs them: `min_reuse` and a copy cost both above
/// a chat template's header.
fn engine_like() -> Config {
    Config {
        min_reuse: 64,
        copy_tokens: 50,
        ..streams()
    }
}

/// A chat template's 27-token header and 17 tokens of a client's own.
fn templated(own: u32) -> Vec<Token> {
    (0..27).chain(own * 100..own * 100 + 17).collect()
}

/// Requests 1 to 4, of `templated(owns[i])`, prefilled on streams 0 to 3.
fn templated_streams(owns: [u32; 4]) -> (Scheduler, Instant) {
    let mut s = sched(engine_like());
    let t = Instant::now();
    for (id, own) in (1..).zip(owns) {
        s.enqueue(req(id, templated(own)), t).unwrap();
    }
    for _ in 0..4 {
        step(&mut s, t);
    }
    (s, t)
}

/// Regression: W1's second requests re-computed the chat template's header
/// (27 of their 44 tokens) although the stream each client's first request
/// had left held it, because the match was shorter than `min_reuse`.
#[test]
fn a_shared_header_shorter_than_min_reuse_is_taken_over_in_place() {
    let (mut s, t) = templated_streams([1, 2, 3, 4]);
    for id in 1..=4 {
        s.finish(id);
    }
    for id in 5..=8 {
        s.enqueue(req(id, templated(id as u32)), t).unwrap();
    }
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![5, 6, 7, 8]);
    assert!(plan.started.iter().all(|st| st.reused == 27), "{plan:?}");
    let mut seqs: Vec<u32> = plan.started.iter().map(|st| st.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![0, 1, 2, 3]);
    assert!(
        plan.kv_ops
            .iter()
            .all(|op| matches!(op, KvOp::Truncate { len: 27, .. })),
        "{:?}",
        plan.kv_ops
    );
    assert_eq!(s.load().prefix_hit_tokens_total, 4 * 27);
}

#[test]
fn a_short_match_spares_a_longer_cached_tail_when_a_free_stream_exists() {
    let mut s = sched(engine_like());
    let t = Instant::now();
    // A conversation of 87 tokens, the header first.
    s.enqueue(req(1, (0..27).chain(5000..5060)), t).unwrap();
    for _ in 0..2 {
        step(&mut s, t);
    }
    s.finish(1);
    // Shares only the header: the 60 tokens after it outweigh the 27.
    s.enqueue(req(2, templated(2)), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!((plan.started[0].seq, plan.started[0].reused), (1, 0));
    assert!(plan.kv_ops.is_empty(), "{:?}", plan.kv_ops);
    // Stream 1 is cached now with a tail of 17 (and its sampled token):
    // shorter than the header, so the next one takes stream 1 over.
    step(&mut s, t);
    s.finish(2);
    s.enqueue(req(3, templated(3)), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!((plan.started[0].seq, plan.started[0].reused), (1, 27));
    assert_eq!(plan.kv_ops, vec![KvOp::Truncate { seq: 1, len: 27 }]);
}

#[test]
fn of_the_cached_streams_holding_a_header_the_one_beside_running_ids_is_taken() {
    let (mut s, t) = templated_streams([1, 2, 3, 4]);
    // Streams 0 and 1 hold the header, cached; 2 and 3 run.
    s.finish(1);
    s.finish(2);
    s.enqueue(req(5, templated(5)), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!((plan.started[0].seq, plan.started[0].reused), (1, 27));
}

#[test]
fn a_short_match_is_taken_where_the_running_ids_stay_consecutive() {
    let (mut s, t) = templated_streams([5, 2, 3, 4]);
    s.finish(1);
    s.finish(2);
    // Stream 0 holds 37 of its tokens but would run alone; stream 1, beside
    // the running 2 and 3, holds the header.
    s.enqueue(req(5, (0..27).chain(500..510).chain([999])), t)
        .unwrap();
    let plan = step(&mut s, t);
    assert_eq!((plan.started[0].seq, plan.started[0].reused), (1, 27));
}
