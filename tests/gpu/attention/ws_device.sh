#!/bin/bash
# One device call for the warp-specialised variants: ws_smoke.py (under a timeout: a deadlock
# stops here), the correctness suite with $TESTV, the benchmark with --extra $BENCHV, then an
# Nsight Compute profile (--set full, clocks left alone) of one launch of
# sparse_attention_d64_${NCUV}_f16 on the benchmark's 8x4096 batch, summarised by ncu_summary.py.
# Carry tests/gpu/attention/cubin.
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/ws_out}; mkdir -p "$OUT"; export OUT
cd "$(dirname "$0")/../../.."
timeout 90 python3 tests/gpu/attention/ws_smoke.py ${SMOKEV:-$TESTV} > $OUT/smoke.txt 2>&1
rc=$?; echo "smoke rc=$rc"; grep -v Warn $OUT/smoke.txt | tail -14
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then  # a hang: leave the smoked variants out of the rest
  echo "smoke timed out: suite and bench without $SMOKEV"; TESTV=""; BENCHV=${FALLBACKV:-ws4}
fi
TEST_TIMEOUT=${TEST_TIMEOUT:-200} BENCH_TIMEOUT=${BENCH_TIMEOUT:-200} RAPTOR_TEST_VARIANTS=$TESTV \
  BENCH_ARGS="--extra $BENCHV --no-probe" bash tests/gpu/attention/run_device.sh
[ -z "$NCUV" ] && exit 0
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
W=/tmp/ws_ncu; mkdir -p $W
timeout -k 5 120 $NCU --clock-control none --target-processes application-only \
  -k "regex:^sparse_attention_d64_${NCUV}_f16\$" --launch-skip 2 --launch-count 1 --set full -f -o $W/$NCUV \
  python3 tests/gpu/attention/ncu_target.py raptor 8x4096 $NCUV 4 > $OUT/ncu_stdout.txt 2>&1
echo "ncu rc=$?"; tail -3 $OUT/ncu_stdout.txt
$NCU -i $W/$NCUV.ncu-rep --page raw --csv > $W/raw.csv 2>&1
$NCU -i $W/$NCUV.ncu-rep --page source --csv --print-source sass > $W/src.csv 2>&1
python3 tests/gpu/attention/ncu_summary.py raw $W/raw.csv > $OUT/ncu_$NCUV.txt 2>&1
python3 tests/gpu/attention/ncu_summary.py source $W/src.csv 40 >> $OUT/ncu_$NCUV.txt 2>&1
grep -E "^  (gpu__time_duration|sm__throughput|sm__pipe_tensor_op_gmma|sm__inst_executed_pipe_tensor_op_gmma|smsp__issue_active|smsp__warps_eligible|smsp__warps_active|smsp__average_warp_latency_per_inst|smsp__inst_executed.sum )" $OUT/ncu_$NCUV.txt
sed -n '/stall samples (total/,/^  warp-cycles/p' $OUT/ncu_$NCUV.txt | head -16
