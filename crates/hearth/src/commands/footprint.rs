//! How much memory a model takes once loaded, estimated before loading it
//! (the fleet's budget decides by it): the file and its KV pool.

use engine::EngineConfig;

/// Memory a model takes once loaded: its file (mapped) and its KV pool at
/// f16 (unified, or a stream per running sequence), from the GGUF's
/// dimensions and the engine settings; the file alone when its header
/// cannot say.
pub fn memory_estimate(
    path: &std::path::Path,
    config: &EngineConfig,
    key: Option<&vault::Key>,
) -> u64 {
    let file = vault::plaintext_len(path)
        .unwrap_or_else(|_| std::fs::metadata(path).map_or(0, |m| m.len()));
    // An encrypted model's header comes from its plaintext's first records.
    let Some(header) = store::headers(path, key)
        .ok()
        .and_then(|h| h.into_iter().next())
    else {
        return file;
    };
    let trained = header.context_length().unwrap_or(4096) as u32;
    let ctx = config.ctx_size.unwrap_or(4096.min(trained.max(1)));
    // The same decision the engine makes when it loads the model.
    let model = engine::ModelKv::from_header(&header);
    let pool = engine::KvPool::choose(config, ctx, model, engine::machine_memory());
    file + u64::from(pool.cells) * model.bytes_per_token
}
