#!/usr/bin/env bash
# seed_plan.sh CORPUS_DIR — seeds for build-fuzz/fuzz_plan: the sample plans,
# plans written by hand that reach every cell parser (quoting, regexes, groups,
# options, comments, CRLF), and a few malformed ones.
set -eu
out=${1:?usage: seed_plan.sh CORPUS_DIR}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/../.." && pwd)
for f in "$here"/samples/*.csv; do
    [ -f "$f" ] && cp "$f" "$out/sample-$(basename "$f")"
done
h='# qtune plan v1
# model: stories260K.gguf  tensors=48  fingerprint=e71a321ca02c7895
pattern,format,method,group,options'
printf '%s\n*,q4_k,rtn,,\nblk.*.attn_*,f16,rtn,,\noutput.weight,q6_k,wsearch,,\n' "$h" \
    >"$out/basic.csv"
printf '%s\n"a,b",q8_0,rtn,,\n"=x",int4,rtn,128,\n" lead ",uint3,rtn,channel,\n' "$h" \
    >"$out/quoted.csv"
printf '%s\n"q""x\ny",nf4,rtn,32,\n%s,fp8_e4m3,rtn,tensor,\n' "$h" \
    're:^blk\.[0-9]+\.ffn_(up|down)\.weight$' >"$out/regex.csv"
printf 'pattern,format,method,group,options\r\n\r\n# c\r\nout*,,keep,,\r\n*,q5_k,rtn,,' \
    >"$out/crlf.csv"
printf '%s\n*,q4_k,gptq,,damp=0.01;act_order=1\n' "$h" >"$out/gptq.csv"
printf '%s\nre:(a{9}){9},q4_k,rtn,,\n' "$h" >"$out/rxsize.csv"
printf '%s\n*,q4_k,rtn,,\n"open,q4_k,rtn,,\n' "$h" >"$out/unterminated.csv"
printf '# model: x y  tensors=?  fingerprint=?\n%s\nB*,q2_k,rtn,,\n' \
    'pattern,format,method,group,options' >"$out/model.csv"
