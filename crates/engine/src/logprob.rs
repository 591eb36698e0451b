//! Log-probabilities of a generated token and its likeliest alternatives,
//! from one row of raw logits: pure arithmetic, tested without a model.

/// The log-softmax of `logits` at `chosen`, and the `top` likeliest tokens
/// (index, log-probability), best first, the lower index first on ties.
///
/// Two passes over the row (max, then the sum of exponentials); the top-`k`
/// list is kept sorted while scanning, which costs a comparison per token
/// for the usual handful asked for. NaN logits count as impossible tokens.
pub(crate) fn logprobs(logits: &[f32], chosen: usize, top: usize) -> (f32, Vec<(usize, f32)>) {
    let clean = |l: f32| if l.is_nan() { f32::NEG_INFINITY } else { l };
    let max = logits
        .iter()
        .copied()
        .map(clean)
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // No token is possible: nothing to normalise against.
        return (f32::NEG_INFINITY, Vec::new());
    }
    // Summed in f64: 49k small terms lose digits in f32.
    let sum: f64 = logits
        .iter()
        .map(|&l| f64::from(clean(l) - max).exp())
        .sum();
    let log_z = f64::from(max) + sum.ln();
    let logprob = |l: f32| (f64::from(clean(l)) - log_z) as f32;

    let mut best: Vec<(usize, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            let l = clean(l);
            if best.len() == top && l <= best[top - 1].1 {
                continue;
            }
            // After every equal logit already kept: the lower index wins ties.
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (i, l));
            best.truncate(top);
        }
    }
    let chosen_lp = logits
        .get(chosen)
        .map_or(f32::NEG_INFINITY, |&l| logprob(l));
    (
        chosen_lp,
        best.into_iter().map(|(i, l)| (i, logprob(l))).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn is_a_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0, 0.5];
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let (lp, _) = logprobs(&logits, i, 0);
            assert!(close(lp, (l.exp() / z).ln()), "token {i}: {lp}");
        }
        // Probabilities over the row sum to one.
        let total: f32 = (0..4).map(|i| logprobs(&logits, i, 0).0.exp()).sum();
        assert!(close(total, 1.0), "{total}");
    }

    #[test]
    fn top_is_best_first_and_breaks_ties_by_index() {
        let logits = [0.0f32, 5.0, 1.0, 5.0, 3.0, -2.0];
        let (_, top) = logprobs(&logits, 0, 3);
        let ids: Vec<usize> = top.iter().map(|&(i, _)| i).collect();
        assert_eq!(ids, [1, 3, 4]);
        assert!(close(top[0].1, top[1].1));
        assert!(top[1].1 > top[2].1);
        // Asking for more than the row holds gives the whole row, ordered.
        let (_, all) = logprobs(&logits, 0, 10);
        let ids: Vec<usize> = all.iter().map(|&(i, _)| i).collect();
        assert_eq!(ids, [1, 3, 4, 2, 0, 5]);
    }

    #[test]
    fn large_logits_do_not_overflow_and_masked_tokens_are_impossible() {
        let logits = [1000.0f32, 999.0, f32::NEG_INFINITY, f32::NAN];
        let (lp, top) = logprobs(&logits, 0, 4);
        assert!(close(lp, -(1.0f32 + (-1.0f32).exp()).ln()), "{lp}");
        assert_eq!(top.len(), 4);
        assert_eq!(logprobs(&logits, 2, 0).0, f32::NEG_INFINITY);
        assert_eq!(logprobs(&logits, 3, 0).0, f32::NEG_INFINITY);
        assert_eq!(
            logprobs(&[f32::NEG_INFINITY; 3], 0, 2),
            (f32::NEG_INFINITY, vec![])
        );
    }
}
