#!/usr/bin/env bash
# qtune calib: the imatrix it writes is read by llama.cpp's Python reader (gguf
# package: names, shapes, metadata, in_sum2/counts consistent with in_sum and
# qtune_absmax) and by qtune preview --imatrix; the HF directory with --tokens gives
# the GGUF's statistics; usage and data errors give the documented exit codes; --kld
# reports sane figures; and, when llama.cpp (llama-cpp-python) is at hand, the base
# perplexity equals the one llama.cpp computes on the same tokens.
source tests/cli/lib.sh
py=$(venv_python) || { bad "no venv with gguf+numpy"; finish; }
S=$MODELS/stories260K.gguf
TXT=samples/calib/stories.txt
[ -f "$S" ] || { echo "skip: $S missing"; exit 0; }

expect_rc 0 "calib stories260K" -- $QTUNE calib "$S" --text "$TXT" --ctx 128 -o "$TMPD/s.imatrix.gguf"
grep -Eq '^calib: chunks=[0-9]+ ctx=128 tokens=[0-9]+ ' "$TMPD/out" && ok "summary line" \
    || bad "summary line: $(cat "$TMPD/out")"
chunks=$(sed -E 's/.*chunks=([0-9]+).*/\1/' "$TMPD/out")

$py - "$TMPD/s.imatrix.gguf" "$chunks" >"$TMPD/py" 2>&1 <<'EOF' && ok "gguf package reads the imatrix" || { bad "gguf package check"; cat "$TMPD/py"; }
import sys, numpy as np, gguf
r = gguf.GGUFReader(sys.argv[1]); chunks = int(sys.argv[2])
f = r.fields
def s(k): return bytes(f[k].parts[f[k].data[0]]).decode()
def u(k): return int(f[k].parts[f[k].data[0]][0])
assert s("general.type") == "imatrix"
assert u("imatrix.chunk_count") == chunks and u("imatrix.chunk_size") == 128
assert bytes(f["imatrix.datasets"].parts[f["imatrix.datasets"].data[0]]).decode().endswith("stories.txt")
t = {x.name: x for x in r.tensors}
names = sorted(n[:-len(".in_sum2")] for n in t if n.endswith(".in_sum2"))
assert len(names) == 35, len(names)
for n in names:
    s2, c, s1, am = (t[n + x] for x in (".in_sum2", ".counts", ".in_sum", ".qtune_absmax"))
    cols = 172 if "ffn_down" in n else 64
    assert list(s2.shape) == [cols, 1] and list(c.shape) == [1, 1], (n, s2.shape, c.shape)
    assert s2.tensor_type == gguf.GGMLQuantizationType.F32
    cnt = float(c.data.ravel()[0]); assert cnt == chunks * 128
    a2, a1, mx = (np.asarray(x.data, dtype=np.float64).ravel() for x in (s2, s1, am))
    # Σx² >= (Σx)²/n (Cauchy-Schwarz) and Σx² <= n·max², per channel
    assert np.all(a2 * cnt >= a1 * a1 * (1 - 1e-4)), n
    assert np.all(a2 <= cnt * mx * mx * (1 + 1e-4)), n
    o = np.asarray(t[n + ".qtune_outliers"].data).ravel(); assert o.shape == (3,) and np.all((o >= 0) & (o <= 1))
# q, k, v share one input
assert np.array_equal(t["blk.3.attn_q.weight.in_sum2"].data, t["blk.3.attn_v.weight.in_sum2"].data)
print("ok")
EOF

# qtune's own reader accepts it (preview with --imatrix) and a wsearch plan uses it.
printf '# qtune plan v1\npattern,format,method,group,options\n*,q8_0,wsearch,,\n' >"$TMPD/ws.csv"
expect_rc 0 "preview reads the imatrix" -- $QTUNE preview "$S" --plan "$TMPD/ws.csv" --imatrix "$TMPD/s.imatrix.gguf"

# HF directory: no tokenizer, token ids instead; same statistics as the GGUF.
# A fixed ramp of 192 ids (3 chunks of 64).
awk 'BEGIN { for (i = 0; i < 192; i++) printf "%d ", 3 + (i * 37) % 509; print "" }' >"$TMPD/ids.txt"
expect_rc 0 "calib GGUF --tokens" -- $QTUNE calib "$S" --tokens "$TMPD/ids.txt" --ctx 64 -o "$TMPD/t-gguf.gguf"
expect_rc 0 "calib HF dir --tokens" -- $QTUNE calib "$MODELS/stories260K-hf" --tokens "$TMPD/ids.txt" \
    --ctx 64 -o "$TMPD/t-hf.gguf"
# the same ids through a pipe: the same file, byte for byte
expect_rc 0 "calib --tokens from a pipe" -- $QTUNE calib "$S" --tokens <(cat "$TMPD/ids.txt") \
    --ctx 64 -o "$TMPD/t-pipe.gguf"
$py - "$TMPD/t-gguf.gguf" "$TMPD/t-pipe.gguf" <<'EOF' && ok "pipe and file give the same imatrix" \
    || bad "calib from a pipe differs from the file"
import sys, numpy as np, gguf
a, b = ({t.name: np.asarray(t.data) for t in gguf.GGUFReader(p).tensors} for p in sys.argv[1:3])
assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
EOF
expect_rc 66 "--text a directory" -- $QTUNE calib "$S" --text "$TMPD" -o "$TMPD/x"
expect_err "a directory, not a file" "directory named"
$py - "$TMPD/t-gguf.gguf" "$TMPD/t-hf.gguf" <<'EOF' && ok "HF and GGUF statistics agree" || bad "HF vs GGUF statistics"
import sys, numpy as np, gguf
a, b = ({t.name: np.asarray(t.data) for t in gguf.GGUFReader(p).tensors} for p in sys.argv[1:3])
assert a.keys() == b.keys()
for k in a:
    assert np.allclose(a[k], b[k], rtol=1e-3, atol=1e-5), k
