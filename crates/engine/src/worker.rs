//! The engine thread: owns the llama.cpp context and carries out the scheduler's plans.
//!
//! Every step: report what the last step sampled, let the scheduler plan
//! (admissions, KV operations, one batch within the token budget), apply the
//! KV operations with llama.cpp's sequence calls, run one `llama_decode` for
//! every sequence together, and sample each sequence from its own logits row.
//! Deciding is the scheduler's; this file only executes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use scheduler::{Feed, KvOp, Plan, RequestId, Scheduler, SeqId};
use types::{FinishReason, GenerateError, GenerationObserver, Outcome};

use crate::copy_cost::CopyCost;
use crate::embedding::{EmbedItem, EmbedSettings, Embedder, EMBED_SEQS};
use crate::sampler;
use crate::sequence::{timeout_error, Active, Ended, Job, Step};

/// Everything submitters and the engine thread share, behind one lock.
pub(crate) struct State {
    pub sched: Scheduler,
    /// Queued requests' payloads, until their first admission.
    pub jobs: HashMap<RequestId, Job>,
    pub next_id: RequestId,
    /// Embedding inputs waiting for a batch, in arrival order.
    pub embeds: VecDeque<EmbedItem>,
    pub shutdown: bool,
    /// False once the engine thread has exited, for whatever reason.
    pub running: bool,
}

pub(crate) struct Shared {
    pub model: LlamaModel,
    pub state: Mutex<State>,
    pub wake: Condvar,
    /// Tokens that end a turn; banned outright when a request ignores EOS.
    pub eog_tokens: Vec<LlamaToken>,
    pub n_ctx_seq: u32,
    /// A stream per sequence, and what copying one costs (`None`: one
    /// unified pool).
    pub streams: Option<CopyCost>,
    /// Most tokens per llama_decode call in a step that feeds several
    /// sequences (see [`step`]).
    pub mixed_batch: usize,
    pub observer: OnceLock<Arc<dyn GenerationObserver>>,
    /// This engine's threads on the CPU, and its turns there.
    pub seat: crate::turns::Seat,
    pub embed: EmbedSettings,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before it could
        // panic (the scheduler's own checks are debug assertions), so a
        // poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports an ended request to the observer, then sends the caller its
    /// final event, in that order (see [`Ended`]).
    fn observe(&self, ended: Ended) {
        if let Some(observer) = self.observer.get() {
            observer.finished(&ended.record);
        }
        ended.deliver();
    }
}

/// Marks the engine stopped and fails queued jobs when the thread ends, even by panic.
struct ExitGuard<'a>(&'a Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.running = false;
        let jobs: Vec<Job> = st.jobs.drain().map(|(_, j)| j).collect();
        let embeds: Vec<EmbedItem> = st.embeds.drain(..).collect();
        drop(st);
        for item in embeds {
            item.job.fail(GenerateError::Unavailable);
        }
        for job in jobs {
            let record = job.end(Outcome::Cancelled, Some(GenerateError::Unavailable));
            self.0.observe(record);
        }
    }
}

/// What the last step produced, handed to the scheduler under the next lock.
#[derive(Default)]
struct Reports {
    sampled: Vec<(RequestId, LlamaToken)>,
    finished: Vec<RequestId>,
    discarded: Vec<RequestId>,
    /// A new [`scheduler::Config::copy_tokens`], measured.
    copy_tokens: Option<u32>,
    /// Requests the step ended, reported (and their callers told) once the
    /// scheduler has counted the step, so `/metrics` read after a reply
    /// includes all of it.
    ended: Vec<Ended>,
}

