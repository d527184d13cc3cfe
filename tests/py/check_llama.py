"""Real client: llama.cpp (through llama-cpp-python) loads GGUF files written
by qtune and computes perplexity on a text of ours.

usage: check_llama.py REF.gguf QUANT.gguf TEXT [--max-rel 0.01] [--greedy IDS]

Prints the perplexity of both models over TEXT (windows of 128 tokens, each
scored after its first token) and fails when the quantized model's perplexity
differs from the reference's by more than --max-rel (relative). With --greedy,
greedy decoding from BOS with REF must give the comma-separated token ids."""
import argparse
import math
import sys

import numpy as np
from llama_cpp import Llama

CTX = 128


def load(path):
    return Llama(model_path=path, n_ctx=CTX, logits_all=True, verbose=False, n_threads=2,
                 seed=1)


def perplexity(llm, tokens):
    nll, n = 0.0, 0
    for start in range(0, len(tokens) - 1, CTX - 1):
        win = tokens[start:start + CTX]
        if len(win) < 2:
            break
        llm.reset()
        llm.eval(win)
        logits = np.asarray(llm.scores[:len(win)], dtype=np.float64)
        m = logits.max(axis=1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        for i in range(len(win) - 1):
            nll -= logp[i, win[i + 1]]
            n += 1
    return math.exp(nll / n), n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("quant")
    ap.add_argument("text")
    ap.add_argument("--max-rel", type=float, default=0.01)
    ap.add_argument("--greedy", default=None)
    a = ap.parse_args()
    text = open(a.text, encoding="utf-8").read()
    ref = load(a.ref)
    ok = True
    if a.greedy:
        want = [int(x) for x in a.greedy.split(",")]
        ref.reset()
        got, toks = [], [ref.token_bos()]
        for _ in range(len(want)):
            ref.reset()
            ref.eval(toks)
            nxt = int(np.argmax(ref.scores[len(toks) - 1]))
            got.append(nxt)
            toks.append(nxt)
        if got != want:
            print(f"FAIL  greedy decoding from BOS: {got} != {want}")
            ok = False
        else:
            print(f"ok    greedy decoding from BOS gives {','.join(map(str, got))}")
    tokens = ref.tokenize(text.encode("utf-8"), add_bos=True)
    p_ref, n = perplexity(ref, tokens)
    p_q, _ = perplexity(load(a.quant), tokens)
    rel = abs(p_q - p_ref) / p_ref
    status = "ok" if rel <= a.max_rel else "FAIL"
    ok = ok and rel <= a.max_rel
    print(f"{status:5} perplexity over {n} tokens: reference {p_ref:.4f}, quantized {p_q:.4f} "
          f"({100 * rel:.3f}% apart, limit {100 * a.max_rel:.1f}%)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
