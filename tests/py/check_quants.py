#!/usr/bin/env python3
"""Compare qtune's ggml quantizers with independent oracles, byte for byte.

usage: check_quants.py TOOL [--seed N] [--libggml PATH]

TOOL is build/tests/tool_quant. Every data set below (fixed seeds) is quantized
by qtune and by each oracle; the blocks must be byte-identical.

1. The gguf Python package (gguf.quants.quantize, a numpy port of ggml's
   quantize_row_<type>_ref): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 without imatrix.
2. ggml itself: ggml_quantize_chunk from the shared library named by --libggml
   or the environment variable QTUNE_LIBGGML (libggml-base.so holds it in
   current builds; libggml.so also works since it loads libggml-base). All six
   types (also IQ4_NL), each without imatrix and with a random positive one.
   Without a library this part prints "skipped: QTUNE_LIBGGML not set".

Data sets: normal, heavy-tailed (Student t, 2 d.o.f.), normal with outliers,
rows holding all-zero blocks, constant blocks (+, -, 0), scattered zeros,
values on a coarse grid, exact rounding ties (x / d = n + 1/2), tiny
(1e-6..1e-12) and wide dynamic range, and uniform data. Edge sets too:
subnormal, tiny normal (1/d overflows), 1e6, 1e30 and near FLT_MAX (f16
scales overflow to inf; for |x| > ~1.8e19 x² overflows and the IQ4_NL and
imatrix searches make NaN scales). IQ4_NL blocks whose scale is NaN in both
compare only the scale: ggml versions differ in where their levels land.
Prints one ok/FAIL line per oracle and type; exit status 1 if any fails.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

from ggml_oracle import LibGGML, run_tool

TYPES = {  # name -> (ggml type id, block bytes)
    "Q8_0": (8, 34),
    "Q4_0": (2, 18),
    "Q4_1": (3, 20),
    "Q5_0": (6, 22),
    "Q5_1": (7, 24),
    "IQ4_NL": (20, 18),
}
GGUF_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")


def datasets(seed):
    """List of (name, float32 array rows × cols)."""
    rng = np.random.default_rng(seed)
    out = []
    rows, cols = 48, 512

    def f32(a):
        return np.ascontiguousarray(a, dtype=np.float32)

    out.append(("normal", f32(rng.standard_normal((rows, cols)) * 0.02)))
    out.append(("student-t2", f32(rng.standard_t(2, size=(rows, cols)))))
    a = rng.standard_normal((rows, cols))
    mask = rng.random((rows, cols)) < 0.01
    a[mask] *= 50
    out.append(("outliers", f32(a)))
    a = rng.standard_normal((rows, cols)).astype(np.float32)
    a[0] = 0  # a whole zero row
    for r in range(1, rows):  # some all-zero blocks
        b = rng.integers(0, cols // 32)
        a[r, 32 * b:32 * b + 32] = 0
    a[rng.random((rows, cols)) < 0.2] = 0  # and scattered zeros
    out.append(("zeros", f32(a)))
    a = rng.standard_normal((rows, cols)).astype(np.float32)
    for r in range(rows):
        for b in range(0, cols // 32, 3):
            a[r, 32 * b:32 * b + 32] = [0.75, -1.5, 3.0, 0.0][(r + b) % 4]
    out.append(("constant-blocks", f32(a)))
    out.append(("grid", f32(rng.integers(-16, 17, size=(rows, cols)) * 0.125)))
    out.append(("tiny", f32(rng.standard_normal((rows, cols)) *
                            10.0 ** rng.integers(-12, -5, size=(rows, 1)))))
    out.append(("wide-range", f32(rng.standard_normal((rows, cols)) *
                                  10.0 ** rng.uniform(-8, 8, size=(rows, cols)))))
    out.append(("uniform", f32(rng.uniform(-1, 3, size=(rows, cols)))))
    # exact ties: with a power-of-two step s and a block maximum of 127 s (Q8_0
    # d = s) or a range of 15 s / 31 s (Q4_1 / Q5_1 d = s), x / d lands on n + 1/2
    s = 2.0 ** rng.integers(-10, 4, size=(rows, cols // 32, 1))
    n = rng.integers(-127, 127, size=(rows, cols // 32, 32)) + 0.5
    n[..., 0] = np.where(rng.random((rows, cols // 32)) < 0.5, 127, -127)
    out.append(("ties-q8", f32((n * s).reshape(rows, cols))))
    top = np.where(rng.random((rows, cols // 32)) < 0.5, 15, 31)
    n = rng.integers(0, 15, size=(rows, cols // 32, 32)) + 0.5
    n[..., 0] = 0
    n[..., 1] = top
    out.append(("ties-q4", f32((n * s - 8 * s).reshape(rows, cols))))
    return out


def edge_datasets(seed):
    """Inputs at the ends of the float range (gguf oracle and ggml without imatrix)."""
    rng = np.random.default_rng(seed + 7)
    out = []
    for name, scale in (("subnormal", 1e-40), ("tiny-normal", 1e-38), ("1e-37", 2e-37),
                        ("huge-1e30", 1e30), ("near-FLT_MAX", 3.4e38), ("1e6", 1e6)):
        a = rng.uniform(-1, 1, size=(8, 512)) * scale
        out.append((name, np.ascontiguousarray(a, dtype=np.float32)))
    return out


def nan_scale_blocks(name, ours, ref):
    """IQ4_NL blocks whose oracle scale is a NaN f16 and ours is too (boolean mask).

    Their levels are not compared: with a NaN scale every level is the index
    ggml's best_index_int8 gives a NaN, 15 in older ggml and 0 in current ggml
    (which qtune follows); the block dequantizes to NaN either way."""
    bsz = TYPES[name][1]
    if name != "IQ4_NL" or ours.size != ref.size:
        return np.zeros(ref.size // bsz, dtype=bool)
    def is_nan(b):
        h = b.reshape(-1, bsz)[:, :2].copy().view("<u2")[:, 0]
        return ((h & 0x7C00) == 0x7C00) & ((h & 0x03FF) != 0)
    return is_nan(ours) & is_nan(ref)


def first_diff(name, ours, ref):
    """None when equal, else a short description of the first differing block."""
    ref = np.asarray(ref, dtype=np.uint8).ravel()
    if ours.size != ref.size:
        return "%d bytes, oracle gives %d" % (ours.size, ref.size)
    bsz = TYPES[name][1]
    diff = (ours != ref).reshape(-1, bsz)
    diff[nan_scale_blocks(name, ours, ref)] = False
    bad = np.flatnonzero(diff.any(axis=1))
    if bad.size == 0:
        return None
    blk = int(bad[0])
    return "%d of %d blocks differ; first block %d: ours %s oracle %s" % (
        bad.size, ours.size // bsz, blk, ours[blk * bsz:(blk + 1) * bsz].tobytes().hex(),
        ref[blk * bsz:(blk + 1) * bsz].tobytes().hex())


def ggml_ref(lib, imatrix):
    """A ref_fn for check(): ggml's blocks of type name for x."""
    def ref(name, x):
        tid, bsz = TYPES[name]
        return lib.quantize(tid, 32, bsz, x, imatrix)
    return ref


