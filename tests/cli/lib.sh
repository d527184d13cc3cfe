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

# llama.cpp itself, through llama-cpp-python from PyPI, built from source into
# build/venv-llama once (10–25 minutes on 2 cores; pip caches the built wheel,
# so later venvs reuse it). Prints the venv's python, or fails with the reason
# on stderr when it cannot be built within QTUNE_LLAMA_BUILD_TIMEOUT seconds.
LLAMA_VERSION=0.3.36
llama_python() {
    local v=build/venv-llama
    if ! "$v/bin/python" -c 'import llama_cpp, numpy' 2>/dev/null; then
        echo "installing llama-cpp-python $LLAMA_VERSION into $v (a cached wheel is reused)..." >&2
        python3 -m venv "$v" && "$v/bin/pip" install -q numpy gguf >/dev/null 2>&1
        CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
            timeout "${QTUNE_LLAMA_BUILD_TIMEOUT:-1800}" \
            "$v/bin/pip" install -q "llama-cpp-python==$LLAMA_VERSION" >"$TMPD/pip.log" 2>&1
        if ! "$v/bin/python" -c 'import llama_cpp' 2>/dev/null; then
            echo "llama-cpp-python could not be installed here:" >&2
            tail -5 "$TMPD/pip.log" >&2
            return 1
        fi
    fi
    echo "$v/bin/python"
}

# ggml's own library from that build: the oracle for byte-identical quantizers.
# Honours QTUNE_LIBGGML when set.
libggml_path() {
    if [ -n "${QTUNE_LIBGGML:-}" ]; then echo "$QTUNE_LIBGGML"; return 0; fi
    llama_python >/dev/null || return 1
    find build/venv-llama -name 'libggml-base.so' -path '*llama_cpp*' | head -1
}

# oracle_setup LABEL TOOL WHAT: the start of a script that compares a test tool's
# bytes with ggml's: exports QTUNE_LIBGGML (empty when no libggml can be had),
# needs TOOL built and the test venv (WHAT: the packages it must hold) and sets
# $py to its python; otherwise says what is missing and finishes.
oracle_setup() {
    QTUNE_LIBGGML=$(libggml_path) || QTUNE_LIBGGML=
    export QTUNE_LIBGGML
    if [ ! -x "$2" ]; then
        bad "$1: $2 missing (run make tools)"
        finish
    fi
    if ! py=$(venv_python); then
        bad "$1: no venv with $3"
        finish
    fi
}

# oracle_check SCRIPT TOOL: runs tests/py/SCRIPT on TOOL with $py, shows its
# output (kept in $TMPD/py); false, with a FAIL line, when it exits non-zero.
oracle_check() {
    QTUNE_LIBGGML=${QTUNE_LIBGGML:-} "$py" "tests/py/$1" "$2" >"$TMPD/py" 2>&1
    local rc=$?
    cat "$TMPD/py"
    [ "$rc" -eq 0 ] || { bad "$1 exited $rc"; return 1; }
}

finish() { [ "$fails" -eq 0 ]; exit $?; }
