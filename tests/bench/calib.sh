#!/usr/bin/env bash
# Calibration throughput (qtune calib: forward pass + activation capture + imatrix
# write) in tokens per second, on stories260K and on a generated F16 llama of about
# 0.47B parameters (dim 1024, 24 blocks, ff 4096, vocab 32000), with 1 and 2
# threads, and the peak RSS of each run (build/tests/tool_runstat). The machine's
# load average is printed before and after: the figures are only comparable at
# similar load. The generated model goes to bench-out/ and is kept.
#
#   bash tests/bench/calib.sh            (QTUNE_MODELS for stories260K)
#   CALIB_CHUNKS=2 CALIB_CTX=512 bash tests/bench/calib.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x qtune ] && [ -x build/tests/tool_runstat ] || make -s qtune tools >/dev/null
OUT=bench-out
mkdir -p "$OUT"
RUNSTAT=build/tests/tool_runstat
MODELS=${QTUNE_MODELS:-../shared/models}
CTX=${CALIB_CTX:-512}
CHUNKS=${CALIB_CHUNKS:-2}
TXT=samples/calib/prose.txt

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# run_one LABEL THREADS MODEL ARGS...: prints tok/s (qtune's own timing of the
# calibration loop), wall time of the whole command and peak RSS.
run_one() {
    local label=$1 t=$2 model=$3; shift 3
    local log=$OUT/calib-bench.out
    local line
    line=$(OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t $RUNSTAT sh -c \
        "./qtune calib \"$model\" --threads $t $* -o $OUT/bench.imatrix.gguf >$log")
    local rc wall rss
    rc=$(sed -E 's/.*rc=([0-9]+).*/\1/' <<<"$line")
    wall=$(sed -E 's/.*wall_s=([0-9.]+).*/\1/' <<<"$line")
    rss=$(sed -E 's/.*maxrss_kb=([0-9]+).*/\1/' <<<"$line")
    [ "$rc" = 0 ] || { echo "$label: qtune calib failed (rc $rc)"; return 1; }
    local tps toks
    tps=$(sed -E 's/.*tok_per_s=([0-9.]+).*/\1/' "$log")
    toks=$(sed -E 's/.*tokens=([0-9]+).*/\1/' "$log")
    printf '%-28s %d thread%s: %8.1f tok/s (%s tokens), wall %.2f s, peak RSS %.1f MB\n' \
        "$label" "$t" "$([ "$t" = 1 ] && echo ' ' || echo s)" "$tps" "$toks" "$wall" \
        "$(awk -v k="$rss" 'BEGIN{print k/1024}')"
}

S=$MODELS/stories260K.gguf
if [ -f "$S" ]; then
    for t in 1 2; do
        run_one "stories260K (ctx 128)" "$t" "$S" --text "$TXT" --ctx 128
    done
else
    echo "skip stories260K: $S missing"
fi

M=$OUT/bench-calib-0.5b-f16.gguf
if [ ! -f "$M" ]; then
    echo "generating $M ..."
    ./qtune sample -q -o "$M" --dim 1024 --layers 24 --ff 4096 --vocab 32000 --heads 16 \
        --kv-heads 4 --seed 11 --dtype f16
fi
params=$(./qtune inspect "$M" --json 2>/dev/null | python3 -c \
    'import json,sys; d=json.load(sys.stdin); print(sum(t.get("params",0) for t in d.get("tensors",[])))' \
    2>/dev/null || echo "?")
echo "model: $M, $(stat -c %s "$M") bytes, $params parameters"
for t in 1 2; do
    run_one "0.5B F16 (ctx $CTX x $CHUNKS)" "$t" "$M" --text "$TXT" --ctx "$CTX" --chunks "$CHUNKS"
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
