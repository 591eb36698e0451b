#!/usr/bin/env bash
# Fuzzes the GGUF reader with cargo-fuzz (libFuzzer + AddressSanitizer).
#   scripts/fuzz.sh [SECONDS]   (default 600)
# Seeds come from the committed malformed corpus plus a real model header.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd crates/gguf/fuzz
mkdir -p corpus/parse
cp ../tests/corpus/malformed/* corpus/parse/
model="${HEARTH_HOME:-$HOME/.hearth}/models/smollm2/model.gguf"
# The start of a real model: its metadata and the head of the vocabulary.
[[ -f "$model" ]] && head -c 65536 "$model" > corpus/parse/smollm2-header.gguf
RUSTC_BOOTSTRAP=1 cargo fuzz run parse corpus/parse -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=10
