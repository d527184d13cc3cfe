#!/usr/bin/env bash
# qtune plan: preset -> plan file -> explain -> export through the real binary,
# checked against each other (every exported regex, as llama-quantize reads it,
# matches exactly the tensor explain shows with that type), hand-edited and
# malformed plans with their FILE:LINE:COLUMN messages, and exit codes (64 usage,
# 65 bad data, 66 cannot open, 73 cannot create).
source tests/cli/lib.sh

M=$TMPD/m.gguf # 8 layers, rows of 256: the k-quant mixture without fallbacks
expect_rc 0 "sample model" -- $QTUNE sample -q -o "$M" --layers 8 --dim 256 --ff 512 \
    --heads 4 --kv-heads 2 --vocab 512

# ---- plan -> explain -> export ----
expect_rc 0 "plan --preset q4_k_m -o" -- $QTUNE plan "$M" --preset q4_k_m -o "$TMPD/p.csv"
expect_err '^qtune plan: wrote .*p\.csv: preset q4_k_m' "one-line summary"
head -1 "$TMPD/p.csv" | grep -qx '# qtune plan v1' && ok "version line" || bad "no version line"
grep -Eq '^# model: m\.gguf  tensors=[0-9]+  fingerprint=[0-9a-f]{16}$' "$TMPD/p.csv" \
    && ok "model line" || bad "model line: $(sed -n 2p "$TMPD/p.csv")"
# 8 layers: use_more_bits = {0,3,6,7} for attn_v and ffn_down, plus output and "*"
[ "$(grep -c ',q6_k,rtn,,$' "$TMPD/p.csv")" -eq 9 ] && ok "9 q6_k rows" \
    || bad "q6_k rows: $(grep -c ',q6_k,' "$TMPD/p.csv")"
grep -qx 'blk.3.attn_v.weight,q6_k,rtn,,' "$TMPD/p.csv" && ok "blk.3.attn_v row" \
    || bad "no blk.3.attn_v row"
expect_rc 0 "plan to stdout" -- $QTUNE plan "$M" --preset=q4_k_m
cmp -s "$TMPD/out" "$TMPD/p.csv" && ok "stdout equals the file" || bad "stdout differs"

expect_rc 0 "explain" -- $QTUNE plan explain "$TMPD/p.csv" "$M"
cp "$TMPD/out" "$TMPD/explain.txt"
n=$(grep -c . "$TMPD/explain.txt")
[ "$n" -eq 76 ] && ok "explain: header + 75 tensors" || bad "explain has $n lines"
re='^blk\.3\.attn_v\.weight +128x256 +q6_k +q6_k +rtn +line [0-9]+: blk\.3\.attn_v\.weight$'
grep -Eq "$re" "$TMPD/explain.txt" && ok "explain names the deciding rule" \
    || bad "blk.3.attn_v line: $(grep 'blk.3.attn_v' "$TMPD/explain.txt")"
grep -Eq '^blk\.4\.ffn_down\.weight +256x512 +q4_k +q4_k +rtn +line 4: \*$' "$TMPD/explain.txt" \
    && ok "explain: default rule" \
    || bad "blk.4.ffn_down: $(grep 'blk.4.ffn_down' "$TMPD/explain.txt")"
re='^output_norm\.weight +256 +q4_k +f32 +keep +line 4: \* +1-D tensor: kept as F32, not q4_k$'
grep -Eq "$re" "$TMPD/explain.txt" && ok "explain: 1-D kept with a note" \
    || bad "output_norm: $(grep 'output_norm' "$TMPD/explain.txt")"
expect_err '75 tensors: 58 converted \(0 by fallback\), 17 kept; 10 rules, 0 matching' "summary"

expect_rc 0 "export" -- $QTUNE plan export "$TMPD/p.csv" "$M" --llama-quantize -o "$TMPD/types.txt"
expect_err "llama-quantize --pure --tensor-type-file $TMPD/types.txt $M $TMPD/m-qtune.gguf \
Q4_K_M" "suggested command"
[ "$(wc -l <"$TMPD/types.txt")" -eq 9 ] && ok "9 overrides" \
    || bad "overrides: $(wc -l <"$TMPD/types.txt")"
check_export() { # check_export TYPES EXPLAIN: llama-quantize semantics, against explain
    python3 - "$1" "$2" <<'PY'
import re, sys
rows = [l.split() for l in open(sys.argv[2]).read().splitlines()[1:]]
names = {r[0]: r[3] for r in rows}          # tensor -> resolved type
base = None
bad = 0
listed = set()
for tok in open(sys.argv[1]).read().split():  # llama-quantize: whitespace-separated
    pat, typ = tok.split("=", 1)              # ... the first '=' splits
    pat = pat.lower()                         # ... and the name is lower-cased
    hits = [n for n in names if re.search(pat, n)]
    if len(hits) != 1 or names[hits[0]] != typ:
        print("bad override", tok, hits); bad += 1
    listed.update(hits)
others = {names[n] for n in names if n not in listed and not n.endswith("norm.weight")}
if len(others) > 1:
    print("more than one type left for the base:", others); bad += 1
sys.exit(1 if bad else 0)
PY
}
check_export "$TMPD/types.txt" "$TMPD/explain.txt" \
    && ok "each override matches one tensor, as explained" || bad "export and explain disagree"