pub(crate) fn run(shared: Arc<Shared>, mut ctx: LlamaContext<'_>, n_batch: usize) {
    let _guard = ExitGuard(&shared);
    let mut active: HashMap<RequestId, Active> = HashMap::new();
    let mut batch = LlamaBatch::new(n_batch, 1);
    let mut reports = Reports::default();
    let mut copy_cost = shared.streams.clone();
    // Whether work happened since the heap was last trimmed.
    let mut trim_due = false;
    // Made on the first embedding request; an error is kept, not retried.
    let mut embedder: Option<Result<Embedder<'_>, String>> = None;

    loop {
        let next = next_plan(&shared, &mut active, &mut reports, &mut trim_due);
        let Some(Work {
            plan,
            jobs,
            expired: expired_jobs,
            embeds,
        }) = next
        else {
            for (_, mut a) in active.drain() {
                a.fail(GenerateError::Unavailable);
                shared.observe(a.record(Outcome::Cancelled));
            }
            return;
        };
        for id in &plan.expired {
            if let Some(mut a) = active.remove(id) {
                tracing::info!(
                    request_id = a.request_id(),
                    "request timed out while running"
                );
                let err = a.timed_out();
                a.fail(err);
                shared.observe(a.record(Outcome::Timeout));
            }
        }
        for job in expired_jobs {
            tracing::info!(request_id = %job.request.request_id, "request timed out in the queue");
            let err = timeout_error(job.request.timeout);
            shared.observe(job.end(Outcome::Timeout, Some(err)));
        }
        if !embeds.is_empty() {
            let made = embedder.get_or_insert_with(|| {
                let made = Embedder::new(&shared.model, shared.embed);
                if let Err(e) = &made {
                    tracing::error!(error = %e, "cannot create the embedding context");
                }
                made
            });
            match made {
                Ok(e) => {
                    let _turn = shared.seat.turn();
                    e.run(&embeds);
                }
                Err(reason) => {
                    for item in &embeds {
                        item.job.fail(GenerateError::Internal(format!(
                            "cannot create the embedding context: {reason}"
                        )));
                    }
                }
            }
        }
        for op in &plan.kv_ops {
            apply(&mut ctx, op);
        }
        for (started, mut job) in jobs {
            let banned: &[LlamaToken] = if job.request.ignore_eos {
                &shared.eog_tokens
            } else {
                &[]
            };
            let sampler = sampler::build(
                &job.request.sampling,
                shared.model.n_vocab(),
                shared.n_ctx_seq,
                &job.tokens,
                banned,
                job.grammar.take(),
            );
            tracing::debug!(
                request_id = %job.request.request_id,
                seq = started.seq,
                reused = started.reused,
                "admitted"
            );
            let a = Active::start(job, shared.n_ctx_seq, sampler, started.reused);
            active.insert(started.id, a);
        }
        trim_due = true;
        if plan.feeds.is_empty() {
            continue;
        }
        let decode_time = step(
            &shared,
            &mut ctx,
            &mut batch,
            &plan,
            &mut active,
            &mut reports,
        );
        // A step that copied a stream spent part of its time copying.
        if let Some(cost) = &mut copy_cost {
            if !plan.kv_ops.iter().any(|op| matches!(op, KvOp::Copy { .. })) {
                let tokens = plan.feeds.iter().map(|f| f.tokens.len()).sum();
                if let Some(n) = cost.observe(tokens, decode_time) {
                    reports.copy_tokens = Some(n);
                }
            }
        }
    }
}

/// What the engine thread does next.
struct Work {
    plan: Plan,
    /// Requests the plan admits, with their payloads.
    jobs: Vec<(scheduler::Started, Job)>,
    /// Queued requests whose deadline passed.
    expired: Vec<Job>,
    /// Embedding inputs to run before the step.
    embeds: Vec<EmbedItem>,
}

