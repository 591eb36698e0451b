//! Per-sequence token samplers: a direct argmax for plain greedy decoding,
//! otherwise a llama.cpp sampler chain built from Hearth's sampling parameters.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use types::SamplingParams;

/// llama.cpp's `LLAMA_DEFAULT_SEED`: asks the dist sampler for a random seed.
const RANDOM_SEED: u32 = u32::MAX;

/// Chooses the next token of one sequence.
pub(crate) enum TokenSampler {
    /// Greedy with no penalties. Done here in one pass over the logits:
    /// llama.cpp's chain first copies every logit into a candidate array,
    /// which costs about 1% of a decode step on small models.
    Argmax {
        banned: Vec<LlamaToken>,
    },
    Chain(LlamaSampler),
}

impl TokenSampler {
    /// Samples from the logits of batch row `row` (and records the token in
    /// the chain's state, for penalties).
    pub(crate) fn sample(&mut self, ctx: &LlamaContext<'_>, row: i32) -> LlamaToken {
        match self {
            TokenSampler::Chain(chain) => chain.sample(ctx, row),
            TokenSampler::Argmax { banned } => argmax(ctx.get_logits_ith(row), banned),
        }
    }
}

/// Index of the largest logit, the first one on ties (as llama.cpp's greedy
/// sampler picks), never a banned token.
fn argmax(logits: &[f32], banned: &[LlamaToken]) -> LlamaToken {
    let pick = |skip: &dyn Fn(usize) -> bool| {
        let mut best = 0;
        let mut best_logit = f32::NEG_INFINITY;
        for (i, &logit) in logits.iter().enumerate() {
            if logit > best_logit && !skip(i) {
                best = i;
                best_logit = logit;
            }
        }
        best
    };
    let mut best = pick(&|_| false);
    if banned.iter().any(|t| t.0 as usize == best) {
        best = pick(&|i| banned.iter().any(|t| t.0 as usize == i));
    }
    LlamaToken(best as i32)
}

/// Builds the sampler for one request. A `grammar` masks every token that
/// would break it, before any other filter.
pub(crate) fn build(
    params: &SamplingParams,
    n_vocab: i32,
    n_ctx: u32,
    prompt: &[LlamaToken],
    banned: &[LlamaToken],
    grammar: Option<llguidance::Matcher>,
) -> TokenSampler {
    let penalised = params.repeat_penalty != 1.0
        || params.presence_penalty != 0.0
        || params.frequency_penalty != 0.0;
    if grammar.is_none()
        && params.is_greedy()
        && !(penalised && params.repeat_last_n > 0)
        && params.logit_bias.is_empty()
    {
        return TokenSampler::Argmax {
            banned: banned.to_vec(),
        };
    }
    TokenSampler::Chain(chain(params, n_vocab, n_ctx, prompt, banned, grammar))
}

/// The chain follows llama.cpp's own order (penalties, top-k, top-p, min-p,
/// temperature, then the draw), so the same parameters mean the same thing as
/// in `llama-server`. Filters at their neutral values are left out: each one
/// costs a pass over the candidates on every token.
///
/// `banned` tokens (end-of-generation, when a request ignores EOS) get a
/// logit of minus infinity, so they are never drawn.
fn chain(
    params: &SamplingParams,
    n_vocab: i32,
    n_ctx: u32,
    prompt: &[LlamaToken],
    banned: &[LlamaToken],
    grammar: Option<llguidance::Matcher>,
) -> LlamaSampler {
    let mut chain = Vec::new();
    // First, so that no later filter keeps only tokens the grammar forbids.
    if let Some(matcher) = grammar {
        chain.push(LlamaSampler::from(matcher));
    }
    if !banned.is_empty() || !params.logit_bias.is_empty() {
        // The request's biases first: a banned token stays banned whatever
        // bias the request gives it.
        let biases: Vec<_> = params
            .logit_bias
            .iter()
            .map(|&(t, bias)| LlamaLogitBias::new(LlamaToken(t as i32), bias))
            .chain(
                banned
                    .iter()
                    .map(|&t| LlamaLogitBias::new(t, f32::NEG_INFINITY)),
            )
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    let penalised = params.repeat_penalty != 1.0
        || params.presence_penalty != 0.0
        || params.frequency_penalty != 0.0;
    if penalised && params.repeat_last_n > 0 {
        // No sequence outgrows the context, so a longer window means the
        // whole sequence (llama.cpp's `-1`). llama.cpp allocates the window
        // up front: unclamped, a request for four billion tokens would
        // abort the process.
        let window = params.repeat_last_n.min(n_ctx);
        let mut penalties = LlamaSampler::penalties(
            n_vocab,
            i32::try_from(window).unwrap_or(i32::MAX),
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        );
        // As in llama-server, the penalty window covers the prompt's tail too,
        // so the model is discouraged from parroting the question back. Only
        // this sampler sees the prompt: a grammar must not.
        let start = prompt.len().saturating_sub(window as usize);
        penalties.accept_many(&prompt[start..]);
        chain.push(penalties);
    }
    if params.is_greedy() {
        chain.push(LlamaSampler::greedy());
    } else {
        if params.top_k > 0 {
            chain.push(LlamaSampler::top_k(
                i32::try_from(params.top_k).unwrap_or(i32::MAX),
            ));
        }
        if params.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(params.top_p, 1));
        }
        if params.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(params.min_p, 1));
        }
        chain.push(LlamaSampler::temp(params.temperature));
        chain.push(LlamaSampler::dist(params.seed.unwrap_or(RANDOM_SEED)));
    }
    LlamaSampler::chain_simple(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_banned_tokens() {
        let logits = [0.5, 3.0, -1.0, 3.0, 2.5];
        assert_eq!(argmax(&logits, &[]), LlamaToken(1));
        assert_eq!(argmax(&logits, &[LlamaToken(1)]), LlamaToken(3));
        assert_eq!(
            argmax(&logits, &[LlamaToken(1), LlamaToken(3)]),
            LlamaToken(4)
        );
    }

    #[test]
    fn argmax_ignores_nan() {
        let logits = [f32::NAN, 1.0, f32::NAN, 0.5];
        assert_eq!(argmax(&logits, &[]), LlamaToken(1));
    }
}
