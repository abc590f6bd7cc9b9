#!/usr/bin/env bash
# The kernel compile check: compiles every kernels/*.cu module with NVRTC for sm_80 and
# sm_90a (no GPU needed; NVRTC from the PyPI wheel nvidia-cuda-nvrtc is enough) and prints
# the ptxas report (registers, stack, spills). Skips with a reason where NVRTC is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
go test -count=1 -run 'TestCompileAllKernels|TestExpand' -v ./kernels/
