//! The KV pool's bookkeeping: which cells exist, which sequences share them, which are only cached.
//!
//! llama.cpp's unified KV cache lets one cell belong to several sequences:
//! `seq_cp` adds a sequence to cells another already holds, without copying
//! data, and `seq_rm` takes it off again; a cell is free once no sequence
//! holds it. This module mirrors that exactly, as a tree of *physical* cell
//! runs: a node is a run of consecutive positions computed once, and each
//! sequence id ("holder") is a path from the root. Shared prefixes are shared
//! nodes, so the cells in use are the sum of the nodes' lengths.
//!
//! With a stream per sequence, llama.cpp's cells are never shared: a
//! `Copy` duplicates them. The tree still shares the copy's nodes with its
//! source, which is right for lookups (either holds the tokens) and for
//! each holder's length; the cells a stream takes are counted per holder
//! ([`KvTree::held`]), not by [`KvTree::used`].
//!
//! The tree is keyed by what was computed, not by token equality: two
//! requests that prefilled the same text independently hold separate nodes,
//! just as they hold separate cells in llama.cpp. Lookups still find either.

use crate::{RequestId, SeqId, Token};

const ROOT: usize = 0;

#[derive(Debug)]
struct Node {
    parent: usize,
    /// Position of the first token in this run.
    start: u32,
    tokens: Vec<Token>,
    children: Vec<usize>,
    /// Holders whose path passes through (or ends at) this node.
    refs: u32,
    /// Of those, holders that belong to running requests.
    running_refs: u32,
    /// Holders whose path ends exactly here.
    ends: Vec<SeqId>,
}

/// Who holds a sequence id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    Free,
    Running(RequestId),
    /// Kept for the prefix cache; `last_used` orders evictions.
    Cached {
        last_used: u64,
    },
}

/// Where a prefix lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Match {
    /// A sequence that holds the matched cells.
    pub src: SeqId,
    /// Matched tokens, from position 0.
    pub len: u32,
    node: usize,
}

pub(crate) struct KvTree {
    nodes: Vec<Option<Node>>,
    free_nodes: Vec<usize>,
    /// Per sequence id: its path's last node, and who holds it.
    seqs: Vec<(usize, Holder)>,
    capacity: u32,
    used: u32,
    /// Cells on at least one running holder's path.
    active: u32,
}

