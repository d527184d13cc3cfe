"""gguf_same.py A.gguf B.gguf: exit 0 when the two GGUF files hold the same
metadata (except qtune.plan and qtune.plan.fingerprint, which record the plan
text each was made from) and the same tensors: names, order, types, shapes and
data bytes. Prints the first difference otherwise (exit 1)."""
import sys

import numpy as np
from gguf import GGUFReader

SKIP = {"qtune.plan", "qtune.plan.fingerprint"}


def fields(r):
    out = {}
    for k, f in r.fields.items():
        if k in SKIP or k.startswith("GGUF."):
            continue
        out[k] = b"".join(bytes(np.asarray(p).tobytes()) for p in f.parts)
    return out


def main():
    a, b = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2])
    fa, fb = fields(a), fields(b)
    if fa.keys() != fb.keys():
        print("metadata keys differ:", sorted(set(fa) ^ set(fb)))
        return 1
    for k in fa:
        if fa[k] != fb[k]:
            print("metadata value differs:", k)
            return 1
    if len(a.tensors) != len(b.tensors):
        print("tensor counts differ: %d vs %d" % (len(a.tensors), len(b.tensors)))
        return 1
    for x, y in zip(a.tensors, b.tensors):
        if x.name != y.name or x.tensor_type != y.tensor_type or \
                list(x.shape) != list(y.shape):
            print("tensor differs in name/type/shape:", x.name, y.name)
            return 1
        if np.asarray(x.data).tobytes() != np.asarray(y.data).tobytes():
            print("tensor data differs:", x.name)
            return 1
    print("same: %d tensors, %d metadata keys" % (len(a.tensors), len(fa)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
