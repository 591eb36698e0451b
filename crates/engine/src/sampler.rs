//! Builds one llama.cpp sampler chain per sequence from Hearth's sampling parameters.

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use types::SamplingParams;

/// llama.cpp's `LLAMA_DEFAULT_SEED`: asks the dist sampler for a random seed.
const RANDOM_SEED: u32 = u32::MAX;

/// The chain follows llama.cpp's own order (penalties, top-k, top-p, min-p,
/// temperature, then the draw), so the same parameters mean the same thing as
/// in `llama-server`. Filters at their neutral values are left out: each one
/// costs a pass over the candidates on every token.
///
/// `banned` tokens (end-of-generation, when a request ignores EOS) get a
/// logit of minus infinity, so they are never drawn.
pub(crate) fn build(
    params: &SamplingParams,
    n_vocab: i32,
    prompt: &[LlamaToken],
    banned: &[LlamaToken],
) -> LlamaSampler {
    let mut chain = Vec::new();
    if !banned.is_empty() {
        let biases: Vec<_> = banned
            .iter()
            .map(|&t| LlamaLogitBias::new(t, f32::NEG_INFINITY))
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    let penalised = params.repeat_penalty != 1.0
        || params.presence_penalty != 0.0
        || params.frequency_penalty != 0.0;
    if penalised && params.repeat_last_n > 0 {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            i32::try_from(params.repeat_last_n).unwrap_or(i32::MAX),
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        ));
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
    let mut sampler = LlamaSampler::chain_simple(chain);
    if penalised {
        // As in llama-server, the penalty window covers the prompt's tail too,
        // so the model is discouraged from parroting the question back.
        let window = prompt.len().saturating_sub(params.repeat_last_n as usize);
        sampler.accept_many(&prompt[window..]);
    }
    sampler
}
