B=build/h8; gunzip -f $B/bin/serve.gz; chmod +x $B/bin/serve
export RAPTOR_KERNEL_CACHE=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for cfg in "1 3 1" "1 3 4" "4 1 4" "8 1 4" "8 2 4"; do set -- $cfg
 T=s$1l$2u$3; t=$SECONDS
 timeout 100 $B/bin/serve -backend cuda -model $B/models/minilm-f16.raptor -capacity offline -offline-budgets 131072 -budget 131072 -queue 4096 -delay 0s -modes dynamic -alone 1000 -duration 4s -rounds 2 -loads 50,110 -streams $1 -lanes $2 -submitters $3 -json $OUT/$T.json > $OUT/$T.md 2> $OUT/$T.err
 echo "== $T rc=$? $((SECONDS-t)) s"; grep -E "^\| (50|110)%|p99 of one|round" $OUT/$T.md $OUT/$T.err | grep -v "^.*Quiet" | head -12
done
