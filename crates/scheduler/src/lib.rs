//! Hearth's serving scheduler: who is admitted, which tokens go into the next step, who waits.
//!
//! A pure state machine: no llama.cpp, no threads, no clock of its own (the
//! caller passes `now`). The engine thread asks for a [`Plan`] before every
//! decode step, carries it out (KV operations, one batch, sampling) and
//! reports back what it sampled and who finished.
//!
//! The rules, each tested in `tests.rs`:
//! - **Budget.** A step carries every running sequence's next token, then
//!   prompt chunks up to `step_tokens` in all (chunked prefill), so a long
//!   prompt stalls running streams for at most one bounded step.
//! - **Bursts.** While nothing runs, the first step waits up to
//!   [`Config::gather`] for requests arriving together, so that they are
//!   prefilled together (`gather.rs`).
//! - **Admission** needs a free sequence id and free KV cells for the
//!   uncached part of the prompt (plus a small watermark), never a slot count
//!   (in streams: a stream, free or made free by evicting a cached one);
//!   at most `max_running` sequences run at once. The wait queue is bounded.
//! - **Layout.** The pool is either one unified set of cells, which
//!   sequences share cell by cell, or one stream of cells per sequence id
//!   ([`Config::stream_cells`]). In streams, a sequence's attention scans
//!   only its own stream, a prefix is taken over in place from a cached
//!   stream or copied whole from another when that beats computing it
//!   ([`Config::copy_tokens`]), and new sequences go where the running
//!   streams stay consecutive (llama.cpp batches only consecutive ids
//!   together).
//! - **Priority.** Waiting requests are ordered by a key: their arrival time,
//!   plus `batch_delay` for batch work (ageing). Interactive work therefore
//!   goes first, but a batch request that has waited `batch_delay` ranks with
//!   interactive work that arrives now, so batch is never starved. An
//!   interactive request with an earlier key may pause a running batch one
//!   when every running place is taken, and while an interactive prompt is
//!   prefilled, batch sequences skip that step. While interactive work is
//!   about, batch prompts take at most a quarter of a step, so a step an
//!   interactive request must wait out stays short.
//! - **Prefix cache.** A finished sequence's cells stay cached; a new request
//!   starts from the longest computed prefix (running or cached) and shares
//!   those cells. A request whose prompt shares more with a sequence that is
//!   still prefilling waits for it rather than computing the same tokens twice.
//! - **Eviction** drops whole cached entries, least recently used first,
//!   when cells or sequence ids are needed, and when the cells held only by
//!   the cache exceed [`Config::cache_cells`]. In streams an idle stream
//!   slows no one, so it is kept until its stream is needed.
//! - **Pressure** (unified pool; a stream always holds its sequence's whole
//!   context). A running sequence whose next token cannot get a cell
//!   pauses the lowest-ranked running sequence (possibly itself); a paused
//!   sequence keeps its place in the queue and resumes from what stayed cached.
//! - **Embeddings** run between steps in batches of whole inputs, bounded by
//!   a token budget like a step ([`next_embed_batch`]).

mod config;
mod embed;
mod gather;
mod kv;
mod placement;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use config::{Config, ConfigError};
pub use embed::next_embed_batch;
use kv::KvTree;
use types::{LoadSnapshot, Priority};

pub type RequestId = u64;
pub type Token = u32;
/// A llama.cpp sequence id, below [`Config::max_seqs`].
pub type SeqId = u32;

/// The default [`Config::min_reuse`]. Sixty-four tokens cost one short
/// chunk of prefill.
pub const MIN_REUSE_TOKENS: u32 = 64;

/// The default [`Config::gather`]: long enough for a burst of clients that
/// start together (W1's 16 arrived within 6 to 20 ms, see `gather.rs`); a
/// request alone waits a fifth of it, 2 ms, against a first token's 100 ms
/// or more.
pub const GATHER: Duration = Duration::from_millis(10);

/// While interactive work has arrived within this long, batch prompts take
/// at most a [`BATCH_PREFILL_SHARE`] of each step: a step cannot be
/// interrupted, so an interactive request arriving during one waits for it,
/// and a full step of batch prompts is the longest step there is (512
/// tokens of the default model took 1.7 s on 2 cores). A server that only
/// sees batch work keeps whole steps, which waste least on decode rows.
pub(crate) const INTERACTIVE_RECENT: Duration = Duration::from_secs(30);

