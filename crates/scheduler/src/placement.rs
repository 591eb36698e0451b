//! Where an admitted request's cells go: shared cells of the unified pool, or a stream of its own.

use crate::kv::{self, Holder};
use crate::{KvOp, RequestId, Scheduler, SeqId};

impl Scheduler {
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
    /// prefix is taken over in place; a prefix only a running sequence (or
    /// another choice) holds is copied into a free stream. A prompt always
    /// fits its stream ([`Scheduler::enqueue`] refused longer ones).
    pub(crate) fn place_in_stream(
        &mut self,
        id: RequestId,
        found: Option<kv::Match>,
    ) -> Option<(SeqId, usize)> {
        if let Some(m) = found {
            if let Some(seq) = self.kv.cached_holding(m) {
                self.kv.retake(seq, id, m);
                self.parked_at.remove(&seq);
                self.pending_ops.push(KvOp::Truncate { seq, len: m.len });
                return Some((seq, m.len as usize));
            }
        }
        let pinned = found.map(|m| m.src);
        let seq = match self.kv.free_seq() {
            Some(seq) => seq,
            None if self.evict_one(pinned) => self.kv.free_seq().expect("just evicted"),
            None => return None,
        };
        match found {
            Some(m) => {
                self.kv.fork(seq, id, m);
                self.pending_ops.push(KvOp::Copy {
                    src: m.src,
                    dst: seq,
                    len: m.len,
                });
                Some((seq, m.len as usize))
            }
            None => {
                self.kv.start(seq, id);
                Some((seq, 0))
            }
        }
    }

    /// Cells that running requests will need for tokens they already have.
    fn promised(&self) -> u32 {
        self.running.iter().map(|&id| self.unfed(id) as u32).sum()
    }
}
