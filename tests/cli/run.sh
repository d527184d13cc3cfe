#!/usr/bin/env bash
# Runs every tests/cli/test_*.sh from the repository root and prints a summary.
# Each script exits 0 on success; its output is shown only when it fails.
set -u
cd "$(dirname "$0")/../.."
pass=0 fail=0 skip=0
for t in tests/cli/test_*.sh; do
    name=$(basename "$t" .sh)
    log=$(mktemp)
    start=$(date +%s)
    if bash "$t" >"$log" 2>&1; then
        pass=$((pass + 1))
        note=""
        if grep -q '^skipped' "$log"; then
            # A check that could not run here said why: show it, count it.
            skip=$((skip + 1))
            note="  [$(grep -m1 '^skipped' "$log")]"
        fi
        printf 'ok    %-28s (%ss)%s\n' "$name" "$(( $(date +%s) - start ))" "$note"
    else
        fail=$((fail + 1))
        printf 'FAIL  %s\n' "$name"
        sed 's/^/    | /' "$log" | tail -60
    fi
    rm -f "$log"
done
[ "$skip" -eq 0 ] || echo "cli: $skip of the passing scripts skipped a check they could not run here"
echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
