#!/usr/bin/env bash
# Importance-weighted quantization end to end with a real llama.cpp imatrix
# (TinyLlama shapes: 2048 and 5632 columns) on a generated one-block model of
# the same shapes: `qtune apply --imatrix` with method wsearch gives exactly
# ggml's bytes for that imatrix, lowers the importance-weighted error that
# `qtune preview` reports, and both imatrix formats work.
source tests/cli/lib.sh
DUMP=build/tests/tool_dump
IM_DAT=$MODELS/calcuis_imatrix.dat
IM_GGUF=$MODELS/calcuis_imatrix-from-dat.imatrix.gguf
py=$(venv_python) || { bad "no venv with gguf+numpy"; finish; }
G=$TMPD/tiny.gguf
$QTUNE sample -o "$G" --dim 2048 --layers 1 --ff 5632 --heads 32 --kv-heads 4 --vocab 512 \
    --dtype f16 2>/dev/null || bad "sample with TinyLlama shapes"
printf 'pattern,format,method,group,options\n*,q4_k,wsearch,,\n' >"$TMPD/w.csv"
printf 'pattern,format,method,group,options\n*,q4_k,rtn,,\n' >"$TMPD/r.csv"

expect_rc 0 "apply wsearch with the GGUF imatrix" -- \
    $QTUNE apply "$G" --plan "$TMPD/w.csv" --imatrix "$IM_GGUF" -o "$TMPD/w.gguf"
expect_rc 0 "apply wsearch with the legacy .dat imatrix" -- \
    $QTUNE apply "$G" --plan "$TMPD/w.csv" --imatrix "$IM_DAT" -o "$TMPD/wd.gguf"
expect_rc 0 "apply rtn" -- $QTUNE apply "$G" --plan "$TMPD/r.csv" -o "$TMPD/r.gguf"
cmp -s "$TMPD/w.gguf" "$TMPD/r.gguf" && bad "wsearch output equals rtn output" \
    || ok "wsearch output differs from rtn"

if lib=$(libggml_path) && [ -n "$lib" ]; then
    $py tests/py/check_wsearch.py "$lib" $DUMP "$G" "$TMPD/w.gguf" "$IM_GGUF" \
        && ok "wsearch blocks identical to ggml with the same imatrix" || bad "wsearch vs ggml"
else
    echo "skipped: no libggml (llama-cpp-python) to compare against"
fi

# Preview: the importance-weighted error of the blocks wsearch chose is lower.
for m in w r; do
    $QTUNE preview "$G" --plan "$TMPD/$m.csv" --imatrix "$IM_GGUF" --json >"$TMPD/p$m.json" \
        2>/dev/null || bad "preview $m"
done
$py - "$TMPD/pw.json" "$TMPD/pr.json" <<'PY' && ok "preview: wsearch lowers the weighted error of every tensor it searched" || bad "preview weighted errors"
import json, sys
w, r = (json.load(open(p)) for p in sys.argv[1:3])
n = 0
for a, b in zip(w["tensors"], r["tensors"]):
    if a["imatrix_used"]:
        n += 1
        ea, eb = a["metrics"]["weighted_rel_err"], b["metrics"]["weighted_rel_err"]
        assert ea < eb, (a["name"], ea, eb)
assert n == 7, n
PY
finish
