//! Which computed prefix a request starts from, and where its cells go: shared cells of the unified pool, or a stream of its own.

use crate::kv::{self, common_prefix, Holder};
use crate::{KvOp, RequestId, Scheduler, SeqId, Token};

/// A request waits for a prefilling sequence only when that saves at least
/// this many tokens of prefill; below it, computing them again is cheaper
/// than the extra steps of waiting.
const SHARE_WAIT_MIN_TOKENS: usize = 32;

impl Scheduler {
    /// The computed prefix `id` can share now (with the cache on, or from
    /// its first sibling), or `None` when it should rather wait for a
    /// prefilling sequence that is computing more of it.
    pub(crate) fn prefix(&self, id: RequestId) -> Option<Option<kv::Match>> {
        let r = &self.requests[&id];
        // The last known token is always fed again: its logits pick the next one.
        let limit = r.tokens.len() - 1;
        if let Some(first) = r.sibling_of.and_then(|f| self.requests.get(&f)) {
            // Another choice of the same prompt: the first choice computes
            // it once and the others share its cells, whatever the cache
            // settings and however short the prompt. The choices then also
            // decode in the same steps, so each is reproducible.
            if first.seq.is_none() || first.in_kv < limit {
                return None;
            }
            return Some(self.kv.lookup(&r.tokens, limit));
        }
        if !self.config.prefix_cache || !r.reuse_prefix {
            return Some(None);
        }
        // In streams a short prefix costs nothing where it lies, and
        // `place_in_stream` decides whether to take it; in the unified pool
        // sharing pins cells (see `Config::min_reuse`).
        let min_len = match self.config.stream_cells {
            Some(_) => 1,
            None => self.config.min_reuse,
        };
        let found = self
            .kv
            .lookup(&r.tokens, limit)
            .filter(|m| m.len >= min_len);
        let reused = found.map_or(0, |m| m.len as usize);
        if self.shares_with_prefilling(&r.tokens[..limit], reused) {
            None
        } else {
            Some(found)
        }
    }

    pub(crate) fn would_wait_for_share(&self, id: RequestId) -> bool {
        self.prefix(id).is_none()
    }

    /// The shortest prefix worth starting from: in streams, also worth
    /// its copy.
    fn reuse_min(&self) -> u32 {
        match self.config.stream_cells {
            Some(_) => self.config.min_reuse.max(self.config.copy_tokens),
            None => self.config.min_reuse,
        }
    }

    /// Whether a sequence still prefilling will soon have computed much
    /// more of `tokens` than the `reused` already found.
    fn shares_with_prefilling(&self, tokens: &[Token], reused: usize) -> bool {
        self.running.iter().any(|id| {
            let r = &self.requests[id];
            if r.in_kv + 1 >= r.tokens.len() {
                return false;
            }
            let shared = common_prefix(&r.tokens, tokens);
            shared > r.in_kv
                && shared >= self.reuse_min() as usize
                && shared >= reused + SHARE_WAIT_MIN_TOKENS
        })
    }

    /// Unified pool: a free sequence id and cells for what is not shared.
    /// Returns the sequence and the tokens it shares.
    pub(crate) fn place_in_pool(
        &mut self,
        id: RequestId,
        mut found: Option<kv::Match>,
    ) -> Option<(SeqId, usize)> {
        let r = &self.requests[&id];
        let watermark = if self.running.is_empty() {
            0
        } else {
            self.config.kv_cells / 100
        };
        let total = r.tokens.len() as u32;
        // Running sequences' unfed prompt tokens already have a claim on free cells.
        let promised = self.promised();
        loop {
            let need = total - found.map_or(0, |m| m.len) + watermark + promised;
            if self.kv.free() >= need && self.kv.free_seq().is_some() {
                break;
            }
            let pinned = found.map(|m| m.src);
            if self.evict_one(pinned) {
                continue;
            }
            found?;
            // The entry it would share from is all that is left to evict:
            // computing everything is better than waiting for room that
            // only its eviction can make.
            found = None;
        }
        let reused = found.map_or(0, |m| m.len as usize);
        let seq = self.kv.free_seq().expect("checked above");
        match found {
            Some(m) => {
                self.kv.fork(seq, id, m);
                self.pending_ops.push(KvOp::Share {
                    src: m.src,
                    dst: seq,
                    len: m.len,
                });
                if let Holder::Cached { .. } = self.kv.holder(m.src) {
                    self.tick += 1;
                    // Touch the source: it just proved useful.
                    self.touch(m.src);
                }
            }
            None => self.kv.start(seq, id),
        }
        Some((seq, reused))
    }

