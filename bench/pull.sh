#!/usr/bin/env bash
# Pull speed from loopback against curl on the same file, and SHA-256
# throughput per core.
#
#   bench/pull.sh [--rounds N] [--connections N] [--no-record]
#
# testkit's origin (axum, ranges) serves Gemma 3 270M (253 MB) from the
# page cache; curl fetches it to a file over one connection, `hearth pull`
# fetches, hashes per chunk and as a whole, checks the GGUF header and
# publishes it into a fresh store. Rounds alternate which goes first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=5
connections=4
record=1
while (($#)); do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --no-record) record=0; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

"$root/scripts/prereqs.sh"
(cd "$root" && cargo build --release --locked -p hearth -p testkit --bin hearth --bin origin >&2)
(cd "$root" && cargo build --release --locked -p transfer --example sha256_speed >&2)
hearth="$root/target/release/hearth"
model=$("$hearth" pull gemma3 | sed -E 's/.*\((.*)\)$/\1/')
work=$(mktemp -d)
mkdir "$work/served"
ln -s "$model" "$work/served/gemma.gguf"
cat "$model" >/dev/null # into the page cache
"$root/target/release/origin" "$work/served" >"$work/origin.url" &
origin=$!
trap 'kill $origin 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do [[ -s "$work/origin.url" ]] && break; sleep 0.05; done
url="$(cat "$work/origin.url")/files/gemma.gguf"
size=$(stat -L -c %s "$model")

run_curl() {
    local t0 t1
    t0=$(date +%s.%N)
    curl -sf -o "$work/curl.out" "$url"
    t1=$(date +%s.%N)
    rm -f "$work/curl.out"
    echo "$t1 - $t0" | bc
}
run_curl_sync() {
    local t0 t1
    t0=$(date +%s.%N)
    curl -sf -o "$work/curl.out" "$url"
    sync "$work/curl.out"
    t1=$(date +%s.%N)
    rm -f "$work/curl.out"
    echo "$t1 - $t0" | bc
}
run_hearth() {
    local t0 t1
    rm -rf "$work/home"
    t0=$(date +%s.%N)
    HEARTH_HOME="$work/home" "$hearth" pull "$url" --name gemma --connections "$connections" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
curl_times=()
sync_times=()
hearth_times=()
for r in $(seq 1 "$rounds"); do
    if ((r % 2)); then
        curl_times+=("$(run_curl)"); sync_times+=("$(run_curl_sync)"); hearth_times+=("$(run_hearth)")
    else
        hearth_times+=("$(run_hearth)"); sync_times+=("$(run_curl_sync)"); curl_times+=("$(run_curl)")
    fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c=$(median "${curl_times[@]}")
h=$(median "${hearth_times[@]}")
cs=$(median "${sync_times[@]}")
sha=$("$root/target/release/examples/sha256_speed" 1024)
cpu=$(lscpu | sed -n 's/^Model name: *//p')
section=$(cat <<MD

## Pull speed from loopback ($(date -u +%Y-%m-%d), $(git -C "$root" rev-parse --short HEAD))

\`bench/pull.sh --rounds $rounds --connections $connections\` on $(nproc) cores ($cpu): Gemma 3 270M
($size bytes) served from the page cache by testkit's origin; medians, alternating order.

| | seconds | MB/s | vs curl |
|---|---:|---:|---:|
| curl (one connection, to a file) | $c | $(echo "$size / $c / 1000000" | bc) | 1.00× |
| curl, then \`sync\` of the file (durable, as a pull must be) | $cs | $(echo "$size / $cs / 1000000" | bc) | $(printf %.2f "$(echo "$c / $cs" | bc -l)")× |
| hearth pull ($connections connections, per-chunk and whole SHA-256, journal, GGUF check, publish) | $h | $(echo "$size / $h / 1000000" | bc) | $(printf %.2f "$(echo "$c / $h" | bc -l)")× |

SHA-256 on one core (\`cargo run --release -p transfer --example sha256_speed\`, the \`sha2\` crate): \`$sha\`.
Runs: curl ${curl_times[*]}; curl+sync ${sync_times[*]}; hearth ${hearth_times[*]}.
MD
)
echo "$section"
if ((record)); then
    echo "$section" >>"$root/docs/benchmarks.md"
fi
