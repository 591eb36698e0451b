#!/usr/bin/env bash
# Two loaded models sharing the CPU: each model's decode speed alone and
# while the other decodes too, and the time both take together against one
# after the other.
#
#   bench/two_models.sh [--threads N] [--rounds N] [--tokens N] [--no-record]
#
# `hearth serve --model smollm2 --model gemma3:270m`; one stream per model,
# a short prompt, N tokens (ignore_eos). Rounds alternate which model goes
# first alone. Both models answer once before timing, so both hold their
# OpenMP thread teams throughout, as in service. Run it with
# GOMP_SPINCOUNT=300000 in the environment to see libgomp's own wait
# policy, which `hearth` otherwise replaces (crates/hearth/src/main.rs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
rounds=3
tokens=256
record=1
while (($#)); do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --tokens) tokens=$2; shift 2 ;;
        --no-record) record=0; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

"$root/scripts/prereqs.sh"
(cd "$root" && cargo build --release --locked -p hearth >&2)
hearth="$root/target/release/hearth"
"$hearth" pull smollm2 >/dev/null
"$hearth" pull gemma3:270m >/dev/null
out=$(mktemp -d)
port=18481
"$hearth" serve --model smollm2 --model gemma3:270m --threads "$threads" \
    --ctx-size 1024 --port "$port" >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
    sleep 0.1
done

python3 - "$port" "$rounds" "$tokens" "$threads" "$record" "$root/docs/benchmarks.md" <<'PY'
import datetime, json, os, statistics, subprocess, sys, threading, time, urllib.request

port, rounds, tokens, threads, record, doc = sys.argv[1:7]
rounds, tokens = int(rounds), int(tokens)
models = ["smollm2", "gemma3"]


def generate(model, n, into=None):
    body = json.dumps({"model": model, "prompt": "Once upon a time", "max_tokens": n,
                       "ignore_eos": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                 {"content-type": "application/json"})
    start = time.perf_counter()
    reply = json.load(urllib.request.urlopen(req))
    assert reply["usage"]["completion_tokens"] == n, reply
    took = time.perf_counter() - start
    if into is not None:
        into[model] = took
    return took


for m in models:
    generate(m, 8)
alone = {m: [] for m in models}
together = {m: [] for m in models}
makespan, serial = [], []
for r in range(rounds):
    order = models if r % 2 == 0 else models[::-1]
    solo = {m: generate(m, tokens) for m in order}
    both = {}
    start = time.perf_counter()
    workers = [threading.Thread(target=generate, args=(m, tokens, both)) for m in order]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    makespan.append(time.perf_counter() - start)
    serial.append(sum(solo.values()))
    for m in models:
        alone[m].append(tokens / solo[m])
        together[m].append(tokens / both[m])


def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()


med = statistics.median
chosen = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}
openmp = (", ".join(f"`{k}={v}` as set, libgomp's own policy otherwise" for k, v in chosen.items())
          if chosen else "hearth's (`OMP_WAIT_POLICY=ACTIVE`, `GOMP_SPINCOUNT=300000`)")
rows = "\n".join(
    f"| {m} | {med(alone[m]):.1f} | {med(together[m]):.1f} | {100 * med(together[m]) / med(alone[m]):.0f}% |"
    for m in models)
section = f"""
## {datetime.date.today()} — two models sharing the CPU, {threads} threads

- Command: `bench/two_models.sh --threads {threads} --rounds {rounds} --tokens {tokens}`
- Machine: {sh("lscpu | sed -n 's/^Model name: *//p'")}, {sh("nproc")} cores
- Hearth commit {sh("git rev-parse --short HEAD")}: `hearth serve --model smollm2 --model gemma3:270m`, one stream per model, {tokens} tokens, {rounds} rounds (medians)
- OpenMP: {openmp}

| model | tok/s alone | tok/s while the other decodes | share of its solo speed |
|---|---:|---:|---:|
{rows}

Both together finish in {med(makespan):.2f} s; one after the other takes {med(serial):.2f} s ({med(makespan) / med(serial):.2f}×).
"""
print(section)
if record == "1":
    with open(doc, "a") as f:
        f.write(section)
PY
