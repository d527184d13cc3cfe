"""Independent check of `qtune inspect --json`: reads the same model with
llama.cpp's own Python reader (the `gguf` package) or plain numpy for
safetensors, computes every statistic in float64 with numpy, and compares.

usage: check_inspect.py QTUNE MODEL...
Tolerances: min, max, absmax, counts exact; mean and std within 4e-6 of the
std, kurtosis within 2e-5 relative: qtune's SIMD moment pass sums shifted
powers in float over at most 32 values per lane before each flush to double
(the bound of kernels/k_stats.c and tests/test_stats.c); the figures seen are
near 1e-8."""
import json
import os
import struct
import subprocess
import sys

import numpy as np


def gguf_tensors(path):
    import gguf
    r = gguf.GGUFReader(path)
    for t in r.tensors:
        name = t.name
        ty = t.tensor_type.name
        raw = np.asarray(t.data)
        if ty == "BF16":
            vals = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif ty in ("F32", "F16"):
            vals = raw
        else:
            vals = gguf.quants.dequantize(raw, t.tensor_type)
        yield name, np.asarray(vals, dtype=np.float64).ravel()


ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def st_tensors(path):
    files = []
    if os.path.isdir(path):
        idx = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(idx):
            wm = json.load(open(idx))["weight_map"]
            files = sorted(set(wm.values()), key=list(wm.values()).index)
            files = [os.path.join(path, f) for f in files]
        else:
            files = [os.path.join(path, "model.safetensors")]
    else:
        files = [path]
    for f in files:
        b = open(f, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        h.pop("__metadata__", None)
        base = 8 + n
        for name, e in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            lo, hi = e["data_offsets"]
            buf = b[base + lo:base + hi]
            if e["dtype"] == "BF16":
                v = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                v = np.frombuffer(buf, ST_DTYPES[e["dtype"]])
            yield name, v.astype(np.float64)


def stats(v):
    fin = v[np.isfinite(v)]
    s = {"nan": int(np.isnan(v).sum()), "inf": int(np.isinf(v).sum()), "count": int(fin.size)}
    if fin.size == 0:
        return s
    mean = fin.mean()
    d = fin - mean
    m2 = (d * d).mean()
    m4 = (d ** 4).mean()
    std = np.sqrt(m2)
    s.update(min=fin.min(), max=fin.max(), mean=mean, std=std,
             absmax=np.abs(fin).max(), kurtosis=m4 / m2 ** 2 if m2 > 0 else 0.0,
             outliers=int((np.abs(d) > 6 * std).sum()))
    return s


def check(qtune, path):
    out = subprocess.run([qtune, "inspect", "--json", path], check=True, capture_output=True)
    doc = json.loads(out.stdout)
    assert doc["schema"] == "qtune.inspect/1"
    rows = {t["name"]: t for t in doc["tensors"]}
    reader = gguf_tensors if path.endswith(".gguf") else st_tensors
    n = bad = 0
    for name, v in reader(path):
        n += 1
        t = rows.get(name)
        if t is None:
            print(f"FAIL  {path}: {name} missing from qtune's output")
            bad += 1
            continue
        if t["params"] != v.size:
            print(f"FAIL  {path}: {name} params {t['params']} vs {v.size}")
            bad += 1
            continue
        ref, got = stats(v), t["stats"]
        errs = []
        for k in ("nan", "inf", "count"):
            if got[k] != ref[k]:
                errs.append(f"{k} {got[k]} vs {ref[k]}")
        if ref["count"]:
            for k in ("min", "max", "absmax"):
                if got[k] != ref[k]:
                    errs.append(f"{k} {got[k]!r} vs {ref[k]!r}")
            scale = max(ref["std"], 1e-300)
            for k in ("mean", "std"):
                if abs(got[k] - ref[k]) > 4e-6 * scale + 1e-15 * abs(ref[k]):
                    errs.append(f"{k} {got[k]!r} vs {ref[k]!r}")
            if abs(got["kurtosis"] - ref["kurtosis"]) > 2e-5 * max(1.0, ref["kurtosis"]):
                errs.append(f"kurtosis {got['kurtosis']!r} vs {ref['kurtosis']!r}")
            if got["outliers"] != ref["outliers"]:
                errs.append(f"outliers {got['outliers']} vs {ref['outliers']}")
        if errs:
            bad += 1
            print(f"FAIL  {path}: {name}: " + "; ".join(errs))
    if n != len(rows):
        print(f"FAIL  {path}: reader saw {n} tensors, qtune {len(rows)}")
        bad += 1
    print(f"{'ok' if not bad else 'FAIL'}    {path}: {n} tensors compared with numpy")
    return bad == 0


def main():
    qtune = sys.argv[1]
    ok = all([check(qtune, p) for p in sys.argv[2:]])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
