//! Which queued embedding inputs go into the next embedding batch.
//!
//! Embedding inputs run in their own llama.cpp context, between generation
//! steps, so a batch is a stall for every running stream: it is bounded by
//! a token budget, like a step. An input never splits across batches (its
//! tokens must be pooled together), so one longer than the budget goes
//! alone.

/// How many inputs from the front of the queue (given as token counts, in
/// arrival order) the next batch takes: as many as fit in `budget` tokens
/// and `max_seqs` sequences, and always at least one when any wait.
pub fn next_embed_batch(queued: &[u32], budget: u32, max_seqs: u32) -> usize {
    let mut tokens = 0u64;
    let mut taken = 0usize;
    for &n in queued {
        if taken as u32 >= max_seqs.max(1) {
            break;
        }
        if taken > 0 && tokens + u64::from(n) > u64::from(budget) {
            break;
        }
        tokens += u64::from(n);
        taken += 1;
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_queued_takes_nothing() {
        assert_eq!(next_embed_batch(&[], 512, 16), 0);
    }

    #[test]
    fn inputs_fill_the_budget_in_arrival_order() {
        assert_eq!(next_embed_batch(&[100, 200, 200, 10], 512, 16), 4);
        assert_eq!(
            next_embed_batch(&[100, 200, 200, 20, 1], 512, 16),
            3,
            "no overtaking"
        );
        assert_eq!(
            next_embed_batch(&[100, 200, 212], 512, 16),
            3,
            "exactly full"
        );
    }

    #[test]
    fn an_input_longer_than_the_budget_goes_alone() {
        assert_eq!(next_embed_batch(&[2000, 10], 512, 16), 1);
        assert_eq!(
            next_embed_batch(&[10, 2000], 512, 16),
            1,
            "and waits its turn"
        );
    }

    #[test]
    fn sequences_cap_the_batch() {
        assert_eq!(next_embed_batch(&[1; 40], 512, 16), 16);
        assert_eq!(
            next_embed_batch(&[1; 4], 512, 0),
            1,
            "a zero cap still makes progress"
        );
    }
}
