#!/usr/bin/env bash
# qtune plan/preview/apply end to end: the output is read back by llama.cpp's own
# Python reader (the gguf package) for every ggml format, blocks match the
# package's quantizer for q8_0/q4_0/q4_1/q5_0/q5_1, HF input gives the same
# tensors as GGUF input, and failures leave nothing behind.
source tests/cli/lib.sh
DUMP=build/tests/tool_dump
py=$(venv_python) || { bad "no venv with gguf+numpy"; finish; }
S=$MODELS/stories260K.gguf

plan_all() { printf '# qtune plan v1\npattern,format,method,group,options\n*,%s,rtn,,\n' "$1" >"$2"; }

# stories260K at q8_0: ffn_down rows are 172 long, so it falls back (f16).
expect_rc 0 "plan --preset q8_0" -- $QTUNE plan "$S" --preset q8_0 -o "$TMPD/q8.csv"
expect_rc 0 "apply q8_0 on stories260K" -- $QTUNE apply "$S" --plan "$TMPD/q8.csv" -o "$TMPD/q8.gguf"
expect_err "fallback: blk.0.ffn_down.weight" "ffn_down fallback reported"
$py tests/py/check_apply.py $QTUNE $DUMP "$S" "$TMPD/q8.gguf" --requant \
    && ok "q8_0 output read back, blocks identical to gguf's quantizer" || bad "q8_0 output check"

# The HF directory and the sharded one give the very same tensors (q/k rows
# permuted back into GGUF order, GGUF names).
for hf in stories260K-hf stories260K-hf-sharded; do
    expect_rc 0 "apply q8_0 on $hf" -- $QTUNE apply "$MODELS/$hf" --plan "$TMPD/q8.csv" --force \
        -o "$TMPD/$hf.gguf"
    $py tests/py/check_apply.py $QTUNE $DUMP "$MODELS/$hf" "$TMPD/$hf.gguf" \
        --same-tensors "$TMPD/q8.gguf" && ok "$hf: same tensors as from the GGUF" \
        || bad "$hf: tensors differ from the GGUF source"
done

# Every ggml format on a generated model whose rows are multiples of 256.
G=$TMPD/gen.gguf
$QTUNE sample -o "$G" --dim 256 --layers 2 --ff 512 --vocab 512 --dtype f32 2>/dev/null \
    || bad "sample for the format sweep"
for f in q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl f16 bf16; do
    plan_all "$f" "$TMPD/$f.csv"
    if $QTUNE apply "$G" --plan "$TMPD/$f.csv" -o "$TMPD/g-$f.gguf" >/dev/null 2>"$TMPD/err"; then
        $py tests/py/check_apply.py $QTUNE $DUMP "$G" "$TMPD/g-$f.gguf" --requant >"$TMPD/chk" 2>&1 \
            && ok "$f: $(tail -1 "$TMPD/chk" | sed 's/^ok *//')" || { bad "$f output"; cat "$TMPD/chk"; }
    else
        bad "apply $f: $(cat "$TMPD/err")"
    fi
done

# Preview: figures for every tensor, q8_0 much better than q4_0.
plan_all q4_0 "$TMPD/q4.csv"
$QTUNE preview "$G" --plan "$TMPD/q4.csv" --json >"$TMPD/p4.json" 2>/dev/null || bad "preview q4_0"
$QTUNE preview "$G" --plan "$TMPD/q8_0.csv" --json >"$TMPD/p8.json" 2>/dev/null || bad "preview q8_0"
$py - "$TMPD/p4.json" "$TMPD/p8.json" <<'PY' && ok "preview: q8_0 error < q4_0 error on every tensor" || bad "preview figures"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["schema"] == "qtune.preview/1"
n = 0
for x, y in zip(a["tensors"], b["tensors"]):
    if x["kept"]:
        continue
    n += 1
    mx, my = x["metrics"], y["metrics"]
    assert 0 < my["rel_rmse"] < mx["rel_rmse"] < 0.2, (x["name"], mx, my)
    assert mx["cosine"] > 0.98 and my["sqnr_db"] > mx["sqnr_db"] > 15, (x["name"], mx, my)
    assert sum(mx["error_hist"]["counts"]) == x["rows"] * x["cols"]
