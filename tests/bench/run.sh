#!/usr/bin/env bash
# make bench: figures of this machine, each against a baseline measured in the
# same run. Models are generated into bench-out/ (not committed) and kept for
# the next run; `rm -rf bench-out` regenerates them.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s tools >/dev/null
OUT=bench-out
mkdir -p "$OUT"
STREAM=build/tests/tool_stream
RUNSTAT=build/tests/tool_runstat

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
bw1=$($STREAM 1024 1 | sed -E 's/read_GBps=([0-9.]+).*/\1/')
bw2=$($STREAM 1024 2 | sed -E 's/read_GBps=([0-9.]+).*/\1/')
echo "read bandwidth (STREAM-like sum over 1 GiB): 1 thread $bw1 GB/s, 2 threads $bw2 GB/s"

# --- inspect on a ~1.5 GB F16 model (rows multiples of 256) ---
M=$OUT/bench-1.5g-f16.gguf
if [ ! -f "$M" ]; then
    echo "generating $M ..."
    $RUNSTAT ./qtune sample -o "$M" --dim 2048 --layers 16 --ff 5632 --vocab 32000 --heads 16 \
        --kv-heads 4 --seed 7 --dtype f16 | sed 's/^/  sample: /'
fi
size=$(stat -c %s "$M")
echo "model: $M, $size bytes"
cat "$M" >/dev/null # warm the page cache: the figure is for a model already read once
for threads in 1 2; do
    best=""
    for rep in 1 2 3; do
        line=$(OMP_NUM_THREADS=$threads $RUNSTAT ./qtune inspect "$M")
        wall=$(sed -E 's/.*wall_s=([0-9.]+).*/\1/' <<<"$line")
        rss=$(sed -E 's/.*maxrss_kb=([0-9]+).*/\1/' <<<"$line")
        rc=$(sed -E 's/.*rc=([0-9]+).*/\1/' <<<"$line")
        [ "$rc" = 0 ] || { echo "inspect failed (rc $rc)"; exit 1; }
        if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then best=$wall; bestrss=$rss; fi
    done
    bw=$([ "$threads" = 1 ] && echo "$bw1" || echo "$bw2")
    awk -v s="$size" -v w="$best" -v bw="$bw" -v rss="$bestrss" -v t="$threads" 'BEGIN {
        gbs = s / w / 1e9;
        printf "inspect, %d thread%s: %.3f s, %.2f GB/s = %.0f%% of the %d-thread read bandwidth, peak RSS %.1f MB\n",
               t, t > 1 ? "s" : "", w, gbs, 100 * gbs / bw, t, rss / 1024 }'
    if [ "$threads" = 2 ]; then
        awk -v s="$size" -v w="$best" -v bw="$bw" -v rss="$bestrss" 'BEGIN {
            gbs = s / w / 1e9; ok1 = gbs >= 0.5 * bw; ok2 = rss / 1024 < 300;
            printf "target: >= 50%% of 2-thread bandwidth: %s; peak RSS < 300 MB: %s\n",
                   ok1 ? "met" : "NOT met", ok2 ? "met" : "NOT met" }'
    fi
done
