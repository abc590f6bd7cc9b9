#!/usr/bin/env bash
# The kernel compile check: compiles every kernels/*.cu module with NVRTC for sm_80 and
# sm_90a (no GPU needed; NVRTC from the PyPI wheel nvidia-cuda-nvrtc is enough) and prints
# the ptxas report (registers, stack, spills). Skips with a reason where NVRTC is missing.
# The project's own venv (.venv, where ./build.sh installs nvidia-cuda-nvrtc) is searched
# for NVRTC; when it holds the library, the check must run: RAPTOR_REQUIRE_NVRTC=1 turns
# the skip into a failure (a kernel that does not compile never lands).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -d .venv ]; then
  export VIRTUAL_ENV=$PWD/.venv
fi
if [ -n "${VIRTUAL_ENV:-}" ] && compgen -G "$VIRTUAL_ENV/lib/python3*/site-packages/nvidia/*/lib/libnvrtc.so.1[23]" >/dev/null; then
  export RAPTOR_REQUIRE_NVRTC=1
fi
go test -count=1 -run 'TestCompileAllKernels|TestExpand' -v ./kernels/
