//! A load generator for any OpenAI-compatible endpoint: streaming clients
//! timed per chunk, the serving workloads `bench/serving.sh` runs against
//! Hearth and llama-server, and latency statistics.
//!
//! It talks HTTP only, so it measures what a client sees, and knows nothing
//! of Hearth's insides: the same workload runs against any server.

pub mod client;
pub mod stats;
pub mod sweep;
pub mod text;
pub mod workloads;

pub use client::{Answer, Ask, Client, Message, ServerTimings, TokenChoice};
pub use stats::{percentile, Summary};
