//! Quantization by llama.cpp's own quantizer (`llama_model_quantize`): a
//! GGUF in, a GGUF of another weight type out. Hearth checks the input
//! first, so a bad file or a refused conversion is an error naming it,
//! never an abort inside llama.cpp.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use llama_cpp_sys_2 as sys;

use crate::{backend, EngineError};

/// The weight types `quantize` makes, by llama.cpp's names.
const TYPES: &[(&str, sys::llama_ftype)] = &[
    ("F32", sys::LLAMA_FTYPE_ALL_F32),
    ("F16", sys::LLAMA_FTYPE_MOSTLY_F16),
    ("BF16", sys::LLAMA_FTYPE_MOSTLY_BF16),
    ("Q8_0", sys::LLAMA_FTYPE_MOSTLY_Q8_0),
    ("Q6_K", sys::LLAMA_FTYPE_MOSTLY_Q6_K),
    ("Q5_K_M", sys::LLAMA_FTYPE_MOSTLY_Q5_K_M),
    ("Q5_K_S", sys::LLAMA_FTYPE_MOSTLY_Q5_K_S),
    ("Q5_1", sys::LLAMA_FTYPE_MOSTLY_Q5_1),
    ("Q5_0", sys::LLAMA_FTYPE_MOSTLY_Q5_0),
    ("Q4_K_M", sys::LLAMA_FTYPE_MOSTLY_Q4_K_M),
    ("Q4_K_S", sys::LLAMA_FTYPE_MOSTLY_Q4_K_S),
    ("Q4_1", sys::LLAMA_FTYPE_MOSTLY_Q4_1),
    ("Q4_0", sys::LLAMA_FTYPE_MOSTLY_Q4_0),
    ("IQ4_NL", sys::LLAMA_FTYPE_MOSTLY_IQ4_NL),
    ("Q3_K_L", sys::LLAMA_FTYPE_MOSTLY_Q3_K_L),
    ("Q3_K_M", sys::LLAMA_FTYPE_MOSTLY_Q3_K_M),
    ("Q3_K_S", sys::LLAMA_FTYPE_MOSTLY_Q3_K_S),
    ("Q2_K", sys::LLAMA_FTYPE_MOSTLY_Q2_K),
];

/// The weight types `quantize` accepts, for help and errors.
pub fn quantize_types() -> impl Iterator<Item = &'static str> {
    TYPES.iter().map(|&(name, _)| name)
}

/// The canonical name of a weight type (case-insensitive), or an error
/// listing the supported ones.
pub fn quantize_type(name: &str) -> Result<&'static str, EngineError> {
    TYPES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(n, _)| n)
        .ok_or_else(|| EngineError::QuantizeType {
            name: name.to_string(),
            supported: quantize_types().collect::<Vec<_>>().join(", "),
        })
}

fn ftype(name: &str) -> Result<sys::llama_ftype, EngineError> {
    let name = quantize_type(name)?;
    Ok(TYPES
        .iter()
        .find(|(n, _)| *n == name)
        .expect("just found")
        .1)
}

/// The quantized type of a GGUF's weight matrices, if any are quantized
/// (anything but F32, F16 and BF16 in a 2-D tensor).
pub fn quantized_weights(header: &gguf::Gguf) -> Option<String> {
    let quantized = header
        .tensors
        .iter()
        .any(|t| t.dims.len() >= 2 && !matches!(t.ggml_type.name(), "F32" | "F16" | "BF16"));
    quantized.then(|| header.quantization().unwrap_or_else(|| "quantized".into()))
}

/// How to quantize.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// A name from [`quantize_types`].
    pub weight_type: String,
    pub threads: u32,
    /// Quantize weights that are quantized already (each pass loses more).
    pub allow_requantize: bool,
}

/// Writes `input` (a single-file GGUF) as `output` in the chosen weight
/// type. Blocks until done; `output`'s growth shows the progress.
pub fn quantize(input: &Path, output: &Path, options: &QuantizeOptions) -> Result<(), EngineError> {
    let ftype = ftype(&options.weight_type)?;
    let header = gguf::read_model(input)?;
    if header.get_u64("split.count").is_some_and(|n| n > 1) {
        return Err(EngineError::Quantize {
            path: input.to_path_buf(),
            reason: "it is one file of a split set; quantize a merged file".into(),
        });
    }
    if !options.allow_requantize {
        if let Some(from) = quantized_weights(&header) {
            return Err(EngineError::Quantize {
                path: input.to_path_buf(),
                reason: format!(
                    "its weights are quantized already ({from}); quantizing again \
                     compounds the loss (pass --allow-requantize to do it anyway)"
                ),
            });
        }
    }
    backend::get().map_err(EngineError::Backend)?;
    let path_c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| EngineError::Quantize {
            path: p.to_path_buf(),
            reason: "the path contains a NUL byte".into(),
        })
    };
    let (input_c, output_c) = (path_c(input)?, path_c(output)?);
    // SAFETY: default parameters are plain values from llama.cpp; the
    // pointers passed are valid NUL-terminated paths and the parameters,
    // all alive across the call, which reads them only.
    let status = unsafe {
        let mut params = sys::llama_model_quantize_default_params();
        params.nthread = i32::try_from(options.threads).unwrap_or(i32::MAX);
        params.ftype = ftype;
        params.allow_requantize = options.allow_requantize;
        sys::llama_model_quantize(input_c.as_ptr(), output_c.as_ptr(), &params)
    };
    if status != 0 {
        // llama.cpp catches its own exceptions and logs their text.
        return Err(EngineError::Quantize {
            path: input.to_path_buf(),
            reason: "llama.cpp's quantizer failed (its log, with --log llama=error, says why)"
                .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_named_case_insensitively_and_unknown_ones_listed() {
        assert_eq!(quantize_type("q4_k_m").unwrap(), "Q4_K_M");
        assert_eq!(ftype("Q8_0").unwrap(), 7);
        let e = quantize_type("Q7_X").unwrap_err().to_string();
        assert!(
            e.contains("Q7_X") && e.contains("Q4_K_M") && e.contains("F16"),
            "{e}"
        );
    }
}
