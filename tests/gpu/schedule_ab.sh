#!/usr/bin/env bash
# One device call for the attention schedule reused across layers (NOTES-attention.md,
# sixteenth run): after the GPU harness (tests/gpu/run.sh --on-device, which runs the
# attention suite and every engine GPU test with the reuse on), A/B runs of the same
# binaries with the schedule once per forward (default) and in every layer
# (RAPTOR_ATTN_SCHEDULE=layer):
#   1. the attention kernel benchmark (bench/attention_bench.py: both ways per workload);
#   2. the engine's per-forward device time (engine TestGPUProfile, MiniLM- and
#      BigBird-base-shaped models, graph probes: A B, then MiniLM alone A B);
#   3. bench/serve on all-MiniLM-L6-v2 f16 (lone latency, 25/50/90/110% load), A B A B.
# Build here first: `PATH=$PWD/.venv/bin:$PATH bash tests/gpu/run.sh --soak=30`, then
#   go build -o build/gpu/serve/serve ./bench/serve && gzip -9f build/gpu/serve/serve
# and call the device with carry ["build/gpu", "tests/gpu/attention/cubin"] and
#   bash tests/gpu/schedule_ab.sh
# Logs under $OUT (at most a few files: the harness summary, the bench log, the profiles
# and the serve tables).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD L=${OUT:-/tmp/sab-out}
mkdir -p "$L"
T0=$SECONDS
export PYTHONUNBUFFERED=1
if [ "${SKIP_HARNESS:-0}" != 1 ]; then
  OUT=$L/h bash tests/gpu/run.sh --on-device --soak="${SOAK:-30}" >"$L/harness.txt" 2>&1
  echo "harness rc=$? ($((SECONDS - T0)) s)"
  tail -n 30 "$L/harness.txt"
fi
export RAPTOR_KERNEL_CACHE; RAPTOR_KERNEL_CACHE=${RAPTOR_KERNEL_CACHE:-$(mktemp -d)}

# 1. kernel alone
mkdir -p "$L/attn"; OUT=$L/attn timeout 240 python3 bench/attention_bench.py --no-probe >"$L/attn_bench.txt" 2>&1
echo "attention bench rc=$? ($((SECONDS - T0)) s)"
grep -E "^==|^  (raptor|Flex)|schedule reused:|^\||^Schedule reused" "$L/attn_bench.txt" | grep -v "mma.sync" | cut -c1-170 | tail -75

# 2. engine device time per forward
BIN=/tmp/raptor-gpu-bin
[ -x "$BIN/engine.test" ] || { mkdir -p "$BIN"; gunzip -c build/gpu/bin/engine.test.gz >"$BIN/engine.test"; chmod +x "$BIN/engine.test"; }
for run in a1 b1 a2 b2; do
  case $run in a*) mode= ;; b*) mode=layer ;; esac
  case $run in *1) models=minilm,base lim=100 ;; *) models=minilm lim=40 ;; esac
  (cd engine && RAPTOR_ATTN_SCHEDULE=$mode RAPTOR_PROFILE_MODELS=$models RAPTOR_PROFILE_OUT="$L/profile_$run.json" \
    timeout $lim "$BIN/engine.test" -test.run '^TestGPUProfile$' -test.v -test.count=1 >"$L/profile_$run.txt" 2>&1)
  echo "profile $run (RAPTOR_ATTN_SCHEDULE=$mode) rc=$? ($((SECONDS - T0)) s)"
  grep -E "graph (minilm|base)" "$L/profile_$run.txt" | sed 's/^ *//' | cut -c1-240
done

# 3. serving
S=$L/serve; mkdir -p "$S"
gunzip -c build/gpu/serve/serve.gz >/tmp/serve && chmod +x /tmp/serve
ARGS="-backend cuda -model $ROOT/build/gpu/models/minilm-f16.raptor -capacity offline -offline-budgets 131072 -budget 131072 -queue 4096 -delay 0s -modes dynamic -alone 1000 -duration 4s -rounds 2 -loads 25,50,90,110"
for run in a1 b1 a2 b2; do
  case $run in a*) mode= ;; b*) mode=layer ;; esac
  # shellcheck disable=SC2086
  RAPTOR_ATTN_SCHEDULE=$mode timeout 60 /tmp/serve $ARGS -json "$S/serve_$run.json" >"$S/serve_$run.md" 2>"$S/serve_$run.err"
  echo "serve $run (RAPTOR_ATTN_SCHEDULE=$mode) rc=$? ($((SECONDS - T0)) s)"
  grep -E "^Best offline|^One request alone|^\| (25|50|90|110)% |dynamic 50% load" "$S/serve_$run.md" | cut -c1-400 | head -6
done
tar -C "$L" -czf "$L/serve_logs.tgz" serve && rm -rf "$S"
tar -C "$L" -czf "$L/profiles.tgz" profile_a1.json profile_b1.json profile_a2.json profile_b2.json \
  profile_a1.txt profile_b1.txt profile_a2.txt profile_b2.txt 2>/dev/null && rm -f "$L"/profile_*
[ -d "$L/attn" ] && cp "$L/attn/attention_bench.log" "$L/attn_bench.log" 2>/dev/null; rm -rf "$L/attn"
[ -d "$L/h" ] && tar -C "$L" -czf "$L/harness.tgz" h && rm -rf "$L/h"
ls -la "$L"
echo "total $((SECONDS - T0)) s"
