#!/usr/bin/env bash
# tests/bench/kquants.sh — fast k-quant and IQ4_NL quantizers (kernels/k_kquants.c)
# against the scalar references on a generated 4096 × 4096 f32 tensor with
# real-model-like statistics (fixed seed; see tests/tool_bench_kquants.c).
# Run from the repo root after `make qtune tools` (it builds the tool if needed).
# Per format, without and with an importance matrix: reference ms (1 thread),
# fast ms (1 thread; 2 threads splitting rows with OpenMP), speedups, GB/s of
# f32 input at 2 threads, byte identity with the reference (exact=1), and the
# verdict against the target: an exact tensor in <= 60 ms on 2 threads (set for
# q4_k; shown for every format). Timings are the best of REPS runs (default 5);
# the load average is printed because other processes skew them.
# Exit status 1 when any fast output differs from its reference.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOL=build/tests/tool_bench_kquants
[ -x "$TOOL" ] || make -s "$TOOL" >/dev/null
REPS=${REPS:-5}
TARGET_MS=60
TYPES=${TYPES:-q4_k,q6_k,q5_k,q3_k,q2_k,iq4_nl}

echo "== k-quants: 4096 x 4096 f32, best of $REPS; $(nproc) cores," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
status=0
for im in "" --imatrix; do
    # tool lines are key=value pairs; awk turns them into the table
    "$TOOL" "$TYPES" --reps "$REPS" $im >"$tmp" || status=1
    awk -v target="$TARGET_MS" -v head="$([ -z "$im" ] && echo 1 || echo 0)" '
        BEGIN {
            if (head)
                printf "%-7s %-4s %9s %9s %9s %6s %6s %6s %5s  %s\n", "type", "imat",
                       "ref1_ms", "fast1_ms", "fast2_ms", "x1", "x2", "GB/s", "exact",
                       "<= " target " ms, 2 thr"
        }
        {
            for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            verdict = (v["exact"] == 1 && v["fast2_ms"] + 0 <= target) ? "met" : "NOT met"
            printf "%-7s %-4s %9s %9s %9s %6s %6s %6s %5s  %s\n", v["type"], v["imatrix"],
                   v["ref_ms"], v["fast1_ms"], v["fast2_ms"], v["speedup1"], v["speedup2"],
                   v["gbps2"], v["exact"], verdict
        }' "$tmp"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