impl KvTree {
    pub fn new(capacity: u32, max_seqs: u32) -> Self {
        let root = Node {
            parent: ROOT,
            start: 0,
            tokens: Vec::new(),
            children: Vec::new(),
            refs: 0,
            running_refs: 0,
            ends: Vec::new(),
        };
        Self {
            nodes: vec![Some(root)],
            free_nodes: Vec::new(),
            seqs: vec![(ROOT, Holder::Free); max_seqs as usize],
            capacity,
            used: 0,
            active: 0,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn used(&self) -> u32 {
        self.used
    }

    pub fn free(&self) -> u32 {
        self.capacity - self.used
    }

    /// Cells some running request needs.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// Cells held only by cache entries, on no running holder's path.
    pub fn cached_only(&self) -> u32 {
        self.used - self.active
    }

    pub fn holder(&self, seq: SeqId) -> Holder {
        self.seqs[seq as usize].1
    }

    /// Tokens held by `seq`.
    pub fn len(&self, seq: SeqId) -> u32 {
        let node = self.node(self.seqs[seq as usize].0);
        node.start + node.tokens.len() as u32
    }

    fn node(&self, id: usize) -> &Node {
        self.nodes[id].as_ref().expect("live node")
    }

    fn node_mut(&mut self, id: usize) -> &mut Node {
        self.nodes[id].as_mut().expect("live node")
    }

    /// A free sequence id, if any.
    pub fn free_seq(&self) -> Option<SeqId> {
        self.seqs
            .iter()
            .position(|(_, h)| *h == Holder::Free)
            .map(|i| i as SeqId)
    }

    /// Cached holders, least recently used first.
    pub fn cached_lru(&self) -> Vec<SeqId> {
        let mut cached: Vec<(u64, SeqId)> = self
            .seqs
            .iter()
            .enumerate()
            .filter_map(|(i, (_, h))| match h {
                Holder::Cached { last_used } => Some((*last_used, i as SeqId)),
                _ => None,
            })
            .collect();
        cached.sort_unstable();
        cached.into_iter().map(|(_, s)| s).collect()
    }

    /// The longest computed prefix of `tokens`, at most `limit` long.
    pub fn lookup(&self, tokens: &[Token], limit: usize) -> Option<Match> {
        let want = &tokens[..limit.min(tokens.len())];
        let mut node = ROOT;
        let mut pos = 0usize;
        loop {
            let mut best = (0usize, ROOT);
            for &child in &self.node(node).children {
                let run = &self.node(child).tokens;
                let n = common_prefix(run, &want[pos..]);
                if n > best.0 {
                    best = (n, child);
                }
            }
            let (n, child) = best;
            if n == 0 {
                break;
            }
            pos += n;
            node = child;
            if n < self.node(child).tokens.len() {
                break;
            }
        }
        if pos == 0 {
            return None;
        }
        // Any holder below the matched node holds its cells.
        let mut below = node;
        let src = loop {
            let n = self.node(below);
            if let Some(&seq) = n.ends.first() {
                break seq;
            }
            below = n.children[0];
        };
        Some(Match {
            src,
            len: pos as u32,
            node,
        })
    }

    /// Gives free sequence `seq` to a running request, holding nothing yet.
    pub fn start(&mut self, seq: SeqId, request: RequestId) {
        debug_assert_eq!(self.holder(seq), Holder::Free);
        self.seqs[seq as usize] = (ROOT, Holder::Running(request));
        self.node_mut(ROOT).ends.push(seq);
    }

    /// Gives free sequence `seq` to a running request, sharing the matched
    /// cells (llama.cpp: `seq_cp(m.src, seq, 0, m.len)`).
    pub fn fork(&mut self, seq: SeqId, request: RequestId, m: Match) {
        debug_assert_eq!(self.holder(seq), Holder::Free);
        let node = self.split(m.node, m.len);
        self.seqs[seq as usize] = (node, Holder::Running(request));
        self.node_mut(node).ends.push(seq);
        self.walk_up(node, |tree, id| tree.node_mut(id).refs += 1);
        self.hold_running(node);
    }

    /// The longest prefix of `tokens` (at most `limit` long) on `seq`'s own
    /// path. Streams that computed the same tokens apart hold them on paths
    /// of their own, of which [`KvTree::lookup`] finds one.
    pub fn lookup_on(&self, seq: SeqId, tokens: &[Token], limit: usize) -> Option<Match> {
        let want = &tokens[..limit.min(tokens.len())];
        let mut path = Vec::new();
        let mut id = self.seqs[seq as usize].0;
        while id != ROOT {
            path.push(id);
            id = self.node(id).parent;
        }
        let (mut node, mut pos) = (ROOT, 0usize);
        for &id in path.iter().rev() {
            let run = &self.node(id).tokens;
            let n = common_prefix(run, &want[pos..]);
            if n == 0 {
                break;
            }
            (node, pos) = (id, pos + n);
            if n < run.len() {
                break;
            }
        }
        (pos > 0).then_some(Match {
            src: seq,
            len: pos as u32,
            node,
        })
    }

    /// Gives cached `seq`, which holds `m`'s cells, to a running request:
    /// it keeps those cells and lets go of the rest (llama.cpp with a
    /// stream per sequence: `seq_rm(seq, m.len, -1)`).
    pub fn retake(&mut self, seq: SeqId, request: RequestId, m: Match) {
        debug_assert!(matches!(self.holder(seq), Holder::Cached { .. }));
        let keep = self.split(m.node, m.len);
        let leaf = self.seqs[seq as usize].0;
        self.node_mut(leaf).ends.retain(|&s| s != seq);
        // Let go of the tail below `keep`; a cached holder is on no
        // running count, so only the plain references change.
        let mut freed = 0;
        let mut id = leaf;
        while id != keep {
            let n = self.node_mut(id);
            n.refs -= 1;
            let (refs, parent, len) = (n.refs, n.parent, n.tokens.len() as u32);
            if refs == 0 {
                self.nodes[id] = None;
                self.free_nodes.push(id);
                self.node_mut(parent).children.retain(|&c| c != id);
                freed += len;
            }
            id = parent;
        }
        self.used -= freed;
        self.seqs[seq as usize] = (keep, Holder::Running(request));
        self.node_mut(keep).ends.push(seq);
        self.hold_running(keep);
    }

    /// A running holder now ends at `node`: its path counts as active.
    fn hold_running(&mut self, node: usize) {
        self.walk_up(node, |tree, id| {
            let n = tree.node_mut(id);
            n.running_refs += 1;
            if n.running_refs == 1 {
                let len = n.tokens.len() as u32;
                tree.active += len;
            }
        });
    }

    /// Tokens held by running holders and by cached ones, each holder
    /// counted whole: what a stream per sequence takes.
    pub fn held(&self) -> (u32, u32) {
        let mut running = 0;
        let mut cached = 0;
        for (seq, (_, holder)) in self.seqs.iter().enumerate() {
            match holder {
                Holder::Free => {}
                Holder::Running(_) => running += self.len(seq as SeqId),
                Holder::Cached { .. } => cached += self.len(seq as SeqId),
            }
        }
        (running, cached)
    }

    /// Makes `len` (a position inside `node`, or its end) a node boundary;
    /// returns the node that now ends there.
    fn split(&mut self, node: usize, len: u32) -> usize {
        let n = self.node(node);
        let end = n.start + n.tokens.len() as u32;
        if len == end {
            return node;
        }
        let cut = (len - n.start) as usize;
        if cut == 0 {
            return n.parent;
        }
        let n = self.node_mut(node);
        let tail = Node {
            parent: node,
            start: len,
            tokens: n.tokens.split_off(cut),
            children: std::mem::take(&mut n.children),
            refs: n.refs,
            running_refs: n.running_refs,
            ends: std::mem::take(&mut n.ends),
        };
        let children = tail.children.clone();
        let ends = tail.ends.clone();
        let tail_id = self.insert(tail);
        for child in children {
            self.node_mut(child).parent = tail_id;
        }
        for seq in ends {
            self.seqs[seq as usize].0 = tail_id;
        }
        self.node_mut(node).children.push(tail_id);
        node
    }

    fn insert(&mut self, node: Node) -> usize {
        if let Some(id) = self.free_nodes.pop() {
            self.nodes[id] = Some(node);
            id
        } else {
            self.nodes.push(Some(node));
            self.nodes.len() - 1
        }
    }

    /// Calls `f` on `node` and each ancestor below the root.
    fn walk_up(&mut self, mut node: usize, mut f: impl FnMut(&mut Self, usize)) {
        while node != ROOT {
            let parent = self.node(node).parent;
            f(self, node);
            node = parent;
        }
    }

    /// Records that running `seq` computed `tokens` at its next positions.
    /// The caller has checked there is room.
    pub fn append(&mut self, seq: SeqId, tokens: &[Token]) {
        debug_assert!(matches!(self.holder(seq), Holder::Running(_)));
        debug_assert!(tokens.len() as u32 <= self.free());
        let leaf = self.seqs[seq as usize].0;
        let n = self.node(leaf);
        let added = tokens.len() as u32;
        if leaf != ROOT && n.refs == 1 && n.children.is_empty() {
            self.node_mut(leaf).tokens.extend_from_slice(tokens);
        } else {
            let start = n.start + n.tokens.len() as u32;
            let child = self.insert(Node {
                parent: leaf,
                start,
                tokens: tokens.to_vec(),
                children: Vec::new(),
                refs: 1,
                running_refs: 1,
                ends: vec![seq],
            });
            let parent = self.node_mut(leaf);
            parent.children.push(child);
            parent.ends.retain(|&s| s != seq);
            self.seqs[seq as usize].0 = child;
        }
        self.used += added;
        self.active += added;
    }

    /// Marks a cached holder as just used.
    pub fn set_last_used(&mut self, seq: SeqId, tick: u64) {
        if let Holder::Cached { last_used } = &mut self.seqs[seq as usize].1 {
            *last_used = tick;
        }
    }

    /// Turns a running holder into a cached one; its cells stay until evicted.
    pub fn park(&mut self, seq: SeqId, tick: u64) {
        debug_assert!(matches!(self.holder(seq), Holder::Running(_)));
        self.seqs[seq as usize].1 = Holder::Cached { last_used: tick };
        let leaf = self.seqs[seq as usize].0;
        self.walk_up(leaf, |tree, id| {
            let n = tree.node_mut(id);
            n.running_refs -= 1;
            if n.running_refs == 0 {
                let len = n.tokens.len() as u32;
                tree.active -= len;
            }
        });
    }

    /// Cached holders made redundant by `seq`'s path: ones whose whole path
    /// is a prefix of it. Includes `seq` itself when someone else's path
    /// already extends past its end.
    pub fn redundant_with(&self, seq: SeqId) -> Vec<SeqId> {
        let leaf = self.seqs[seq as usize].0;
        if leaf == ROOT || !self.node(leaf).children.is_empty() {
            return vec![seq];
        }
        let mut out = Vec::new();
        let mut node = leaf;
        loop {
            for &other in &self.node(node).ends {
                if other != seq && matches!(self.holder(other), Holder::Cached { .. }) {
                    out.push(other);
                }
            }
            if node == ROOT {
                break;
            }
            node = self.node(node).parent;
        }
        out
    }

    /// Frees sequence id `seq` (llama.cpp: `seq_rm(seq, -1, -1)`); returns
    /// the cells that no other holder keeps.
    pub fn release(&mut self, seq: SeqId) -> u32 {
        let (leaf, holder) = self.seqs[seq as usize];
        debug_assert_ne!(holder, Holder::Free);
        let running = matches!(holder, Holder::Running(_));
        self.seqs[seq as usize] = (ROOT, Holder::Free);
        self.node_mut(leaf).ends.retain(|&s| s != seq);
        let mut freed = 0;
        self.walk_up(leaf, |tree, id| {
            let n = tree.node_mut(id);
            n.refs -= 1;
            let len = n.tokens.len() as u32;
            let (refs, parent) = (n.refs, n.parent);
            if running {
                n.running_refs -= 1;
                if n.running_refs == 0 {
                    tree.active -= len;
                }
            }
            if refs == 0 {
                // Nothing below can hold a reference either: descendants'
                // counts never exceed their ancestors'.
                tree.nodes[id] = None;
                tree.free_nodes.push(id);
                tree.node_mut(parent).children.retain(|&c| c != id);
                freed += len;
            }
        });
        self.used -= freed;
        freed
    }

    /// Recomputes every count from the nodes; panics on any mismatch.
    #[cfg(test)]
    pub fn check(&self) {
        let mut used = 0;
        let mut active = 0;
        let mut refs = vec![0u32; self.nodes.len()];
        let mut running = vec![0u32; self.nodes.len()];
        for (leaf, holder) in &self.seqs {
            if *holder == Holder::Free {
                continue;
            }
            let mut node = *leaf;
            while node != ROOT {
                refs[node] += 1;
                if matches!(holder, Holder::Running(_)) {
                    running[node] += 1;
                }
                node = self.node(node).parent;
            }
        }
        for (id, node) in self.nodes.iter().enumerate().skip(1) {
            let Some(node) = node else { continue };
            assert_eq!(node.refs, refs[id], "refs of node {id}");
            assert_eq!(node.running_refs, running[id], "running refs of node {id}");
            assert!(node.refs > 0, "node {id} is unreferenced but alive");
            let parent = self.node(node.parent);
            assert_eq!(node.start, parent.start + parent.tokens.len() as u32);
            assert!(parent.children.contains(&id));
            used += node.tokens.len() as u32;
            if node.running_refs > 0 {
                active += node.tokens.len() as u32;
            }
        }
        assert_eq!(self.used, used, "used cells");
        assert_eq!(self.active, active, "active cells");
        assert!(self.used <= self.capacity);
    }
}

pub(crate) fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(range: std::ops::Range<u32>) -> Vec<Token> {
        range.collect()
    }

    #[test]
    fn forks_share_cells_and_release_frees_only_unshared_ones() {
        let mut t = KvTree::new(1000, 8);
        t.start(0, 1);
        t.append(0, &toks(0..100));
        assert_eq!(t.used(), 100);

        let mut prompt = toks(0..60);
        prompt.extend(500..520);
        let m = t.lookup(&prompt, prompt.len() - 1).unwrap();
        assert_eq!((m.src, m.len), (0, 60));
        t.fork(1, 2, m);
        t.append(1, &toks(500..520));
        t.check();
        assert_eq!(t.used(), 120, "60 shared cells are counted once");
        assert_eq!(t.len(1), 80);

        // The first sequence goes on; its run was split at the fork point.
        t.append(0, &[7, 8]);
        assert_eq!(t.len(0), 102);
        t.check();

        assert_eq!(t.release(0), 42, "its unshared tail is freed");
        assert_eq!(t.used(), 80);
        assert_eq!(t.release(1), 80);
        assert_eq!(t.used(), 0);
        t.check();
    }

    #[test]
    fn a_lookup_never_matches_beyond_its_limit_and_needs_a_first_token() {
        let mut t = KvTree::new(100, 4);
        t.start(0, 1);
        t.append(0, &toks(0..10));
        assert_eq!(t.lookup(&toks(0..10), 9).unwrap().len, 9);
        assert!(t.lookup(&toks(1..10), 8).is_none());
        assert!(t.lookup(&toks(0..10), 0).is_none());
    }

    #[test]
    fn parked_cells_are_cached_not_active() {
        let mut t = KvTree::new(100, 4);
        t.start(0, 1);
        t.append(0, &toks(0..30));
        assert_eq!((t.used(), t.active()), (30, 30));
        t.park(0, 5);
        assert_eq!((t.used(), t.active()), (30, 0));
        assert_eq!(t.cached_lru(), vec![0]);
        // A fork from cached cells makes the shared part active again.
        let m = t.lookup(&toks(0..40), 39).unwrap();
        t.fork(1, 2, m);
        assert_eq!(t.active(), 30);
        t.check();
    }

    #[test]
    fn a_prefix_of_another_path_is_redundant() {
        let mut t = KvTree::new(100, 4);
        t.start(0, 1);
        t.append(0, &toks(0..10));
        t.park(0, 1);
        let m = t.lookup(&toks(0..20), 19).unwrap();
        t.fork(1, 2, m);
        t.append(1, &toks(10..20));
        t.park(1, 2);
        assert_eq!(t.redundant_with(1), vec![0]);
        // And a path that someone else extends is redundant itself.
        assert_eq!(t.redundant_with(0), vec![0]);
        assert_eq!(
            t.release(0),
            0,
            "every cell is still held by the longer path"
        );
        t.check();
    }

    #[test]
    fn a_cached_holder_taken_over_keeps_the_match_and_frees_its_tail() {
        let mut t = KvTree::new(1000, 4);
        t.start(0, 1);
        t.append(0, &toks(0..50));
        t.park(0, 1);
        let mut prompt = toks(0..30);
        prompt.extend(900..910);
        let m = t.lookup(&prompt, prompt.len() - 1).unwrap();
        assert_eq!(t.lookup_on(0, &prompt, prompt.len() - 1), Some(m));
        t.retake(0, 2, m);
        t.check();
        assert_eq!(t.holder(0), Holder::Running(2));
        assert_eq!((t.len(0), t.used(), t.active()), (30, 30, 30));
        t.append(0, &toks(900..910));
        assert_eq!(t.held(), (40, 0));
        t.check();
    }

    #[test]
    fn a_fork_finds_the_shared_cells_on_its_own_path() {
        let mut t = KvTree::new(1000, 4);
        t.start(0, 1);
        t.append(0, &toks(0..50));
        let m = t.lookup(&toks(0..60), 59).unwrap();
        // A fork off it is the copy a stream needs; both hold their own.
        t.fork(1, 2, m);
        t.park(1, 3);
        assert_eq!(
            t.lookup_on(1, &toks(0..60), 59),
            Some(Match { src: 1, ..m })
        );
        assert_eq!(t.held(), (50, 50));
        t.check();
    }

    #[test]
    fn lookups_follow_the_best_of_several_branches() {
        let mut t = KvTree::new(1000, 4);
        t.start(0, 1);
        t.append(0, &[1, 2, 3, 4]);
        let m = t.lookup(&[1, 2, 9], 2).unwrap();
        t.fork(1, 2, m);
        t.append(1, &[9, 9, 9]);
        let m = t.lookup(&[1, 2, 9, 9, 5], 4).unwrap();
        assert_eq!((m.src, m.len), (1, 4));
        let m = t.lookup(&[1, 2, 3, 4, 5], 4).unwrap();
        assert_eq!((m.src, m.len), (0, 4));
        t.check();
    }
}
