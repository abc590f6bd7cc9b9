#!/usr/bin/env bash
# raptor's GPU test harness (issue 5).
#
#   tests/gpu/run.sh              on the development machine (Go, no GPU needed):
#                                 CPU-side checks (gofmt, vet, race tests of internal/cuda,
#                                 the NVRTC kernel compile check), then builds everything the
#                                 GPU machine runs into build/gpu/ and prints the exact `run`
#                                 invocation that carries it there.
#   tests/gpu/run.sh --on-device  on the GPU machine (no Go, no network): runs the carried
#                                 test binaries (every package with GPU tests), the Python
#                                 tests, and the GEMM benchmark against torch; writes logs
#                                 under $OUT and prints each runner's summary last.
#
# Options (both modes): --no-bench skips the benchmark; --quick runs the tests with -short
# (no model-shape GEMM sweep). RAPTOR_GPU_TEST_RUN=<regexp> narrows the Go tests (-test.run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
BUILD=build/gpu

ON_DEVICE=0 BENCH=1 QUICK=0
for a in "$@"; do
  case $a in
    --on-device) ON_DEVICE=1 ;;
    --no-bench) BENCH=0 ;;
    --quick) QUICK=1 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: tests/gpu/run.sh [--on-device] [--no-bench] [--quick]" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*" >&2; }

