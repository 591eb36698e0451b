#!/usr/bin/env bash
# What security costs while serving: aggregate tokens/s at 16 streams (W1:
# 16 clients, 2 requests each, 128 tokens) with an API key, the default Cedar
# policies, quotas on the key and the audit log (every request recorded,
# hashed, fsynced in batches), against the same binary with all of them off
# (--insecure-no-auth, audit disabled). Fresh server per run, alternating
# order over rounds; medians compared and appended to docs/benchmarks.md.
#
#   bench/security_overhead.sh [--threads N] [--rounds N] [--no-record]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
rounds=5
record=1
ctx=4096
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
"$hearth" pull smollm2 >/dev/null
out=$(mktemp -d)
plain="$out/plain-home"
secured="$out/secured-home"
mkdir -p "$plain" "$secured"
# Both homes serve the model pulled into the default home, by name.
for home in "$plain" "$secured"; do ln -s "${HEARTH_HOME:-$HOME/.hearth}/models" "$home/models"; done
printf '[audit]\nenabled = false\n' >"$plain/config.toml"
key=$(HEARTH_HOME="$secured" "$hearth" keys create --name bench \
    --rpm 1000000 --tpm 1000000000 --daily-tokens 1000000000000 2>/dev/null)
port=18600
pid=""

stop() {
    if [[ -n "$pid" ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
trap stop EXIT

start() { # start plain|secured
    local kind=$1 home extra=()
    port=$((port + 1))
    if [[ $kind == plain ]]; then home=$plain; extra=(--insecure-no-auth); else home=$secured; fi
    HEARTH_HOME=$home "$hearth" serve --model smollm2 --threads "$threads" --ctx-size "$ctx" \
        --port "$port" "${extra[@]}" >"$out/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$port/ready" >/dev/null && return 0
        sleep 0.1
    done
    echo "$kind did not start:" >&2
    cat "$out/server.log" >&2
    exit 1
}

for round in $(seq 1 "$rounds"); do
    order="plain secured"
    ((round % 2 == 0)) && order="secured plain"
    for kind in $order; do
        echo "round $round/$rounds: $kind" >&2
        start "$kind"
        api_key=()
        [[ $kind == secured ]] && api_key=(--api-key "$key")
        "$hearth" bench --url "http://127.0.0.1:$port" --workload w1 "${api_key[@]}" \
            >"$out/$kind-$round.json"
        stop
    done
done

audited=$(HEARTH_HOME="$secured" "$hearth" audit export | grep -c '"event":"api_request"' || true)
verified=$(HEARTH_HOME="$secured" "$hearth" audit verify)
cmd="bench/security_overhead.sh --threads $threads --rounds $rounds"
python3 - "$out" "$rounds" "$cmd" "$audited" "$verified" "$record" "$root/docs/benchmarks.md" <<'PY'
import json, platform, statistics, subprocess, sys, datetime
out, rounds, cmd, audited, verified, record, md = sys.argv[1:]
rounds = int(rounds)
def runs(kind):
    return [json.load(open(f"{out}/{kind}-{r}.json")) for r in range(1, rounds + 1)]
plain, secured = runs("plain"), runs("secured")
for rs in (plain, secured):
    for r in rs:
        assert r["errors"] == 0, r["first_error"]
tps = lambda rs: [r["aggregate_tokens_per_s"] for r in rs]
p, s = statistics.median(tps(plain)), statistics.median(tps(secured))
ttft = lambda rs: statistics.median(r["ttft_ms"]["p50"] for r in rs)
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
commit = subprocess.run(["git", "-C", md.rsplit("/docs/", 1)[0], "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cost = (1 - s / p) * 100
lines = [
    f"### Security overhead ({datetime.date.today()}, commit {commit})",
    "",
    f"`{cmd}` on {cpu}, {platform.machine()}. W1 (16 clients × 2 requests × 128 tokens), a fresh server per run, order alternating.",
    "Secured: API key, default Cedar policies, quotas on the key (checked, never reached), audit log on (every request recorded).",
    "Plain: `--insecure-no-auth`, audit disabled.",
    "",
    "| | aggregate tok/s (median) | per round | TTFT p50 ms |",
    "|---|---|---|---|",
    f"| plain | {p:.1f} | {', '.join(f'{x:.1f}' for x in tps(plain))} | {ttft(plain):.0f} |",
    f"| secured | {s:.1f} | {', '.join(f'{x:.1f}' for x in tps(secured))} | {ttft(secured):.0f} |",
    "",
    f"Cost of security: **{cost:.2f}%** of aggregate tok/s (target < 3%). Audit entries for API requests: {audited} "
    f"(expected {rounds * 32}); `hearth audit verify`: {verified}",
    "",
]
text = "\n".join(lines)
print(text)
if record == "1":
    with open(md, "a") as f:
        f.write("\n" + text)
PY
