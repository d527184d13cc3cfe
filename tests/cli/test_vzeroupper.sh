#!/usr/bin/env bash
# Every kernel function that uses 256- or 512-bit registers must clear their
# upper halves (vzeroupper) before it returns to, or calls, code compiled for
# SSE: on Zen 4, SSE code that ran after a 16-lane kernel left them dirty ran
# at half speed (gcc 12 had put no vzeroupper in kf_acc_512). Checked on the
# objects `make` built: a function with wide registers and no vzeroupper at
# all fails, except the helpers below, which only return into wide code.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v objdump >/dev/null || { echo "skipped: no objdump"; exit 0; }
# helpers called only from AVX2/AVX-512 functions (which clear on exit)
allow=' kf_hist_avx2 '
bad=0
for o in build/kernels/*.o; do
    while read -r fn; do
        base=${fn%%.*}
        case "$allow" in *" $base "*) continue ;; esac
        echo "$o: $fn uses ymm/zmm registers and never runs vzeroupper"
        bad=1
    done < <(objdump -d --no-show-raw-insn "$o" | awk '
        /^[0-9a-f]+ <.*>:$/ { if (fn != "" && wide && !vz) print fn
                              fn = substr($2, 2, length($2) - 3); wide = 0; vz = 0; next }
        /%[yz]mm[0-9]/ { wide = 1 }
        /vzeroupper/   { vz = 1 }
        END { if (fn != "" && wide && !vz) print fn }')
done
[ "$bad" = 0 ] && echo "every wide kernel function clears the upper halves"
exit "$bad"
