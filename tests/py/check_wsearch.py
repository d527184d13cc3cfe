"""`qtune apply --imatrix` against llama.cpp's own quantizer: every tensor that
qtune quantized with the importance-weighted search (method wsearch) must be
byte-identical to ggml_quantize_chunk(type, source, imatrix) from libggml, with
the importance llama-quantize derives from the file (GGUF imatrix: in_sum2 /
counts per matrix). Tensors without an imatrix entry must equal the plain
quantizer's bytes (ggml_quantize_chunk with no imatrix), as llama-quantize does.

usage: check_wsearch.py LIBGGML TOOL_DUMP SOURCE OUT.gguf IMATRIX.gguf"""
import ctypes
import subprocess
import sys
import tempfile

import numpy as np
import gguf


def main():
    libpath, tool, src, out, imat = sys.argv[1:6]
    lib = ctypes.CDLL(libpath)
    qc = lib.ggml_quantize_chunk
    qc.restype = ctypes.c_size_t
    qc.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    im = {}
    r = gguf.GGUFReader(imat)
    tensors = {t.name: t for t in r.tensors}
    for name, t in tensors.items():
        if name.endswith(".in_sum2"):
            base = name[:-len(".in_sum2")]
            s2 = np.asarray(t.data, dtype=np.float32).ravel()
            cnt = np.asarray(tensors[base + ".counts"].data, dtype=np.float32).ravel()
            im[base] = (s2 / cnt[0]).astype(np.float32) if cnt[0] > 0 else np.ones_like(s2)
    bad = checked = plain = 0
    for t in gguf.GGUFReader(out).tensors:
        if t.tensor_type.name in ("F32", "F16", "BF16"):
            continue
        cols = int(t.shape[0])
        rows = int(np.prod([int(x) for x in t.shape[1:]]))
        with tempfile.NamedTemporaryFile(suffix=".f32") as f:
            subprocess.run([tool, src, t.name, f.name], check=True)
            x = np.ascontiguousarray(np.fromfile(f.name, dtype=np.float32))
        w = im.get(t.name)
        dst = np.zeros(np.asarray(t.data).nbytes, dtype=np.uint8)
        qc(int(t.tensor_type), x.ctypes.data, dst.ctypes.data, 0, rows, cols,
           w.ctypes.data if w is not None else None)
        same = np.array_equal(dst, np.frombuffer(np.asarray(t.data).tobytes(), np.uint8))
        if w is not None:
            checked += 1
        else:
            plain += 1
        if not same:
            bad += 1
            print(f"FAIL  {t.name} ({t.tensor_type.name}, imatrix={'yes' if w is not None else 'no'}):"
                  " differs from ggml_quantize_chunk")
    print(f"{'ok' if not bad and checked else 'FAIL'}    {checked} tensors byte-identical to "
          f"ggml with the imatrix, {plain} without (no entry)")
    sys.exit(0 if not bad and checked else 1)


if __name__ == "__main__":
    main()
