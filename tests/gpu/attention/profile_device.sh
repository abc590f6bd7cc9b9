#!/bin/bash
# One device call: Nsight Compute profiles of one launch each of
#   1. the default sm_90a kernel sparse_attention_d64_wg_f16 on the benchmark's 8x4096 batch
#      (--set full: SOL, compute/memory workload, scheduler, warp states, occupancy,
#      source counters with per-SASS-instruction stall samples),
#   2. FlexAttention's Triton kernel on the same batch (--set full),
#   3. the wg kernel on 1x65536 (--set full),
# with clocks left alone (--clock-control none, as the benchmark runs), the text exports
# (details page, raw metrics CSV, SASS source-view CSV) and summaries. Carry
# tests/gpu/attention/cubin (python3 tests/gpu/attention/nvrtc.py tests/gpu/attention/cubin).
# VARIANTS=name[,name] (kernels sparse_attention_d64_<name>_f16, e.g. the wgl of 2026-11-25, since
# removed) also runs the correctness suite with those kernel variants and the benchmark
# with them beside the default (--extra), and profiles the first on 8x4096 if time is left.
# At most 8 files come back from $OUT: everything is also packed in ncu_all.tar.gz.
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=1
OUT=${OUT:-/tmp/ncu_out}; mkdir -p "$OUT"; export OUT
W=/tmp/ncu_work; rm -rf $W; mkdir -p $W
cd "$(dirname "$0")/../../.."
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"; $NCU --version | tail -2
CUB=tests/gpu/attention/cubin/sparse_attention.sm_90a.cubin
cuobjdump -sass -fun sparse_attention_d64_wg_f16 $CUB > $W/wg_f16.sass 2>&1 || nvdisasm -c $CUB > $W/wg_f16.sass 2>&1
echo "SASS of sparse_attention_d64_wg_f16: $(grep -c '/\*[0-9a-f]\{4\}\*/' $W/wg_f16.sass) instructions"
for op in HGMMA WARPGROUP BAR.SYNC LDGSTS DEPBAR MUFU.EX2 SHFL ATOM; do
  printf "  %-10s %4d\n" $op "$(grep -c "$op" $W/wg_f16.sass)"
done

prof() {  # name timeout kernel-regex cmd...
  local name=$1 to=$2 kre=$3; shift 3
  el "ncu $name"
  timeout -k 5 $to $NCU --clock-control none --target-processes application-only -k "regex:$kre" \
    --launch-skip 2 --launch-count 1 --set full -f -o $W/$name "$@" > $W/$name.stdout 2>&1
  echo "rc=$?"; grep -v "^==PROF== Profiling\|^ *$" $W/$name.stdout | tail -8
  if [ -f $W/$name.ncu-rep ]; then
    $NCU -i $W/$name.ncu-rep --page details --print-units base > $W/$name.details.txt 2>&1
    $NCU -i $W/$name.ncu-rep --page raw --csv > $W/$name.raw.csv 2>&1
    $NCU -i $W/$name.ncu-rep --page source --csv --print-source sass > $W/$name.source.csv 2>&1 ||
      $NCU -i $W/$name.ncu-rep --page source --csv > $W/$name.source.csv 2>&1
    python3 tests/gpu/attention/ncu_summary.py raw $W/$name.raw.csv > $W/$name.summary.txt 2>&1
    python3 tests/gpu/attention/ncu_summary.py source $W/$name.source.csv 40 >> $W/$name.summary.txt 2>&1
    ls -la $W/$name.*
  fi
}
left() { [ $(( $(date +%s) - T0 + $1 )) -lt ${BUDGET:-400} ]; }
prof wg_8x4096 110 '^sparse_attention_d64_wg_f16$' python3 tests/gpu/attention/ncu_target.py raptor 8x4096 auto 4
# the variants through the correctness suite and the benchmark beside the default
mkdir -p $W/tb
if [ -n "$VARIANTS" ]; then
  el "test_attention.py (RAPTOR_TEST_VARIANTS=$VARIANTS)"
  OUT=$W/tb RAPTOR_TEST_VARIANTS=$VARIANTS timeout -k 5 75 python3 tests/gpu/attention/test_attention.py > $W/tb/test_stdout.txt 2>&1
  echo "test rc=$?"; grep -i "fail\|bitwise\|total\|error" $W/tb/test_stdout.txt | grep -v "^ " | tail -30
  el "attention_bench.py --extra $VARIANTS --no-probe"
  OUT=$W/tb timeout -k 5 110 python3 bench/attention_bench.py --extra $VARIANTS --no-probe > $W/tb/bench_stdout.txt 2>&1
  echo "bench rc=$?"; grep -v "Warning\|warn" $W/tb/bench_stdout.txt | tail -12
fi
left 100 && prof flex_8x4096 100 'triton_tem' python3 tests/gpu/attention/ncu_target.py flex 8x4096 4
if [ ! -f $W/flex_8x4096.ncu-rep ] && left 90; then
  prof flex_8x4096 90 'triton' python3 tests/gpu/attention/ncu_target.py flex 8x4096 4
fi
left 60 && prof wg_1x65536 60 '^sparse_attention_d64_wg_f16$' python3 tests/gpu/attention/ncu_target.py raptor 1x65536 auto 4
V1=${VARIANTS%%,*}
left 60 && [ -n "$V1" ] && prof ${V1}_8x4096 60 "^sparse_attention_d64_${V1}_f16\$" python3 tests/gpu/attention/ncu_target.py raptor 8x4096 $V1 4
el "done profiling"
} 2>&1 | tee $W/run.log

# what comes back (8 files at most)
cp $W/run.log $OUT/ 2>/dev/null
for n in wg_8x4096 flex_8x4096 wg_1x65536; do
  [ -f $W/$n.details.txt ] && cat $W/$n.details.txt $W/$n.summary.txt > $OUT/$n.txt
done
cp $W/tb/attention_bench.log $W/tb/test_attention.log $OUT/ 2>/dev/null
(cd $W && tar czf $OUT/ncu_all.tar.gz --exclude='*.ncu-rep' .)
(cd $W && ls -la *.ncu-rep 2>/dev/null; tar czf $OUT/ncu_reps.tar.gz *.ncu-rep 2>/dev/null)
ls -la $OUT
echo "==== short table"
for n in wg_8x4096 flex_8x4096 wg_1x65536 ${V1}_8x4096; do
  echo "== $n"
  grep -E "^  (gpu__time_duration|sm__throughput|sm__pipe_tensor_op_gmma|sm__inst_executed_pipe_tensor_op_gmma|smsp__issue_active|smsp__warps_eligible|smsp__warps_active|smsp__average_warp_latency_per_inst)" $W/$n.summary.txt 2>/dev/null
  sed -n '/stall samples (total/,/^  warp-cycles/p' $W/$n.summary.txt 2>/dev/null | head -12
  sed -n '/samples by opcode/,/^top/p' $W/$n.summary.txt 2>/dev/null | head -12
done
grep "^variant \|^| " $W/tb/attention_bench.log 2>/dev/null
grep "ALL PASSED\|FAILED" $W/tb/test_attention.log 2>/dev/null
el "end"
