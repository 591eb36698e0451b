//! The prefix cache's rules: sharing, eviction, its bound, waiting for a
//! prefix being computed.

use super::*;

#[test]
fn a_new_request_starts_from_the_longest_cached_prefix() {
    let mut s = sched(config());
    let t = Instant::now();
    let system: Vec<Token> = (0..50).collect();
    s.enqueue(req(1, system.iter().copied().chain(100..110)), t)
        .unwrap();
    step(&mut s, t);
    step(&mut s, t);
    s.finish(1);
    let before = s.load();
    assert_eq!(before.kv_active_cells, 0);
    assert_eq!(
        before.kv_cached_cells, 61,
        "60 prompt cells and one generated"
    );

    s.enqueue(req(2, system.iter().copied().chain(200..205)), t)
        .unwrap();
    let plan = step(&mut s, t);
    assert_eq!(plan.started[0].reused, 50);
    assert!(plan.kv_ops.contains(&KvOp::Share {
        src: 0,
        dst: 1,
        len: 50
    }));
    let f = fed(&plan, 2).unwrap();
    assert_eq!((f.pos, f.tokens.len()), (50, 5));
    let load = s.load();
    assert_eq!(load.prefix_hit_tokens_total, 50);
    assert_eq!(load.prefix_query_tokens_total, 60 + 55);
    assert_eq!(load.prefix_queries_total, 2);
}

#[test]
fn an_identical_prompt_refeeds_only_its_last_token() {
    let mut s = sched(config());
    let t = Instant::now();
    s.enqueue(req(1, 0..30), t).unwrap();
    step(&mut s, t);
    s.finish(1);
    s.enqueue(req(2, 0..30), t).unwrap();
    let plan = step(&mut s, t);
    let f = fed(&plan, 2).unwrap();
    assert_eq!((f.pos, f.tokens.clone(), f.logits), (29, vec![29], true));
}

