//! SHA-256 throughput of the implementation transfers and the store use
//! (the `sha2` crate, which picks the x86 SHA extensions at run time when
//! the CPU has them), on one core.
//!
//!     cargo run --release -p transfer --example sha256_speed [MIB]

use sha2::{Digest, Sha256};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let block = vec![0x5au8; 1 << 20];
    #[cfg(target_arch = "x86_64")]
    let shani = std::is_x86_feature_detected!("sha");
    #[cfg(not(target_arch = "x86_64"))]
    let shani = false;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let mut h = Sha256::new();
        for _ in 0..mib {
            h.update(&block);
        }
        std::hint::black_box(h.finalize());
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{{\"mib\": {mib}, \"seconds\": {best:.3}, \"gb_per_s\": {:.2}, \"cpu_sha_extensions\": {shani}}}",
        mib as f64 * 1_048_576.0 / best / 1e9
    );
}
