#!/bin/bash
# One device call: the correctness suite, then the benchmark. Logs under $OUT.
# Carry tests/gpu/attention/cubin (python3 tests/gpu/attention/nvrtc.py
# tests/gpu/attention/cubin builds it on the development machine).
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sa_out}; mkdir -p "$OUT"; export OUT
cd "$(dirname "$0")/../../.."
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,memory.used --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
timeout ${TEST_TIMEOUT:-240} python3 tests/gpu/attention/test_attention.py > "$OUT/test_stdout.txt" 2>&1
echo "test rc=$?"
grep -v "^ \|Warning\|warn" "$OUT/test_stdout.txt" | tail -45
timeout ${BENCH_TIMEOUT:-300} python3 bench/attention_bench.py $BENCH_ARGS > "$OUT/bench_stdout.txt" 2>&1
rc=$?
echo "bench rc=$rc"
grep -v "Warning\|warn" "$OUT/bench_stdout.txt" | tail -100
if [ $rc -ne 0 ]; then
  # the wgmma kernel broke the run: benchmark the mma.sync kernel instead
  cp "$OUT/attention_bench.log" "$OUT/attention_bench_auto.log" 2>/dev/null
  timeout ${BENCH_TIMEOUT:-200} python3 bench/attention_bench.py --variant mma $BENCH_ARGS > "$OUT/bench_mma_stdout.txt" 2>&1
  echo "bench (mma.sync) rc=$?"
  grep -v "Warning\|warn" "$OUT/bench_mma_stdout.txt" | tail -60
fi
