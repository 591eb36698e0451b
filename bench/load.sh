#!/usr/bin/env bash
# The load tester against two servers in one session: `hearth bench --url`
# sweeps concurrency on Hearth and on llama-server (same GGUF, threads and
# context per sequence), alternating the two at every level, and writes the
# JSON reports, tables and charts under docs/load-test/.
#
#   bench/load.sh [--threads N] [--model NAME] [--concurrency LIST]
#
# Two sweeps of chat-sized requests (128 tokens out): distinct prompts of
# 64-192 tokens (sampled), and an 800-token system prompt every request
# shares before 64-192 tokens of its own. (Prompts of 128-512 tokens make
# this 2-core machine prefill-bound at ~40 tok/s at every level for both
# servers, which shows nothing about batching.) Both servers run
# with their defaults for 16 clients (llama-server: -np 16, the flags
# bench/serving.sh found best; Hearth: none). The tables put each level's
# client-side TTFT and throughput beside the server's own timings of the same
# requests (the `timings` both servers return), the independent check.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
model=smollm2
concurrency=1,2,4,8,16
ctx=4096
while (($#)); do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --model) model=$2; shift 2 ;;
        --concurrency) concurrency=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

"$root/scripts/prereqs.sh"
llama_bin=$("$here/llama-cpp.sh")
(cd "$root" && cargo build --release --locked -p hearth >&2)
hearth="$root/target/release/hearth"
"$hearth" pull "$model" >/dev/null
gguf=$("$hearth" show "$model" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
out="$root/docs/load-test"
mkdir -p "$out"
logs=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT

wait_for() { # wait_for URL LOG
    for _ in $(seq 1 600); do
        curl -sf "$1" >/dev/null && return 0
        sleep 0.1
    done
    echo "server did not start:" >&2
    cat "$2" >&2
    exit 1
}

"$hearth" serve --model "$model" --threads "$threads" --ctx-size "$ctx" --port 18501 \
    >"$logs/hearth.log" 2>&1 &
pids+=($!)
"$llama_bin/llama-server" -m "$gguf" -t "$threads" -c $((ctx * 16)) -np 16 --port 18502 \
    >"$logs/llama.log" 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:18501/ready "$logs/hearth.log"
wait_for http://127.0.0.1:18502/health "$logs/llama.log"

sweep() { # sweep NAME [bench flags...]
    local name=$1
    shift
    "$hearth" bench --url http://127.0.0.1:18501 --url http://127.0.0.1:18502 \
        --label hearth --label llama-server "$model" \
        --concurrency "$concurrency" --gen-tokens 128 "$@" \
        --json --chart "$out/$name.svg" >"$out/$name.json"
    "$hearth" bench --from "$out/$name.json" >"$out/$name.txt"
    cat "$out/$name.txt"
}

echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), $threads threads, $model"
sweep distinct --prompt-tokens 64-192
sweep shared-system-prompt --system-prompt-tokens 800 --prompt-tokens 864-992