/// The share of `step_tokens` batch prompts may take (see
/// [`INTERACTIVE_RECENT`]): a quarter keeps the wait about a quarter of a
/// full step, while a step's decode rows still cost batch prefill little.
const BATCH_PREFILL_SHARE: usize = 4;

/// How long a new cache entry is exempt from [`Config::cache_cells`]: long
/// enough for a client's follow-up (the next turn of a conversation sent
/// right after the answer, the next request of a batch or an agent) to
/// find it, short enough that idle cells do not slow the steps after.
pub const CACHE_GRACE: Duration = Duration::from_secs(2);

/// A request as the scheduler sees it: an id and tokens.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: RequestId,
    pub tokens: Vec<Token>,
    pub priority: Priority,
    pub deadline: Option<Instant>,
    /// For the second and later choices of one request (`n` > 1): the
    /// first choice, whose prompt is this one's.
    pub sibling_of: Option<RequestId>,
    /// Start from a cached prefix when there is one. Off, the whole prompt
    /// is computed, so the answer does not depend on what ran before: a
    /// reused prefix ends with its last token computed alone, and a batch of
    /// one can round differently from the batch that computed it first,
    /// enough to move a near-tie of greedy decoding.
    pub reuse_prefix: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("the wait queue is full ({waiting} waiting)")]
    QueueFull { waiting: u32 },
    /// `cells`: the pool's, or with a stream per sequence, one stream's.
    #[error("{tokens} tokens can never fit the {cells} cells a sequence can hold")]
    TooLong { tokens: u32, cells: u32 },
}

/// A change to llama.cpp's KV cache, to apply in order before the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// `seq_cp(src, dst, 0, len)`: `dst` now also holds `src`'s first `len` cells.
    Share { src: SeqId, dst: SeqId, len: u32 },
    /// `seq_rm(seq, -1, -1)`: `seq` lets go of all its cells.
    Clear { seq: SeqId },
    /// Streams only: `seq_cp(src, dst, -1, -1)`, which copies `src`'s whole
    /// stream into `dst`'s (llama.cpp copies streams only whole), then
    /// `seq_rm(dst, len, -1)`: `dst` holds its own copy of `src`'s first
    /// `len` cells.
    Copy { src: SeqId, dst: SeqId, len: u32 },
    /// Streams only: `seq_rm(seq, len, -1)`: `seq` keeps its first `len`
    /// cells, taken over by the request that now holds it.
    Truncate { seq: SeqId, len: u32 },
}

/// A request admitted in this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub id: RequestId,
    pub seq: SeqId,
    /// Tokens taken from cells already computed.
    pub reused: u32,
    /// True when it ran before and was paused.
    pub resumed: bool,
}

/// Tokens of one sequence to put in this step's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    pub id: RequestId,
    pub seq: SeqId,
    /// Position of the first token.
    pub pos: u32,
    pub tokens: Vec<Token>,
    /// Whether the last token's logits are needed (then sample, and report
    /// [`Scheduler::sampled`] or [`Scheduler::finish`]).
    pub logits: bool,
}

/// What the engine does next, in this order: fail `expired`, apply
/// `kv_ops`, decode `feeds` as one batch.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Requests whose deadline passed, queued or running; already removed.
    pub expired: Vec<RequestId>,
    pub kv_ops: Vec<KvOp>,
    pub started: Vec<Started>,
    /// Running requests paused back into the queue.
    pub preempted: Vec<RequestId>,
    pub feeds: Vec<Feed>,
    /// KV cells in use once this plan is applied and decoded: in a unified
    /// pool, what llama.cpp's attention scans, whoever the cells belong to.
    pub cells_in_use: u32,
    /// Nothing runs and a burst of requests is still arriving: plan again
    /// at this time, or at the next arrival (see [`Config::gather`]).
    pub hold_until: Option<Instant>,
}

impl Plan {
    /// Nothing to do: no request changes and no KV operation.
    pub fn is_empty(&self) -> bool {
        self.expired.is_empty()
            && self.kv_ops.is_empty()
            && self.started.is_empty()
            && self.preempted.is_empty()
            && self.feeds.is_empty()
    }
}

