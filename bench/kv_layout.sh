#!/usr/bin/env bash
# W1 (16 clients, short prompts, 128 tokens) against llama-server with its
# two KV layouts: one stream per slot (`-np 16`, what bench/serving.sh
# compares with) and one unified pool (`-np 16 -kvu`), and Hearth with its
# two (`--kv-layout streams`, the default here, and `unified`); rounds
# alternate the order.
#
#   bench/kv_layout.sh [--threads N] [--rounds N] [--no-record]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
rounds=3
record=1
while (($#)); do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --no-record) record=0; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

"$root/scripts/prereqs.sh"
llama_bin=$("$here/llama-cpp.sh")
(cd "$root" && cargo build --release --locked -p hearth >&2)
hearth="$root/target/release/hearth"
"$hearth" pull smollm2 >/dev/null
gguf=$("$hearth" show smollm2 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
out=$(mktemp -d)
port=18700
pid=""
trap '[[ -n $pid ]] && kill $pid 2>/dev/null || true' EXIT

configs=("llama-server -np 16|llama|-np 16" "llama-server -np 16 -kvu|llama|-np 16 -kvu"
    "hearth serve|hearth|" "hearth serve --kv-layout unified|hearth|--kv-layout unified")
for round in $(seq 1 "$rounds"); do
    for i in "${!configs[@]}"; do
        # Rotate the order each round.
        cfg=${configs[$(((i + round) % ${#configs[@]}))]}
        IFS='|' read -r name kind flags <<<"$cfg"
        port=$((port + 1))
        echo "round $round/$rounds: $name" >&2
        if [[ $kind == llama ]]; then
            # shellcheck disable=SC2086
            "$llama_bin/llama-server" -m "$gguf" -t "$threads" -c 65536 $flags --port "$port" \
                >"$out/server.log" 2>&1 &
            probe=/health
        else
            # shellcheck disable=SC2086
            "$hearth" serve --model smollm2 --threads "$threads" --ctx-size 4096 --port "$port" $flags \
                >"$out/server.log" 2>&1 &
            probe=/ready
        fi
        pid=$!
        for _ in $(seq 1 600); do
            curl -sf "http://127.0.0.1:$port$probe" >/dev/null && break
            sleep 0.1
        done
        "$hearth" bench smollm2 --url "http://127.0.0.1:$port" --workload w1 \
            >"$out/$kind${flags//[ -]/}-$round.json"
        echo "$name" >"$out/$kind${flags//[ -]/}.name"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        pid=""
    done
done

python3 - "$out" "$rounds" "$threads" "$record" "$root/docs/benchmarks.md" <<'PY'
import datetime, glob, json, os, statistics, subprocess, sys

out, rounds, threads, record, doc = sys.argv[1:6]
rows = []
for name_file in sorted(glob.glob(f"{out}/*.name")):
    key = os.path.basename(name_file)[:-5]
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{key}-*.json"))]
    tok = [r["aggregate_tokens_per_s"] for r in runs]
    rows.append((open(name_file).read().strip(), tok))
base = statistics.median(next(t for n, t in rows if n == "llama-server -np 16"))


def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()


table = "\n".join(
    f"| `{n}` | {', '.join(f'{x:.1f}' for x in t)} | {statistics.median(t):.1f} | {statistics.median(t) / base:.2f} |"
    for n, t in rows)
section = f"""
## {datetime.date.today()} — W1 and the KV layout, {threads} threads

- Command: `bench/kv_layout.sh --threads {threads} --rounds {rounds}`
- Machine: {sh("lscpu | sed -n 's/^Model name: *//p'")}, {sh("nproc")} cores
- Hearth commit {sh("git rev-parse --short HEAD")}; W1: 16 clients, 2 requests each, 128 tokens, short prompts; a fresh server per run, order rotating

| server | aggregate tok/s per round | median | vs `-np 16` |
|---|---|---:|---:|
{table}
"""
print(section)
if record == "1":
    with open(doc, "a") as f:
        f.write(section)
PY
