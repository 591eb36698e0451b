//! How much memory a model takes once loaded, estimated before loading it
//! (the fleet's budget decides by it): the file and its KV pool.

use engine::EngineConfig;

/// Memory a model takes once loaded: its file (mapped) and its KV pool at
/// f16, from the GGUF's dimensions and the engine settings; the file alone
/// when its header cannot say.
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
    let arch = header.architecture().unwrap_or_default().to_string();
    let get = |key: &str| header.get_u64(&format!("{arch}.{key}"));
    let layers = get("block_count").unwrap_or(0);
    let heads = get("attention.head_count").unwrap_or(1).max(1);
    let heads_kv = get("attention.head_count_kv").unwrap_or(heads);
    let width = get("embedding_length").unwrap_or(0);
    let k = get("attention.key_length").unwrap_or(width / heads);
    let v = get("attention.value_length").unwrap_or(width / heads);
    let trained = header.context_length().unwrap_or(4096) as u32;
    let ctx = config.ctx_size.unwrap_or(4096.min(trained.max(1)));
    let cells = config
        .kv_size
        .unwrap_or_else(|| engine::default_kv_size(ctx, config.max_running));
    file + layers * u64::from(cells) * heads_kv * (k + v) * 2
}
