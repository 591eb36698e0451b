#!/usr/bin/env bash
# Encryption at rest: decode and prefill speed, and load time, of the
# default model from a plain store and from an encrypted one (decrypted
# into memory at load), alternating, in one run.
#
#   bench/encryption.sh [--threads N] [--rounds N] [--no-record]
#
# Each round runs `hearth bench --json` (llama-bench style: pp512, tg128,
# 3 repetitions) once per store, alternating which goes first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
rounds=5
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
(cd "$root" && cargo build --release --locked -p hearth >&2)
hearth="$root/target/release/hearth"
model=$("$hearth" show smollm2 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for store in plain sealed; do
    HEARTH_HOME="$work/$store" "$hearth" pull "$model" --name smol >/dev/null
done
HEARTH_HOME="$work/sealed" "$hearth" store keygen "$work/key" >/dev/null
HEARTH_HOME="$work/sealed" HEARTH_STORE_KEY_FILE="$work/key" "$hearth" store encrypt >/dev/null
for round in $(seq 1 "$rounds"); do
    order="plain sealed"
    if ((round % 2 == 0)); then order="sealed plain"; fi
    for store in $order; do
        HEARTH_HOME="$work/$store" HEARTH_STORE_KEY_FILE="$work/key" \
            "$hearth" bench smol --threads "$threads" --json >"$work/$store-$round.json"
    done
done
python3 - "$work" "$rounds" "$threads" "$record" "$root/docs/benchmarks.md" <<'PY'
import json, os, platform, statistics, subprocess, sys, datetime
work, rounds, threads, record, doc = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def runs(store):
    return [json.load(open(f"{work}/{store}-{r}.json")) for r in range(1, rounds + 1)]
def values(store, key):
    vals = []
    for run in runs(store):
        if key == "load":
            vals.append(run["load_seconds"])
        else:
            vals.append(next(r["mean_tokens_per_second"] for r in run["results"] if r["test"] == key))
    return vals
def med(store, key):
    return statistics.median(values(store, key))
def spread(store, key):
    v = values(store, key)
    return f"{min(v):.2f}–{max(v):.2f}"
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
rows = []
for key, label, unit in [("pp512", "prefill pp512", "tok/s"), ("tg128", "decode tg128", "tok/s"), ("load", "load", "s")]:
    p, s = med("plain", key), med("sealed", key)
    rows.append(f"| {label} | {p:.2f} {unit} ({spread('plain', key)}) | {s:.2f} {unit} ({spread('sealed', key)}) | {s / p:.3f}× |")
table = "\n".join(rows)
section = f"""
## Encryption at rest ({datetime.date.today()})

`bench/encryption.sh --threads {threads} --rounds {rounds}` on {cpu}, {os.cpu_count()} CPUs: the
default model from a plain store and from an encrypted one (AES-256-GCM,
decrypted into memory at load), `hearth bench` alternating, medians of {rounds} rounds
(the range of the rounds in brackets).

| | plain | encrypted | ratio of medians |
|---|---:|---:|---:|
{table}
"""
print(section)
if record == "1":
    with open(doc, "a") as f:
        f.write(section)
PY
