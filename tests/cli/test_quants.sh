#!/usr/bin/env bash
# test_quants.sh — qtune's Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL quantizers byte
# for byte against independent oracles (tests/py/check_quants.py driving
# build/tests/tool_quant):
#   - the gguf Python package's quantizers (no imatrix), always;
#   - ggml's ggml_quantize_chunk, with and without an imatrix, when QTUNE_LIBGGML
#     names a libggml-base.so / libggml.so; otherwise that part prints "skipped".
# Run from the repository root after `make tools`; builds nothing. Creates the
# test venv (gguf + numpy) through lib.sh's venv_python on first use.
source tests/cli/lib.sh
tool=build/tests/tool_quant
oracle_setup quants "$tool" "gguf and numpy"

# The tool itself: bad calls are refused, a good call writes the right size.
expect_rc 1 "tool_quant refuses an unknown type" -- "$tool" q7_0 /dev/null 1 32 "$TMPD/o"
expect_rc 1 "tool_quant refuses a row length not a multiple of 32" -- \
    "$tool" q4_0 /dev/null 1 48 "$TMPD/o"
head -c 256 /dev/zero >"$TMPD/z.f32"
expect_rc 1 "tool_quant refuses input of the wrong size" -- \
    "$tool" q8_0 "$TMPD/z.f32" 3 32 "$TMPD/o"
expect_rc 0 "tool_quant quantizes two zero rows" -- "$tool" Q5_1 "$TMPD/z.f32" 2 32 "$TMPD/o"
size=$(wc -c <"$TMPD/o")
[ "$size" -eq 48 ] && ok "two Q5_1 rows of 32 are 48 bytes" || bad "Q5_1 output is $size bytes"

if oracle_check check_quants.py "$tool"; then
    n=$(grep -c '^ok' "$TMPD/py")
    want=5
    grep -q '^skipped' "$TMPD/py" || want=17
    [ "$n" -eq "$want" ] && ok "all $want oracle/type cases byte-identical" \
        || bad "only $n of $want oracle/type cases reported ok"
fi
finish