    /// Streams: a stream of its own. A cached stream that holds the matched
    /// prefix is taken over in place (free, but its tail beyond the prefix is
    /// lost), unless a free stream keeps that tail, or sits better, for the
    /// price of a copy; a prefix only a running sequence (or another choice)
    /// holds is copied into a stream of its own when it is worth a copy. A
    /// prompt always fits its stream ([`Scheduler::enqueue`] refused longer
    /// ones).
    ///
    /// A prefix too short to copy (a chat template's header, which every
    /// request shares) is still taken over in place, as llama-server reuses
    /// a slot's cells: W1's second requests re-computed 27 of their 44
    /// tokens without it. Not where a fresh stream would keep the running
    /// ids in fewer runs (each run is one more micro-batch, one more read of
    /// the weights, at every step of the request), nor where a free stream
    /// spares a cached tail longer than what the prefix saves.
    pub(crate) fn place_in_stream(
        &mut self,
        id: RequestId,
        mut found: Option<kv::Match>,
    ) -> Option<(SeqId, usize)> {
        // Another choice of the same prompt shares it however short, so
        // that the choices decode alike (see `Scheduler::prefix`).
        let copy_min = if self.requests[&id].sibling_of.is_some() {
            1
        } else {
            self.reuse_min()
        };
        if let Some(m) = found {
            // What each cached stream holds of the prompt. Streams that
            // computed a chat template's header apart each hold it on a path
            // of their own.
            let tokens = &self.requests[&id].tokens;
            let cached = self.kv.cached_lru();
            let holders: Vec<kv::Match> = cached
                .iter()
                .filter_map(|&s| self.kv.lookup_on(s, tokens, tokens.len() - 1))
                .collect();
            let keeps = self.free_streams().min_by_key(|&s| self.new_runs(s));
            if m.len >= copy_min {
                // Of the streams holding all of it, the best placed, then the
                // one holding least beyond it (what taking it over throws away).
                let held = holders
                    .iter()
                    .filter(|h| h.len == m.len)
                    .min_by_key(|h| (self.new_runs(h.src), self.kv.len(h.src)));
                if let Some(&on) = held {
                    let tail = self.kv.len(on.src) - on.len;
                    let copy = keeps.is_some_and(|free| {
                        tail >= copy_min || self.new_runs(free) < self.new_runs(on.src)
                    });
                    let Some(free) = keeps.filter(|_| copy) else {
                        return Some(self.take_over(id, on));
                    };
                    self.tick += 1;
                    // Touch the source: it just proved useful.
                    self.touch(on.src);
                    return Some(self.copy_into(free, id, on));
                }
            } else {
                // Too short to copy: the best placed stream, then the most
                // it holds, then the least beyond that.
                let held = holders.iter().min_by_key(|h| {
                    let runs = self.new_runs(h.src);
                    (runs, std::cmp::Reverse(h.len), self.kv.len(h.src))
                });
                if let Some(&on) = held {
                    let spares_tail = keeps.is_some() && self.kv.len(on.src) - on.len > on.len;
                    let runs = self.new_runs(on.src);
                    let better_placed = self
                        .free_streams()
                        .chain(cached.iter().copied())
                        .any(|s| self.new_runs(s) < runs);
                    if !spares_tail && !better_placed {
                        return Some(self.take_over(id, on));
                    }
                }
                found = None;
            }
        }
        let seq = self.stream_for(found.map(|m| m.src))?;
        match found {
            Some(m) => Some(self.copy_into(seq, id, m)),
            None => {
                self.kv.start(seq, id);
                Some((seq, 0))
            }
        }
    }

    /// Gives cached stream `on.src` to `id`, keeping the cells of `on`.
    fn take_over(&mut self, id: RequestId, on: kv::Match) -> (SeqId, usize) {
        self.kv.retake(on.src, id, on);
        self.parked_at.remove(&on.src);
        self.pending_ops.push(KvOp::Truncate {
            seq: on.src,
            len: on.len,
        });
        (on.src, on.len as usize)
    }

    fn copy_into(&mut self, seq: SeqId, id: RequestId, m: kv::Match) -> (SeqId, usize) {
        self.kv.fork(seq, id, m);
        self.pending_ops.push(KvOp::Copy {
            src: m.src,
            dst: seq,
            len: m.len,
        });
        (seq, m.len as usize)
    }

    fn free_streams(&self) -> impl Iterator<Item = SeqId> + '_ {
        (0..self.config.max_seqs).filter(|&s| self.kv.holder(s) == Holder::Free)
    }

    /// A stream for a new sequence: free, or made free by evicting a cached
    /// one other than `pinned`. Chosen first so the running streams stay
    /// few runs of consecutive ids: llama.cpp puts only consecutive
    /// sequence ids into one micro-batch, and each micro-batch of a step
    /// reads the weights again. Then a free stream before a cached one, and
    /// the least recently used cached one.
    fn stream_for(&mut self, pinned: Option<SeqId>) -> Option<SeqId> {
        let free = self.free_streams().map(|s| (s, 0));
        let cached = self
            .kv
            .cached_lru()
            .into_iter()
            .filter(|&s| Some(s) != pinned)
            .enumerate()
            .map(|(rank, s)| (s, rank + 1));
        let (seq, rank) = free
            .chain(cached)
            .min_by_key(|&(s, rank)| (self.new_runs(s), rank))?;
        if rank > 0 {
            self.evict(seq);
        }
        Some(seq)
    }

    /// How the count of runs of consecutive running stream ids changes when
    /// stream `seq` runs too: +1 alone, 0 beside a run, -1 joining two.
    fn new_runs(&self, seq: SeqId) -> i32 {
        let running = |s: SeqId| matches!(self.kv.holder(s), Holder::Running(_));
        let left = seq > 0 && running(seq - 1);
        let right = seq + 1 < self.config.max_seqs && running(seq + 1);
        1 - i32::from(left) - i32::from(right)
    }

    /// Cells that running requests will need for tokens they already have.
    fn promised(&self) -> u32 {
        self.running.iter().map(|&id| self.unfed(id) as u32).sum()
    }
}