# A hand edit: a later rule wins, and export follows it.
cp "$TMPD/p.csv" "$TMPD/e.csv"
printf 'blk.1.ffn_*,q8_0,rtn,,\n"re:^blk\\.1\\.ffn_up\\.",f16,rtn,,\n' >>"$TMPD/e.csv"
expect_rc 0 "explain edited" -- $QTUNE plan explain "$TMPD/e.csv" "$M"
cp "$TMPD/out" "$TMPD/explain2.txt"
re='^blk\.1\.ffn_gate\.weight .* q8_0 +q8_0 +rtn +line 14: blk\.1\.ffn_\*$'
grep -Eq "$re" "$TMPD/explain2.txt" && ok "glob rule wins" \
    || bad "ffn_gate: $(grep 'blk.1.ffn_gate' "$TMPD/explain2.txt")"
grep -Eq '^blk\.1\.ffn_up\.weight .* f16 +f16 +rtn +line 15: re:' "$TMPD/explain2.txt" \
    && ok "last (regex) rule wins" || bad "ffn_up: $(grep 'blk.1.ffn_up' "$TMPD/explain2.txt")"
expect_rc 0 "export edited (stdout)" -- $QTUNE plan export "$TMPD/e.csv" "$M" --llama-quantize
cp "$TMPD/out" "$TMPD/types2.txt"
grep -Fqx '^blk\.1\.ffn_up\.weight$=f16' "$TMPD/types2.txt" && ok "export has the f16 override" \
    || bad "no f16 override: $(cat "$TMPD/types2.txt")"
check_export "$TMPD/types2.txt" "$TMPD/explain2.txt" && ok "edited export matches explain" \
    || bad "edited export and explain disagree"

# Every preset makes a plan that explains cleanly under --strict.
for p in $($QTUNE plan --list-presets | awk '{print $1}'); do
    $QTUNE plan "$M" --preset "$p" -o "$TMPD/$p.csv" 2>/dev/null \
        && $QTUNE plan explain "$TMPD/$p.csv" "$M" --strict >/dev/null 2>&1 \
        && ok "preset $p" || bad "preset $p"
done
[ "$($QTUNE plan --list-presets | wc -l)" -eq 6 ] && ok "6 presets listed" || bad "preset list"

# ---- fingerprints, unmatched rules ----
expect_rc 0 "second model" -- $QTUNE sample -q -o "$TMPD/m2.gguf" --layers 2 --dim 256 --ff 512
expect_rc 65 "plan for another model" -- $QTUNE plan explain "$TMPD/p.csv" "$TMPD/m2.gguf"
expect_err 'p\.csv: made for another model \(m\.gguf, fingerprint [0-9a-f]{16}\).*use --force' \
    "fingerprint message"
expect_rc 65 "export refuses too" -- \
    $QTUNE plan export "$TMPD/p.csv" "$TMPD/m2.gguf" --llama-quantize
expect_rc 0 "--force" -- $QTUNE plan explain "$TMPD/p.csv" "$TMPD/m2.gguf" --force
expect_err 'warning: .*p\.csv was made for another model' "--force warns"
expect_err "p\.csv:[0-9]+: rule 'blk\.7\.attn_v\.weight' matches no tensor" "unmatched rule warned"
expect_rc 65 "--strict: unmatched rules fail" -- \
    $QTUNE plan explain "$TMPD/p.csv" "$TMPD/m2.gguf" --force --strict
expect_err "p\.csv:[0-9]+: rule 'blk\.3\.attn_v\.weight' matches no tensor \(--strict\)" \
    "--strict message"

