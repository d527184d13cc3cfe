"""Independent check of a model written by `qtune sample`, read with llama.cpp's
own Python reader (the `gguf` package).

usage: check_sample.py MODEL.gguf [--dim N --layers N --ff N --heads N
                                   --kv-heads N --vocab N --ctx N --seed N --dtype f16|f32]

Checks: every metadata key llama.cpp's llama loader needs is present with the
type llama.cpp writes; hyperparameters equal the expected ones given on the
command line; tokenizer arrays have vocab entries (<unk> <s> </s>, 256 byte
tokens, unique word pieces with descending scores); tensors are exactly
llama.cpp's names, order, shapes (GGUF ne = [cols, rows]) and types; values are
finite, centred, heavy-tailed, with planted outlier columns; norms near 1.
Prints one ok/FAIL line per check; exits 1 if any failed, 2 on a crash."""
import argparse
import sys

import numpy as np

fails = 0


def check(cond, what, detail=""):
    global fails
    if cond:
        print(f"ok    {what}")
    else:
        fails += 1
        print(f"FAIL  {what}" + (f": {detail}" if detail else ""))
    return cond


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    for k in ("dim", "layers", "ff", "heads", "kv-heads", "vocab", "ctx", "seed"):
        ap.add_argument("--" + k, type=int)
    ap.add_argument("--dtype", choices=("f16", "f32"))
    a = ap.parse_args()

    import gguf
    from gguf import GGUFValueType as VT

    r = gguf.GGUFReader(a.model)
    fields = r.fields

    def field(key, vtype, sub=None):
        f = fields.get(key)
        if f is None:
            check(False, f"key {key}", "missing")
            return None
        want = [vtype] if sub is None else [vtype, sub]
        if not check(list(f.types) == want, f"key {key} type",
                     f"{[t.name for t in f.types]} != {[t.name for t in want]}"):
            return None
        return f.contents()

    arch = field("general.architecture", VT.STRING)
    check(arch == "llama", "general.architecture is llama", repr(arch))
    name = field("general.name", VT.STRING)
    check(bool(name), "general.name set", repr(name))
    check(field("qtune.generator", VT.STRING) == "qtune sample", "qtune.generator")
    seed_f = fields.get("qtune.seed")
    check(seed_f is not None and seed_f.types[0] in (VT.UINT32, VT.UINT64), "qtune.seed u32/u64")

    u32 = {}
    for key in ("general.file_type", "llama.context_length", "llama.embedding_length",
                "llama.block_count", "llama.feed_forward_length", "llama.rope.dimension_count",
                "llama.attention.head_count", "llama.attention.head_count_kv",
                "llama.vocab_size", "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        u32[key] = field(key, VT.UINT32)
    eps = field("llama.attention.layer_norm_rms_epsilon", VT.FLOAT32)
    check(eps is not None and abs(eps - 1e-5) < 1e-9, "rms epsilon 1e-5", repr(eps))
    base = field("llama.rope.freq_base", VT.FLOAT32)
    check(base == 10000.0, "rope freq_base 10000", repr(base))
    check(field("tokenizer.ggml.model", VT.STRING) == "llama", "tokenizer.ggml.model llama")
    check(u32["tokenizer.ggml.unknown_token_id"] == 0, "unk id 0")
    check(u32["tokenizer.ggml.bos_token_id"] == 1, "bos id 1")
    check(u32["tokenizer.ggml.eos_token_id"] == 2, "eos id 2")
    align = fields.get("general.alignment")
    check(align is None or align.contents() == 32, "alignment default 32")
    if fails:
        return

    dim = u32["llama.embedding_length"]
    layers = u32["llama.block_count"]
    ff = u32["llama.feed_forward_length"]
    heads = u32["llama.attention.head_count"]
    kvh = u32["llama.attention.head_count_kv"]
    vocab = u32["llama.vocab_size"]
    ctx = u32["llama.context_length"]
    expect = {"dim": dim, "layers": layers, "ff": ff, "heads": heads, "kv_heads": kvh,
              "vocab": vocab, "ctx": ctx}
    for k, v in expect.items():
        want = getattr(a, k)
        if want is not None:
            check(v == want, f"{k} = {want}", f"file has {v}")
    if a.seed is not None:
        check(seed_f.contents() == a.seed, f"qtune.seed = {a.seed}", repr(seed_f.contents()))
    check(dim % heads == 0 and heads % kvh == 0, "heads divide dim, kv-heads divide heads")
    check(u32["llama.rope.dimension_count"] == dim // heads, "rope dimension = dim / heads")
    ftype = u32["general.file_type"]
    if a.dtype is not None:
        check(ftype == (1 if a.dtype == "f16" else 0), f"file_type for {a.dtype}", repr(ftype))
    check(ftype in (0, 1), "file_type 0 (F32) or 1 (F16)", repr(ftype))
    mat_type = "F16" if ftype == 1 else "F32"

    tokens = field("tokenizer.ggml.tokens", VT.ARRAY, VT.STRING)
    scores = field("tokenizer.ggml.scores", VT.ARRAY, VT.FLOAT32)
    ttype = field("tokenizer.ggml.token_type", VT.ARRAY, VT.INT32)
    if tokens is None or scores is None or ttype is None:
        return
    check(len(tokens) == len(scores) == len(ttype) == vocab,
          f"token arrays have vocab = {vocab} entries",
          f"{len(tokens)} {len(scores)} {len(ttype)}")
    check(tokens[:3] == ["<unk>", "<s>", "</s>"], "control tokens", repr(tokens[:3]))
    check(tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)], "256 byte tokens")
    check(len(set(tokens)) == len(tokens), "tokens unique")
    want_types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)
    check(list(ttype) == want_types, "token types unk=2 control=3 byte=6 normal=1")
    sc = np.asarray(scores[259:], dtype=np.float64)
    check(np.all(np.diff(sc) < 0), "word-piece scores strictly descending")
    check("\u2581the" in tokens[259:], "word pieces with the SentencePiece space mark")

    # Tensors: llama.cpp names and order; ne = [cols, rows].
    kv_dim = dim // heads * kvh
    want = [("token_embd.weight", [dim, vocab], mat_type)]
    for i in range(layers):
        p = f"blk.{i}."
        want += [(p + "attn_norm.weight", [dim], "F32"),
                 (p + "attn_q.weight", [dim, dim], mat_type),
                 (p + "attn_k.weight", [dim, kv_dim], mat_type),
                 (p + "attn_v.weight", [dim, kv_dim], mat_type),
                 (p + "attn_output.weight", [dim, dim], mat_type),
                 (p + "ffn_norm.weight", [dim], "F32"),
                 (p + "ffn_gate.weight", [dim, ff], mat_type),
                 (p + "ffn_up.weight", [dim, ff], mat_type),
                 (p + "ffn_down.weight", [ff, dim], mat_type)]
    want += [("output_norm.weight", [dim], "F32"), ("output.weight", [dim, vocab], mat_type)]
    got = [(t.name, [int(x) for x in t.shape], t.tensor_type.name) for t in r.tensors]
    check([g[0] for g in got] == [w[0] for w in want], f"{len(want)} tensors in llama.cpp order",
          f"got {len(got)}")
    bad = [f"{g} != {w}" for g, w in zip(got, want) if g != w]
    check(not bad, "tensor shapes and types", "; ".join(bad[:3]))
    if bad:
        return

    nonfinite = []
    norms_ok = True
    stats = []
    for t in r.tensors:
        x = np.asarray(t.data, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            nonfinite.append(t.name)
            continue
        if t.name.endswith("norm.weight"):
            norms_ok &= 0.9 < float(np.median(x)) < 1.1 and float(x.min()) > 0
            continue
        x = x.reshape(int(t.shape[1]), int(t.shape[0]))
        stats.append((t.name, x))
    check(not nonfinite, "all values finite", ", ".join(nonfinite[:3]))
    check(norms_ok, "norm weights near 1")

    # Heavy tails and outlier columns, on the matrices with enough rows.
    tail_ok, outl_ok, mean_ok = [], [], []
    for nm, x in stats:
        rows, cols = x.shape
        if rows < 64 or cols < 64:
            continue
        col_rms = np.sqrt((x ** 2).mean(axis=0))
        med = np.median(col_rms)
        top = np.sort(col_rms)[::-1]
        outl_ok.append(top[3] > 4 * med and top[4] < 3 * med)
        keep = col_rms < 3 * med
        y = x[:, keep]
        y = y / np.sqrt((y ** 2).mean(axis=1, keepdims=True))
        v = y.ravel()
        mean_ok.append(abs(v.mean()) < 5 / np.sqrt(v.size) + 1e-3)
        k = ((v - v.mean()) ** 4).mean() / v.var() ** 2
        tail_ok.append(k > 4.0)
    n = len(outl_ok)
    check(n > 0 and all(outl_ok), f"4 planted outlier columns in each of {n} matrices",
          f"{outl_ok.count(False)} without")
    check(n > 0 and all(mean_ok), "matrix values centred on 0")
    check(n > 0 and all(tail_ok), "heavy tails: kurtosis > 4 (t_5) in every matrix",
          f"{tail_ok.count(False)} light-tailed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash is a failure, not a pass
        print(f"FAIL  check_sample crashed: {type(e).__name__}: {e}")
        sys.exit(2)
    print(f"check_sample: {'FAIL' if fails else 'ok'} ({fails} failed)")
    sys.exit(1 if fails else 0)
