//! Sampling parameters for one sequence, with the validation every entry point shares.

use serde::{Deserialize, Serialize};

/// How the next token is chosen. Defaults follow llama.cpp's, so a request that
/// sets nothing behaves as it would under `llama-server`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); other samplers are then irrelevant.
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 disables the filter.
    pub top_k: u32,
    /// Nucleus sampling; 1.0 disables the filter.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the best one; 0 disables.
    pub min_p: f32,
    /// Random seed; `None` draws one, so two runs differ.
    pub seed: Option<u32>,
    /// Multiplicative penalty on tokens seen in the last `repeat_last_n`; 1.0 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the three penalties look at.
    pub repeat_last_n: u32,
    /// OpenAI-style additive penalty for any token already present; 0 disables.
    pub presence_penalty: f32,
    /// OpenAI-style additive penalty scaled by a token's count; 0 disables.
    pub frequency_penalty: f32,
    /// Added to these tokens' logits before any filter (OpenAI's
    /// `logit_bias`, each -100 to 100: -100 bans a token in practice, 100
    /// all but forces it).
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: None,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
        }
    }
}

/// A sampling parameter outside the range the samplers accept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}` is {value}, but {expected}")]
pub struct InvalidSampling {
    pub field: &'static str,
    pub value: f32,
    pub expected: &'static str,
}

impl SamplingParams {
    /// Greedy decoding: deterministic for a given prompt and model.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// True when the next token is the argmax and no randomness is involved.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Checks every field once, at the edge, so the engine can trust them.
    pub fn validate(&self) -> Result<(), InvalidSampling> {
        let check = |field, value: f32, ok: bool, expected| {
            if value.is_finite() && ok {
                Ok(())
            } else {
                Err(InvalidSampling {
                    field,
                    value,
                    expected,
                })
            }
        };
        let t = self.temperature;
        check(
            "temperature",
            t,
            (0.0..=100.0).contains(&t),
            "must be between 0 and 100",
        )?;
        let p = self.top_p;
        check("top_p", p, p > 0.0 && p <= 1.0, "must be in (0, 1]")?;
        let m = self.min_p;
        check("min_p", m, (0.0..=1.0).contains(&m), "must be in [0, 1]")?;
        let r = self.repeat_penalty;
        check(
            "repeat_penalty",
            r,
            r > 0.0 && r <= 10.0,
            "must be in (0, 10]",
        )?;
        let pp = self.presence_penalty;
        check(
            "presence_penalty",
            pp,
            (-2.0..=2.0).contains(&pp),
            "must be between -2 and 2",
        )?;
        let fp = self.frequency_penalty;
        check(
            "frequency_penalty",
            fp,
            (-2.0..=2.0).contains(&fp),
            "must be between -2 and 2",
        )?;
        for &(_, bias) in &self.logit_bias {
            check(
                "logit_bias",
                bias,
                (-100.0..=100.0).contains(&bias),
                "each bias must be between -100 and 100",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        SamplingParams::default().validate().unwrap();
        SamplingParams::greedy().validate().unwrap();
        assert!(SamplingParams::greedy().is_greedy());
        assert!(!SamplingParams::default().is_greedy());
    }

    #[test]
    fn rejects_out_of_range_and_non_finite() {
        // Each case breaks exactly one field; the error must name that one.
        let cases = [
            (
                "temperature",
                SamplingParams {
                    temperature: -0.1,
                    ..Default::default()
                },
            ),
            (
                "temperature",
                SamplingParams {
                    temperature: f32::NAN,
                    ..Default::default()
                },
            ),
            (
                "top_p",
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
            ),
            (
                "top_p",
                SamplingParams {
                    top_p: 1.5,
                    ..Default::default()
                },
            ),
            (
                "min_p",
                SamplingParams {
                    min_p: -1.0,
                    ..Default::default()
                },
            ),
            (
                "repeat_penalty",
                SamplingParams {
                    repeat_penalty: 0.0,
                    ..Default::default()
                },
            ),
            (
                "presence_penalty",
                SamplingParams {
                    presence_penalty: 2.5,
                    ..Default::default()
                },
            ),
            (
                "frequency_penalty",
                SamplingParams {
                    frequency_penalty: f32::INFINITY,
                    ..Default::default()
                },
            ),
        ];
        for (field, case) in cases {
            let err = case.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field), "{err}");
            assert!(err.to_string().contains(err.expected), "{err}");
        }
    }

    #[test]
    fn error_names_the_field() {
        let err = SamplingParams {
            top_p: 2.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "top_p");
        assert!(err.to_string().contains("top_p"), "{err}");
    }
}
