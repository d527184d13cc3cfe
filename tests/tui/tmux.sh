# tests/tui/tmux.sh — helpers for driving the qtune TUI in a private tmux server.
# Sourced by tests/cli/test_tui.sh after tests/cli/lib.sh (ok, bad, TMPD).
# Every check polls capture-pane until the expected text appears or a timeout
# passes: assertions are on screen text, never on timing.

TUI_SOCK="qtune-test-$$"
TUI_TIMEOUT=${QTUNE_TUI_TIMEOUT:-20}

tx() { tmux -L "$TUI_SOCK" -f /dev/null "$@"; }

# A session that lives as long as the test, so the server never exits between
# sessions (a new session racing a dying server fails).
tui_init() { tx new-session -d -s keepalive -x 80 -y 24 "sleep 3600"; }

# tui_start NAME COLS ROWS ENV-ASSIGNMENTS -- ARGS...: runs ./qtune ARGS in a new
# detached session; the pane prints QTUNE-EXIT=<code> when qtune ends.
tui_start() {
    local name=$1 cols=$2 rows=$3 envs=$4; shift 5
    local q; q=$(printf '%q ' "$@")
    tx new-session -d -s "$name" -x "$cols" -y "$rows" \
        "cd '$PWD' && env $envs $QTUNE $q; echo QTUNE-EXIT=\$?; sleep 600"
}

tui_screen() { tx capture-pane -p -t "$1"; }

# tui_wait NAME TEXT [DESCRIPTION]: passes when TEXT (fixed string) is on screen.
tui_wait() {
    local name=$1 text=$2 desc=${3:-"screen shows '$2'"} i
    for ((i = 0; i < TUI_TIMEOUT * 10; i++)); do
        if tui_screen "$name" | grep -qF -- "$text"; then ok "$desc"; return 0; fi
        sleep 0.1
    done
    bad "$desc (timeout)"
    tui_screen "$name" | sed 's/^/      |/'
    return 1
}

# tui_wait_re NAME REGEX [DESCRIPTION]: same with an extended regex.
tui_wait_re() {
    local name=$1 re=$2 desc=${3:-"screen matches /$2/"} i
    for ((i = 0; i < TUI_TIMEOUT * 10; i++)); do
        if tui_screen "$name" | grep -qE -- "$re"; then ok "$desc"; return 0; fi
        sleep 0.1
    done
    bad "$desc (timeout)"
    tui_screen "$name" | sed 's/^/      |/'
    return 1
}

# tui_keys NAME KEY...: sends keys one at a time (tmux key names: Enter, C-r).
tui_keys() {
    local name=$1 k; shift
    for k in "$@"; do tx send-keys -t "$name" "$k"; done
}

# tui_type NAME TEXT: sends TEXT literally.
tui_type() { tx send-keys -t "$1" -l -- "$2"; }

tui_kill() { tx kill-session -t "$1" 2>/dev/null; }
tui_cleanup() { tx kill-server 2>/dev/null; }
