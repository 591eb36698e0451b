#!/usr/bin/env bash
# What structured output costs per token: one stream on the default model,
# the same chat prompt answered unconstrained and under a JSON schema
# (response_format json_schema, enforced by llguidance), alternating over
# rounds on one server. Time per token = decode ms / (tokens - 1), from the
# server's own timings; medians compared and appended to docs/benchmarks.md.
#
#   bench/structured.sh [--threads N] [--rounds N] [--no-record]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
rounds=10
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
"$hearth" pull smollm2 >/dev/null
out=$(mktemp -d)
port=18700
"$hearth" serve --model smollm2 --threads "$threads" --port "$port" >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
    sleep 0.1
done

cmd="bench/structured.sh --threads $threads --rounds $rounds"
python3 - "$port" "$rounds" "$cmd" "$record" "$root/docs/benchmarks.md" <<'PY'
import json, platform, statistics, subprocess, sys, datetime, urllib.request
port, rounds, cmd, record, md = sys.argv[1:]
rounds = int(rounds)
url = f"http://127.0.0.1:{port}/v1/chat/completions"
schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 40},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 5},
    },
    "required": ["name", "age", "city", "hobbies"],
    "additionalProperties": False,
}
messages = [{"role": "user", "content": "Describe a fictional person: name, age, city and hobbies, as JSON."}]

def ask(constrained, seed):
    body = {"messages": messages, "seed": seed, "temperature": 0.7, "max_tokens": 128}
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    else:
        body["ignore_eos"] = True  # a fixed length, so short replies do not skew the rate
        body["max_tokens"] = 96
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    reply = json.load(urllib.request.urlopen(req))
    n = reply["usage"]["completion_tokens"]
    if constrained:
        json.loads(reply["choices"][0]["message"]["content"])  # must parse
    return reply["timings"]["predicted_ms"] / max(n - 1, 1), n

ask(True, 0); ask(False, 0)  # warm up: grammar compiler, caches
free, json_ = [], []
for r in range(rounds):
    order = [False, True] if r % 2 == 0 else [True, False]
    for constrained in order:
        ms, n = ask(constrained, r + 1)
        (json_ if constrained else free).append((ms, n))
f = statistics.median(m for m, _ in free)
j = statistics.median(m for m, _ in json_)
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
commit = subprocess.run(["git", "-C", md.rsplit("/docs/", 1)[0], "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines = [
    f"### Structured output ({datetime.date.today()}, commit {commit})",
    "",
    f"`{cmd}` on {cpu}, {platform.machine()}. One stream, SmolLM2-135M Q4_1, the same chat prompt;",
    "unconstrained (96 tokens, `ignore_eos`) against `response_format: json_schema` (4 properties, nested array),",
    "alternating, one server. Time per token = decode ms / (tokens − 1) from the server's timings.",
    "",
    "| | ms/token (median) | per round | tokens per reply |",
    "|---|---|---|---|",
    f"| unconstrained | {f:.2f} | {', '.join(f'{m:.2f}' for m, _ in free)} | {statistics.median(n for _, n in free):.0f} |",
    f"| JSON schema | {j:.2f} | {', '.join(f'{m:.2f}' for m, _ in json_)} | {statistics.median(n for _, n in json_):.0f} |",
    "",
    f"Structured / unconstrained: **{j / f:.2f}×** time per token (target ≤ 1.3×).",
    "",
]
text = "\n".join(lines)
print(text)
if record == "1":
    with open(md, "a") as f_:
        f_.write("\n" + text)
PY
