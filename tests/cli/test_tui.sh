#!/usr/bin/env bash
# The interactive view, driven through tmux: open a model, navigate, fold,
# search, step formats, watch the error column and the status line change,
# undo/redo, save the plan, then `qtune apply` it. Several sizes, TERMs and
# locales; a dropped session's recovery file; the too-small-terminal notice.
set -u
. tests/cli/lib.sh
if ! command -v tmux >/dev/null 2>&1; then
    echo "skipped: tmux not found"
    exit 0
fi
. tests/tui/tmux.sh
trap 'tui_cleanup; rm -rf "$TMPD"' EXIT
tui_init

STORIES=$MODELS/stories260K.gguf
UTF=C.UTF-8
# same_model A B DESC: the two applied models hold byte-identical tensors and
# metadata, apart from qtune.plan / qtune.plan.fingerprint (the plan text each
# was made from, recorded by apply).
same_model() {
    local out py
    if ! py=$(venv_python 2>/dev/null); then
        echo "skipped: $3 (no gguf/numpy venv)"
        return 0
    fi
    if out=$("$py" tests/tui/gguf_same.py "$1" "$2" 2>&1); then ok "$3: $out"
    else bad "$3: $out"; fi
}
ST=$TMPD/state # XDG_STATE_HOME: history and recovery files stay in the test
mkdir -p "$ST"