#[test]
fn a_request_that_opts_out_of_reuse_computes_its_whole_prompt() {
    // What `verify-deploy --url` relies on: with `cache_prompt: false` the
    // same prompt is computed the same way however often it was seen.
    let mut s = sched(config());
    let t = Instant::now();
    s.enqueue(req(1, 0..30), t).unwrap();
    step(&mut s, t);
    s.finish(1);
    let fresh = NewRequest {
        reuse_prefix: false,
        ..req(2, 0..30)
    };
    s.enqueue(fresh, t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(plan.started[0].reused, 0);
    assert!(!plan
        .kv_ops
        .iter()
        .any(|op| matches!(op, KvOp::Share { .. })));
    let f = fed(&plan, 2).unwrap();
    assert_eq!((f.pos, f.tokens.len()), (0, 30));
}

#[test]
fn the_cache_is_evicted_least_recently_used_and_only_under_pressure() {
    let mut s = sched(Config {
        kv_cells: 200,
        ..config()
    });
    let t = Instant::now();
    for (id, base) in [(1, 0), (2, 1000), (3, 2000)] {
        s.enqueue(req(id, base..base + 50), t).unwrap();
        step(&mut s, t);
        s.finish(id);
    }
    // Using entry 1 again makes entry 2 the least recently used.
    s.enqueue(req(4, (0..50).chain([9])), t).unwrap();
    step(&mut s, t);
    s.finish(4);
    assert_eq!(s.load().prefix_evictions_total, 0, "no pressure yet");
    // 151 cells are in use; 60 more are needed.
    s.enqueue(req(5, 5000..5060), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![5]);
    assert_eq!(s.load().prefix_evictions_total, 1);
    let hit = s.kv.lookup(&(1000..1050).collect::<Vec<_>>(), 49);
    assert!(hit.is_none(), "entry 2 was the one evicted");
    assert!(s.kv.lookup(&(0..50).collect::<Vec<_>>(), 49).is_some());
    assert!(s.kv.lookup(&(2000..2050).collect::<Vec<_>>(), 49).is_some());
}

#[test]
fn cells_held_only_by_the_cache_stay_within_their_bound() {
    let mut s = sched(Config {
        cache_cells: 60,
        ..config()
    });
    let t = Instant::now();
    for (id, base) in [(1, 0), (2, 1000)] {
        s.enqueue(req(id, base..base + 50), t).unwrap();
        step(&mut s, t);
        s.finish(id);
    }
    // 100 cached cells, over the bound, but request 3 starts from entry 2:
    // those cells are on a running path again and no longer count.
    s.enqueue(req(3, (1000..1050).chain([9])), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(plan.started[0].reused, 50);
    assert_eq!(s.load().prefix_evictions_total, 0);
    assert_eq!(s.load().kv_cached_cells, 50);
    s.finish(3);
    // Entry 1 (50 cells) and request 3's (51) are now cache-only. Request
    // 3's entry replaces entry 2 (seq 1), which it extends.
    let plan = step(&mut s, t);
    assert_eq!(plan.kv_ops, vec![KvOp::Clear { seq: 1 }]);
    let later = t + CACHE_GRACE - Duration::from_millis(1);
    assert!(step(&mut s, later).kv_ops.is_empty(), "still in its grace");
    assert_eq!(s.load().kv_cached_cells, 101);
    // Once idle past the grace, the least recently used goes, with nothing
    // else to do.
    let plan = step(&mut s, t + CACHE_GRACE);
    assert_eq!(plan.kv_ops, vec![KvOp::Clear { seq: 0 }]);
    assert_eq!(s.load().prefix_evictions_total, 1);
    assert_eq!(s.load().kv_cached_cells, 51);
    assert!(s.kv.lookup(&(0..50).collect::<Vec<_>>(), 49).is_none());
    assert!(s.kv.lookup(&(1000..1050).collect::<Vec<_>>(), 49).is_some());
}

#[test]
fn a_short_match_is_computed_again_rather_than_shared() {
    let mut s = sched(Config {
        min_reuse: 20,
        ..config()
    });
    let t = Instant::now();
    s.enqueue(req(1, 0..40), t).unwrap();
    step(&mut s, t);
    s.finish(1);
    s.enqueue(req(2, (0..19).chain(100..120)), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(plan.started[0].reused, 0, "19 shared tokens are too few");
    assert!(plan
        .kv_ops
        .iter()
        .all(|op| !matches!(op, KvOp::Share { .. })));
    s.enqueue(req(3, (0..20).chain(100..120)), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(plan.started[0].reused, 20);
}

#[test]
fn a_request_waits_for_a_prefilling_sequence_that_computes_its_prefix() {
    let mut s = sched(Config {
        step_tokens: 40,
        ..config()
    });
    let t = Instant::now();
    let shared: Vec<Token> = (0..100).collect();
    s.enqueue(req(1, shared.iter().copied().chain([500])), t)
        .unwrap();
    s.enqueue(req(2, shared.iter().copied().chain([600])), t)
        .unwrap();
    s.enqueue(req(3, [900, 901]), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(
        started(&plan),
        vec![1, 3],
        "2 waits for 1's prefill; 3 does not share and goes ahead"
    );
    let mut steps = 1;
    let plan = loop {
        let plan = step(&mut s, t);
        steps += 1;
        if !plan.started.is_empty() {
            break plan;
        }
        assert!(steps < 10);
    };
    // After two 40-token steps only 20 shared tokens are left to compute:
    // fewer than waiting is worth, so 2 starts from the 80 already there.
    assert_eq!(steps, 3);
    assert_eq!(plan.started[0].id, 2);
    assert_eq!(plan.started[0].reused, 80);
    assert_eq!(s.load().prefix_hit_tokens_total, 80);
}

#[test]
fn decode_failure_discards_cells_instead_of_caching_them() {
    let mut s = sched(config());
    let t = Instant::now();
    s.enqueue(req(1, 0..10), t).unwrap();
    s.plan(t);
    s.discard(1);
    let plan = s.plan(t);
    assert_eq!(plan.kv_ops, vec![KvOp::Clear { seq: 0 }]);
    assert_eq!(s.load().kv_cached_cells, 0);
    assert!(s.kv.lookup(&(0..10).collect::<Vec<_>>(), 9).is_none());
}

#[test]
fn with_the_cache_off_finished_cells_are_released() {
    let mut s = sched(Config {
        prefix_cache: false,
        ..config()
    });
    let t = Instant::now();
    s.enqueue(req(1, 0..10), t).unwrap();
    step(&mut s, t);
    s.finish(1);
    s.enqueue(req(2, 0..12), t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(plan.started[0].reused, 0);
    assert_eq!(s.load().prefix_queries_total, 0);
}

/// Regression: an eviction decided while admitting a later request used to
/// reach llama.cpp before the `Share` an earlier admission took from the
/// evicted entry, so the new sequence started at position 300 holding nothing.
#[test]
fn an_entry_evicted_after_a_share_from_it_is_cleared_after_the_share() {
    let mut s = sched(Config {
        kv_cells: 1024,
        ..config()
    });
    let mut llama = Llama::default();
    let t = Instant::now();
    let system: Vec<Token> = (0..300).collect();
    s.enqueue(req(1, system.iter().copied().chain(1000..1100)), t)
        .unwrap();
    while s.load().running > 0 || s.load().waiting > 0 {
        let plan = step(&mut s, t);
        llama.run(&plan);
        if fed(&plan, 1).is_some_and(|f| f.logits) {
            s.finish(1);
        }
    }
    s.enqueue(req(2, system.iter().copied().chain(2000..2050)), t)
        .unwrap();
    s.enqueue(req(3, 5000..5700), t + Duration::from_millis(1))
        .unwrap();
    let plan = step(&mut s, t + Duration::from_millis(2));
    llama.run(&plan);
    assert_eq!(plan.started[0].reused, 300);
    assert_eq!(llama.used(), s.kv.used());
}

/// Regression: a cached entry that a new request would share from, and that
/// is the only thing left to evict, used to block that request for ever.
#[test]
fn a_request_starts_from_scratch_when_only_its_source_could_make_room() {
    let mut s = sched(Config {
        kv_cells: 4096,
        max_running: 1,
        step_tokens: 2048,
        ..config()
    });
    let t = Instant::now();
    let conversation: Vec<Token> = (0..3000).collect();
    s.enqueue(req(1, conversation.iter().copied()), t).unwrap();
    while !step(&mut s, t).feeds.iter().any(|f| f.logits) {}
    s.finish(1);
    s.enqueue(req(2, (0..100).chain(10_000..11_900)), t)
        .unwrap();
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![2]);
    assert_eq!(plan.started[0].reused, 0, "the source was evicted instead");
    assert_eq!(s.load().prefix_evictions_total, 1);
}

/// Regression: an interactive request that would wait for a prefilling
/// sequence used to pause a batch one anyway, every step.
#[test]
fn nothing_is_paused_for_a_request_that_waits_for_a_shared_prefix() {
    let mut s = sched(Config {
        max_running: 2,
        step_tokens: 40,
        ..config()
    });
    let t = Instant::now();
    let shared: Vec<Token> = (0..200).collect();
    s.enqueue(req(1, shared.iter().copied().chain([1])), t)
        .unwrap();
    s.enqueue(batch(2, [5, 6]), t).unwrap();
    step(&mut s, t);
    s.enqueue(req(3, shared.iter().copied().chain([2])), t)
        .unwrap();
    for _ in 0..3 {
        let plan = step(&mut s, t);
        assert!(plan.preempted.is_empty());
        assert!(plan.started.is_empty());
    }
    assert_eq!(s.load().preemptions_total, 0);
}

#[test]
fn choices_share_the_first_ones_prompt_even_with_the_cache_off_and_a_short_prompt() {
    let mut s = sched(Config {
        prefix_cache: false,
        min_reuse: 64,
        step_tokens: 8,
        ..config()
    });
    let mut llama = Llama::default();
    let t = Instant::now();
    let prompt: Vec<Token> = (0..20).collect();
    s.enqueue(req(1, prompt.clone()), t).unwrap();
    for id in [2, 3] {
        let choice = NewRequest {
            sibling_of: Some(1),
            ..req(id, prompt.clone())
        };
        s.enqueue(choice, t).unwrap();
    }
    // The first choice prefills alone, in chunks; the others wait for it.
    let mut steps = 0;
    let plan = loop {
        let plan = step(&mut s, t);
        llama.run(&plan);
        steps += 1;
        if plan.started.iter().any(|st| st.id != 1) {
            break plan;
        }
        assert!(plan.feeds.iter().all(|f| f.id == 1), "{plan:?}");
        assert!(steps < 10, "the other choices never started");
    };
    assert_eq!(
        steps, 4,
        "three chunks of the prompt, then the others start"
    );
    assert_eq!(started(&plan), vec![2, 3]);
    for st in &plan.started {
        assert_eq!(st.reused, 19, "all but the last prompt token shared");
    }
    // From here the three decode side by side, each feeding one token.
    let plan = step(&mut s, t);
    llama.run(&plan);
    assert_eq!(plan.feeds.len(), 3);
    assert!(plan.feeds.iter().all(|f| f.tokens.len() == 1), "{plan:?}");
    // The first finishing early leaves the others' shared cells intact.
    s.finish(1);
    let plan = step(&mut s, t);
    llama.run(&plan);
    assert_eq!(plan.feeds.len(), 2);
}

#[test]
fn a_choice_whose_first_sibling_is_gone_computes_its_own_prompt() {
    let mut s = sched(Config {
        prefix_cache: false,
        ..config()
    });
    let t = Instant::now();
    let orphan = NewRequest {
        sibling_of: Some(99),
        ..req(2, 0..10)
    };
    s.enqueue(orphan, t).unwrap();
    let plan = step(&mut s, t);
    assert_eq!(started(&plan), vec![2]);
    assert_eq!(plan.started[0].reused, 0);
}