#[derive(Debug)]
struct Request {
    tokens: Vec<Token>,
    priority: Priority,
    /// Ordering key: earlier ranks higher.
    key: Instant,
    deadline: Option<Instant>,
    sibling_of: Option<RequestId>,
    reuse_prefix: bool,
    seq: Option<SeqId>,
    /// Tokens already in this request's cells.
    in_kv: usize,
    /// Paused after running; exempt from the queue bound.
    paused: bool,
    started_once: bool,
}

#[derive(Debug, Default)]
struct Counters {
    prefix_queries: u64,
    prefix_query_tokens: u64,
    prefix_hit_tokens: u64,
    evictions: u64,
    preemptions: u64,
    rejected: u64,
    prompt_tokens: u64,
    generation_tokens: u64,
}

pub struct Scheduler {
    config: Config,
    kv: KvTree,
    requests: HashMap<RequestId, Request>,
    waiting: Vec<RequestId>,
    /// In admission order.
    running: Vec<RequestId>,
    /// KV operations in the order they were decided: those decided between
    /// plans (finishes, discards) and then the plan's own. llama.cpp must see
    /// them in this order: a cell shared by a `Share` survives a later
    /// `Clear` of its source, but not an earlier one.
    pending_ops: Vec<KvOp>,
    /// Logical clock for least-recently-used order.
    tick: u64,
    /// The time of the latest plan: when entries parked since were parked.
    clock: Option<Instant>,
    /// When each cache entry was last parked.
    parked_at: HashMap<SeqId, Instant>,
    /// When the latest interactive request arrived.
    last_interactive: Option<Instant>,
    /// Requests arriving while nothing runs, not yet planned.
    burst: Option<gather::Burst>,
    counters: Counters,
}

impl Scheduler {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            kv: KvTree::new(config.kv_cells, config.max_seqs),
            config,
            requests: HashMap::new(),
            waiting: Vec::new(),
            running: Vec::new(),
            pending_ops: Vec::new(),
            tick: 0,
            clock: None,
            parked_at: HashMap::new(),
            last_interactive: None,
            burst: None,
            counters: Counters::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Updates [`Config::copy_tokens`] as the engine's measurements change.
    pub fn set_copy_tokens(&mut self, tokens: u32) {
        self.config.copy_tokens = tokens;
    }

    /// Queues a request, or refuses it when the queue is full.
    pub fn enqueue(&mut self, req: NewRequest, now: Instant) -> Result<(), Rejected> {
        let cells = self.config.stream_cells.unwrap_or(self.config.kv_cells);
        if req.tokens.len() >= cells as usize {
            return Err(Rejected::TooLong {
                tokens: req.tokens.len() as u32,
                cells,
            });
        }
        let queued = self.queued_new();
        if queued >= self.config.max_queue {
            self.counters.rejected += 1;
            return Err(Rejected::QueueFull { waiting: queued });
        }
        let key = match req.priority {
            Priority::Interactive => {
                self.last_interactive = Some(now);
                now
            }
            Priority::Batch => now + self.config.batch_delay,
        };
        self.requests.insert(
            req.id,
            Request {
                tokens: req.tokens,
                priority: req.priority,
                key,
                deadline: req.deadline,
                sibling_of: req.sibling_of,
                reuse_prefix: req.reuse_prefix,
                seq: None,
                in_kv: 0,
                paused: false,
                started_once: false,
            },
        );
        self.waiting.push(req.id);
        if self.running.is_empty() {
            match &mut self.burst {
                Some(burst) => burst.arrived(now),
                None => self.burst = Some(gather::Burst::start(now)),
            }
        }
        Ok(())
    }

    /// Waiting requests that count against the bound (paused ones do not).
    fn queued_new(&self) -> u32 {
        self.waiting
            .iter()
            .filter(|id| !self.requests[id].paused)
            .count() as u32
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty() && self.pending_ops.is_empty()
    }

    pub fn running_ids(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.running.iter().copied()
    }

    /// Records the token sampled for `id`; it is fed in the next step.
    pub fn sampled(&mut self, id: RequestId, token: Token) {
        if let Some(r) = self.requests.get_mut(&id) {
            r.tokens.push(token);
            self.counters.generation_tokens += 1;
        }
    }