/// Hands the last step's results to the scheduler, reaps callers that left,
/// and waits for work. `None` means shut down.
fn next_plan(
    shared: &Shared,
    active: &mut HashMap<RequestId, Active>,
    reports: &mut Reports,
    trim_due: &mut bool,
) -> Option<Work> {
    let mut st = shared.lock();
    let mut ended: Vec<Ended> = Vec::new();
    let plan = loop {
        if st.shutdown {
            drop(st);
            for e in reports.ended.drain(..).chain(ended) {
                shared.observe(e);
            }
            return None;
        }
        if let Some(n) = reports.copy_tokens.take() {
            tracing::debug!(
                copy_tokens = n,
                "a stream copy now costs as much as this many prompt tokens"
            );
            st.sched.set_copy_tokens(n);
        }
        for (id, token) in reports.sampled.drain(..) {
            st.sched.sampled(id, token.0 as u32);
        }
        ended.append(&mut reports.ended);
        for id in reports.finished.drain(..) {
            st.sched.finish(id);
        }
        for id in reports.discarded.drain(..) {
            st.sched.discard(id);
        }
        // Callers that went away: queued ones are dropped, running ones end
        // as cancelled and their cells stay cached.
        let gone: Vec<RequestId> = st
            .jobs
            .iter()
            .filter(|(_, j)| j.abandoned())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            st.sched.finish(id);
            let job = st.jobs.remove(&id).expect("listed above");
            ended.push(job.end(Outcome::Cancelled, None));
        }
        let left: Vec<RequestId> = active
            .iter()
            .filter(|(_, a)| a.abandoned())
            .map(|(id, _)| *id)
            .collect();
        for id in left {
            st.sched.finish(id);
            let mut a = active.remove(&id).expect("listed above");
            tracing::debug!(request_id = a.request_id(), "caller went away");
            a.finish(FinishReason::Cancelled);
            ended.push(a.record(Outcome::Cancelled));
        }
        // Inputs whose caller went away are dropped unembedded.
        st.embeds.retain(|item| !item.job.abandoned());
        let embeds_waiting = !st.embeds.is_empty();
        if st.sched.is_idle() {
            if !ended.is_empty() || embeds_waiting {
                // Nothing to plan, but the ended requests must be reported
                // (outside the lock) before waiting.
                break Plan::default();
            }
            if std::mem::take(trim_due) {
                // Outside the lock: submitters must not wait on the trim.
                drop(st);
                release_free_heap();
                st = shared.lock();
                continue;
            }
            st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let plan = st.sched.plan(Instant::now());
        if plan.is_empty() && !embeds_waiting {
            // Requests wait on something that only time changes (a deadline,
            // the end of a burst): nap until then, or briefly, instead of
            // spinning. A new arrival wakes the nap.
            let nap = plan.hold_until.map_or(Duration::from_millis(20), |t| {
                t.saturating_duration_since(Instant::now())
            });
            let (guard, _) = shared
                .wake
                .wait_timeout(st, nap)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            continue;
        }
        break plan;
    };
    let jobs = plan
        .started
        .iter()
        .filter_map(|s| st.jobs.remove(&s.id).map(|j| (s.clone(), j)))
        .collect();
    let expired = plan
        .expired
        .iter()
        .filter_map(|id| st.jobs.remove(id))
        .collect();
    // While sequences decode, a batch costs them no more than a step.
    let budget = if plan.feeds.is_empty() {
        shared.embed.n_ctx
    } else {
        shared.embed.busy_budget
    };
    let sizes: Vec<u32> = st
        .embeds
        .iter()
        .take(EMBED_SEQS as usize)
        .map(|item| item.tokens.len() as u32)
        .collect();
    let take = scheduler::next_embed_batch(&sizes, budget, EMBED_SEQS);
    let embeds = st.embeds.drain(..take).collect();
    drop(st);
    for record in ended {
        shared.observe(record);
    }
    Some(Work {
        plan,
        jobs,
        expired,
        embeds,
    })
}

/// Gives the heap's free pages back to the system, once per idle period.
///
/// glibc keeps what request handling frees (tokio's threads each allocate
/// from their own arena) and returns little of it on its own: after rounds of
/// 64 streams, half of them abandoned, the server's RSS crept up by about a
/// MiB a round before levelling off, with no allocation left behind by any
/// request (heaptrack). Trimming when the engine goes idle returned about
/// 4 MiB and flattened the rounds; it runs while nothing waits for it.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Steps feeding at most this many sequences are never split (see [`step`]).
const SPLIT_MIN_SEQUENCES: usize = 32;

