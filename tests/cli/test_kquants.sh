#!/usr/bin/env bash
# test_kquants.sh — qtune's k-quant quantizers (Q2_K..Q6_K) byte for byte against
# ggml's ggml_quantize_chunk, with and without an importance matrix
# (tests/py/check_kquants.py driving build/tests/tool_kquant).
#
# The oracle is a libggml the caller names in QTUNE_LIBGGML (libggml-base.so or
# libggml.so of a llama.cpp build); without it the check prints a "skipped" line
# and the script exits 0. Run from the repository root after `make tools`.
source tests/cli/lib.sh
tool=build/tests/tool_kquant
oracle_setup kquants "$tool" numpy

# The tool itself: usage errors are refused, a good call writes the right size.
expect_rc 1 "tool_kquant refuses a non-k-quant type" -- "$tool" q8_0 /dev/null 1 256 "$TMPD/o"
expect_rc 1 "tool_kquant refuses a row length not a multiple of 256" -- \
    "$tool" q4_k /dev/null 1 100 "$TMPD/o"
head -c 2048 /dev/zero >"$TMPD/z.f32"
expect_rc 0 "tool_kquant quantizes two zero rows" -- "$tool" Q6_K "$TMPD/z.f32" 2 256 "$TMPD/o"
size=$(wc -c <"$TMPD/o")
[ "$size" -eq 420 ] && ok "two Q6_K rows of 256 are 420 bytes" || bad "Q6_K output is $size bytes"

if ! oracle_check check_kquants.py "$tool"; then
    : # said
elif grep -q '^skipped' "$TMPD/py"; then
    ok "byte comparison with ggml skipped (set QTUNE_LIBGGML to run it)"
else
    n=$(grep -c '^ok' "$TMPD/py")
    [ "$n" -eq 10 ] && ok "all 10 type/imatrix cases byte-identical to ggml" \
        || bad "only $n of 10 cases reported ok"
fi
finish
