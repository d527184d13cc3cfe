#!/usr/bin/env python3
"""Compare qtune's reference dequantizers with the gguf Python package.

usage: check_dequant.py TOOL [--fast] [--seed N] [--blocks N]

TOOL is build/tests/tool_dequant; with --fast it runs the dequantizers qtune
uses on this machine (the SIMD ones where a type has one) instead of the scalar
references. For every type qtune can read that the gguf
package can too, random block bytes (fixed seed) are dequantized by both; the
results must be bit-identical as uint32, except that a NaN only has to meet a
NaN (payloads and signs of NaNs are not compared). Most blocks get finite f16
scale fields so the values are ordinary numbers; a few keep raw random scale
bits, the first of them set to special halves (inf, NaN, subnormal, ...); one
block is all zero bytes, one all 0xff. F16 and BF16 also run through all 65536
bit patterns.
Prints one `ok`/`FAIL` line per type; exit status 1 if any type fails.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

# type name -> byte offsets of the f16 scale fields inside one block
SCALE_FIELDS = {
    "Q8_0": (0,),
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
    "IQ4_NL": (0,),
}
ELEMENT_TYPES = ("F16", "BF16")
# inf, -inf, quiet NaN, signalling NaN, -0, smallest subnormal, largest subnormal, max
SPECIAL_HALVES = (0x7C00, 0xFC00, 0x7E00, 0x7D00, 0x8000, 0x0001, 0x83FF, 0x7BFF)


def finite_halves(rng, n):
    """n random f16 bit patterns with exponent < 31 (finite, subnormals included)."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bad = (bits & 0x7C00) == 0x7C00
    while bad.any():
        bits[bad] = rng.integers(0, 1 << 16, size=int(bad.sum()), dtype=np.uint32)
        bad = (bits & 0x7C00) == 0x7C00
    return bits


def finite_bf16(rng, n):
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bad = (bits & 0x7F80) == 0x7F80
    while bad.any():
        bits[bad] = rng.integers(0, 1 << 16, size=int(bad.sum()), dtype=np.uint32)
        bad = (bits & 0x7F80) == 0x7F80
    return bits


def make_blocks(name, rng, n_blocks, n_raw):
    """(n_blocks + n_raw + 2) blocks: finite scales, raw scales, zeros, 0xff."""
    _, type_size = GGML_QUANT_SIZES[T[name]]
    total = n_blocks + n_raw + 2
    data = rng.integers(0, 256, size=(total, type_size), dtype=np.uint16).astype(np.uint8)
    if name in SCALE_FIELDS:
        for off in SCALE_FIELDS[name]:
            h = finite_halves(rng, n_blocks)
            data[:n_blocks, off:off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    elif name in ELEMENT_TYPES:
        gen = finite_halves if name == "F16" else finite_bf16
        data[:n_blocks] = gen(rng, n_blocks).view(np.uint8).reshape(n_blocks, type_size)
    if name in SCALE_FIELDS:  # the first raw blocks get each special scale
        for i, h in enumerate(SPECIAL_HALVES[:n_raw]):
            for off in SCALE_FIELDS[name]:
                data[n_blocks + i, off:off + 2] = (h & 0xFF, h >> 8)
    data[-2] = 0
    data[-1] = 0xFF
    if name in ELEMENT_TYPES:  # and every one of the 65536 bit patterns
        every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.uint8)
        data = np.concatenate([data, every.reshape(-1, type_size)])
    return data


def run_tool(tool, name, data, tmp, fast):
    src = os.path.join(tmp, name + ".bin")
    dst = os.path.join(tmp, name + ".f32")
    data.tofile(src)
    r = subprocess.run([tool] + (["--fast"] if fast else []) + [name, src, dst],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("tool exited %d: %s" % (r.returncode, r.stderr.strip()))
    return np.fromfile(dst, dtype="<f4")


def compare(name, ours, ref):
    """Return (ok, message)."""
    ref = np.asarray(ref, dtype=np.float32).ravel()
    if ours.shape != ref.shape:
        return False, "%d values, gguf gives %d" % (ours.size, ref.size)
    a = ours.view(np.uint32)
    b = ref.view(np.uint32)
    nan_a = np.isnan(ours)
    nan_b = np.isnan(ref)
    same = (a == b) | (nan_a & nan_b)
    n_nan = int((nan_a & nan_b).sum())
    if same.all():
        finite = int(np.isfinite(ref).sum())
        return True, "%d values bit-identical (%d finite, %d NaN)" % (ref.size, finite, n_nan)
    bad = np.flatnonzero(~same)
    i = int(bad[0])
    return False, "%d of %d values differ; first at %d: ours %08x (%r) gguf %08x (%r)" % (
        bad.size, ref.size, i, int(a[i]), float(ours[i]), int(b[i]), float(ref[i]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tool")
    ap.add_argument("--fast", action="store_true", help="the fast dequantizers")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--blocks", type=int, default=64, help="blocks with finite scales")
    ap.add_argument("--raw-blocks", type=int, default=16, help="blocks with raw scales")
    args = ap.parse_args()

    if not os.access(args.tool, os.X_OK):
        print("FAIL dequant: tool %s not found (make tools)" % args.tool)
        return 1
    failures = 0
    with tempfile.TemporaryDirectory(prefix="qtune-dq-") as tmp:
        for k, name in enumerate(list(SCALE_FIELDS) + list(ELEMENT_TYPES)):
            rng = np.random.default_rng(args.seed + k)
            scale = 64 if name in ELEMENT_TYPES else 1  # blocks of one element: take more
            data = make_blocks(name, rng, args.blocks * scale, args.raw_blocks * scale)
            try:
                ours = run_tool(args.tool, name, data, tmp, args.fast)
                with np.errstate(all="ignore"):
                    ref = dequantize(data.reshape(-1), T[name])
                ok, msg = compare(name, ours, ref)
            except Exception as e:  # report, then go on with the next type
                ok, msg = False, "%s: %s" % (type(e).__name__, e)
            what = "dequant (fast)" if args.fast else "dequant"
            print("%s %s %s: %s" % ("ok  " if ok else "FAIL", what, name, msg))
            failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
