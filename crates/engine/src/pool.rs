//! How the KV cells are laid out: one unified pool, or a stream per sequence; chosen before loading.
//!
//! llama.cpp's CPU attention walks every cell up to the highest one in use
//! in the stream a sequence lives in, skipping the masked ones one by one.
//! In one unified pool that is every running sequence's cells: with 16
//! streams of ~170 tokens each row walks ~2,700 cells, and W1 decoded at
//! 0.87x llama-server with a stream per slot (docs/benchmarks.md, "W1 and
//! the KV layout"). A stream per sequence walks only its own (padded to the
//! longest in the step), at the price of memory: every stream is sized for
//! a whole context. The unified pool shares cells cell by cell and hands
//! them out per token, so it holds far more short sequences in the same
//! memory. Pure: the caller passes the model's KV bytes and the machine's
//! memory.

use crate::EngineConfig;

/// The layout asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvLayout {
    /// Streams when they fit comfortably (see [`KvPool::choose`]), else unified.
    #[default]
    Auto,
    /// One pool whose cells every sequence shares.
    Unified,
    /// A stream of a whole context per running sequence.
    Streams,
}

impl std::str::FromStr for KvLayout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "unified" => Ok(Self::Unified),
            "streams" => Ok(Self::Streams),
            other => Err(format!(
                "unknown KV layout {other:?}; expected auto, unified or streams"
            )),
        }
    }
}

/// The share of the machine's memory the streams' KV may take under
/// [`KvLayout::Auto`]: what is left serves the weights, other models (the
/// fleet's budget is three quarters) and the operating system.
const AUTO_STREAMS_MEMORY_SHARE: u64 = 4;

/// The layout and size decided for one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvPool {
    /// `Some(cells)`: a stream per sequence id of this many cells each.
    pub stream_cells: Option<u32>,
    /// Sequence ids: the streams, or running plus cached sequences.
    pub seqs: u32,
    /// Every cell, all streams together.
    pub cells: u32,
    /// Most tokens one sequence may hold.
    pub ctx_size: u32,
}

impl KvPool {
    /// Decides the pool for a context of `wanted_ctx` tokens per sequence.
    /// `kv_bytes_per_token` is the model's KV at f16 (0 when unknown),
    /// `memory` the machine's (`None` when unknown).
    ///
    /// [`KvLayout::Auto`] takes streams on a CPU when no pool size is set and
    /// a stream per running sequence fits in a quarter of the memory;
    /// offloaded layers keep their KV in GPU memory, which cannot be read
    /// here, so they keep the unified pool.
    pub fn choose(
        config: &EngineConfig,
        wanted_ctx: u32,
        kv_bytes_per_token: u64,
        memory: Option<u64>,
    ) -> KvPool {
        // llama.cpp sizes streams in multiples of 256 cells.
        let stream = wanted_ctx.max(1).next_multiple_of(256);
        let streams = config.max_running;
        let streams_fit = || {
            let bytes = u64::from(stream) * u64::from(streams) * kv_bytes_per_token;
            kv_bytes_per_token > 0 && memory.is_some_and(|m| bytes <= m / AUTO_STREAMS_MEMORY_SHARE)
        };
        let use_streams = match config.kv_layout {
            KvLayout::Streams => true,
            KvLayout::Unified => false,
            KvLayout::Auto => config.gpu_layers == 0 && config.kv_size.is_none() && streams_fit(),
        };
        if use_streams {
            // A set pool size is shared out; a stream never holds less than 256.
            let stream = match config.kv_size {
                Some(total) => (total / streams / 256 * 256).max(256),
                None => stream,
            };
            return KvPool {
                stream_cells: Some(stream),
                seqs: streams,
                cells: stream.saturating_mul(streams),
                ctx_size: wanted_ctx.min(stream),
            };
        }
        // llama.cpp rounds its context up to a multiple of 256; the
        // scheduler hands out exactly the cells that exist.
        let cells = config
            .kv_size
            .unwrap_or_else(|| crate::default_kv_size(wanted_ctx, config.max_running))
            .max(1)
            .next_multiple_of(256);
        KvPool {
            stream_cells: None,
            seqs: crate::seq_ids(config),
            cells,
            ctx_size: wanted_ctx.min(cells),
        }
    }
}

