#!/usr/bin/env bash
# qtune inspect: every shared model in every output format, statistics checked
# against numpy through llama.cpp's gguf reader, and bad input gives clear errors.
source tests/cli/lib.sh

for m in stories260K.gguf stories260K-F16.gguf stories260K-BF16.gguf stories260K-hf \
         stories260K-hf-sharded stories260K-hf/model.safetensors \
         ollama_llama-2-tiny-random.gguf calcuis_imatrix-from-dat.imatrix.gguf; do
    expect_rc 0 "inspect $m" -- $QTUNE inspect "$MODELS/$m"
    expect_rc 0 "inspect --csv $m" -- $QTUNE inspect --csv "$MODELS/$m"
    n=$($QTUNE inspect --json --no-stats "$MODELS/$m" | python3 -c \
        'import json,sys; print(json.load(sys.stdin)["model"]["n_tensors"])')
    rows=$($QTUNE inspect --csv "$MODELS/$m" | python3 -c \
        'import csv,sys; print(len(list(csv.reader(sys.stdin))) - 1)')
    [ "$n" = "$rows" ] && ok "$m: csv has $rows rows" || bad "$m: csv rows $rows, tensors $n"
done

# The summary line of stories260K.
$QTUNE inspect "$MODELS/stories260K.gguf" >"$TMPD/o"
grep -q 'llama: 5 layers, embd 64, heads 8/4 kv, ffn 172, vocab 512' "$TMPD/o" \
    && ok "summary architecture" || bad "summary architecture: $(sed -n 2p "$TMPD/o")"
grep -q '48 tensors, 292800 params' "$TMPD/o" && ok "summary params" || bad "summary params"

# Independent check of every statistic with numpy.
if py=$(venv_python); then
    $py tests/py/check_inspect.py $QTUNE "$MODELS/stories260K.gguf" \
        "$MODELS/stories260K-F16.gguf" "$MODELS/stories260K-BF16.gguf" "$MODELS/stories260K-hf" \
        "$MODELS/stories260K-hf-sharded" "$MODELS/ollama_llama-2-tiny-random.gguf" \
        && ok "statistics agree with numpy" || bad "statistics differ from numpy"
    if [ -x "$QTUNE" ] && $QTUNE sample -o "$TMPD/s.gguf" --dim 256 --layers 2 --ff 512 \
        --vocab 300 2>/dev/null; then
        $py tests/py/check_inspect.py $QTUNE "$TMPD/s.gguf" \
            && ok "sample model statistics agree with numpy" || bad "sample statistics differ"
    else
        bad "qtune sample failed"
    fi
else
    bad "no venv with gguf+numpy"
fi

# Usage and bad input.
expect_rc 64 "no model argument" -- $QTUNE inspect
expect_rc 64 "unknown option" -- $QTUNE inspect --bogus "$MODELS/stories260K.gguf"
expect_rc 64 "bad --threads" -- $QTUNE inspect --threads 0 "$MODELS/stories260K.gguf"
expect_rc 66 "missing file" -- $QTUNE inspect "$TMPD/nope.gguf"
expect_err "nope.gguf" "missing file is named"

head -c 100 "$MODELS/stories260K.gguf" >"$TMPD/trunc.gguf"
expect_rc 65 "truncated GGUF" -- $QTUNE inspect "$TMPD/trunc.gguf"
expect_err "trunc.gguf.*offset [0-9]+" "truncated GGUF: file and offset named"

head -c 600000 "$MODELS/stories260K.gguf" >"$TMPD/trunc-data.gguf"
expect_rc 65 "GGUF cut inside the data" -- $QTUNE inspect "$TMPD/trunc-data.gguf"
expect_err "trunc-data.gguf" "data truncation: file named"

{ printf 'GGUX'; tail -c +5 "$MODELS/stories260K.gguf"; } >"$TMPD/magic.gguf"
expect_rc 65 "bad GGUF magic" -- $QTUNE inspect "$TMPD/magic.gguf"
expect_err "magic.gguf.*offset 0" "bad magic: offset 0 named"

printf '\xff\xff\xff\xff\x00\x00\x00\x00{}' >"$TMPD/big.safetensors"
expect_rc 65 "safetensors header length past the file" -- $QTUNE inspect "$TMPD/big.safetensors"
expect_err "big.safetensors" "safetensors: file named"

mkdir -p "$TMPD/hf"
cp "$MODELS/stories260K-hf/model.safetensors" "$TMPD/hf/"
printf '{"hidden_size": 64,\n "num_hidden_layers": }' >"$TMPD/hf/config.json"
expect_rc 65 "config.json not JSON" -- $QTUNE inspect "$TMPD/hf"
expect_err "config.json.*line 2" "config.json: line named"

mkdir -p "$TMPD/shard"
cp "$MODELS/stories260K-hf-sharded/config.json" "$MODELS/stories260K-hf-sharded/model.safetensors.index.json" \
   "$MODELS/stories260K-hf-sharded/model-00001-of-00002.safetensors" "$TMPD/shard/"
expect_rc 65 "index names a missing shard" -- $QTUNE inspect "$TMPD/shard"
expect_err "model-00002-of-00002.safetensors" "missing shard is named"

finish