# ---- 1. stories260K at 80x24, xterm-256color, UTF-8 ----
if [ -f "$STORIES" ]; then
    P1=$TMPD/s.csv
    tui_start a 80 24 "TERM=xterm-256color LANG=$UTF XDG_STATE_HOME=$ST" -- "$STORIES" --plan "$P1"
    tui_wait a "stories260K.gguf" "80x24: title shows the model"
    tui_wait a "▸ blk.0 (9)" "80x24: blocks start folded (UTF-8 glyph)"
    tui_wait a "1.12 MiB → 1.12 MiB" "status line: size now -> after plan"
    tui_wait a "? help" "key-hint footer"
    # fold / unfold with Enter on a block row (rows: token_embd, output_norm, output, blk.0)
    tui_keys a j j j Enter
    tui_wait a "▾ blk.0 (9)" "Enter unfolds blk.0"
    tui_wait_re a "^ attn_q\.weight" "blk.0's tensors are listed under it"
    tui_keys a Enter
    tui_wait a "▸ blk.0 (9)" "Enter folds it again"
    # search unfolds the block and selects the tensor
    tui_keys a /; tui_type a "blk.2.ffn_up"; tui_keys a Enter
    tui_wait a "/blk.2.ffn_up: blk.2.ffn_up.weight" "/ finds blk.2.ffn_up.weight"
    tui_wait a "▾ blk.2 (9)" "search unfolds blk.2"
    # two steps down the ladder: f32 -> f16 -> q8_0; the error column fills in
    tui_keys a -
    tui_wait_re a "ffn_up\.weight +f16 .*dB" "- plans f16, the error column shows SQNR"
    tui_keys a -
    tui_wait_re a "ffn_up\.weight +q8_0 +8\.50 +[0-9.]+dB" "- again plans q8_0 (8.50 bpw, SQNR)"
    tui_wait_re a "1\.12 MiB → 1\.(0[0-9]|1[01]) MiB .*err [0-9.]+% .*\[\+\]" \
        "status line: smaller size, error, unsaved [+]"
    tui_keys a e
    tui_wait_re a "ffn_up\.weight +q8_0 +8\.50 +[0-9.]+%" "e shows relative RMSE instead"
    tui_keys a e
    # what-if table on the Error tab, Info tab with the deciding rule
    tui_keys a 3
    tui_wait_re a "q5_0 +5\.50 +[0-9.]+% +[0-9.]+" "Error tab: what-if rows fill in"
    tui_wait a "n/a (row)" "Error tab: k-quants do not fit 64-column rows"
    tui_keys a 4
    tui_wait a "rule   #1 blk.2.ffn_up.weight" "Info tab: the deciding rule"
    tui_keys a 1
    tui_wait a "typical block grid" "Histogram tab: grid of a typical block"
    # undo / redo
    tui_keys a u
    tui_wait_re a "ffn_up\.weight +f16 " "u undoes to f16"
    tui_keys a C-r
    tui_wait_re a "ffn_up\.weight +q8_0 " "Ctrl-R redoes q8_0"
    # q asks when unsaved; c cancels
    tui_keys a q
    tui_wait a "unsaved plan: (w)rite and quit" "q asks about the unsaved plan"
    tui_keys a c
    tui_wait a "quit cancelled" "c cancels the quit"
    tui_keys a w
    tui_wait a "plan saved to" "w saves the plan"
    tui_keys a q
    tui_wait a "QTUNE-EXIT=0" "q quits (exit 0) once saved"
    if grep -q "blk.2.ffn_up.weight,q8_0,rtn" "$P1" 2>/dev/null; then ok "plan file has the rule"
    else bad "plan file lacks the rule"; cat "$P1"; fi
    expect_rc 0 "qtune apply with the saved plan" -- \
        "$QTUNE" apply "$STORIES" --plan "$P1" -o "$TMPD/s-out.gguf"
    if "$QTUNE" inspect "$TMPD/s-out.gguf" --csv 2>/dev/null | grep "blk.2.ffn_up.weight" |
        grep -q "Q8_0"; then ok "applied model stores blk.2.ffn_up.weight as Q8_0"
    else bad "applied model lacks Q8_0 blk.2.ffn_up.weight"; fi
    tui_kill a

    # ---- 2. LANG=C (no UTF-8), TERM=screen: ASCII glyphs, help screen ----
    tui_start c 80 24 "TERM=screen LANG=C LC_ALL=C XDG_STATE_HOME=$ST" -- "$STORIES" --plan "$P1"
    tui_wait c "+ blk.0 (9)" "LANG=C: ASCII fold glyph"
    tui_wait c "1.12 MiB -> " "LANG=C: ASCII arrow in the status line"
    if tui_screen c | LC_ALL=C grep -q '[^ -~]'; then bad "LANG=C screen has non-ASCII bytes"
    else ok "LANG=C screen is pure ASCII"; fi
    tui_keys c 2
    tui_wait c "per-channel max |w|" "Outliers tab: channel max bars (ASCII ramp)"
    tui_keys c '?'
    tui_wait c "qtune: keys" "? opens the help screen"
    tui_keys c x
    tui_wait c "? help" "any key returns from help"
    tui_keys c q
    tui_wait c "QTUNE-EXIT=0" "LANG=C: q quits"
    tui_kill c

    # ---- 3. TERM=vt100 and NO_COLOR ----
    tui_start v 80 24 "TERM=vt100 NO_COLOR=1 LANG=C XDG_STATE_HOME=$ST" -- "$STORIES"
    tui_wait v "+ blk.4 (9)" "TERM=vt100 NO_COLOR: layout drawn"
    tui_keys v :; tui_type v "bogus"; tui_keys v Enter
    tui_wait v "unknown command ':bogus'" ": command errors show on screen"
    tui_keys v :; tui_type v "pres"; tui_keys v Tab
    tui_wait v ":preset" "Tab completes a command name"
    tui_type v "keep-a"; tui_keys v Tab Enter
    tui_wait v "preset keep-attn-f16 applied" "Tab completes a preset name; :preset applies it"
    tui_keys v :; tui_type v "theme nosuch"; tui_keys v Enter
    tui_wait v "theme 'nosuch' not found" ":theme with an unknown name reports it"
    tui_keys v :; tui_type v "theme light"; tui_keys v Enter
    tui_wait v "theme light" ":theme light loads"
    tui_keys v q
    tui_wait v "unsaved plan" "vt100: q asks (preset changed the plan)"
    tui_keys v q
    tui_wait v "QTUNE-EXIT=0" "vt100: second q quits without saving"
    tui_kill v

    # ---- 4. too small, then resized ----
    tui_start r 70 20 "TERM=xterm-256color LANG=$UTF XDG_STATE_HOME=$ST" -- "$STORIES"
    tui_wait r "qtune needs at least 80x24 (now 70x20)" "below 80x24: a notice"
    tx resize-window -t r -x 80 -y 24 2>/dev/null
    tui_wait r "▸ blk.0 (9)" "resized to 80x24: the layout returns"
    # mouse (SGR 1006 reports, as xterm sends them): click a row, a tab, the wheel
    tui_keys r 4
    tui_type r $'\033[<0;10;5M\033[<0;10;5m'
    tui_wait r "name   output.weight" "mouse: a click selects the row under it"
    tui_type r $'\033[<0;60;2M\033[<0;60;2m'
    tui_wait r "max-pooled" "mouse: a click on a tab switches to it"
    tui_keys r q
    tui_kill r

    # ---- 5. SIGHUP autosaves a recovery file, the next start offers it ----
    RS=$TMPD/rstate
    mkdir -p "$RS"
    tui_start h 80 24 "TERM=xterm-256color LANG=$UTF XDG_STATE_HOME=$RS" -- "$STORIES"
    tui_wait h "▸ blk.0 (9)" "recovery: started"
    tui_keys h -
    tui_wait_re h "token_embd\.weight +f16 " "recovery: a change is made"
    pid=$(pgrep -f "qtune $STORIES" -n -P "$(tx display-message -p -t h '#{pane_pid}')" || true)
    [ -z "$pid" ] && pid=$(tx display-message -p -t h '#{pane_pid}')
    kill -HUP "$(pgrep -P "$(tx display-message -p -t h '#{pane_pid}')" | head -1)" 2>/dev/null
    tui_wait h "QTUNE-EXIT=129" "SIGHUP: qtune exits 129"
    tui_kill h
    if ls "$RS"/qtune/recovery/*.csv >/dev/null 2>&1; then ok "SIGHUP wrote a recovery plan"
    else bad "no recovery plan after SIGHUP"; fi
    tui_start h2 80 24 "TERM=xterm-256color LANG=$UTF XDG_STATE_HOME=$RS" -- "$STORIES"
    tui_wait h2 "restore it? (y/n)" "next start offers the recovery plan"
    tui_keys h2 y
    tui_wait_re h2 "token_embd\.weight +f16 " "y restores the recovered change"
    tui_wait h2 "recovered plan restored" "the restored plan is an unsaved edit"
    tui_keys h2 q q
    tui_wait h2 "QTUNE-EXIT=0" "quit without saving"
    tui_kill h2

    # ---- 6. SIGTSTP (Ctrl-Z) suspends and fg restores, from an interactive shell ----
    tx new-session -d -s z -x 80 -y 24 "env -i PATH=$PATH HOME=$TMPD TERM=screen bash --norc -i"
    tui_type z "cd '$PWD' && XDG_STATE_HOME=$ST LANG=$UTF $QTUNE $STORIES"
    tui_keys z Enter
    tui_wait z "▸ blk.0 (9)" "Ctrl-Z test: started from bash"
    tui_keys z C-z
    tui_wait z "Stopped" "Ctrl-Z suspends qtune"
    tui_type z "fg"; tui_keys z Enter
    tui_wait z "▸ blk.4 (9)" "fg restores the screen"
    tui_keys z q
    tui_type z "echo resumed-rc-\$?"; tui_keys z Enter
    tui_wait z "resumed-rc-0" "q quits (exit 0) after resuming"
    tui_kill z
else
    echo "skipped: $STORIES not found"
fi

# ---- 7. a generated model at 200x60: presets, k-quants, sort, :save ----
expect_rc 0 "qtune sample" -- "$QTUNE" sample -o "$TMPD/g.gguf" -q --layers 2
P2=$TMPD/g.csv
tui_start g 200 60 "TERM=xterm-256color LANG=$UTF XDG_STATE_HOME=$ST" -- \
    "$TMPD/g.gguf" --plan "$P2"
tui_wait g "shape" "200x60: the shape column is shown"
tui_wait g "1024x256" "200x60: shapes listed"
tui_keys g p
tui_wait g "apply a preset" "p opens the preset menu"
tui_keys g 4
tui_wait g "preset q4_k_m applied" "preset q4_k_m applied"
tui_wait_re g "output\.weight +.* q6_k +6\.56 +[0-9.]+dB" "q4_k_m: output.weight at q6_k with SQNR"
tui_keys g j Enter
tui_wait_re g "^ attn_q\.weight +256x256 +F16 .* q4_k +4\.50 +[0-9.]+dB" \
    "blk.0 unfolds: attn_q q4_k"
tui_keys g j j
tui_keys g +
tui_wait_re g "^ attn_q\.weight +256x256 +F16 .* q5_k +5\.50 +[0-9.]+dB" \
    "+ steps attn_q up to q5_k"
tui_keys g 3
tui_wait_re g "q2_k +2\.62 +[0-9.]+% +[0-9.]+ " "Error tab: q2_k what-if row on 256-column rows"
tui_keys g s
tui_wait g "name (by size)" "s sorts by size"
tui_keys g :; tui_type g "save $TMPD/g2.csv"; tui_keys g Enter
tui_wait g "plan saved to $TMPD/g2.csv" ":save FILE"
tui_keys g :; tui_type g "export llama-quantize $TMPD/g.types"; tui_keys g Enter
tui_wait g "llama-quantize --pure" ":export llama-quantize"
tui_keys g :; tui_type g "save --resolved $TMPD/g3.csv"; tui_keys g Enter
tui_wait_re g "plan saved to $TMPD/g3\.csv \([0-9]+ rules \+ 21 resolved rows\)" \
    ":save --resolved FILE: one row per tensor"
tui_keys g q
tui_wait g "QTUNE-EXIT=0" "q quits after :save"
[ -s "$TMPD/g.types" ] && ok "tensor-type file written" || bad "no tensor-type file"
expect_rc 0 "qtune apply the generated model's plan" -- \
    "$QTUNE" apply "$TMPD/g.gguf" --plan "$TMPD/g2.csv" -o "$TMPD/g-out.gguf"
expect_rc 0 "qtune apply the resolved plan" -- \
    "$QTUNE" apply "$TMPD/g.gguf" --plan "$TMPD/g3.csv" -o "$TMPD/g-out3.gguf"
same_model "$TMPD/g-out.gguf" "$TMPD/g-out3.gguf" "resolved plan gives the same model"
# the resolved file: the rules of g2.csv, then 21 exact rows in model order
n2=$(grep -vc '^#' "$TMPD/g2.csv"); n3=$(grep -vc '^#' "$TMPD/g3.csv")
[ "$n3" -eq $((n2 + 21)) ] && ok "resolved plan: rules + 21 rows" ||
    bad "resolved plan has $n3 lines, the plan $n2 (+21 expected)"
if diff <(tail -n 21 "$TMPD/g3.csv" | cut -d, -f1) \
    <("$QTUNE" inspect "$TMPD/g.gguf" --csv 2>/dev/null | tail -n +2 | cut -d, -f1) >/dev/null
then ok "resolved rows name every tensor in model order"
else bad "resolved rows differ from the model's tensor order"; tail -n 21 "$TMPD/g3.csv"; fi
if [ -f "$ST/qtune/history" ] && grep -q "^save " "$ST/qtune/history"; then
    ok "command history saved under XDG_STATE_HOME"
else bad "no command history"; fi

# ---- 8. an imatrix from `qtune calib`: activation views; --resolved with fallbacks ----
if [ -f "$STORIES" ] && [ -f samples/calib/stories.txt ]; then
    IM=$TMPD/s.imatrix.gguf
    expect_rc 0 "qtune calib writes an imatrix" -- \
        "$QTUNE" calib "$STORIES" --text samples/calib/stories.txt -o "$IM"
    tui_start i 200 60 "TERM=xterm-256color LANG=$UTF XDG_STATE_HOME=$ST" -- \
        "$STORIES" --imatrix "$IM" --plan "$TMPD/i.csv"
    tui_wait i "▸ blk.0 (9)" "--imatrix: started"
    tui_keys i /; tui_type i "blk.1.ffn_down"; tui_keys i Enter
    tui_wait i "/blk.1.ffn_down: blk.1.ffn_down.weight" "imatrix: blk.1.ffn_down selected"
    tui_wait i "input activations: RMS of x per channel = sqrt(imatrix), 172 channels" \
        "Histogram tab: activation RMS distribution under the weights"
    tui_wait_re i "median [0-9.e+-]+  max [0-9.e+-]+ \(x[0-9.]+\)  channels > 6x median: [0-9]+" \
        "Histogram tab: activation median / max / outlier count"
    # the median the screen shows is the file's: sqrt(in_sum2 / counts), upper median
    if PY=$(venv_python 2>/dev/null); then
        want=$("$PY" - "$IM" <<'PYEOF'
import sys, numpy as np
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
t = {x.name: np.asarray(x.data) for x in r.tensors}
s2 = t["blk.1.ffn_down.weight.in_sum2"].astype(np.float32).reshape(-1)
c = t["blk.1.ffn_down.weight.counts"].astype(np.float32).reshape(-1)[0]
v = np.sort(np.sqrt((s2 / c).astype(np.float32)))
print("%.3g" % v[len(v) // 2])
PYEOF
        )
        tui_wait i "median $want  max" "activation median matches the imatrix file ($want)"
    else
        echo "skipped: no gguf/numpy venv for the activation median check"
    fi
    tui_keys i 2
    tui_wait i "activation RMS per input channel (sqrt imatrix); ● > 6x median" \
        "Outliers tab: activation RMS bars on the channel axis"
    tui_wait_re i "[0-9]+ outlier channels?:.* ch [0-9]+ x[0-9.]+" \
        "Outliers tab: outlier / top activation channels listed"
    tui_wait_re i "ch [0-9]+ +[0-9.e+-]+  x[0-9.]+  act [0-9.e+-]+" \
        "Outliers tab: top weight channels with their activation RMS"
    tui_keys i 4
    tui_wait i "act    RMS of x per input channel (sqrt imatrix): median" \
        "Info tab: activation RMS summary"
    tui_wait_re i "absmax max \|x\| per input channel \(calib\): median [0-9.e+-]+  max" \
        "Info tab: qtune's per-channel absmax"
    tui_wait_re i "tokens with an outlier channel \(\|x\| > 6 rms of the token\) [0-9.]+%" \
        "Info tab: qtune's token outlier fraction"
    # q4_k_m on 64-column rows: k-quants fall back; the resolved rows carry the fallbacks
    tui_keys i p 4
    tui_wait i "preset q4_k_m applied" "imatrix: preset q4_k_m"
    # output error on the imatrix's activation sample (qtune calib stores it), under
    # q4_k_m (blk.1.ffn_down, 172 wide, falls back to f16)
    tui_keys i 4
    tui_wait_re i "output rel err [0-9.]+%  \|XW'-XQ'\|/\|XW'\| on the calibration sample" \
        "Info tab: output error beside the weight error"
    tui_keys i 3
    tui_wait_re i "format +bpw +relRMSE +SQNR +max err +outErr" "Error tab: outErr column"
    tui_wait_re i "bf16 +16\.00 +[0-9.]+% +[0-9.]+ +[0-9.e+-]+ +[0-9.]+%" \
        "Error tab: what-if rows carry the output error"
    # model-level KL divergence of the plan, on the worker thread
    tui_keys i :; tui_type i "kld samples/calib/stories.txt 128"; tui_keys i Enter
    tui_wait_re i "kld: mean [0-9.]+ p99 [0-9.]+ max [0-9.]+  top1 [0-9.]+%  ppl [0-9.]+ -> [0-9.]+ \([0-9]+ tok\)" \
        ":kld shows mean/p99/max KL, top-1 and both perplexities"
    tui_keys i 4
    tui_wait_re i "kld    model: mean [0-9.]+  p99 [0-9.]+  max [0-9.]+  top1" \
        "Info tab: the KLD result"
    tui_keys i :; tui_type i "kld /nonexistent.txt"; tui_keys i Enter
    tui_wait i "/nonexistent.txt: cannot read" ":kld of a missing file says so"
    tui_keys i K
    tui_wait_re i "kld: mean [0-9.]+ p99" "K repeats the last :kld"
    tui_keys i :; tui_type i "save $TMPD/i.csv"; tui_keys i Enter
    tui_wait i "plan saved to $TMPD/i.csv" ":save (rules)"
    tui_keys i :; tui_type i "save --res"; tui_keys i Tab; tui_type i " $TMPD/i-res.csv"
    tui_keys i Enter
    tui_wait_re i "plan saved to $TMPD/i-res\.csv \([0-9]+ rules \+ 48 resolved rows\)" \
        "Tab completes --resolved; :save --resolved writes 48 rows"
    tui_keys i q
    tui_wait i "QTUNE-EXIT=0" "imatrix: q quits"
    tui_kill i
    if grep -q '^blk\.0\.attn_q\.weight,q5_0,' "$TMPD/i-res.csv" &&
        grep -q '^blk\.0\.attn_norm\.weight,,keep,' "$TMPD/i-res.csv"; then
        ok "resolved rows: fallback format (q5_0) and keep for a norm"
    else bad "resolved rows lack the fallback or the keep row"; tail -n 48 "$TMPD/i-res.csv"; fi
    expect_rc 0 "apply the plan" -- "$QTUNE" apply "$STORIES" --plan "$TMPD/i.csv" \
        -o "$TMPD/i-out.gguf"
    expect_rc 0 "apply the resolved plan" -- "$QTUNE" apply "$STORIES" \
        --plan "$TMPD/i-res.csv" -o "$TMPD/i-out-res.gguf"
    same_model "$TMPD/i-out.gguf" "$TMPD/i-out-res.gguf" \
        "stories260K: resolved plan (with fallbacks) gives the same model"

    # :imatrix at run time, ASCII locale
    tui_start j 80 24 "TERM=screen LANG=C LC_ALL=C XDG_STATE_HOME=$ST" -- "$STORIES"
    tui_wait j "+ blk.0 (9)" ":imatrix: started"
    tui_keys j :; tui_type j "imatrix $IM"; tui_keys j Enter
    tui_wait_re j "tensors matched, qtun" ":imatrix loads the file and its statistics"
    tui_keys j 2 G
    tui_wait j "activation RMS per input chan" ":imatrix: Outliers tab shows activations"
    tui_keys j q
    tui_wait j "QTUNE-EXIT=0" ":imatrix: q quits"
    tui_kill j
fi

echo "fails: $fails"
[ "$fails" -eq 0 ]
