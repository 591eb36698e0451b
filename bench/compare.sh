#!/usr/bin/env bash
# Single-stream prefill and decode speed: Hearth against llama.cpp's own
# llama-bench, on the same GGUF, the same thread count, in the same run.
#
#   bench/compare.sh [--threads N] [--reps N] [--rounds N] [--model NAME] [--no-record]
#
# Rounds alternate llama-bench and `hearth bench` so drift on a shared machine
# hits both alike; each side's figure is the median of all its repetitions,
# which shrugs off the odd slow repetition a noisy neighbour causes. The
# summary is printed and appended to docs/benchmarks.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
reps=3
rounds=8
model=smollm2
record=1
while (($#)); do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --model) model=$2; shift 2 ;;
        --no-record) record=0; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

"$root/scripts/prereqs.sh"
llama_bin=$("$here/llama-cpp.sh")
(cd "$root" && cargo build --release -p hearth >&2)
hearth="$root/target/release/hearth"
"$hearth" pull "$model" >/dev/null
gguf=$("$hearth" show "$model" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')

out=$(mktemp -d)
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds: llama-bench" >&2
    "$llama_bin/llama-bench" -m "$gguf" -t "$threads" -p 512 -n 128 -r "$reps" -o json > "$out/llama-$round.json"
    echo "round $round/$rounds: hearth bench" >&2
    "$hearth" bench "$model" --threads "$threads" --prompt-tokens 512 --gen-tokens 128 \
        --reps "$reps" --json > "$out/hearth-$round.json"
done

cmd="bench/compare.sh --threads $threads --reps $reps --rounds $rounds --model $model"
python3 - "$out" "$rounds" "$cmd" "$record" "$root/docs/benchmarks.md" <<'PY'
import json, subprocess, sys, datetime, platform, statistics
out, rounds, cmd, record, doc = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", sys.argv[5]
llama = {"pp512": [], "tg128": []}
hearth = {"pp512": [], "tg128": []}
build = ""
for r in range(1, rounds + 1):
    for e in json.load(open(f"{out}/llama-{r}.json")):
        key = f"pp{e['n_prompt']}" if e["n_gen"] == 0 else f"tg{e['n_gen']}"
        llama[key].extend(e["samples_ts"])
        build = f"{e.get('build_commit', '?')} (build {e.get('build_number', '?')})"
    for res in json.load(open(f"{out}/hearth-{r}.json"))["results"]:
        hearth[res["test"]].extend(res["samples_tokens_per_second"])

def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()

cpu = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
cores = sh("nproc")
mem = sh("free -g | awk '/Mem:/ {print $2}'")
commit = sh("git rev-parse --short HEAD")
threads = cmd.split("--threads ")[1].split()[0]
rows, ok = [], True
for test, target in (("pp512", 0.97), ("tg128", 0.97)):
    l, h = statistics.median(llama[test]), statistics.median(hearth[test])
    ratio = h / l
    ok &= ratio >= target
    rows.append(f"| {test} | {l:.1f} | {h:.1f} | {ratio:.3f} | ≥ {target} | {'pass' if ratio >= target else 'FAIL'} |")
table = "\n".join([
    "| test | llama-bench t/s | hearth t/s | ratio | target | |",
    "|---|---:|---:|---:|---:|---|",
    *rows,
])
section = f"""
## {datetime.date.today()} — single-stream speed, {threads} threads

- Command: `{cmd}`
- Machine: {cpu}, {cores} cores, {mem} GiB RAM
- Hearth commit {commit}; llama.cpp (yardstick) {build}, built with `-DGGML_NATIVE=ON`
- Model: SmolLM2-135M-Instruct Q4_1 (the default `smollm2`)
- Each number is the median of {len(llama['pp512'])} repetitions ({rounds} alternating rounds of {cmd.split('--reps ')[1].split()[0]}), tokens per second.

{table}
"""
print(section)
if record:
    with open(doc, "a") as f:
        f.write(section)
    print(f"appended to {doc}")
sys.exit(0 if ok else 1)
PY
