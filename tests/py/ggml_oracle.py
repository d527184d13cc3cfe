"""What check_quants.py and check_kquants.py share: ggml's own quantizer
(ggml_quantize_chunk from a libggml loaded through ctypes) and qtune's, run
through a test tool (build/tests/tool_quant or tool_kquant)."""
import ctypes
import os
import subprocess

import numpy as np


class LibGGML:
    """ggml_quantize_chunk (and ggml_quantize_init when exported) of the shared
    library at path; raises OSError or AttributeError when it cannot."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        f = self.lib.ggml_quantize_chunk
        f.restype = ctypes.c_size_t
        f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                      ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        self.chunk = f
        self.init = getattr(self.lib, "ggml_quantize_init", None)
        if self.init is not None:
            self.init.restype = None
            self.init.argtypes = [ctypes.c_int]

    def quantize(self, type_id, block_elems, block_bytes, x, imatrix):
        """ggml's blocks (uint8 array) for the rows of x, with imatrix or None."""
        if self.init is not None:
            self.init(type_id)
        rows, cols = x.shape
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros(rows * (cols // block_elems) * block_bytes, dtype=np.uint8)
        im = None
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
            im = imatrix.ctypes.data
        n = self.chunk(type_id, x.ctypes.data, out.ctypes.data, 0, rows, cols, im)
        if n != out.size:
            raise RuntimeError("ggml_quantize_chunk returned %d bytes, expected %d"
                               % (n, out.size))
        return out


def run_tool(tool, name, x, imatrix, tmp):
    """qtune's blocks (uint8 array): TOOL NAME IN.f32 ROWS COLS OUT.bin [IMATRIX.f32]
    with its files in the folder tmp; RuntimeError when the tool fails."""
    src = os.path.join(tmp, "in.f32")
    dst = os.path.join(tmp, "out.bin")
    x.astype("<f4").tofile(src)
    cmd = [tool, name, src, str(x.shape[0]), str(x.shape[1]), dst]
    if imatrix is not None:
        imf = os.path.join(tmp, "imatrix.f32")
        imatrix.astype("<f4").tofile(imf)
        cmd.append(imf)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("tool exited %d: %s" % (r.returncode, r.stderr.strip()))
    return np.fromfile(dst, dtype=np.uint8)
