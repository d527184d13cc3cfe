#!/usr/bin/env bash
# seed_st.sh CORPUS_DIR — seeds for build-fuzz/fuzz_st: one selector byte
# (\000 safetensors, \001 config.json, \002 index) followed by the input.
# Uses the shared stories260K-hf checkpoints when present (their first 64 KiB
# less one byte, which hold the whole header) and small valid files made here.
set -eu
out=${1:?usage: seed_st.sh CORPUS_DIR}
mkdir -p "$out"
models=${QTUNE_MODELS:-../shared/models}

seed() { # seed NAME SELECTOR_OCTAL FILE
    { printf "\\$2"; head -c 65535 "$3"; } >"$out/$1"
}

if [ -d "$models/stories260K-hf" ]; then
    seed st-stories 000 "$models/stories260K-hf/model.safetensors"
    seed cfg-stories 001 "$models/stories260K-hf/config.json"
fi
if [ -d "$models/stories260K-hf-sharded" ]; then
    seed st-shard2 000 "$models/stories260K-hf-sharded/model-00002-of-00002.safetensors"
    seed ix-stories 002 "$models/stories260K-hf-sharded/model.safetensors.index.json"
fi

python3 - "$out" <<'PY'
import json, os, struct, sys

out = sys.argv[1]

def st(name, tensors, meta=None, pad=0):
    hdr, data = {}, b""
    if meta is not None:
        hdr["__metadata__"] = meta
    for tname, dtype, shape, size in tensors:
        n = 1
        for d in shape:
            n *= d
        hdr[tname] = {"dtype": dtype, "shape": shape,
                      "data_offsets": [len(data), len(data) + n * size]}
        data += bytes((i * 7 + 1) & 255 for i in range(n * size))
    h = json.dumps(hdr, separators=(",", ":")).encode() + b" " * pad
    with open(os.path.join(out, name), "wb") as f:
        f.write(b"\0" + struct.pack("<Q", len(h)) + h + data)

st("st-small", [("a", "F32", [2, 3], 4), ("b", "BF16", [4], 2), ("c", "I8", [], 1)],
   {"format": "pt"}, pad=5)
st("st-dtypes", [("t%d" % i, d, [2], s) for i, (d, s) in enumerate(
    [("F64", 8), ("F16", 2), ("I64", 8), ("I32", 4), ("I16", 2), ("U8", 1), ("BOOL", 1),
     ("F8_E4M3", 1), ("F8_E5M2", 1), ("U16", 2), ("U32", 4), ("U64", 8)])])
st("st-empty", [])
st("st-zero", [("z", "F32", [0, 4], 4), ("y", "U8", [1], 1)])

def text(name, sel, obj):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([sel]) + json.dumps(obj, indent=1).encode())

text("cfg-qwen", 1, {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                     "hidden_size": 896, "num_attention_heads": 14, "num_key_value_heads": 2,
                     "head_dim": 64, "rope_theta": 1e6, "rms_norm_eps": 1e-6,
                     "tie_word_embeddings": True, "partial_rotary_factor": 0.5,
                     "rope_scaling": None})
text("cfg-arch", 1, {"architectures": ["MistralForCausalLM"], "hidden_size": 128})
text("ix-small", 2, {"metadata": {"total_size": 24},
                     "weight_map": {"a": "b.safetensors", "c": "a.safetensors",
                                    "d": "b.safetensors"}})
PY