    /// Ends a request however it ended (done, cancelled, failed elsewhere).
    /// Its cells stay cached when the prefix cache is on.
    pub fn finish(&mut self, id: RequestId) {
        self.end(id, true);
    }

    /// Ends a request whose cells can no longer be trusted (its decode
    /// failed): they are dropped, never cached.
    pub fn discard(&mut self, id: RequestId) {
        self.end(id, false);
    }

    fn end(&mut self, id: RequestId, keep: bool) {
        let Some(r) = self.requests.remove(&id) else {
            return;
        };
        self.waiting.retain(|&w| w != id);
        self.running.retain(|&w| w != id);
        if let Some(seq) = r.seq {
            self.retire(seq, keep);
        }
    }

    /// A running sequence's cells become a cache entry, or are let go.
    fn retire(&mut self, seq: SeqId, keep: bool) {
        if keep && self.config.prefix_cache && self.kv.len(seq) > 0 {
            self.tick += 1;
            self.kv.park(seq, self.tick);
            if let Some(now) = self.clock {
                self.parked_at.insert(seq, now);
            }
            for other in self.kv.redundant_with(seq) {
                self.drop_seq(other);
            }
        } else {
            self.drop_seq(seq);
        }
    }

    fn drop_seq(&mut self, seq: SeqId) {
        self.kv.release(seq);
        self.parked_at.remove(&seq);
        self.pending_ops.push(KvOp::Clear { seq });
    }

    /// Decides the next step.
    pub fn plan(&mut self, now: Instant) -> Plan {
        let mut plan = Plan::default();
        self.clock = Some(now);
        self.expire(now, &mut plan);
        if let Some(burst) = self.burst.filter(|_| self.running.is_empty()) {
            let waiting = self.queued_new() as usize;
            let max_running = self.config.max_running as usize;
            plan.hold_until =
                gather::hold_until(self.config.gather, burst, waiting, max_running, now);
            if plan.hold_until.is_some() {
                // KV operations decided meanwhile wait for the real plan.
                plan.cells_in_use = self.kv.used();
                return plan;
            }
        }
        self.burst = None;
        self.admit(&mut plan);
        self.fill(&mut plan);
        // After admission, so an entry a new request starts from is on a
        // running path and no longer counts as cache-only.
        self.trim_cache(now);
        plan.kv_ops = std::mem::take(&mut self.pending_ops);
        plan.cells_in_use = self.kv.used();
        plan
    }

    fn expire(&mut self, now: Instant, plan: &mut Plan) {
        let expired: Vec<RequestId> = self
            .waiting
            .iter()
            .chain(&self.running)
            .copied()
            .filter(|id| self.requests[id].deadline.is_some_and(|d| d <= now))
            .collect();
        for id in expired {
            self.finish(id);
            plan.expired.push(id);
        }
    }

    fn admit(&mut self, plan: &mut Plan) {
        let requests = &self.requests;
        self.waiting.sort_by_key(|id| (requests[id].key, *id));
        let mut i = 0;
        while i < self.waiting.len() {
            let id = self.waiting[i];
            if self.running.len() >= self.config.max_running as usize {
                if self.would_wait_for_share(id) {
                    i += 1;
                    continue;
                }
                if !self.pause_for(id, plan) {
                    break;
                }
            }
            match self.try_start(id, plan) {
                Admission::Started => {
                    self.waiting.remove(i);
                }
                Admission::WaitForShare => i += 1,
                Admission::NoRoom => break,
            }
        }
    }

    /// Pauses a running batch request for interactive `id`, when `id` ranks
    /// above it. Returns whether a place was freed.
    fn pause_for(&mut self, id: RequestId, plan: &mut Plan) -> bool {
        let r = &self.requests[&id];
        if r.priority != Priority::Interactive {
            return false;
        }
        let key = r.key;
        let victim = self
            .running
            .iter()
            .copied()
            .filter(|v| {
                let v = &self.requests[v];
                v.priority == Priority::Batch && v.key > key
            })
            .max_by_key(|v| (self.requests[v].key, *v));
        match victim {
            Some(v) => {
                self.pause(v, plan);
                true
            }
            None => false,
        }
    }