# ------------------------------------------------------------------ development machine
build_here() {
  command -v go >/dev/null || { echo "run.sh: Go is needed on this machine (--on-device runs without it)" >&2; exit 1; }
  local mine=(./internal/cuda/ ./kernels/ ./bench/gemm/)
  say "CPU-side checks: gofmt, go vet, go test -race (internal/cuda), kernel compile check"
  local bad
  bad=$(gofmt -l internal/cuda kernels bench/gemm)
  if [ -n "$bad" ]; then echo "gofmt would change: $bad" >&2; exit 1; fi
  go vet "${mine[@]}"
  go test -race -count=1 ./internal/cuda/
  local log
  log=$(mktemp)
  if ! go test -count=1 -run 'TestCompileAllKernels|TestExpand' -v ./kernels/ >"$log" 2>&1; then
    grep -vE '^ {8}' "$log" >&2
    echo "run.sh: the kernel compile check failed" >&2
    exit 1
  fi
  grep -E '^(---|ok)|NVRTC [0-9]|with spills' "$log" || true
  rm -f "$log"
  python3 -m py_compile bench/gemm_torch.py

  rm -rf "$BUILD"
  mkdir -p "$BUILD/bin" "$BUILD/lib"
  # Every package with GPU tests (func TestGPU...), plus the kernels' compile check.
  local pkgs
  pkgs=$( (grep -rl --include='*_test.go' '^func TestGPU' . | xargs -r -n1 dirname; echo ./kernels) | sort -u)
  local d name
  for d in $pkgs; do
    name=$(go list "$d" | sed 's|github.com/raptor-infer/raptor/||; s|/|_|g')
    say "go test -c $d -> $BUILD/bin/$name.test"
    go test -c -ldflags='-s -w' -o "$BUILD/bin/$name.test" "$d"
    echo "${d#./}" >"$BUILD/bin/$name.dir"
  done
  say "go build bench/gemm -> $BUILD/bin/gemmbench"
  go build -ldflags='-s -w' -o "$BUILD/bin/gemmbench" ./bench/gemm
  say "go build -buildmode=c-shared ./tests/gpu/cshared -> $BUILD/lib/libcudaselftest.so"
  go build -buildmode=c-shared -ldflags='-s -w' -o "$BUILD/lib/libcudaselftest.so" ./tests/gpu/cshared
  if ls abi/*.go >/dev/null 2>&1; then
    say "go build -buildmode=c-shared ./abi -> $BUILD/lib/libraptor.so"
    go build -buildmode=c-shared -ldflags='-s -w' -o "$BUILD/lib/libraptor.so" ./abi ||
      say "libraptor.so did not build: the Python tests will skip"
  fi
  du -sh "$BUILD" | sed 's/^/carry size: /'
  cat <<EOF

Built $BUILD. Run it on the GPU machine with one call of the device tool:

  run(command="bash tests/gpu/run.sh --on-device", carry=["$BUILD"], timeout_s=600)

(add --quick to skip the model-shape GEMM sweep, --no-bench to skip the benchmark)
EOF
}

# ------------------------------------------------------------------ GPU machine
SUMMARY=()

on_device() {
  OUT=${OUT:-/tmp/raptor-gpu-out}
  local LOGS=$OUT/run
  mkdir -p "$LOGS"
  [ -d "$BUILD/bin" ] || { echo "run.sh: $BUILD/bin is missing: build it here with tests/gpu/run.sh and carry $BUILD" >&2; exit 1; }
  {
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,temperature.gpu --format=csv || true
    python3 -c '
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
a = torch.randn(256, 256, device="cuda", dtype=torch.float16)
torch.nn.functional.linear(a, a, a[0]); torch.cuda.synchronize()
print("torch uses", sorted({l.split()[-1] for l in open("/proc/self/maps") if "libcublasLt" in l}))' || true
    for f in /usr/local/cuda/targets/x86_64-linux/lib/lib{nvrtc,cublasLt}.so.*; do [ -e "$f" ] && echo "$f"; done; true
  } 2>&1 | tee "$LOGS/machine.txt"

  export RAPTOR_KERNEL_CACHE
  RAPTOR_KERNEL_CACHE=$(mktemp -d)
  local t name dir rc pass fail skip args limit
  for t in "$BUILD"/bin/*.test; do
    name=$(basename "$t" .test)
    dir=$(cat "$BUILD/bin/$name.dir")
    # Per-runner limits keep the whole run inside one 600 s device call.
    limit=240
    [ "$name" = kernels ] && limit=60
    args=(-test.v -test.count=1 "-test.timeout=$((limit - 5))s")
    [ "$QUICK" -eq 1 ] && args+=(-test.short)
    [ -n "${RAPTOR_GPU_TEST_RUN:-}" ] && args+=("-test.run=$RAPTOR_GPU_TEST_RUN")
    say "$name (in $dir): $t ${args[*]}"
    rc=0
    (cd "$dir" && timeout "$limit" "$ROOT/$t" "${args[@]}") >"$LOGS/$name.log" 2>&1 || rc=$?
    # The test log is long: show the key lines here, the whole log is under $OUT.
    grep -E '^(=== RUN|--- (PASS|FAIL|SKIP))|^\s+\S+\.go:[0-9]+: ' "$LOGS/$name.log" |
      grep -vE '^=== RUN' | cut -c1-260 || true
    pass=$(grep -c -- '--- PASS' "$LOGS/$name.log" || true)
    fail=$(grep -c -- '--- FAIL' "$LOGS/$name.log" || true)
    skip=$(grep -c -- '--- SKIP' "$LOGS/$name.log" || true)
    SUMMARY+=("$(printf 'go %-22s exit %-3s pass %-3s fail %-3s skip %-3s' "$name" "$rc" "$pass" "$fail" "$skip")")
  done

  say "pytest tests/gpu/cshared_test.py (internal/cuda inside a c-shared library, 16 Python threads)"
  rc=0
  timeout 60 python3 -m pytest -ra -q -s -p no:cacheprovider tests/gpu/cshared_test.py >"$LOGS/pytest_gpu.log" 2>&1 || rc=$?
  grep -E 'c-shared:|passed|failed|skipped|Error' "$LOGS/pytest_gpu.log" | tail -n 8
  SUMMARY+=("$(printf 'pytest tests/gpu/cshared_test  exit %-3s %s' "$rc" "$(tail -n 1 "$LOGS/pytest_gpu.log")")")

  if [ -f "$BUILD/lib/libraptor.so" ] && [ -d tests/python ]; then
    say "pytest tests/python (RAPTOR_LIB=$BUILD/lib/libraptor.so)"
    rc=0
    RAPTOR_LIB=$ROOT/$BUILD/lib/libraptor.so HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
      timeout 45 python3 -m pytest -ra -q -p no:cacheprovider tests/python >"$LOGS/pytest.log" 2>&1 || rc=$?
    tail -n 25 "$LOGS/pytest.log"
    SUMMARY+=("$(printf 'pytest tests/python            exit %-3s %s' "$rc" "$(tail -n 1 "$LOGS/pytest.log")")")
  else
    SUMMARY+=("pytest tests/python            not run (no libraptor.so carried)")
  fi

  if [ "$BENCH" -eq 1 ]; then
    say "GEMM benchmark: raptor (cuBLASLt), torch, raptor again, raptor on torch's cuBLASLt; same shapes, same machine"
    # The cuBLASLt that torch's wheel ships, if any: raptor timed on the very library torch uses.
    local wheel_lt
    wheel_lt=$(python3 - <<'PY' 2>/dev/null || true
import glob, site, sys
for sp in site.getsitepackages() + sys.path:
    for sub in ("nvidia/cu13/lib", "nvidia/cublas/lib"):
        m = glob.glob(f"{sp}/{sub}/libcublasLt.so.1[23]")
        if m:
            print(m[0].rsplit("/", 1)[0]); raise SystemExit
PY
)
    rc=0
    timeout 60 "$BUILD/bin/gemmbench" -out "$LOGS/gemm_raptor.json" >"$LOGS/gemmbench.log" 2>&1 || rc=$?
    grep -vE '^gemm ' "$LOGS/gemmbench.log" || true
    if [ "$rc" -eq 0 ]; then
      PYTHONUNBUFFERED=1 timeout 100 python3 bench/gemm_torch.py "$LOGS/gemm_raptor.json" --json "$LOGS/torch_only.json" \
        >"$LOGS/gemm_torch_first.log" 2>&1 || rc=$?
    fi
    local extra=()
    if [ "$rc" -eq 0 ]; then
      timeout 60 "$BUILD/bin/gemmbench" -out "$LOGS/gemm_raptor_repeat.json" >"$LOGS/gemmbench_repeat.log" 2>&1 || rc=$?
      extra+=(--extra "repeat=$LOGS/gemm_raptor_repeat.json")
    fi
    if [ "$rc" -eq 0 ] && [ -n "$wheel_lt" ]; then
      say "raptor on torch's cuBLASLt: RAPTOR_CUDA_LIB_DIR=$wheel_lt"
      RAPTOR_CUDA_LIB_DIR=$wheel_lt timeout 60 "$BUILD/bin/gemmbench" -out "$LOGS/gemm_raptor_wheel.json" \
        >"$LOGS/gemmbench_wheel.log" 2>&1 || rc=$?
      head -n 2 "$LOGS/gemmbench_wheel.log"
      extra+=(--extra "torch's-cuBLASLt=$LOGS/gemm_raptor_wheel.json")
    fi
    if [ "$rc" -eq 0 ]; then
      # The table (no new timing): torch was timed between raptor's first pass and its repeat.
      PYTHONUNBUFFERED=1 timeout 100 python3 bench/gemm_torch.py --torch-json "$LOGS/torch_only.json" "${extra[@]}" \
        --md "$OUT/gemm_table.md" --json "$OUT/gemm_all.json" >"$LOGS/gemm_torch.log" 2>&1 || rc=$?
      [ "$rc" -eq 0 ] || tail -n 30 "$LOGS/gemm_torch.log"
    fi
    SUMMARY+=("$(printf 'bench gemm                     exit %-3s (table: gemm_table.md)' "$rc")")
  fi

  rm -rf "$RAPTOR_KERNEL_CACHE"
  tar -C "$OUT" -czf "$OUT/logs.tar.gz" run && rm -rf "$LOGS"
  {
    [ -f "$OUT/gemm_table.md" ] && { echo; cat "$OUT/gemm_table.md"; }
    echo
    echo "===== GPU harness summary ====="
    printf '%s\n' "${SUMMARY[@]}"
  } | tee "$OUT/summary.txt"
  local s
  for s in "${SUMMARY[@]}"; do
    case $s in *"exit 0 "* | *"not run"*) ;; *) return 1 ;; esac
  done
}

if [ "$ON_DEVICE" -eq 1 ]; then on_device; else build_here; fi
