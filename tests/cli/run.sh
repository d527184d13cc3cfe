#!/usr/bin/env bash
# Runs every tests/cli/test_*.sh from the repository root and prints a summary.
# Each script exits 0 on success; its output is shown only when it fails.
set -u
cd "$(dirname "$0")/../.."
pass=0 fail=0 failed=()
for t in tests/cli/test_*.sh; do
    name=$(basename "$t" .sh)
    log=$(mktemp)
    start=$(date +%s)
    if bash "$t" >"$log" 2>&1; then
        pass=$((pass + 1))
        printf 'ok    %-28s (%ss)\n' "$name" "$(( $(date +%s) - start ))"
    else
        fail=$((fail + 1))
        failed+=("$name")
        printf 'FAIL  %s\n' "$name"
        sed 's/^/    | /' "$log" | tail -60
    fi
    rm -f "$log"
done
echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
