#!/usr/bin/env bash
# Sampling and detokenising at 64 streams: what share of each decode step the
# engine thread spends after llama_decode (sampling, detokenising, handing
# tokens to the HTTP side), read from the engine's per-step debug log.
#
#   bench/sampling.sh [--threads N] [--rounds N] [--model NAME] [--no-record]
#
# 64 clients send one short prompt each (128 tokens, temperature 0.8 with the
# default top-k/top-p/min-p chain, the heavier case than greedy), against
# `hearth serve --max-running 64`. Only steps that decode 48 or more streams
# and carry no prompt tokens count.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
rounds=3
model=smollm2
record=1
while (($#)); do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --model) model=$2; shift 2 ;;
        --no-record) record=0; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

"$root/scripts/prereqs.sh"
(cd "$root" && cargo build --release --locked -p hearth >&2)
hearth="$root/target/release/hearth"
"$hearth" pull "$model" >/dev/null
out=$(mktemp -d)
port=18480
HEARTH_LOG=info,engine=debug "$hearth" serve --model "$model" --threads "$threads" \
    --ctx-size 4096 --max-running 64 --port "$port" >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
    sleep 0.1
done
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds" >&2
    "$hearth" bench "$model" --url "http://127.0.0.1:$port" --workload streams64 \
        >"$out/round-$round.json"
done
kill "$pid"
wait "$pid" 2>/dev/null || true

python3 - "$out" "$rounds" "$threads" "$model" "$record" "$root/docs/benchmarks.md" <<'EOF'
import datetime, json, re, statistics, subprocess, sys

out, rounds, threads, model, record, doc = sys.argv[1:7]
decode, after = [], []
for line in open(f"{out}/server.log"):
    if " step " not in line:
        continue
    f = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    if f["tokens"] == f["sequences"] >= 48:
        decode.append(f["decode_us"] / 1e3)
        after.append(f["sample_us"] / 1e3)
if not decode:
    sys.exit("no 48-stream decode steps in the server log")
tok_s = [json.load(open(f"{out}/round-{r}.json"))["aggregate_tokens_per_s"]
         for r in range(1, int(rounds) + 1)]
share = [a / (d + a) for d, a in zip(decode, after)]


def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()


section = f"""
## {datetime.date.today()} — sampling and detokenising at 64 streams, {threads} threads

- Command: `bench/sampling.sh --threads {threads} --rounds {rounds} --model {model}`
- Machine: {sh("lscpu | sed -n 's/^Model name: *//p'")}, {sh("nproc")} cores
- Hearth commit {sh("git rev-parse --short HEAD")}: `hearth serve --max-running 64`, 64 clients, one short prompt each, 128 tokens at temperature 0.8 (top-k 40, top-p 0.95, min-p 0.05), {rounds} rounds
- Decode steps with 48–64 streams and no prompt tokens: {len(decode)}

| per step | median | p90 |
|---|---:|---:|
| `llama_decode` ms | {statistics.median(decode):.1f} | {statistics.quantiles(decode, n=10)[-1]:.1f} |
| sampling + detokenising + hand-off ms | {statistics.median(after):.2f} | {statistics.quantiles(after, n=10)[-1]:.2f} |
| share of the step after `llama_decode` | {100 * statistics.median(share):.1f}% | {100 * statistics.quantiles(share, n=10)[-1]:.1f}% |

Aggregate throughput: {statistics.median(tok_s):.1f} tokens/s (median of rounds).
"""
print(section)
if record == "1":
    with open(doc, "a") as f:
        f.write(section)
EOF