EOF

# Errors: usage (64), missing input (66), bad data (65), unwritable output (73).
expect_rc 64 "no -o and no --kld" -- $QTUNE calib "$S" --text "$TXT"
expect_rc 64 "both --text and --tokens" -- $QTUNE calib "$S" --text "$TXT" --tokens "$TMPD/ids.txt" -o "$TMPD/x"
expect_rc 64 "--kld without --plan" -- $QTUNE calib "$S" --text "$TXT" --kld
expect_rc 64 "bad --ctx" -- $QTUNE calib "$S" --text "$TXT" --ctx 1 -o "$TMPD/x"
expect_rc 66 "missing text" -- $QTUNE calib "$S" --text "$TMPD/none.txt" -o "$TMPD/x"
expect_rc 66 "missing model" -- $QTUNE calib "$TMPD/none.gguf" --text "$TXT" -o "$TMPD/x"
printf 'Once upon a time.\n' >"$TMPD/short.txt"
expect_rc 65 "text shorter than one chunk" -- $QTUNE calib "$S" --text "$TMPD/short.txt" -o "$TMPD/x"
expect_err "fewer than one chunk" "short text message"
printf '1 2 3\n4 99999 5\n' >"$TMPD/bad_ids.txt"
expect_rc 65 "token id out of range" -- $QTUNE calib "$S" --tokens "$TMPD/bad_ids.txt" -o "$TMPD/x"
expect_err "bad_ids.txt:2:3:" "bad id named by line:column"
expect_rc 64 "HF dir without tokenizer and --text" -- $QTUNE calib "$MODELS/stories260K-hf" --text "$TXT" -o "$TMPD/x"
expect_rc 73 "unwritable output" -- $QTUNE calib "$S" --text "$TXT" --ctx 128 -o "$TMPD/no/dir/x.gguf"
[ ! -e "$TMPD/x" ] && ok "nothing written on failure" || bad "output left behind"

# --kld: q8_0 is close to the original, int3 per channel far.
printf '# qtune plan v1\npattern,format,method,group,options\n*,q8_0,rtn,,\n' >"$TMPD/q8.csv"
printf '# qtune plan v1\npattern,format,method,group,options\n*,int3,rtn,,\n' >"$TMPD/i3.csv"
expect_rc 0 "--kld q8_0" -- $QTUNE calib "$S" --text samples/calib/prose.txt --ctx 128 --kld --plan "$TMPD/q8.csv" --json
cp "$TMPD/out" "$TMPD/k8.json"
expect_rc 0 "--kld int3" -- $QTUNE calib "$S" --text samples/calib/prose.txt --ctx 128 --kld --plan "$TMPD/i3.csv" --json
cp "$TMPD/out" "$TMPD/k3.json"
$py - "$TMPD/k8.json" "$TMPD/k3.json" <<'EOF' && ok "kld figures: $(cat "$TMPD/k8.json")" || bad "kld figures"
import sys, json
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert 0 < a["kld_mean"] < 0.01 and a["top1"] > 0.9, a
assert a["kld_mean"] <= a["kld_p99"] <= a["kld_max"] or a["kld_p99"] <= a["kld_max"], a
assert b["kld_mean"] > 5 * a["kld_mean"] and b["top1"] < a["top1"], (a, b)
assert abs(a["ppl_base"] - b["ppl_base"]) < 1e-6 * a["ppl_base"]
assert b["ppl_quant"] > a["ppl_quant"]
EOF

# llama.cpp's perplexity on the same chunks (optional: needs llama-cpp-python).
if [ -x build/venv-llama/bin/python ] && build/venv-llama/bin/python -c 'import llama_cpp' 2>/dev/null; then
    build/venv-llama/bin/python - "$S" samples/calib/prose.txt 128 "$TMPD/k8.json" <<'EOF' \
        >"$TMPD/llppl" 2>&1 && ok "base perplexity equals llama.cpp's: $(tail -1 "$TMPD/llppl")" \
        || { bad "perplexity differs from llama.cpp"; tail -5 "$TMPD/llppl"; }
import sys, json, math, numpy as np, llama_cpp
path, txt, ctx, res = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.load(open(sys.argv[4]))
llm = llama_cpp.Llama(model_path=path, n_ctx=ctx, n_batch=ctx, logits_all=True, verbose=False)
toks = llm.tokenize(open(txt, "rb").read(), add_bos=True)
nll, n = 0.0, 0
for c in range(len(toks) // ctx):
    chunk = toks[c * ctx:(c + 1) * ctx]; chunk[0] = llm.token_bos()
    llm.reset(); llm.eval(chunk)
    lg = np.array(llm.scores[:ctx], dtype=np.float64)
    for t in range(ctx - 1):
        l = lg[t]; m = l.max(); lse = m + math.log(np.exp(l - m).sum())
        nll += lse - l[chunk[t + 1]]; n += 1
ppl = math.exp(nll / n)
assert n == res["tokens"], (n, res["tokens"])
assert abs(ppl - res["ppl_base"]) < 1e-3 * ppl, (ppl, res["ppl_base"])
print(f"llama.cpp {ppl:.5f}, qtune {res['ppl_base']:.5f} over {n} tokens")
EOF
else
    echo "skip: llama-cpp-python not installed (build/venv-llama); perplexity cross-check"
fi
finish
