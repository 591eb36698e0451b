#!/usr/bin/env bash
# Encryption at rest: decode and prefill speed, and load time, of the
# default model from a plain store and from an encrypted one (decrypted
# into memory at load), alternating, in one run.
#
#   bench/encryption.sh [--threads N] [--rounds N] [--reps N] [--pairs N] [--no-record]
#
# Each round runs `hearth bench --json` (llama-bench style: pp512, tg128,
# --reps repetitions, 2 by default) once per store, alternating which goes
# first. This machine's speed drifts by a third between minutes, more than
# the 3% the comparison must resolve, so the results are paired ratios:
# each round's encrypted result over the plain one measured beside it,
# their median, and a bootstrap 95% interval of that median. Separate
# processes vary by up to 15% between two runs of the same store here
# (docs/benchmarks.md), so decode is measured by
# `examples/weights_in_memory.rs`: the model mapped from its file, and
# decrypted into memory and copied into llama.cpp's buffers as `hearth`
# loads an encrypted model, both in one process, --pairs tg128 runs of
# each in alternation (half of them with each engine loaded first).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
rounds=8
reps=2
pairs=24
record=1
while (($#)); do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --pairs) pairs=$2; shift 2 ;;
        --no-record) record=0; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

"$root/scripts/prereqs.sh"
(cd "$root" && cargo build --release --locked -p hearth --bin hearth --example weights_in_memory >&2)
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
            "$hearth" bench smol --threads "$threads" --reps "$reps" --json >"$work/$store-$round.json"
    done
done
# Two engines in one process: libgomp spins only 100 times at a barrier
# once it manages more threads than there are CPUs, which halves both
# engines' decode; the wait policy below keeps its usual spin (see
# crates/hearth/src/main.rs, which sets the same for `hearth`).
# Half the pairs with each engine loaded first, so load order favours
# neither.
for order in mapped-first memory-first; do
    OMP_WAIT_POLICY=ACTIVE GOMP_SPINCOUNT=300000 "$root/target/release/examples/weights_in_memory" \
        "$model" $(((pairs + 1) / 2)) "$threads" 128 "$order" >>"$work/pairs.jsonl" 2>>"$work/pairs.log"
done
python3 - "$work" "$rounds" "$threads" "$record" "$root/docs/benchmarks.md" "$reps" "$pairs" <<'PY'
import json, os, platform, random, statistics, subprocess, sys, datetime
work, rounds, threads, record, doc, reps, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
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
def paired(key, ratios=None):
    # Round r's two runs sat side by side in time: their ratio cancels the
    # machine's drift, which a ratio of medians does not.
    if ratios is None:
        ratios = [s / p for p, s in zip(values("plain", key), values("sealed", key))]
    rng = random.Random(7)
    boot = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return statistics.median(ratios), boot[49], boot[1949]
def spread(store, key):
    v = values(store, key)
    return f"{min(v):.2f}–{max(v):.2f}"
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
rows = []
for key, label, unit in [("pp512", "prefill pp512", "tok/s"), ("tg128", "decode tg128", "tok/s"), ("load", "load", "s")]:
    p, s = med("plain", key), med("sealed", key)
    ratio, low, high = paired(key)
    rows.append(f"| {label} | {p:.2f} {unit} ({spread('plain', key)}) | {s:.2f} {unit} ({spread('sealed', key)}) | {ratio:.3f}× ({low:.3f}–{high:.3f}) |")
same = [json.loads(l) for l in open(f"{work}/pairs.jsonl")]
mapped = [p["mapped"] for p in same]
memory = [p["in_memory"] for p in same]
ratio, low, high = paired(None, [m / p for p, m in zip(mapped, memory)])
rows.append(f"| decode tg128, one process | {statistics.median(mapped):.2f} tok/s ({min(mapped):.2f}–{max(mapped):.2f}) | {statistics.median(memory):.2f} tok/s ({min(memory):.2f}–{max(memory):.2f}) | {ratio:.3f}× ({low:.3f}–{high:.3f}) |")
table = "\n".join(rows)
section = f"""
## Encryption at rest ({datetime.date.today()})

`bench/encryption.sh --threads {threads} --rounds {rounds} --reps {reps}` on {cpu}, {os.cpu_count()} CPUs: the
default model from a plain store and from an encrypted one (AES-256-GCM,
decrypted into memory at load), `hearth bench` alternating, medians of {rounds} rounds
(the range of the rounds in brackets). The ratio is the median of the
rounds' paired ratios (encrypted over plain, measured side by side), with
its bootstrap 95% interval. The last row loads the model twice in one
process, mapped from its file, and decrypted into memory and copied into
llama.cpp's buffers (as `hearth` loads an encrypted model), and
alternates {pairs} tg128 runs of each, half with each engine loaded
first (`examples/weights_in_memory.rs`).

| | plain | encrypted | paired ratio (95% interval) |
|---|---:|---:|---:|
{table}
"""
print(section)
if record == "1":
    with open(doc, "a") as f:
        f.write(section)
PY