/// One token of a step: request, sequence, token, position, wants logits.
type Row = (RequestId, SeqId, u32, u32, bool);

fn rows_of(feed: &Feed) -> impl Iterator<Item = Row> + '_ {
    let last = feed.tokens.len() - 1;
    feed.tokens.iter().enumerate().map(move |(i, &token)| {
        (
            feed.id,
            feed.seq,
            token,
            feed.pos + i as u32,
            feed.logits && i == last,
        )
    })
}

/// Whether `step` splits: many sequences, whose short rows (feeds of at most
/// `short_len` tokens) see few of the cells in use. When most cells are
/// visible to every row (a shared system prompt), the dense tiled kernel is
/// faster: a row's own dot products cost about three of its per-cell work. Measured: splitting won 3× at 64
/// streams and lost at 16 (W1's inter-token p99 rose 1.5×: a step with
/// prompt chunks paid for several passes over the weights).
fn should_split(plan: &Plan, short_len: usize) -> bool {
    if plan.feeds.len() <= SPLIT_MIN_SEQUENCES {
        return false;
    }
    // Cells each short row sees: its position plus one, summed per feed.
    let short = plan.feeds.iter().filter(|f| f.tokens.len() <= short_len);
    let (rows, visible) = short.fold((0u64, 0u64), |(rows, visible), f| {
        let n = f.tokens.len() as u64;
        (rows + n, visible + n * u64::from(f.pos) + n * (n + 1) / 2)
    });
    visible * 3 < rows * u64::from(plan.cells_in_use)
}

