#!/usr/bin/env bash
# Issue 8: do small forwards on separate streams of one GPU overlap? (engine
# TestGPUStreamOverlap), then a traced bench/serve run at 50% load (where a
# batch's time goes). Build here: go test -c -ldflags='-s -w' -o build/ov/engine.test ./engine;
# gzip -9 build/ov/engine.test; bench/serve as in tests/gpu/issue8.sh (build/h8).
# Run on the device carrying build/ov and build/h8; logs in $OUT/all.tgz.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
O=${OUT:-/tmp/ov-out}; L=$(mktemp -d); mkdir -p "$O"
for f in build/ov/*.gz build/h8/bin/*.gz; do [ -e "$f" ] && gunzip -f "$f"; done
chmod +x build/ov/* build/h8/bin/*
export RAPTOR_KERNEL_CACHE; RAPTOR_KERNEL_CACHE=${RAPTOR_KERNEL_CACHE:-$(mktemp -d)}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
(cd engine && RAPTOR_OVERLAP=1 timeout 200 ../build/ov/engine.test -test.run StreamOverlap -test.v -test.count=1) >"$L/overlap.log" 2>&1
echo "overlap rc=$?"; grep -E "overlap |FAIL|ok|PASS" "$L/overlap.log"
for lanes in 3 2; do
  timeout 100 build/h8/bin/serve -backend cuda -model build/h8/models/minilm-f16.raptor -capacity offline -offline-budgets 131072 \
    -budget 131072 -queue 4096 -delay 0s -modes dynamic -alone 1000 -duration 6s -rounds 3 -loads 50 -lanes $lanes \
    -batch-trace "$L/trace_l$lanes.jsonl" -json "$L/serve_l$lanes.json" >"$L/serve_l$lanes.md" 2>"$L/serve_l$lanes.err"
  echo "serve lanes $lanes rc=$?"; grep -E "round|trace|^  " "$L/serve_l$lanes.err" | tail -40
done
gzip -9 "$L"/*.jsonl; cd "$L" && tar czf "$O/all.tgz" *.log *.md *.err *.json *.jsonl.gz && ls -la "$O/all.tgz"
