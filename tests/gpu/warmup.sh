#!/usr/bin/env bash
# Issue 8, the warm-up on the GPU machine: TestGPUWarmup (engine) and the Go
# binding's TestWarmup on CUDA, then bench/serve without and with the warm-up
# (and with the warm-up and an 8192-token graph limit). Build here:
#   B=build/ov; go test -c -ldflags='-s -w' -o $B/engine.test ./engine
#   CGO_ENABLED=0 go test -c -ldflags='-s -w' -o $B/raptor_binding.test ./bindings/go/raptor
#   go build -buildmode=c-shared -ldflags='-s -w' -o $B/libraptor.so ./abi
#   go run ./tests/tools/mkmodel -gpu -o $B/testmodels-gpu; gzip -9 $B/*.test $B/libraptor.so
#   bench/serve and the MiniLM file in build/h8 as in tests/gpu/issue8.sh
# Run on the device carrying build/ov and build/h8; logs in $OUT/all.tgz.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
O=${OUT:-/tmp/warm-out}; L=$(mktemp -d); mkdir -p "$O"
for f in build/ov/*.gz build/h8/bin/*.gz; do [ -e "$f" ] && gunzip -f "$f"; done
chmod +x build/ov/*.test build/h8/bin/*
export RAPTOR_KERNEL_CACHE; RAPTOR_KERNEL_CACHE=${RAPTOR_KERNEL_CACHE:-$(mktemp -d)}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ "${SKIP_TESTS:-0}" = 1 ] || (cd engine && timeout 150 ../build/ov/engine.test -test.run 'TestGPUWarmup|TestGPUGraphClasses' -test.v -test.count=1) >"$L/engine.log" 2>&1
echo "engine rc=$?"; grep -E "^(=== RUN|--- |PASS|FAIL|ok)|warm-up:" "$L/engine.log" | grep -v "=== RUN"
[ "${SKIP_TESTS:-0}" = 1 ] || [ ! -e build/ov/raptor_binding.test ] || (cd bindings/go/raptor && RAPTOR_TEST_BACKEND=cuda RAPTOR_LIB=$PWD/../../../build/ov/libraptor.so RAPTOR_TESTMODELS=$PWD/../../../build/ov/testmodels-gpu \
  timeout 60 ../../../build/ov/raptor_binding.test -test.run 'TestWarmup' -test.v -test.count=1) >"$L/binding.log" 2>&1
echo "binding rc=$?"; grep -E "^(--- |PASS|FAIL|ok)" "$L/binding.log"
# RUNS: "name graph-limit flag" entries; MODEL, LOADS, DURATION, ROUNDS: the bench's; SKIP_TESTS=1: no tests.
A="-backend cuda -model ${MODEL:-build/h8/models/minilm-f16.raptor} -capacity offline -offline-budgets 131072 -budget 131072 -queue 4096 -delay 0s -modes dynamic -alone 1000 -duration ${DURATION:-4s} -rounds ${ROUNDS:-2} -loads ${LOADS:-25,50,90,110}"
RUNS=${RUNS:-"nowarm 4096 -warmup=false;warm 4096 -warmup;warm8k 8192 -warmup;nowarm2 4096 -warmup=false;warm2 4096 -warmup"}
IFS=';' read -ra runs <<<"$RUNS"
for run in "${runs[@]}"; do
  set -- $run
  RAPTOR_CUDA_GRAPHS=$2 timeout 100 build/h8/bin/serve $A $3 -json "$L/serve_$1.json" >"$L/serve_$1.md" 2>"$L/serve_$1.err"
  echo "== serve $1 (graphs $2) rc=$?"; grep -E "warm-up:|round|alone:" "$L/serve_$1.err" | grep -v trace
done
cd "$L" && tar czf "$O/all.tgz" * && ls -la "$O/all.tgz"