    /// Moves a running request back to the queue; its cells become cached
    /// (evictable), so it resumes from whatever is left of them.
    fn pause(&mut self, id: RequestId, plan: &mut Plan) {
        let r = self.requests.get_mut(&id).expect("running request");
        let seq = r.seq.take().expect("running request has a sequence");
        r.in_kv = 0;
        r.paused = true;
        self.running.retain(|&x| x != id);
        self.waiting.push(id);
        self.counters.preemptions += 1;
        plan.preempted.push(id);
        // With the prefix cache on, its cells stay (evictable) and it resumes
        // from whatever is left of them; otherwise it recomputes.
        self.retire(seq, true);
    }

    fn try_start(&mut self, id: RequestId, plan: &mut Plan) -> Admission {
        let Some(found) = self.prefix(id) else {
            return Admission::WaitForShare;
        };
        let placed = if self.config.stream_cells.is_some() {
            self.place_in_stream(id, found)
        } else {
            self.place_in_pool(id, found)
        };
        let Some((seq, reused)) = placed else {
            return Admission::NoRoom;
        };
        let r = self.requests.get_mut(&id).expect("waiting request");
        r.seq = Some(seq);
        r.in_kv = reused;
        let resumed = r.paused;
        r.paused = false;
        if !r.started_once {
            r.started_once = true;
            self.counters.prompt_tokens += r.tokens.len() as u64;
            if self.config.prefix_cache {
                self.counters.prefix_queries += 1;
                self.counters.prefix_query_tokens += r.tokens.len() as u64;
                self.counters.prefix_hit_tokens += reused as u64;
            }
        }
        self.running.push(id);
        plan.started.push(Started {
            id,
            seq,
            reused: reused as u32,
            resumed,
        });
        Admission::Started
    }

    fn touch(&mut self, seq: SeqId) {
        self.kv.set_last_used(seq, self.tick);
    }

    /// Evicts least recently used entries idle for [`CACHE_GRACE`] until the
    /// cells only the cache holds fit [`Config::cache_cells`].
    /// Streams keep their cache: an idle stream is not scanned by anyone
    /// else's attention, and it is evicted when its stream is needed.
    fn trim_cache(&mut self, now: Instant) {
        if self.config.stream_cells.is_some() || self.kv.cached_only() <= self.config.cache_cells {
            return;
        }
        let idle = |s: &SeqId| {
            self.parked_at
                .get(s)
                .is_none_or(|&t| now.saturating_duration_since(t) >= CACHE_GRACE)
        };
        let victims: Vec<SeqId> = self.kv.cached_lru().into_iter().filter(idle).collect();
        for seq in victims {
            if self.kv.cached_only() <= self.config.cache_cells {
                break;
            }
            self.evict(seq);
        }
    }

    /// Evicts the least recently used cache entry other than `pinned`.
    fn evict_one(&mut self, pinned: Option<SeqId>) -> bool {
        let Some(victim) = self
            .kv
            .cached_lru()
            .into_iter()
            .find(|&s| Some(s) != pinned)
        else {
            return false;
        };
        self.evict(victim);
        true
    }

    fn evict(&mut self, seq: SeqId) {
        self.drop_seq(seq);
        self.counters.evictions += 1;
    }

