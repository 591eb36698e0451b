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
//! memory. Pure: the caller passes the model's KV ([`ModelKv`]) and the
//! machine's memory.

use std::path::{Path, PathBuf};

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
    /// Decides the pool for a context of `wanted_ctx` tokens per sequence,
    /// `memory` being the machine's (`None` when unknown).
    ///
    /// [`KvLayout::Auto`] takes streams on a CPU when no pool size is set and
    /// a stream per running sequence fits in a quarter of the memory;
    /// offloaded layers keep their KV in GPU memory, which cannot be read
    /// here, so they keep the unified pool. A recurrent model's state has
    /// no cells to walk, so it keeps the layout it was measured with.
    pub fn choose(
        config: &EngineConfig,
        wanted_ctx: u32,
        model: ModelKv,
        memory: Option<u64>,
    ) -> KvPool {
        let kv_bytes_per_token = model.bytes_per_token;
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
            KvLayout::Auto => {
                !model.recurrent
                    && config.gpu_layers == 0
                    && config.kv_size.is_none()
                    && streams_fit()
            }
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

/// What the layout depends on in a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelKv {
    /// KV per token at f16 over every layer; 0 when unknown.
    pub bytes_per_token: u64,
    /// A recurrent or hybrid model (Mamba, RWKV, Jamba, LFM2 …): a state
    /// per sequence rather than (only) cells.
    pub recurrent: bool,
}

impl ModelKv {
    /// From the GGUF header: keys and values of each KV head per layer, and
    /// whether it declares a recurrent state (`ssm.*`, `wkv.*` or
    /// `shortconv.*` keys, as llama.cpp's recurrent architectures do).
    pub fn from_header(header: &gguf::Gguf) -> ModelKv {
        let arch = header.architecture().unwrap_or_default().to_string();
        let get = |key: &str| header.get_u64(&format!("{arch}.{key}"));
        let layers = get("block_count").unwrap_or(0);
        let heads = get("attention.head_count").unwrap_or(1).max(1);
        let heads_kv = get("attention.head_count_kv").unwrap_or(heads);
        let width = get("embedding_length").unwrap_or(0);
        let k = get("attention.key_length").unwrap_or(width / heads);
        let v = get("attention.value_length").unwrap_or(width / heads);
        let recurrent = [
            "ssm.conv_kernel",
            "ssm.state_size",
            "wkv.head_size",
            "shortconv.l_cache",
        ]
        .iter()
        .any(|key| get(key).is_some());
        ModelKv {
            bytes_per_token: layers * heads_kv * (k + v) * 2,
            recurrent,
        }
    }
}

/// The memory this process may use, in bytes: the machine's (`MemTotal`),
/// or less where its control group is limited (a container's
/// `memory.max`), since streams sized for the machine would get a limited
/// server killed.
pub fn machine_memory() -> Option<u64> {
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    let total = read(Path::new("/proc/meminfo")).and_then(|info| mem_total(&info));
    let groups = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
    let limit = cgroup_limit_files(&groups)
        .iter()
        .filter_map(|file| read(file).and_then(|text| memory_limit(&text)))
        .min();
    match (total, limit) {
        (Some(total), Some(limit)) => Some(total.min(limit)),
        (total, limit) => total.or(limit),
    }
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The files that may limit this process's memory, from `/proc/self/cgroup`:
/// under cgroup v2, `memory.max` of its group and of every group above it
/// (a parent's limit binds too); under v1, the memory controller's
/// `memory.limit_in_bytes`.
fn cgroup_limit_files(proc_self_cgroup: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (root, file) = if controllers.is_empty() {
            (PathBuf::from("/sys/fs/cgroup"), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                PathBuf::from("/sys/fs/cgroup/memory"),
                "memory.limit_in_bytes",
            )
        } else {
            continue;
        };
        let mut dir = root.join(path.trim_start_matches('/'));
        loop {
            files.push(dir.join(file));
            if dir == root || !dir.pop() {
                break;
            }
        }
    }
    files
}

