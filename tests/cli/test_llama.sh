#!/usr/bin/env bash
# Real client: llama.cpp itself (llama-cpp-python from PyPI, built from source
# into build/venv-llama once; pip caches the built wheel for later runs) loads
# qtune's output. stories260K quantized to q8_0 by `qtune apply` (ffn_down
# falling back) must keep the F32 model's perplexity within 1% on a text of
# ours, greedy decoding of the F32 model must give the known token ids, and the
# synthetic model of `qtune sample` must load and produce finite logits.
#
# See llama_python in lib.sh for how llama.cpp is installed; when it cannot be
# built here the test says so and is skipped.
source tests/cli/lib.sh
if ! PY=$(llama_python); then
    echo "skipped: llama.cpp (llama-cpp-python) is not available"
    exit 0
fi
S=$MODELS/stories260K.gguf

$QTUNE plan "$S" --preset q8_0 -o "$TMPD/q8.csv" 2>/dev/null || bad "plan q8_0"
$QTUNE apply "$S" --plan "$TMPD/q8.csv" -o "$TMPD/q8.gguf" >/dev/null 2>&1 || bad "apply q8_0"
$PY tests/py/check_llama.py "$S" "$TMPD/q8.gguf" samples/calib/stories.txt --max-rel 0.01 \
    --greedy 403,407,261,378,432,383,286,261,376,298,315,421 && ok "llama.cpp: q8_0 perplexity" \
    || bad "llama.cpp: q8_0 perplexity"

$QTUNE sample -o "$TMPD/s.gguf" 2>/dev/null || bad "sample"
$PY - "$TMPD/s.gguf" <<'PYEOF' && ok "llama.cpp loads the sample model" || bad "llama.cpp: sample model"
import sys, numpy as np
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, logits_all=True, verbose=False)
toks = llm.tokenize(b"the little cat", add_bos=True)
llm.eval(toks)
logits = np.asarray(llm.scores[:len(toks)])
assert np.isfinite(logits).all() and logits.std() > 0, logits
print(f"sample model: {llm.n_vocab()} tokens, {len(toks)} prompt tokens, finite logits")
PYEOF
finish
