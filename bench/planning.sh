#!/usr/bin/env bash
# Plan against measurement: for the default model and Gemma 3 270M at
# contexts 2k and 8k and concurrency 1 and 8, what `hearth plan` predicts
# (before and after `--calibrate`) against what this machine measures:
#   - memory: peak RSS of `hearth serve` with that context and
#     concurrency, while that many requests each fill a quarter of their
#     context and generate 64 tokens;
#   - decode: `hearth bench --batch N --depth CONTEXT/4` (aggregate
#     tokens per second of N sequences decoding together).
#
#   bench/planning.sh [--threads N] [--out FILE]
#
# Prints a Markdown table (also written to FILE, default
# bench/work/planning.md) for docs/planning.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
out="$root/bench/work/planning.md"
while (($#)); do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

"$root/scripts/prereqs.sh"
(cd "$root" && cargo build --release --locked -p hearth >&2)
hearth="$root/target/release/hearth"
"$hearth" pull smollm2 >/dev/null
"$hearth" pull gemma3 >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"; [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null || true' EXIT
port=18777
output=64

# A chat request whose prompt is about `tokens` tokens of plain words.
request() { # model tokens seed
    python3 - "$1" "$2" "$3" <<'EOF'
import json, random, sys
model, tokens, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(seed)
words = ("the of and a to in is was he for it with as his on be at by had are "
         "but from or have an they which one you were her all she there would "
         "their we him been has when who will more no if out so said what up "
         "its about into than them can only other new some could time these two "
         "may then do first any my now such like our over man").split()
# About 1.2 words per token for these words; the reply is 64 tokens.
text = " ".join(random.choice(words) for _ in range(int(tokens / 1.2)))
print(json.dumps({"model": model, "max_tokens": 64, "temperature": 0,
                  "messages": [{"role": "user", "content": text}]}))
EOF
}

peak_rss() { # model context concurrency -> peak RSS bytes of hearth serve under that load
    local model=$1 ctx=$2 n=$3
    "$hearth" serve --model "$model" --threads "$threads" --ctx-size "$ctx" \
        --max-running "$n" --kv-size $((ctx * n)) --insecure-no-auth --port "$port" \
        >"$work/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
        sleep 0.2
    done
    local pids=()
    for j in $(seq "$n"); do
        request "$model" $((ctx / 4)) "$j" | curl -sf "http://127.0.0.1:$port/v1/chat/completions" \
            -H 'content-type: application/json' -d @- -o "$work/reply-$j.json" &
        pids+=($!)
    done
    wait "${pids[@]}"
    local kb
    kb=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
    echo $((kb * 1024))
}

# The plan for the layout both measurements use: `serve` above and `bench
# --batch` set a pool size, which keeps one unified pool.
predict() { # model context concurrency [--uncalibrated] -> plan JSON
    "$hearth" plan "$1" --hardware host --threads "$threads" --context "$2" \
        --concurrency "$3" --prompt-tokens $(($2 / 4)) --output-tokens "$output" \
        --kv-layout unified --json "${@:4}"
}

# Calibrate on the default model first, so predictions after calibration
# come from the same session as the measurements.
"$hearth" plan --hardware host --threads "$threads" --calibrate | tee "$work/calibration.txt" >&2

rows="$work/rows.jsonl"
for model in smollm2 gemma3; do
    for ctx in 2048 8192; do
        for n in 1 8; do
            predict "$model" "$ctx" "$n" --uncalibrated >"$work/before.json"
            predict "$model" "$ctx" "$n" >"$work/after.json"
            echo "$model $ctx $n" >&2
            rss=$(peak_rss "$model" "$ctx" "$n")
            "$hearth" bench "$model" --threads "$threads" --batch "$n" \
                --depth $((ctx / 4)) --gen-tokens "$output" --reps 2 --json >"$work/bench.json"
            python3 - "$model" "$ctx" "$n" "$rss" "$work" >>"$rows" <<'EOF'
import json, sys
model, ctx, n, rss, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
before = json.load(open(f"{work}/before.json"))
after = json.load(open(f"{work}/after.json"))
bench = json.load(open(f"{work}/bench.json"))
print(json.dumps({"model": model, "context": ctx, "concurrency": n, "rss": rss,
                  "memory": after["memory"]["total"],
                  "decode_before": before["speed"]["decode_tps_aggregate"],
                  "decode_after": after["speed"]["decode_tps_aggregate"],
                  "decode": bench["results"][0]["mean_tokens_per_second"]}))
EOF
        done
    done
done

python3 - "$rows" "$work/calibration.txt" >"$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
calibration = open(sys.argv[2]).read().strip().splitlines()
pct = lambda p, m: f"{(p / m - 1) * 100:+.1f}%"
print("| model | context | concurrency | predicted memory | peak RSS | Δ | decode predicted, uncalibrated | calibrated | measured | Δ uncalibrated | Δ calibrated |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    d = r["decode"]
    print(f"| {r['model']} | {r['context']} | {r['concurrency']} | {r['memory'] / 2**20:.0f} MiB | "
          f"{r['rss'] / 2**20:.0f} MiB | {pct(r['memory'], r['rss'])} | {r['decode_before']:.1f} | "
          f"{r['decode_after']:.1f} | {d:.1f} | {pct(r['decode_before'], d)} | {pct(r['decode_after'], d)} |")
print()
print("Calibration: " + " ".join(calibration[:2]))
EOF
cat "$out"