def check(label, name, sets, ours_fn, ref_fn):
    """Runs every data set; prints one line; returns True when all match."""
    total = nan_blocks = 0
    for dname, x in sets:
        try:
            ours = ours_fn(name, x)
            ref = np.asarray(ref_fn(name, x), dtype=np.uint8).ravel()
            msg = first_diff(name, ours, ref)
        except Exception as e:  # report and go on
            msg = "%s: %s" % (type(e).__name__, e)
        if msg is not None:
            print("FAIL  %s %s: data set %s: %s" % (label, name, dname, msg))
            return False
        total += ours.size // TYPES[name][1]
        nan_blocks += int(nan_scale_blocks(name, ours, ref).sum())
    extra = " (%d with NaN scales: scale only)" % nan_blocks if nan_blocks else ""
    print("ok    %s %s: %d data sets, %d blocks byte-identical%s" % (label, name, len(sets),
                                                                      total, extra))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tool")
    ap.add_argument("--seed", type=int, default=20250301)
    ap.add_argument("--libggml", default=os.environ.get("QTUNE_LIBGGML"))
    args = ap.parse_args()

    if not os.access(args.tool, os.X_OK):
        print("FAIL  quants: tool %s not found (make tools)" % args.tool)
        return 1
    sets = datasets(args.seed)
    edges = edge_datasets(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    cols = sets[0][1].shape[1]
    # positive importance, spread over three decades like real imatrix columns
    imatrix = (10.0 ** rng.uniform(-2, 1, size=cols)).astype(np.float32)
    fails = 0
    with tempfile.TemporaryDirectory(prefix="qtune-q-") as tmp:
        def ours_plain(name, x):
            return run_tool(args.tool, name, x, None, tmp)

        def ours_imat(name, x):
            return run_tool(args.tool, name, x, imatrix, tmp)

        try:
            from gguf import GGMLQuantizationType as T
            from gguf.quants import quantize as gguf_quantize
        except ImportError as e:
            print("FAIL  gguf package not importable: %s" % e)
            return 1
        for name in GGUF_TYPES:
            def ref(n, x):
                with np.errstate(all="ignore"):
                    return gguf_quantize(x, T[n])
            fails += not check("gguf", name, sets + edges, ours_plain, ref)

        if not args.libggml:
            print("skipped: QTUNE_LIBGGML not set (no comparison with ggml_quantize_chunk)")
        else:
            try:
                lib = LibGGML(args.libggml)
            except (OSError, AttributeError) as e:
                print("FAIL  libggml %s: %s" % (args.libggml, e))
                return 1
            for name in TYPES:
                fails += not check("libggml", name, sets + edges, ours_plain,
                                   ggml_ref(lib, None))
                fails += not check("libggml+imatrix", name, sets + edges, ours_imat,
                                   ggml_ref(lib, imatrix))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
