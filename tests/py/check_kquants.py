#!/usr/bin/env python3
"""Compare qtune's k-quant quantizers with ggml's own, byte for byte.

usage: check_kquants.py TOOL [--seed N]

TOOL is build/tests/tool_kquant. The environment variable QTUNE_LIBGGML names
a shared library that exports ggml's public `ggml_quantize_chunk` (libggml-base.so
in recent llama.cpp builds; libggml.so also works, it links libggml-base). When
it is not set the check prints "skipped: QTUNE_LIBGGML not set" and exits 0.

For Q2_K..Q6_K, each without and with a random positive importance matrix, on
normal, heavy-tailed (Student-t), all-zero, constant and mixed-scale rows
(n_per_row 256, 512, 768 and 1024), qtune's bytes must equal ggml's. A control
checks that ggml's bytes with the imatrix differ from those without, so the
weighted path is really exercised. Prints one ok/FAIL line per type and
imatrix setting; exit status 1 on any mismatch or setup failure.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

from ggml_oracle import LibGGML, run_tool

# name -> (ggml type id, bytes per 256-element block)
TYPES = {
    "Q2_K": (10, 84),
    "Q3_K": (11, 110),
    "Q4_K": (12, 144),
    "Q5_K": (13, 176),
    "Q6_K": (14, 210),
}


def datasets(rng):
    """List of (name, float32 array of shape (rows, n_per_row))."""
    out = []
    out.append(("normal", rng.standard_normal((24, 1024))))
    out.append(("student-t3", rng.standard_t(3, (24, 768)) * 0.02))
    out.append(("student-t1.5", rng.standard_t(1.5, (8, 512))))
    out.append(("zero", np.zeros((4, 512))))
    const = np.array([[0.37], [-2.5], [1e-3], [1000.0], [-7e-6], [3.0]]) * np.ones((6, 256))
    out.append(("constant", const))
    # per-16 sub-block scales from 1e-8 to 1e3, some sub-blocks zero, one of
    # denormals, sparse rows, a row with a few large outliers, positive-only
    mixed = rng.standard_normal((8, 512))
    mixed *= np.repeat(10.0 ** rng.uniform(-8, 3, (8, 32)), 16, axis=1)
    mixed[0, 32:64] = 0
    mixed[1, 16:32] = rng.standard_normal(16) * 1e-41
    mixed[2, rng.random(512) < 0.9] = 0
    mixed[3] = rng.standard_normal(512) * 0.01
    mixed[3, [5, 300, 301]] = [40.0, -55.0, 12.0]
    mixed[4] = np.abs(rng.standard_normal(512))
    mixed[5] = -np.abs(rng.standard_normal(512))
    mixed[6] = rng.integers(-3, 4, 512) * 0.25
    out.append(("mixed", mixed))
    return [(n, a.astype(np.float32)) for n, a in out]


def first_diff(ours, ref, rows):
    if ours.size != ref.size:
        return "%d bytes, ggml gives %d" % (ours.size, ref.size)
    bad = np.flatnonzero(ours != ref)
    row_bytes = ref.size // rows
    i = int(bad[0])
    return "%d bytes differ; first at row %d byte %d: ours %02x ggml %02x" % (
        bad.size, i // row_bytes, i % row_bytes, int(ours[i]), int(ref[i]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tool")
    ap.add_argument("--seed", type=int, default=20250611)
    args = ap.parse_args()

    libpath = os.environ.get("QTUNE_LIBGGML", "")
    if not libpath:
        print("skipped: QTUNE_LIBGGML not set")
        return 0
    if not os.access(args.tool, os.X_OK):
        print("FAIL kquant: tool %s not found (make tools)" % args.tool)
        return 1
    try:
        lib = LibGGML(libpath)
    except (OSError, AttributeError) as e:
        print("FAIL kquant: cannot use ggml_quantize_chunk from %s: %s" % (libpath, e))
        return 1

    rng = np.random.default_rng(args.seed)
    data = datasets(rng)
    imatrices = {}  # n_per_row -> positive weights, as llama.cpp's imatrix (mean of x²)
    for _, x in data:
        n = x.shape[1]
        if n not in imatrices:
            imatrices[n] = (rng.uniform(0.0, 1.0, n) ** 3 * 50 + 1e-3).astype(np.float32)

    failures = 0
    with tempfile.TemporaryDirectory(prefix="qtune-kq-") as tmp:
        for name, (type_id, block_bytes) in TYPES.items():
            for use_im in (False, True):
                label = "%s imatrix=%s" % (name, "yes" if use_im else "no")
                rows = nbytes = 0
                msg = None
                try:
                    for dname, x in data:
                        im = imatrices[x.shape[1]] if use_im else None
                        ref = lib.quantize(type_id, 256, block_bytes, x, im)
                        ours = run_tool(args.tool, name, x, im, tmp)
                        if ours.size != ref.size or not np.array_equal(ours, ref):
                            msg = "%s: %s" % (dname, first_diff(ours, ref, x.shape[0]))
                            break
                        if use_im and dname == "normal":
                            plain = lib.quantize(type_id, 256, block_bytes, x, None)
                            if np.array_equal(plain, ref):
                                msg = "control: ggml ignored the imatrix (same bytes)"
                                break
                        rows += x.shape[0]
                        nbytes += ref.size
                except Exception as e:  # report, then go on with the next case
                    msg = "%s: %s" % (type(e).__name__, e)
                if msg is None:
                    print("ok   kquant %s: %d rows in %d data sets, %d bytes identical" % (
                        label, rows, len(data), nbytes))
                else:
                    print("FAIL kquant %s: %s" % (label, msg))
                    failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
