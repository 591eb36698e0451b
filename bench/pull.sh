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

# Each run prints "wall_seconds client_cpu_seconds origin_cpu_seconds":
# CPU is user + system time, the client's from time(1), the origin's from
# /proc (its clock ticks during the run), so the table can say how much of
# the 2 cores each side needed.
ticks=$(getconf CLK_TCK)
origin_cpu() { awk '{print $14 + $15}' "/proc/$origin/stat"; }
timed() {
    local o0 o1 t
    o0=$(origin_cpu)
    /usr/bin/time -o "$work/time" -f "%e %U %S" "$@" >/dev/null
    t=$(tail -1 "$work/time")
    o1=$(origin_cpu)
    echo "$t" | awk -v o="$((o1 - o0))" -v hz="$ticks" '{printf "%.3f %.3f %.3f\n", $1, $2 + $3, o / hz}'
}
run_curl() {
    timed curl -sf -o "$work/curl.out" "$url"
    rm -f "$work/curl.out"
}
run_curl_sync() {
    timed bash -c "curl -sf -o '$work/curl.out' '$url' && sync '$work/curl.out'"
    rm -f "$work/curl.out"
}
run_curl_hash() {
    timed bash -c "curl -sf '$url' | tee '$work/curl.out' | openssl dgst -sha256 >/dev/null"
    rm -f "$work/curl.out"
}
run_hearth() {
    rm -rf "$work/home"
    HEARTH_HOME="$work/home" timed "$hearth" pull "$url" --name gemma --connections "$connections"
}
curl_runs=()
hash_runs=()
sync_runs=()
hearth_runs=()
for r in $(seq 1 "$rounds"); do
    if ((r % 2)); then
        curl_runs+=("$(run_curl)"); hash_runs+=("$(run_curl_hash)"); sync_runs+=("$(run_curl_sync)"); hearth_runs+=("$(run_hearth)")
    else
        hearth_runs+=("$(run_hearth)"); sync_runs+=("$(run_curl_sync)"); hash_runs+=("$(run_curl_hash)"); curl_runs+=("$(run_curl)")
    fi
done
# The median of field $1 (1 wall, 2 client CPU, 3 origin CPU) of runs $2…
median() {
    local f=$1
    shift
    printf '%s\n' "$@" | awk -v f="$f" '{print $f}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
walls() { printf '%s\n' "$@" | awk '{printf "%s ", $1}'; }
c=$(median 1 "${curl_runs[@]}")
h=$(median 1 "${hearth_runs[@]}")
cs=$(median 1 "${sync_runs[@]}")
ch=$(median 1 "${hash_runs[@]}")
cpu_row() { echo "$(median 2 "$@") + $(median 3 "$@")"; }
sha=$("$root/target/release/examples/sha256_speed" 1024)
cpu=$(lscpu | sed -n 's/^Model name: *//p')
section=$(cat <<MD

## Pull speed from loopback ($(date -u +%Y-%m-%d), $(git -C "$root" rev-parse --short HEAD))

\`bench/pull.sh --rounds $rounds --connections $connections\` on $(nproc) cores ($cpu): Gemma 3 270M
($size bytes) served from the page cache by testkit's origin; medians, alternating order.

| | seconds | MB/s | vs curl | vs curl+sync | CPU s (client + origin) |
|---|---:|---:|---:|---:|---:|
| curl (one connection, to a file) | $c | $(echo "$size / $c / 1000000" | bc) | 1.00× | | $(cpu_row "${curl_runs[@]}") |
| curl through \`tee\` into \`openssl dgst -sha256\` (one hash pass with the SHA extensions; not durable) | $ch | $(echo "$size / $ch / 1000000" | bc) | $(printf %.2f "$(echo "$c / $ch" | bc -l)")× | | $(cpu_row "${hash_runs[@]}") |
| curl, then \`sync\` of the file (durable, as a pull must be) | $cs | $(echo "$size / $cs / 1000000" | bc) | $(printf %.2f "$(echo "$c / $cs" | bc -l)")× | 1.00× | $(cpu_row "${sync_runs[@]}") |
| hearth pull ($connections connections, per-chunk and whole SHA-256, journal, GGUF check, publish) | $h | $(echo "$size / $h / 1000000" | bc) | $(printf %.2f "$(echo "$c / $h" | bc -l)")× | $(printf %.2f "$(echo "$cs / $h" | bc -l)")× | $(cpu_row "${hearth_runs[@]}") |

SHA-256 on one core (\`cargo run --release -p transfer --example sha256_speed\`, the \`sha2\` crate): \`$sha\`.
Runs (wall seconds): curl $(walls "${curl_runs[@]}"); curl+openssl $(walls "${hash_runs[@]}"); curl+sync $(walls "${sync_runs[@]}"); hearth $(walls "${hearth_runs[@]}").
MD
)
echo "$section"
if ((record)); then
    echo "$section" >>"$root/docs/benchmarks.md"
fi
