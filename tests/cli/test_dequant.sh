#!/usr/bin/env bash
# test_dequant.sh — qtune's dequantizers (the scalar references and the fast ones)
# against the gguf Python package.
#
# Run from the repository root after `make tools`. Creates build/venv (gguf + numpy)
# on first use, then runs tests/py/check_dequant.py on build/tests/tool_dequant:
# one ok/FAIL line per type; exit status non-zero on any mismatch or setup failure.
set -u

venv=build/venv
tool=build/tests/tool_dequant

if [ ! -x "$tool" ]; then
    echo "FAIL dequant: $tool missing (run make tools)"
    exit 1
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
    rm -rf "$venv"
    if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q gguf numpy; }; then
        rm -rf "$venv"  # half-made: retry from scratch next time
        echo "FAIL dequant: cannot create $venv with gguf and numpy"
        exit 1
    fi
fi
# the scalar references, then the dequantizers qtune runs here (SIMD)
"$venv/bin/python" tests/py/check_dequant.py "$tool" &&
    "$venv/bin/python" tests/py/check_dequant.py "$tool" --fast
