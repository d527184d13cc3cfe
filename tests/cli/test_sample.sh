#!/usr/bin/env bash
# qtune sample: default and custom models checked with llama.cpp's gguf reader
# (tests/py/check_sample.py), byte-identical output for a seed whatever the
# thread count, usage errors (exit 64), and nothing left behind on failure.
source tests/cli/lib.sh

if ! py=$(venv_python); then
    bad "no venv with gguf+numpy"
    finish
fi

# Default model: the one `make run` uses.
expect_rc 0 "sample with defaults" -- $QTUNE sample -o "$TMPD/s.gguf"
expect_err '^qtune sample: wrote .*s\.gguf: llama, dim 256, 4 layers' "one-line summary"
[ "$(wc -l <"$TMPD/err")" -eq 1 ] && ok "summary is one line" || bad "stderr has $(wc -l <"$TMPD/err") lines"
[ ! -s "$TMPD/out" ] && ok "nothing on stdout" || bad "stdout not empty"
$py tests/py/check_sample.py "$TMPD/s.gguf" --dim 256 --layers 4 --ff 768 --heads 8 \
    --kv-heads 4 --vocab 1024 --ctx 2048 --seed 42 --dtype f16 >"$TMPD/py" 2>&1 \
    && ok "default model passes check_sample.py" \
    || { bad "default model fails check_sample.py"; grep -v '^ok' "$TMPD/py" | head -20; }

# Custom shapes, F32, GQA 8:1, a vocabulary past the built-in word list.
expect_rc 0 "sample custom f32" -- $QTUNE sample -o "$TMPD/c.gguf" --dim 512 --layers 2 \
    --ff 1536 --heads 16 --kv-heads 2 --vocab 3000 --ctx 4096 --seed 9 --dtype f32
$py tests/py/check_sample.py "$TMPD/c.gguf" --dim 512 --layers 2 --ff 1536 --heads 16 \
    --kv-heads 2 --vocab 3000 --ctx 4096 --seed 9 --dtype f32 >"$TMPD/py" 2>&1 \
    && ok "custom model passes check_sample.py" \
    || { bad "custom model fails check_sample.py"; grep -v '^ok' "$TMPD/py" | head -20; }

# The checker can fail: a wrong expectation is caught.
if $py tests/py/check_sample.py "$TMPD/c.gguf" --dim 256 >/dev/null 2>&1; then
    bad "check_sample.py accepted a wrong --dim"
else
    ok "check_sample.py rejects a wrong expectation"
fi

# Determinism: same seed -> same bytes, whatever OMP_NUM_THREADS; new seed differs.
args=(--dim 256 --layers 1 --ff 512 --vocab 8192 --seed 5 -q)
OMP_NUM_THREADS=1 $QTUNE sample -o "$TMPD/t1.gguf" "${args[@]}"
OMP_NUM_THREADS=2 $QTUNE sample -o "$TMPD/t2.gguf" "${args[@]}"
OMP_NUM_THREADS=3 $QTUNE sample -o "$TMPD/t3.gguf" "${args[@]}"
cmp -s "$TMPD/t1.gguf" "$TMPD/t2.gguf" && cmp -s "$TMPD/t1.gguf" "$TMPD/t3.gguf" \
    && ok "identical bytes with 1, 2, 3 threads" || bad "output depends on the thread count"
$QTUNE sample -o "$TMPD/t4.gguf" --dim 256 --layers 1 --ff 512 --vocab 8192 --seed 6 -q
cmp -s "$TMPD/t1.gguf" "$TMPD/t4.gguf" && bad "seeds 5 and 6 gave the same file" \
    || ok "a different seed gives a different file"
expect_rc 0 "--quiet prints nothing" -- $QTUNE sample -q -o "$TMPD/q.gguf"
[ ! -s "$TMPD/err" ] && ok "quiet stderr empty" || bad "quiet printed: $(head -1 "$TMPD/err")"

# Usage errors: exit 64 with a message, nothing written.
expect_rc 64 "no -o" -- $QTUNE sample
expect_err 'qtune: sample: -o FILE is required' "message for missing -o"
expect_err '^usage: qtune sample' "usage after the error"
expect_rc 64 "dim not divisible by heads" -- $QTUNE sample -o "$TMPD/u.gguf" --dim 100
expect_err 'dim 100 is not divisible by heads 8' "message names dim and heads"
expect_rc 64 "heads not divisible by kv-heads" -- $QTUNE sample -o "$TMPD/u.gguf" --kv-heads 3
expect_err 'not divisible by kv-heads 3' "message names kv-heads"
expect_rc 64 "vocab too small" -- $QTUNE sample -o "$TMPD/u.gguf" --vocab 100
expect_err 'vocab must be 259\.\.' "message gives the vocab range"
expect_rc 64 "negative number" -- $QTUNE sample -o "$TMPD/u.gguf" --layers -1
expect_rc 64 "not a number" -- $QTUNE sample -o "$TMPD/u.gguf" --dim 12x
expect_err "sample: .-dim: '12x'" "message quotes the bad value"
expect_rc 64 "huge number" -- $QTUNE sample -o "$TMPD/u.gguf" --vocab 99999999999999999999999
expect_rc 64 "model too large" -- $QTUNE sample -o "$TMPD/u.gguf" --dim 65536 --ff 262144 \
    --layers 1024 --heads 64 --kv-heads 8
expect_err 'too large' "message says too large"
expect_rc 64 "bad dtype" -- $QTUNE sample -o "$TMPD/u.gguf" --dtype q4_k
expect_rc 64 "unknown option" -- $QTUNE sample -o "$TMPD/u.gguf" --bogus
expect_err "unknown option '--bogus'" "message names the option"
expect_rc 64 "missing option value" -- $QTUNE sample -o "$TMPD/u.gguf" --dim
expect_rc 64 "stray argument" -- $QTUNE sample -o "$TMPD/u.gguf" extra
[ ! -e "$TMPD/u.gguf" ] && ok "no file after usage errors" || bad "usage error wrote a file"
expect_rc 0 "--help" -- $QTUNE sample --help
grep -q -- '--kv-heads' "$TMPD/out" && ok "help lists the options" || bad "help incomplete"

# Cannot create: exit 73, nothing left in the directory (atomic write).
before=$(ls -A "$TMPD" | wc -l)
expect_rc 73 "output directory missing" -- $QTUNE sample -o "$TMPD/no/such/dir/x.gguf"
chmod 0555 "$TMPD" 2>/dev/null
if [ "$(id -u)" -ne 0 ]; then
    expect_rc 73 "read-only directory" -- $QTUNE sample -o "$TMPD/ro.gguf"
fi
chmod 0755 "$TMPD"
# ls -A sees dot files too, so a left-over temporary file would count.
[ "$(ls -A "$TMPD" | wc -l)" -eq "$before" ] \
    && ok "failed writes leave nothing behind" || bad "files left: $(ls -A "$TMPD")"
# An existing file is replaced only by a complete new one.
cp "$TMPD/s.gguf" "$TMPD/keep.gguf"
expect_rc 64 "bad run over an existing file" -- $QTUNE sample -o "$TMPD/keep.gguf" --dim 7
cmp -s "$TMPD/s.gguf" "$TMPD/keep.gguf" && ok "existing file untouched" || bad "existing file changed"

finish
