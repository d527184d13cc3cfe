#!/usr/bin/env bash
# TUI responsiveness: replays a fixed key script against a generated model with
# 309 tensors (34 blocks) at 200x60 in tmux while previews run, with
# QTUNE_TUI_TRACE on, and reports the time from a key being read to the end of
# the redraw that follows it (median, p99). Target: median <= 16 ms, p99 <= 50 ms.
# Run from the repository root after `make qtune`; skips without tmux.
set -uo pipefail
cd "$(dirname "$0")/../.."
echo "== TUI key-to-redraw latency"
if ! command -v tmux >/dev/null 2>&1; then
    echo "skipped: tmux not found"
    exit 0
fi
if [ ! -x ./qtune ]; then
    echo "skipped: ./qtune not built (make qtune)"
    exit 0
fi
OUT=bench-out
mkdir -p "$OUT"
M=$OUT/tui-34.gguf
if [ ! -f "$M" ]; then
    echo "generating $M ..."
    ./qtune sample -o "$M" -q --layers 34 --dim 512 --ff 1408 --vocab 4096 --seed 5 || exit 1
fi
TMPD=$(mktemp -d)
TRACE=$TMPD/trace.txt
SOCK="qtune-bench-$$"
tx() { tmux -L "$SOCK" -f /dev/null "$@"; }
# QTUNE_BENCH_KEEP=FILE keeps a copy of the trace
trap 'tx kill-server 2>/dev/null; [ -n "${QTUNE_BENCH_KEEP:-}" ] && cp "$TRACE" "$QTUNE_BENCH_KEEP"
      rm -rf "$TMPD"' EXIT
PAUSE=${QTUNE_BENCH_PAUSE:-0.06}

screen_has() { tx capture-pane -p -t b | grep -qF -- "$1"; }
wait_for() {
    local i
    for ((i = 0; i < 300; i++)); do
        screen_has "$1" && return 0
        sleep 0.1
    done
    echo "bench: timeout waiting for '$1'"
    tx capture-pane -p -t b | sed 's/^/  |/'
    exit 1
}
k() { # k KEY... : one key per tmux call, a short pause after each
    local x
    for x in "$@"; do
        tx send-keys -t b "$x"
        sleep "$PAUSE"
    done
}
typ() { # typ TEXT: one character at a time
    local i
    for ((i = 0; i < ${#1}; i++)); do
        tx send-keys -t b -l -- "${1:i:1}"
        sleep "$PAUSE"
    done
}

tx new-session -d -s b -x 200 -y 60 \
    "cd '$PWD' && env TERM=xterm-256color LANG=C.UTF-8 XDG_STATE_HOME='$TMPD' \
     QTUNE_TUI_TRACE='$TRACE' ./qtune '$M' --plan '$TMPD/p.csv'; echo QTUNE-EXIT=\$?; sleep 60"
wait_for "blk.0 (9)"
# q4_k_m on every matrix: 300 previews start and run under the rest of the script
k p 4
wait_for "preset q4_k_m applied"
for round in 1 2; do
    k g j j j Enter j j j - - + j j - Tab Tab Tab Tab 1 2 3 4 1
    k j j j j j j j j j j k k k k k
    k / ; typ "blk.2$round.ffn_d"; k Enter
    k - - + n N 2 3 k k k j j j 4 1
    k G k k k k Enter g j j j j Enter
    k e e l l s s s 1
    k Space j Space - u C-r Escape
    k PageDown PageDown PageUp g
done
busy_end=$(tail -1 "$TRACE" 2>/dev/null | sed -nE 's/.*busy=([0-9]+).*/\1/p')
k q q
wait_for "QTUNE-EXIT="
uptime_s=$(uptime | sed 's/^ *//')
awk -v up="$uptime_s" -v busy_end="${busy_end:-?}" '
    /^key / {
        for (i = 1; i <= NF; i++) {
            if ($i ~ /^latency_ms=/) { sub(/latency_ms=/, "", $i); v[n++] = $i + 0 }
            if ($i ~ /^busy=/) { sub(/busy=/, "", $i); if ($i + 0 > 0) nb++ }
        }
    }
    END {
        if (n == 0) { print "no trace lines: QTUNE_TUI_TRACE not honoured?"; exit 1 }
        for (i = 1; i < n; i++) { # insertion sort: a few hundred keys
            x = v[i]; j = i - 1
            while (j >= 0 && v[j] > x) { v[j + 1] = v[j]; j-- }
            v[j + 1] = x
        }
        med = n % 2 ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
        p = int(0.99 * n + 0.999999) - 1; if (p < 0) p = 0; if (p >= n) p = n - 1
        printf "keys %d (%d while previews were queued or running; %s still queued at the end)\n",
               n, nb, busy_end
        printf "key-to-redraw latency: median %.2f ms, p99 %.2f ms, max %.2f ms\n",
               med, v[p], v[n - 1]
        printf "target median <= 16 ms: %s; p99 <= 50 ms: %s\n",
               med <= 16 ? "met" : "NOT met", v[p] <= 50 ? "met" : "NOT met"
        printf "load: %s\n", up
    }' "$TRACE"
