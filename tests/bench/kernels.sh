#!/usr/bin/env bash
# Benchmark of the live preview kernels (issue "Fast kernels"): for a generated
# 4096×4096 f32 tensor, per format: scalar reference (1 thread), fast exact
# preview at 1 and 2 threads, GB/s, % of the read bandwidth tool_stream measures
# in this same run, speedup, time to the first estimate, and the targets.
# Standalone: run from the repository root after `make qtune tools`.
# Options are passed to tool_bench_kernels (--rows, --cols, --formats, --dtype,
# --offset).
set -euo pipefail
cd "$(dirname "$0")/../.."
STREAM=build/tests/tool_stream
BENCH=build/tests/tool_bench_kernels
for t in "$STREAM" "$BENCH"; do
    [ -x "$t" ] || { echo "kernels.sh: $t missing (run make tools)" >&2; exit 1; }
done
echo "== preview kernels: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
bw=$($STREAM 1024 2 | sed -E 's/read_GBps=([0-9.]+).*/\1/')
echo "read bandwidth (tool_stream, 1 GiB, 2 threads): $bw GB/s"
$BENCH --bw "$bw" "$@"
# Model files hold f16 or bf16 weights, or q8_0 blocks: the same tensor
# stored so, whose rows the preview converts one at a time.
if [ $# -eq 0 ]; then
    echo "the same tensor stored as bf16 (--dtype bf16):"
    $BENCH --bw "$bw" --dtype bf16 --formats q8_0,q4_0,int4,nf4,fp8_e4m3,q4_k
    echo "the same tensor stored as q8_0 (--dtype q8_0):"
    $BENCH --bw "$bw" --dtype q8_0 --formats q4_0,int4,nf4,q4_k
    # f32 rows that do not start on a cache line (a model file's tensor
    # 16 bytes past one): the quantizers' 512-bit loads straddle two lines
    echo "the f32 tensor 16 bytes past a line (--offset 16):"
    $BENCH --bw "$bw" --offset 16 --formats q8_0,q4_0,int4,nf4 | tail -n +3
fi
# On an AVX-512 machine, the 16-lane kernels against the AVX2 ones in the same
# run (the k-quant searches have AVX2 forms only).
if grep -q avx512bw /proc/cpuinfo && [ $# -eq 0 ]; then
    echo "the same capped at AVX2 (QTUNE_NO_AVX512=1), formats with AVX-512 kernels:"
    QTUNE_NO_AVX512=1 $BENCH --bw "$bw" \
        --formats f16,bf16,q8_0,q4_0,q4_1,q5_0,q5_1,int8,int4,uint4,uint3,nf4,fp8_e4m3,fp8_e5m2 \
        | tail -n +3
fi
# The parts of one preview row (quantize, double sums, histogram), 1 thread,
# rows in L2: where a kernel change lands.
if [ $# -eq 0 ] && [ -x build/tests/tool_bench_parts ]; then
    echo "parts of a preview row, ns a value (tool_bench_parts: 1 thread, rows in L2):"
    build/tests/tool_bench_parts q8_0,q4_0,int4,nf4,fp8_e4m3 --reps 5
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
