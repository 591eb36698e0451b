#!/usr/bin/env bash
# Fuzzes Hearth's parsers of untrusted input with cargo-fuzz (libFuzzer +
# AddressSanitizer):
#   scripts/fuzz.sh [gguf|body] [SECONDS]   (default: gguf, 600)
#   gguf: the GGUF reader; seeds are the committed malformed corpus plus a
#         real model header.
#   body: the API's request bodies (OpenAI, Anthropic, Ollama, Responses, embeddings, tokens) through the real router
#         (keys, policies and quotas on); seeds in crates/server/fuzz/seeds.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-gguf}
seconds=${2:-600}
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
case $target in
gguf)
    cd crates/gguf/fuzz
    mkdir -p corpus/parse
    cp ../tests/corpus/malformed/* corpus/parse/
    model="${HEARTH_HOME:-$HOME/.hearth}/models/smollm2/model.gguf"
    # The start of a real model: its metadata and the head of the vocabulary.
    [[ -f "$model" ]] && head -c 65536 "$model" > corpus/parse/smollm2-header.gguf
    RUSTC_BOOTSTRAP=1 cargo fuzz run parse corpus/parse -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=10
    ;;
body)
    cd crates/server/fuzz
    mkdir -p corpus/body
    cp seeds/* corpus/body/
    RUSTC_BOOTSTRAP=1 cargo fuzz run body corpus/body -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=16384 -timeout=10
    ;;
*)
    echo "usage: scripts/fuzz.sh [gguf|body] [SECONDS]" >&2
    exit 2
    ;;
esac