/// One decode of every fed sequence, then sampling. Returns the time
/// llama.cpp took (zero when it failed).
///
/// When more than [`SPLIT_MIN_SEQUENCES`] sequences are fed and the short
/// feeds (decode tokens, small prompt chunks) see few of the cells in use,
/// they go to llama.cpp in calls of at most `mixed_batch` tokens, and long
/// prompt chunks in one call after them. From 64 query rows llama.cpp's CPU
/// flash attention uses a tiled kernel that skips a block of cells only when
/// every row of the tile is masked from it. Rows of many sequences, whose
/// cells interleave in one unified pool, are almost never all masked, so it
/// attends densely to every cell in use: 64 streams took 1.1 s a step. Below
/// 64 rows each row skips the cells it cannot see. A long chunk's rows belong
/// to one sequence, whose cells the tiled kernel finds quickly.
fn step(
    shared: &Shared,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    plan: &Plan,
    active: &mut HashMap<RequestId, Active>,
    reports: &mut Reports,
) -> Duration {
    let tokens: usize = plan.feeds.iter().map(|f| f.tokens.len()).sum();
    let short = |f: &&Feed| f.tokens.len() <= shared.mixed_batch;
    let calls: Vec<Vec<Row>> = if shared.streams.is_some() {
        // llama.cpp puts sequences of consecutive ids, in increasing order,
        // into one micro-batch; each row sees only its own stream, so the
        // split below has nothing to save.
        let mut rows: Vec<Row> = plan.feeds.iter().flat_map(rows_of).collect();
        rows.sort_by_key(|row| row.1);
        vec![rows]
    } else if should_split(plan, shared.mixed_batch) {
        let short_rows: Vec<Row> = plan.feeds.iter().filter(short).flat_map(rows_of).collect();
        let long_rows: Vec<Row> = plan
            .feeds
            .iter()
            .filter(|f| !short(f))
            .flat_map(rows_of)
            .collect();
        let mut calls: Vec<Vec<Row>> = short_rows
            .chunks(shared.mixed_batch)
            .map(<[Row]>::to_vec)
            .collect();
        if !long_rows.is_empty() {
            calls.push(long_rows);
        }
        calls
    } else {
        vec![plan.feeds.iter().flat_map(rows_of).collect()]
    };
    let started = Instant::now();
    let mut decode_time = Duration::ZERO;
    let mut sampled_rows = 0;
    let n_calls = calls.len();
    for call in calls {
        batch.clear();
        let mut rows = Vec::new();
        for (id, seq, token, pos, logits) in call {
            batch
                .add(LlamaToken(token as i32), pos as i32, &[seq as i32], logits)
                .expect("the scheduler keeps a step within n_batch");
            if logits {
                rows.push((id, batch.n_tokens() - 1));
            }
        }
        // Time waiting for the CPU (another model's step) is not decode time.
        let turn = shared.seat.turn();
        let t = Instant::now();
        let decoded = ctx.decode(batch);
        drop(turn);
        if let Err(err) = decoded {
            // Every sequence fed in this step now has an unknown KV state:
            // end those and drop their cells; keep the others.
            tracing::error!(%err, tokens = batch.n_tokens(), "llama_decode failed");
            for feed in &plan.feeds {
                reports.discarded.push(feed.id);
                if let Some(mut a) = active.remove(&feed.id) {
                    a.fail(GenerateError::Internal(format!("decode failed: {err}")));
                    reports.ended.push(a.record(Outcome::Error));
                }
            }
            return Duration::ZERO;
        }
        decode_time += t.elapsed();
        // Logits are only there until the next call: sample now.
        sampled_rows += rows.len();
        for (id, row) in rows {
            let Some(a) = active.get_mut(&id) else {
                continue;
            };
            let (token, step) = a.sample(&shared.model, ctx, row);
            // Reported even when it ends the request: it counts as generated.
            reports.sampled.push((id, token));
            match step {
                Step::Continue => {}
                Step::Finished(reason) => {
                    reports.finished.push(id);
                    let a = active.remove(&id).expect("present above");
                    reports.ended.push(a.record(outcome_of(reason)));
                }
            }
        }
    }
    tracing::debug!(
        tokens,
        sequences = plan.feeds.len(),
        calls = n_calls,
        sampled = sampled_rows,
        decode_us = decode_time.as_micros() as u64,
        sample_us = (started.elapsed() - decode_time).as_micros() as u64,
        "step"
    );
    decode_time
}

fn outcome_of(reason: FinishReason) -> Outcome {
    match reason {
        FinishReason::Stop | FinishReason::ToolCalls => Outcome::Stop,
        FinishReason::Length => Outcome::Length,
        FinishReason::Cancelled => Outcome::Cancelled,
    }
}

fn apply(ctx: &mut LlamaContext<'_>, op: &KvOp) {
    match *op {
        KvOp::Share { src, dst, len } => {
            if let Err(err) = ctx.copy_kv_cache_seq(src as i32, dst as i32, None, Some(len)) {
                tracing::error!(%err, src, dst, len, "could not share KV cells");
            }
        }
        KvOp::Clear { seq } => {
            if let Err(err) = ctx.clear_kv_cache_seq(Some(seq), None, None) {
                tracing::error!(%err, seq, "could not clear KV cells");
            }
        }
        KvOp::Copy { src, dst, len } => {
            // Across streams llama.cpp copies only whole streams (and the
            // data at the next decode); the tail is then dropped.
            if let Err(err) = ctx.copy_kv_cache_seq(src as i32, dst as i32, None, None) {
                tracing::error!(%err, src, dst, "could not copy a KV stream");
            }
            if let Err(err) = ctx.clear_kv_cache_seq(Some(dst), Some(len), None) {
                tracing::error!(%err, dst, len, "could not cut a copied KV stream");
            }
        }
        KvOp::Truncate { seq, len } => {
            if let Err(err) = ctx.clear_kv_cache_seq(Some(seq), Some(len), None) {
                tracing::error!(%err, seq, len, "could not cut a KV stream");
            }
        }
    }
}