    /// Puts decode tokens, then prompt chunks, into the step, within budget and free cells.
    fn fill(&mut self, plan: &mut Plan) {
        let requests = &self.requests;
        self.running.sort_by_key(|id| (requests[id].key, *id));
        let mut budget = self.config.step_tokens as usize;
        // An interactive prompt gets a step of its own, free of batch work
        // (decodes and prompt chunks): its first token comes as fast as on
        // an idle server, and batch streams lose one short step.
        let interactive_prefill = self
            .running
            .iter()
            .any(|id| self.requests[id].priority == Priority::Interactive && self.unfed(*id) > 1);
        let decoding: Vec<RequestId> = self
            .running
            .iter()
            .copied()
            .filter(|id| self.unfed(*id) == 1)
            .filter(|id| {
                !interactive_prefill || self.requests[id].priority == Priority::Interactive
            })
            .collect();
        for id in decoding {
            if self.requests.get(&id).is_none_or(|r| r.seq.is_none()) {
                continue; // paused while making room for a better-ranked one
            }
            // A stream always has room: prompt and reply stay within the
            // engine's context per sequence, which the stream holds.
            if self.config.stream_cells.is_none() && !self.make_room(1, id, plan) {
                continue; // paused itself
            }
            self.feed(id, 1, plan);
            budget -= 1;
        }
        let prefilling: Vec<RequestId> = self
            .running
            .iter()
            .copied()
            .filter(|id| self.unfed(*id) > 1)
            .filter(|id| {
                !interactive_prefill || self.requests[id].priority == Priority::Interactive
            })
            .collect();
        let mut batch_budget = match (self.clock, self.last_interactive) {
            (Some(now), Some(seen)) if now.saturating_duration_since(seen) < INTERACTIVE_RECENT => {
                (self.config.step_tokens as usize / BATCH_PREFILL_SHARE).max(1)
            }
            _ => budget,
        };
        for id in prefilling {
            if budget == 0 {
                break;
            }
            let batch = self.requests[&id].priority == Priority::Batch;
            let cap = if batch {
                budget.min(batch_budget)
            } else {
                budget
            };
            let want = self.unfed(id).min(cap);
            let n = if self.config.stream_cells.is_some() {
                want
            } else {
                while (self.kv.free() as usize) < want && self.evict_one(None) {}
                want.min(self.kv.free() as usize)
            };
            if n > 0 {
                self.feed(id, n, plan);
                budget -= n;
                if batch {
                    batch_budget = batch_budget.saturating_sub(n);
                }
            }
        }
    }

    fn unfed(&self, id: RequestId) -> usize {
        let r = &self.requests[&id];
        r.tokens.len() - r.in_kv
    }

    /// Frees `cells` for running `id`: evicts cache entries, then pauses the
    /// lowest-ranked running requests that have nothing in this step yet.
    /// False when `id` itself had to be paused.
    fn make_room(&mut self, cells: u32, id: RequestId, plan: &mut Plan) -> bool {
        while self.kv.free() < cells {
            if self.evict_one(None) {
                continue;
            }
            let fed: Vec<RequestId> = plan.feeds.iter().map(|f| f.id).collect();
            let victim = self
                .running
                .iter()
                .copied()
                .rfind(|v| !fed.contains(v))
                .expect("id itself is running and unfed");
            self.pause(victim, plan);
            if victim == id {
                return false;
            }
        }
        true
    }

    fn feed(&mut self, id: RequestId, n: usize, plan: &mut Plan) {
        let r = self.requests.get_mut(&id).expect("running request");
        let seq = r.seq.expect("running request has a sequence");
        let tokens = r.tokens[r.in_kv..r.in_kv + n].to_vec();
        let pos = r.in_kv as u32;
        r.in_kv += n;
        let logits = r.in_kv == r.tokens.len();
        self.kv.append(seq, &tokens);
        plan.feeds.push(Feed {
            id,
            seq,
            pos,
            tokens,
            logits,
        });
    }

    /// Gauges and running totals.
    pub fn load(&self) -> LoadSnapshot {
        let c = &self.counters;
        // A running sequence has its whole stream to itself, so a server
        // with no free stream reads as full, whatever its streams hold.
        // Streams copy what they share, so cached ones hold their own cells.
        let (active, cached) = match self.config.stream_cells {
            Some(cells) => (self.running.len() as u32 * cells, self.kv.held().1),
            None => (self.kv.active(), self.kv.cached_only()),
        };
        LoadSnapshot {
            running: self.running.len() as u32,
            waiting: self.waiting.len() as u32,
            kv_cells: self.kv.capacity(),
            kv_active_cells: active,
            kv_cached_cells: cached,
            prefix_queries_total: c.prefix_queries,
            prefix_query_tokens_total: c.prefix_query_tokens,
            prefix_hit_tokens_total: c.prefix_hit_tokens,
            prefix_evictions_total: c.evictions,
            preemptions_total: c.preemptions,
            rejected_total: c.rejected,
            prompt_tokens_total: c.prompt_tokens,
            generation_tokens_total: c.generation_tokens,
        }
    }
}

enum Admission {
    Started,
    /// Another request is computing this one's prefix; try again next step.
    WaitForShare,
    /// Not enough cells or ids even after evicting the cache.
    NoRoom,
}
