//! Hyperparameters llama.cpp would `GGML_ASSERT` on (aborting the process)
//! rather than reject with an error: checked here first, so a bad file gets a
//! message instead of a crash.

use crate::{Gguf, GgufError, Value};

/// llama.cpp's `LLAMA_MAX_LAYERS`.
const MAX_LAYERS: u64 = 512;
/// llama.cpp's `LLAMA_MAX_EXPERTS`.
const MAX_EXPERTS: u64 = 1024;
/// Names llama.cpp's `llama_rope_scaling_type_from_string` accepts.
const ROPE_SCALING_TYPES: &[&str] = &["none", "linear", "yarn", "longrope"];

fn bad(key: &str, value: impl std::fmt::Display, problem: &str) -> GgufError {
    GgufError::BadHyperparameter {
        key: key.to_string(),
        value: value.to_string(),
        problem: problem.to_string(),
    }
}

/// Checks the hyperparameters of the file's architecture. Keys that are
/// absent or of the wrong type are left to llama.cpp, which reports those as
/// errors; only values it would abort on are caught here.
pub(crate) fn check(g: &Gguf) -> Result<(), GgufError> {
    let Some(arch) = g.architecture() else {
        return Ok(());
    };
    // Vision encoders load tensors only; llama.cpp skips these checks too.
    if arch == "clip" {
        return Ok(());
    }
    let key = |name: &str| format!("{arch}.{name}");
    let int = |name: &str| g.get(&key(name)).and_then(Value::as_u64);

    let k = key("block_count");
    let layers = int("block_count");
    if let Some(n) = layers {
        if n == 0 || n > MAX_LAYERS {
            return Err(bad(&k, n, "a model needs between 1 and 512 layers"));
        }
    }
    let layers = layers.unwrap_or(MAX_LAYERS);
    for name in [
        "nextn_predict_layers",
        "posnet.block_count",
        "convnext.block_count",
    ] {
        if let Some(n) = int(name).filter(|&n| n > layers) {
            return Err(bad(&key(name), n, "exceeds the block count"));
        }
    }

    let experts = int("expert_count").unwrap_or(0);
    if experts > MAX_EXPERTS {
        return Err(bad(
            &key("expert_count"),
            experts,
            "at most 1024 experts are supported",
        ));
    }
    let used = int("expert_used_count").unwrap_or(0);
    let groups = int("expert_group_count").unwrap_or(0);
    let groups_used = int("expert_group_used_count").unwrap_or(0);
    if used > experts {
        return Err(bad(
            &key("expert_used_count"),
            used,
            "exceeds the expert count",
        ));
    }
    if experts > 0 {
        if g.get(&key("expert_used_count"))
            .is_some_and(|v| v.as_u64() == Some(0))
        {
            return Err(bad(
                &key("expert_used_count"),
                0,
                "a mixture of experts must use at least one",
            ));
        }
        if groups >= experts {
            return Err(bad(
                &key("expert_group_count"),
                groups,
                "must be less than the expert count",
            ));
        }
        if groups > 1 && (experts % groups != 0 || groups_used == 0 || groups_used >= groups) {
            return Err(bad(
                &key("expert_group_count"),
                groups,
                "must divide the expert count, with 1 to count-1 groups used",
            ));
        }
    } else if groups != 0 {
        return Err(bad(
            &key("expert_group_count"),
            groups,
            "experts groups without experts",
        ));
    }

    let k = key("rope.scaling.type");
    if let Some(kind) = g.get_str(&k) {
        if !ROPE_SCALING_TYPES.contains(&kind) {
            return Err(bad(
                &k,
                format!("{kind:?}"),
                "unknown RoPE scaling type (none, linear, yarn or longrope)",
            ));
        }
    }
    Ok(())
}