/// A limit file's bytes; `None` for no limit (`max`, or v1's page-rounded
/// largest number).
fn memory_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    /// The default model's KV per token: 30 layers, 3 KV heads of 64.
    const SMOLLM2: ModelKv = kv(30 * 3 * 128 * 2);

    const fn kv(bytes_per_token: u64) -> ModelKv {
        ModelKv {
            bytes_per_token,
            recurrent: false,
        }
    }

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
        let pool = KvPool::choose(&config(KvLayout::Auto), 4096, kv(512 << 10), Some(24 * GIB));
        assert_eq!(pool.stream_cells, None);
        assert_eq!(pool.cells, 16384);
        // Unknown memory or KV size: unified.
        assert_eq!(
            KvPool::choose(&config(KvLayout::Auto), 4096, SMOLLM2, None).stream_cells,
            None
        );
        assert_eq!(
            KvPool::choose(&config(KvLayout::Auto), 4096, kv(0), Some(GIB)).stream_cells,
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

    #[test]
    fn a_recurrent_model_keeps_the_unified_pool_unless_streams_are_asked_for() {
        let mamba = ModelKv {
            recurrent: true,
            ..SMOLLM2
        };
        let auto = KvPool::choose(&config(KvLayout::Auto), 4096, mamba, Some(24 * GIB));
        assert_eq!(auto.stream_cells, None);
        let asked = KvPool::choose(&config(KvLayout::Streams), 4096, mamba, Some(24 * GIB));
        assert_eq!(asked.stream_cells, Some(4096));
    }

    #[test]
    fn memory_limits_come_from_every_control_group_above() {
        let files = cgroup_limit_files("0::/system.slice/hearth.service\n");
        let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "/sys/fs/cgroup/system.slice/hearth.service/memory.max",
                "/sys/fs/cgroup/system.slice/memory.max",
                "/sys/fs/cgroup/memory.max",
            ]
        );
        let v1 = cgroup_limit_files("4:cpu,cpuacct:/x\n9:memory:/docker/abc\n");
        assert_eq!(
            v1,
            [
                PathBuf::from("/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"),
                PathBuf::from("/sys/fs/cgroup/memory/docker/memory.limit_in_bytes"),
                PathBuf::from("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            ]
        );
        assert_eq!(memory_limit("max\n"), None);
        assert_eq!(memory_limit("9223372036854771712\n"), None, "v1's no limit");
        assert_eq!(memory_limit("4294967296\n"), Some(4 << 30));
        assert_eq!(
            mem_total("MemTotal:       24000000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000_000)
        );
    }

    /// A GGUF header of string and u32 keys, no tensors.
    fn header(keys: &[(&str, Result<&str, u32>)]) -> gguf::Gguf {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((keys.len() as u64).to_le_bytes());
        for (key, value) in keys {
            b.extend((key.len() as u64).to_le_bytes());
            b.extend(key.as_bytes());
            match value {
                Ok(text) => {
                    b.extend(8u32.to_le_bytes());
                    b.extend((text.len() as u64).to_le_bytes());
                    b.extend(text.as_bytes());
                }
                Err(n) => {
                    b.extend(4u32.to_le_bytes());
                    b.extend(n.to_le_bytes());
                }
            }
        }
        gguf::parse_bytes(&b).expect("a valid header")
    }

    #[test]
    fn the_header_gives_kv_bytes_and_whether_the_model_is_recurrent() {
        let llama = header(&[
            ("general.architecture", Ok("llama")),
            ("llama.block_count", Err(30)),
            ("llama.embedding_length", Err(576)),
            ("llama.attention.head_count", Err(9)),
            ("llama.attention.head_count_kv", Err(3)),
        ]);
        assert_eq!(ModelKv::from_header(&llama), SMOLLM2);
        let mamba = header(&[
            ("general.architecture", Ok("mamba")),
            ("mamba.block_count", Err(24)),
            ("mamba.ssm.conv_kernel", Err(4)),
        ]);
        assert!(ModelKv::from_header(&mamba).recurrent);
    }
}