# ---- malformed plans: FILE:LINE:COLUMN, exit 65 ----
H='# qtune plan v1
pattern,format,method,group,options'
bad_plan() { # bad_plan NAME BODY PATTERN
    printf '%s\n%b' "$H" "$2" >"$TMPD/$1.csv"
    expect_rc 65 "malformed: $1" -- $QTUNE plan explain "$TMPD/$1.csv" "$M"
    expect_err "^qtune: $TMPD/$1\\.csv:$3" "message: $1"
}
bad_plan columns '*,q4_k,rtn,\n' '3:12: row has 4 columns, expected 5'
bad_plan columns6 '*,q4_k,rtn,,,x\n' '3:14: row has 6 columns, expected 5'
bad_plan quote 'bl"k,q4_k,rtn,,\n' '3:3: bad quoting: a quote inside an unquoted cell'
bad_plan closing '"blk"x,q4_k,rtn,,\n' '3:6: bad quoting: text after the closing quote'
bad_plan unterminated '*,q4_k,rtn,,\n"blk,q4_k,rtn,,\n' '4:1: unterminated quoted cell'
bad_plan format '*,q4_q,rtn,,\n' "3:3: unknown format 'q4_q'"
bad_plan method '*,q4_k,fast,,\n' "3:8: unknown method 'fast'"
bad_plan gptq '*,q4_k,gptq,,\n' "3:8: method 'gptq' is not available yet"
bad_plan group '*,int4,rtn,0,\n' '3:12: group 0 is out of range'
bad_plan groupnan '*,int4,rtn,big,\n' "3:12: group 'big' is not a number"
bad_plan groupfixed '*,q4_k,rtn,64,\n' '3:12: q4_k fixes its blocks'
bad_plan option '*,q4_k,rtn,,damp=0.01\n' "3:13: unknown option 'damp' for method rtn"
bad_plan regex 're:(blk,q4_k,rtn,,\n' "3:1: invalid regular expression '\\(blk'"
bad_plan empty ',q4_k,rtn,,\n' '3:1: empty pattern'
printf '*,q4_k,rtn,,\n' >"$TMPD/nohdr.csv"
expect_rc 65 "missing header row" -- $QTUNE plan explain "$TMPD/nohdr.csv" "$M"
expect_err 'nohdr\.csv:1:1: expected the header row' "header row message"
printf '%s\n*,q8_0,rtn,,\nblk.0.attn_q.weight,int4,rtn,64,\n' "$H" >"$TMPD/grid.csv"
expect_rc 0 "int4 explains" -- $QTUNE plan explain "$TMPD/grid.csv" "$M"
expect_rc 64 "int4 cannot be exported" -- \
    $QTUNE plan export "$TMPD/grid.csv" "$M" --llama-quantize -o "$TMPD/grid.txt"
expect_err 'blk\.0\.attn_q\.weight: format int4 has no llama-quantize type' "export message"
[ ! -e "$TMPD/grid.txt" ] && [ -z "$(ls -A "$TMPD" | grep '^\.')" ] \
    && ok "nothing left behind" || bad "a file was left: $(ls -A "$TMPD")"

# ---- usage (64), cannot open (66), cannot create (73) ----
expect_rc 64 "no arguments" -- $QTUNE plan
expect_rc 64 "no preset" -- $QTUNE plan "$M"
expect_rc 64 "unknown preset" -- $QTUNE plan "$M" --preset q9_k
expect_err "unknown preset 'q9_k'" "unknown preset message"
expect_rc 64 "unknown option" -- $QTUNE plan "$M" --preset q8_0 --frobnicate
expect_rc 64 "option of another subcommand" -- $QTUNE plan explain "$TMPD/p.csv" "$M" --preset x
expect_rc 64 "explain without model" -- $QTUNE plan explain "$TMPD/p.csv"
expect_rc 64 "export without --llama-quantize" -- $QTUNE plan export "$TMPD/p.csv" "$M"
expect_rc 64 "--target-bpw not yet" -- $QTUNE plan "$M" --target-bpw 4.5
expect_rc 0 "--help" -- $QTUNE plan --help
expect_rc 66 "missing plan" -- $QTUNE plan explain "$TMPD/none.csv" "$M"
expect_rc 66 "missing model" -- $QTUNE plan explain "$TMPD/p.csv" "$TMPD/none.gguf"
expect_rc 66 "missing model (make)" -- $QTUNE plan "$TMPD/none.gguf" --preset q8_0
expect_rc 73 "cannot create plan" -- $QTUNE plan "$M" --preset q8_0 -o "$TMPD/no/dir/p.csv"
expect_rc 73 "cannot create types" -- \
    $QTUNE plan export "$TMPD/p.csv" "$M" --llama-quantize -o "$TMPD/no/dir/t.txt"

# ---- the real stories260K: fallbacks (rows of 64 and 172) ----
S=$MODELS/stories260K.gguf
if [ -f "$S" ]; then
    expect_rc 0 "stories q8_0" -- $QTUNE plan "$S" --preset q8_0 -o "$TMPD/s.csv"
    expect_rc 0 "stories explain" -- $QTUNE plan explain "$TMPD/s.csv" "$S"
    re='^blk\.0\.ffn_down\.weight +64x172 +q8_0 +f16 +rtn +line 4: \* +'
    re+='row length 172 is not a multiple of 32 \(q8_0\): f16'
    grep -Eq "$re" "$TMPD/out" && ok "ffn_down falls back to f16" \
        || bad "ffn_down: $(grep 'blk.0.ffn_down' "$TMPD/out")"
    expect_rc 0 "stories export" -- $QTUNE plan export "$TMPD/s.csv" "$S" --llama-quantize
    [ "$(grep -c '=f16$' "$TMPD/out")" -eq 5 ] && ok "5 f16 overrides" \
        || bad "stories overrides: $(cat "$TMPD/out")"
    expect_err 'Q8_0$' "base Q8_0"
    H2=$MODELS/stories260K-hf
    if [ -d "$H2" ]; then
        expect_rc 0 "HF export" -- $QTUNE plan export "$TMPD/s.csv" "$H2" --llama-quantize --force
        grep -Fqx '^blk\.0\.ffn_down\.weight$=f16' "$TMPD/out" \
            && ok "HF export uses GGUF names" || bad "HF export: $(head -3 "$TMPD/out")"
        expect_err 'convert .* to GGUF first' "HF export says to convert"
    fi
else
    ok "skip stories260K checks: $S not found"
fi

finish
