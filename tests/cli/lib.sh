# Helpers sourced by tests/cli/test_*.sh (run from the repository root).
QTUNE=${QTUNE:-./qtune}
MODELS=${QTUNE_MODELS:-../shared/models}
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"' EXIT
fails=0

ok()   { echo "ok    $*"; }
bad()  { echo "FAIL  $*"; fails=$((fails + 1)); }

# expect_rc WANT DESCRIPTION -- CMD...: runs CMD, checks its exit code.
expect_rc() {
    local want=$1 desc=$2; shift 3
    "$@" >"$TMPD/out" 2>"$TMPD/err"
    local rc=$?
    if [ "$rc" -eq "$want" ]; then ok "$desc (rc $rc)"; else
        bad "$desc: exit $rc, wanted $want"; sed 's/^/      /' "$TMPD/err" | head -5; fi
}

# expect_err PATTERN DESCRIPTION: the last command's stderr matches PATTERN (grep -E).
expect_err() {
    if grep -Eq "$1" "$TMPD/err"; then ok "$2"; else
        bad "$2: stderr lacks /$1/"; sed 's/^/      /' "$TMPD/err" | head -5; fi
}

# A venv with the gguf package (llama.cpp's Python reader) and numpy, made once.
venv_python() {
    local v=build/venv
    if [ ! -x "$v/bin/python" ] || ! "$v/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
        python3 -m venv "$v" >/dev/null && "$v/bin/pip" install -q gguf numpy >/dev/null 2>&1 \
            || { echo "cannot create the test venv (pip install gguf numpy)" >&2; return 1; }
    fi
    echo "$v/bin/python"
}

finish() { [ "$fails" -eq 0 ]; exit $?; }
