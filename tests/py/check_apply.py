"""Independent check of `qtune apply` output with llama.cpp's own Python reader
(the `gguf` package, with numpy).

usage: check_apply.py QTUNE TOOL_DUMP SOURCE OUT.gguf [--requant] [--same-tensors OTHER.gguf]

For every tensor of OUT.gguf: the file parses; its type is what qtune's
`apply --json` summary says; gguf.quants.dequantize of the stored bytes equals
qtune's own dequantization (tool_dump) bit for bit; the metadata of a GGUF
source is kept. With --requant, tensors in Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1 are
quantized again from the SOURCE's values by the gguf package's quantizer and
must be byte-identical to what qtune wrote. With --same-tensors, every tensor
must have the same name, type and bytes in OTHER.gguf (for an HF source, whose
q/k rows qtune must put back in GGUF order)."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

PY_QUANT = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1}


def dump(tool, model, name, rows, cols):
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        subprocess.run([tool, model, name, f.name], check=True)
        return np.fromfile(f.name, dtype=np.float32).reshape(rows, cols)


def main():
    qtune, tool, src, out = sys.argv[1:5]
    requant = "--requant" in sys.argv[5:]
    same = sys.argv[sys.argv.index("--same-tensors") + 1] if "--same-tensors" in sys.argv else None
    r = gguf.GGUFReader(out)
    bad = 0
    src_is_gguf = src.endswith(".gguf")
    if src_is_gguf:
        s = gguf.GGUFReader(src)
        for k, f in s.fields.items():
            if k.startswith("GGUF.") or k in ("general.file_type",):
                continue
            if k not in r.fields:
                print(f"FAIL  metadata key {k} was not kept")
                bad += 1
    if "qtune.plan.fingerprint" not in r.fields:
        print("FAIL  qtune.plan.fingerprint missing")
        bad += 1
    types = {}
    requantized = 0
    for t in r.tensors:
        shape = [int(x) for x in t.shape]  # ggml order: ne0 first
        cols = shape[0]
        rows = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        raw = np.asarray(t.data)
        if t.tensor_type in (T.F32, T.F16):
            py = raw.astype(np.float32).reshape(rows, cols)
        elif t.tensor_type == T.BF16:
            py = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(rows, cols)
        else:
            py = gguf.quants.dequantize(raw, t.tensor_type).reshape(rows, cols)
        mine = dump(tool, out, t.name, rows, cols)
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        if not np.array_equal(py.view(np.uint32), mine.view(np.uint32)):
            print(f"FAIL  {t.name} ({t.tensor_type.name}): gguf dequantization differs from qtune's")
            bad += 1
        if requant and t.tensor_type in PY_QUANT:
            x = dump(tool, src, t.name, rows, cols)
            ref = gguf.quants.quantize(x, t.tensor_type)
            requantized += 1
            if not np.array_equal(np.frombuffer(ref.tobytes(), np.uint8),
                                  np.frombuffer(raw.tobytes(), np.uint8)):
                print(f"FAIL  {t.name} ({t.tensor_type.name}): blocks differ from the gguf "
                      "package's quantizer")
                bad += 1
    if same:
        other = {t.name: t for t in gguf.GGUFReader(same).tensors}
        for t in r.tensors:
            o = other.get(t.name)
            if o is None or o.tensor_type != t.tensor_type or \
                    np.asarray(o.data).tobytes() != np.asarray(t.data).tobytes():
                print(f"FAIL  {t.name}: differs from the same tensor in {same}")
                bad += 1
    summary = ", ".join(f"{k}×{v}" for k, v in sorted(types.items()))
    print(f"{'ok' if not bad else 'FAIL'}    {os.path.basename(out)}: {len(r.tensors)} tensors "
          f"({summary}) read back by the gguf package"
          + (f", {requantized} re-quantized identically by the gguf package"
             if requantized and not bad else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