/// The model's KV per token at f16 over every layer, from its GGUF header:
/// keys and values of each KV head. 0 when the header does not say.
pub fn kv_bytes_per_token(header: &gguf::Gguf) -> u64 {
    let arch = header.architecture().unwrap_or_default().to_string();
    let get = |key: &str| header.get_u64(&format!("{arch}.{key}"));
    let layers = get("block_count").unwrap_or(0);
    let heads = get("attention.head_count").unwrap_or(1).max(1);
    let heads_kv = get("attention.head_count_kv").unwrap_or(heads);
    let width = get("embedding_length").unwrap_or(0);
    let k = get("attention.key_length").unwrap_or(width / heads);
    let v = get("attention.value_length").unwrap_or(width / heads);
    layers * heads_kv * (k + v) * 2
}

/// The machine's memory (`MemTotal`), in bytes.
pub fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    /// The default model's KV per token: 30 layers, 3 KV heads of 64.
    const SMOLLM2: u64 = 30 * 3 * 128 * 2;

    fn config(layout: KvLayout) -> EngineConfig {
        EngineConfig {
            kv_layout: layout,
            ..EngineConfig::default()
        }
    }

    #[test]
    fn auto_takes_streams_when_they_fit_a_quarter_of_memory() {
        let pool = KvPool::choose(&config(KvLayout::Auto), 4096, SMOLLM2, Some(24 * GIB));
        assert_eq!(pool.stream_cells, Some(4096));
        assert_eq!((pool.seqs, pool.cells, pool.ctx_size), (16, 65536, 4096));
        // 16 streams of 4096 cells at 512 KiB a token (a 7B without GQA) is
        // 32 GiB: a unified pool of four contexts instead.
        let pool = KvPool::choose(&config(KvLayout::Auto), 4096, 512 << 10, Some(24 * GIB));
        assert_eq!(pool.stream_cells, None);
        assert_eq!(pool.cells, 16384);
        // Unknown memory or KV size: unified.
        assert_eq!(
            KvPool::choose(&config(KvLayout::Auto), 4096, SMOLLM2, None).stream_cells,
            None
        );
        assert_eq!(
            KvPool::choose(&config(KvLayout::Auto), 4096, 0, Some(GIB)).stream_cells,
            None
        );
    }

    #[test]
    fn auto_keeps_the_unified_pool_for_a_set_size_or_offloaded_layers() {
        let sized = EngineConfig {
            kv_size: Some(8192),
            ..config(KvLayout::Auto)
        };
        assert_eq!(
            KvPool::choose(&sized, 4096, SMOLLM2, Some(24 * GIB)).stream_cells,
            None
        );
        let gpu = EngineConfig {
            gpu_layers: 99,
            ..config(KvLayout::Auto)
        };
        assert_eq!(
            KvPool::choose(&gpu, 4096, SMOLLM2, Some(24 * GIB)).stream_cells,
            None
        );
    }

    #[test]
    fn streams_share_out_a_set_pool_and_bound_the_context() {
        let c = EngineConfig {
            kv_size: Some(16384),
            ..config(KvLayout::Streams)
        };
        let pool = KvPool::choose(&c, 4096, SMOLLM2, None);
        assert_eq!(pool.stream_cells, Some(1024));
        assert_eq!((pool.cells, pool.ctx_size), (16384, 1024));
        // Contexts are rounded up to llama.cpp's multiple of 256.
        let pool = KvPool::choose(&config(KvLayout::Streams), 1000, SMOLLM2, None);
        assert_eq!((pool.stream_cells, pool.ctx_size), (Some(1024), 1000));
    }

    #[test]
    fn unified_is_the_pool_it_always_was() {
        let pool = KvPool::choose(&config(KvLayout::Unified), 4096, SMOLLM2, Some(24 * GIB));
        assert_eq!(pool.stream_cells, None);
        assert_eq!((pool.cells, pool.ctx_size), (16384, 4096));
        assert!(pool.seqs > 16, "room for cached prefixes");
    }
}
