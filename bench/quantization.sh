#!/usr/bin/env bash
# The quantization report, measured: an F16 source made by dequantizing the
# default model, quantized to F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M and Q4_0, each
# measured for size, perplexity over the shipped text and speed
# (`hearth quantize --report`); then the F16 perplexity checked against
# llama.cpp's own llama-perplexity on the same file, text and window.
#
#   bench/quantization.sh [--threads N]
#
# Writes bench/work/quantization.{txt,json} and docs/quantization.svg.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
threads=$(lscpu -p=core | grep -v '^#' | sort -u | wc -l)
while (($#)); do
    case "$1" in
        --threads) threads=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

"$root/scripts/prereqs.sh"
(cd "$root" && cargo build --release --locked -p hearth >&2)
hearth="$root/target/release/hearth"
bin=$("$here/llama-cpp.sh")
mkdir -p "$here/work"
text="$root/crates/hearth/assets/founding-documents.txt"

"$hearth" pull smollm2 >/dev/null
if ! "$hearth" show smollm2-f16 >/dev/null 2>&1; then
    "$hearth" quantize smollm2 --type F16 --allow-requantize --name smollm2-f16 --threads "$threads"
fi
"$hearth" quantize smollm2-f16 --report --threads "$threads" --json \
    --chart "$root/docs/quantization.svg" >"$here/work/quantization.json"
python3 - "$here/work/quantization.json" <<'EOF' | tee "$here/work/quantization.txt"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['source']} ({r['source_type']}): perplexity {r['source_perplexity']:.4f} over "
      f"{r['scored_tokens']} tokens of {r['text']} (windows of {r['window']}), {r['threads']} threads\n")
print("| type | size (MB) | bits/weight | perplexity | Δ vs F16 | prefill tok/s | decode tok/s |")
print("|---|---:|---:|---:|---:|---:|---:|")
for row in r["rows"]:
    print(f"| {row['weight_type']} | {row['bytes'] / 1e6:.1f} | {row['bits_per_weight']:.2f} | "
          f"{row['perplexity']:.4f} ± {row['std_error']:.4f} | {row['delta_percent']:+.2f}% | "
          f"{row['prefill_tps']:.1f} | {row['decode_tps']:.1f} |")
EOF

f16=$("$hearth" show smollm2-f16 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
ours=$("$hearth" eval smollm2-f16 --threads "$threads" --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])')
theirs=$("$bin/llama-perplexity" -m "$f16" -f "$text" -c 512 -t "$threads" 2>&1 |
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
python3 - "$ours" "$theirs" <<'EOF'
import sys
ours, theirs = float(sys.argv[1]), float(sys.argv[2])
print(f"F16 perplexity: hearth eval {ours:.4f}, llama-perplexity {theirs:.4f}, "
      f"ratio {ours / theirs:.4f} ({(ours / theirs - 1) * 100:+.2f}%)")
EOF
