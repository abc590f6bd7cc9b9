#!/usr/bin/env bash
# Issue 8 on the GPU machine: the open-loop load benchmark (bench/serve on the CUDA
# backend, all-MiniLM-L6-v2 f16) and the full exactly-once stress (16 threads,
# 100,000 requests, C++ host and Go host, RAPTOR_TEST_BACKEND=cuda, `mkmodel -gpu`
# models). tests/gpu/run.sh is not used: this needs only its own binaries.
#
# Build here (Go, no GPU), from a clean tree (a worktree of HEAD is safest while
# others edit): the binaries go to build/h8 (ignored), gzipped:
#   B=build/h8; go build -o $B/bin/serve ./bench/serve
#   go build -buildmode=c-shared -ldflags='-s -w' -o $B/lib/libraptor.so ./abi
#   g++ -std=c++17 -O2 -Wall -Iinclude tests/cpp/test_server.cpp -o $B/c/test_server \
#       -L$B/lib -lraptor -lpthread -ldl -Wl,-rpath,'$ORIGIN/../lib'
#   go test -c -ldflags='-s -w' -o $B/bin/raptor_binding.test ./bindings/go/raptor
#   go run ./tests/tools/mkmodel -gpu -o $B/testmodels-gpu
#   cp build/gpu/models/minilm-f16.raptor $B/models/   # tests/gpu/run.sh converts it
#   gzip -9 $B/bin/* $B/lib/libraptor.so $B/c/test_server
# then run `bash tests/gpu/issue8.sh` on the device, carrying build/h8.
# ISSUE8_BUILD (an absolute path) replaces build/h8. SERVE_ARGS overrides the benchmark's settings; SERVE_TAG names its logs
# (serve_$SERVE_TAG.md, default serve.md); SKIP_STRESS=1 runs the benchmark
# alone; logs under $OUT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD B=${ISSUE8_BUILD:-$ROOT/build/h8} L=${OUT:-/tmp/h8-out}
mkdir -p "$L"
for f in "$B"/bin/*.gz "$B"/lib/*.gz "$B"/c/*.gz; do [ -e "$f" ] && gunzip -f "$f"; done
chmod +x "$B"/bin/* "$B"/c/*
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$L/machine.txt"
nproc | tee -a "$L/machine.txt"
export RAPTOR_KERNEL_CACHE; RAPTOR_KERNEL_CACHE=${RAPTOR_KERNEL_CACHE:-$(mktemp -d)}
TAG=serve${SERVE_TAG:+_$SERVE_TAG}
T0=$SECONDS

# 1. The load benchmark, alone on the GPU (its timings).
SERVE_ARGS=${SERVE_ARGS:--backend cuda -model $B/models/minilm-f16.raptor -duration 6s -rounds 2 -budget 8192 -delay 0s -queue 1024 -static-batch 64 -static-timeout 5ms}
echo "== serve $SERVE_ARGS"
# shellcheck disable=SC2086
timeout 230 "$B/bin/serve" $SERVE_ARGS -json "$L/$TAG.json" >"$L/$TAG.md" 2>"$L/$TAG.err"
echo "serve rc=$? ($((SECONDS - T0)) s)"
tail -n 5 "$L/$TAG.err"
if [ "${SKIP_STRESS:-0}" = 1 ]; then cat "$L/$TAG.md"; exit 0; fi

# 2. The two stress hosts at once (16 threads each), engines on the GPU.
export RAPTOR_TEST_BACKEND=cuda
T1=$SECONDS
(t=$SECONDS; timeout 240 "$B/c/test_server" "$B/testmodels-gpu" 100000 16 >"$L/stress_cpp.log" 2>&1
  echo "rc=$? $((SECONDS - t)) s" >>"$L/stress_cpp.log") &
(cd bindings/go/raptor && RAPTOR_LIB=$B/lib/libraptor.so RAPTOR_TESTMODELS=$B/testmodels-gpu RAPTOR_STRESS_REQUESTS=100000 \
  timeout 240 "$B/bin/raptor_binding.test" -test.run 'SchedulerStress' -test.v -test.count=1 -test.timeout 235s >"$L/stress_go.log" 2>&1
  echo "rc=$? $((SECONDS - T1)) s" >>"$L/stress_go.log") &
wait
echo "stress: $((SECONDS - T1)) s"
echo "== C++ host"; tail -n 12 "$L/stress_cpp.log"
echo "== Go host"; tail -n 8 "$L/stress_go.log"
echo "== serve"; cat "$L/$TAG.md"