assert n > 0 and a["totals"]["avg_bpw"] < b["totals"]["avg_bpw"]
PY
expect_rc 0 "preview text" -- $QTUNE preview "$S" --plan "$TMPD/q8.csv"
grep -q "bits/weight average" "$TMPD/out" && ok "preview totals line" || bad "preview totals line"

# Failures: nothing written, nothing left behind, clear exit codes.
expect_rc 64 "apply refuses to overwrite its input" -- $QTUNE apply "$G" --plan "$TMPD/q4.csv" -o "$G"
expect_err "refusing to overwrite" "overwrite refusal explained"
printf '# qtune plan v1\npattern,format,method,group,options\n*,int4,rtn,,\n' >"$TMPD/int4.csv"
expect_rc 64 "grid formats cannot go into a GGUF" -- $QTUNE apply "$G" --plan "$TMPD/int4.csv" -o "$TMPD/x.gguf"
expect_err "no GGUF type" "grid format refusal explained"
expect_rc 73 "unwritable output directory" -- $QTUNE apply "$G" --plan "$TMPD/q4.csv" -o /proc/nope/x.gguf
expect_rc 66 "missing plan" -- $QTUNE apply "$G" --plan "$TMPD/none.csv" -o "$TMPD/x.gguf"
# A NaN in the source: refused with the tensor and row named.
cp "$G" "$TMPD/nan.gguf"
$py - "$TMPD/nan.gguf" <<'PY'
import sys, gguf, numpy as np
t = [t for t in gguf.GGUFReader(sys.argv[1]).tensors if t.name == "blk.1.ffn_up.weight"][0]
with open(sys.argv[1], "r+b") as f:
    f.seek(int(t.data_offset) + 4 * (256 * 7 + 3))
    f.write(np.float32(np.nan).tobytes())
PY
expect_rc 65 "NaN in the source" -- $QTUNE apply "$TMPD/nan.gguf" --plan "$TMPD/q4.csv" -o "$TMPD/x.gguf"
expect_err "blk.1.ffn_up.weight: row 7 holds NaN" "NaN: tensor and row named"
$QTUNE preview "$TMPD/nan.gguf" --plan "$TMPD/q4.csv" >"$TMPD/pn" 2>&1
grep -q "1 NaN/Inf values" "$TMPD/pn" && ok "preview reports the NaN" || bad "preview NaN report"

# Ctrl-C in the middle of a long apply: exit 130, no output, no temporary file.
B=$TMPD/big.gguf
$QTUNE sample -o "$B" --dim 1024 --layers 8 --ff 2816 --vocab 8192 --dtype f32 2>/dev/null
plan_all q6_k "$TMPD/q6.csv"
$QTUNE apply "$B" --plan "$TMPD/q6.csv" -o "$TMPD/x.gguf" --reference >/dev/null 2>&1 &
pid=$!
sleep 1
kill -INT $pid
wait $pid
rc=$?
[ "$rc" = 130 ] && ok "Ctrl-C: exit 130" || bad "Ctrl-C: exit $rc"
rm -f "$B"

[ ! -e "$TMPD/x.gguf" ] && ok "no output after failures" || bad "an output was left behind"
ls -a "$TMPD" | grep -q '^\.x\.gguf\.' && bad "a temporary file was left behind" || ok "no temporary files left"

# A CUDA build without a usable GPU says so once and runs on the CPU.
if [ -x build-cuda/qtune ]; then
    build-cuda/qtune preview "$S" --plan "$TMPD/q8.csv" >/dev/null 2>"$TMPD/gpu.err"
    n=$(grep -c "using the CPU kernels" "$TMPD/gpu.err")
    if build-cuda/tests/test_cuda 2>&1 | grep -q "SKIPPED"; then
        [ "$n" = 1 ] && ok "CUDA build without a GPU: one notice, CPU kernels" \
            || bad "CUDA build without a GPU printed the notice $n times"
    else
        [ "$n" = 0 ] && ok "CUDA build with a GPU: no CPU notice" || bad "GPU present, notice printed"
    fi
fi

finish
