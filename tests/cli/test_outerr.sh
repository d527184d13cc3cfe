#!/usr/bin/env bash
# Layer output error: `qtune calib -o` stores each layer input's activation sample
# (NAME.qtune_sample) in the imatrix; `qtune preview --imatrix` then shows out_err =
# ‖X Wᵀ − X Ŵᵀ‖/‖X Wᵀ‖ (JSON output_rel_err), which grows as the format gets coarser
# (q8_0 < q4_0 < int2), matches a numpy computation for q8_0, and is absent when the
# imatrix holds no sample.
source tests/cli/lib.sh
py=$(venv_python) || { bad "no venv with gguf+numpy"; finish; }
S=$MODELS/stories260K.gguf
[ -f "$S" ] || { echo "skip: $S missing"; exit 0; }
I=$TMPD/s.imatrix.gguf
expect_rc 0 "calib with samples" -- $QTUNE calib "$S" --text samples/calib/stories.txt --ctx 128 -o "$I"
expect_rc 0 "calib without samples" -- $QTUNE calib "$S" --text samples/calib/stories.txt --ctx 128 \
    --reservoir 0 -o "$TMPD/nos.imatrix.gguf"

plan() { printf '# qtune plan v1\npattern,format,method,group,options\n*,%s,rtn,%s,\n' "$1" "$2" \
    >"$TMPD/$1.csv"; }
plan q8_0 ""; plan q4_0 ""; plan int2 32
for f in q8_0 q4_0 int2; do
    expect_rc 0 "preview $f --json" -- $QTUNE preview "$S" --plan "$TMPD/$f.csv" --imatrix "$I" --json
    cp "$TMPD/out" "$TMPD/$f.json"
done
expect_rc 0 "preview q4_0 text" -- $QTUNE preview "$S" --plan "$TMPD/q4_0.csv" --imatrix "$I"
head -1 "$TMPD/out" | grep -q out_err && ok "out_err column shown" || bad "no out_err column"
grep -E '^blk\.0\.attn_k\.weight ' "$TMPD/out" | grep -Eq ' [0-9]\.[0-9]{3}e-0[0-9] +$' \
    && ok "attn_k (shares attn_q's sample) has a value" || bad "attn_k row: $(grep attn_k "$TMPD/out" | head -1)"

for extra in "--imatrix $TMPD/nos.imatrix.gguf" ""; do
    expect_rc 0 "preview ${extra:-without imatrix}" -- $QTUNE preview "$S" --plan "$TMPD/q4_0.csv" $extra
    head -1 "$TMPD/out" | grep -q out_err && bad "out_err column without sample" \
        || ok "no out_err column ${extra:+(imatrix without sample)}"
    expect_rc 0 "preview --json ${extra:-without imatrix}" -- $QTUNE preview "$S" --plan "$TMPD/q4_0.csv" \
        $extra --json
    grep -q output_rel_err "$TMPD/out" && bad "output_rel_err without sample" || ok "no output_rel_err"
done

$py - "$S" "$I" "$TMPD" >"$TMPD/py" 2>&1 <<'EOF2' && ok "sample stored; ordering; numpy agrees" || { bad "python check"; cat "$TMPD/py"; }
import sys, json, numpy as np, gguf
S, I, D = sys.argv[1:4]
t = {x.name: x for x in gguf.GGUFReader(I).tensors}
smp = [n for n in t if n.endswith(".qtune_sample")]
assert len(smp) == 20, smp            # 5 blocks × 4 inputs (q/k/v and gate/up share)
x = np.asarray(t["blk.0.attn_q.weight.qtune_sample"].data, dtype=np.float64)
assert x.shape == (256, 64), x.shape  # rows kept × channels
assert "blk.0.attn_k.weight.qtune_sample" not in t
def load(f):  # tensors stored in the format asked for (ffn_down, 172 wide, falls back)
    return {r["name"]: r.get("output_rel_err") for r in json.load(open(f"{D}/{f}.json"))["tensors"]
            if not r["fallback"]}
e = {f: load(f) for f in ("q8_0", "q4_0", "int2")}
names = [n for n in e["q8_0"] if n.startswith("blk.") and e["q8_0"][n] is not None
         and all(n in e[f] for f in e)]
assert len(names) >= 30, len(names)
for n in names:
    assert 0 < e["q8_0"][n] < e["q4_0"][n], (n, e["q8_0"][n], e["q4_0"][n])
m = {f: np.mean([e[f][n] for n in names if e[f][n] is not None]) for f in e}
assert m["q8_0"] * 4 < m["q4_0"] < m["int2"], m
# numpy: q8_0 round-to-nearest of blk.0.attn_v (its input is attn_q's sample)
W = np.asarray({x.name: x for x in gguf.GGUFReader(S).tensors}["blk.0.attn_v.weight"].data,
               dtype=np.float32).reshape(-1, 64)
B = W.reshape(-1, 32); d = np.abs(B).max(axis=1, keepdims=True) / 127
d16 = d.astype(np.float16).astype(np.float32)
q = np.round(B / np.where(d == 0, 1, d)); Wq = (q * d16).reshape(W.shape)
W64 = W.astype(np.float64)
rel = np.linalg.norm(x @ (W64 - Wq).T) / np.linalg.norm(x @ W64.T)
got = e["q8_0"]["blk.0.attn_v.weight"]
assert abs(rel - got) <= 1e-3 * rel, (rel, got)
print("ok", m, rel, got)
EOF2
# The model-level error through preview (same engine as calib --kld).
$QTUNE plan "$MODELS/stories260K.gguf" --preset q8_0 -o "$TMPD/kq8.csv" 2>/dev/null
if $QTUNE preview "$MODELS/stories260K.gguf" --plan "$TMPD/kq8.csv" --kld --ctx 128 \
    --text samples/calib/stories.txt --json >"$TMPD/kld.json" 2>"$TMPD/err"; then
    python3 - "$TMPD/kld.json" <<'PY' && ok "preview --kld: q8_0 KL small, perplexity within 1%" || bad "preview --kld figures"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["tokens"] > 1000 and 0 <= r["kld_mean"] < 0.01 and r["top1"] > 0.95, r
assert abs(r["ppl_quant"] - r["ppl_base"]) / r["ppl_base"] < 0.01, r
PY
else
    bad "preview --kld failed: $(cat "$TMPD/err")"
fi

finish
