/* tui.h — the interactive terminal UI (DESIGN.md §6).
 *
 * Modules (one prefix, tui_):
 *   tui.c          application state, layer tree, keys, drawing, the main loop
 *   tui_term.c     owns the terminal: curses init/restore on every exit path,
 *                  glyphs (UTF-8 or ASCII), themes, signal flags
 *   tui_worker.c   the preview thread (k_preview_tensor); never calls curses
 *   tui_cmdline.c  GNU readline's callback interface inside curses
 * Only the UI thread calls curses; the worker publishes through a mutex-held
 * result queue and an atomic "results pending" counter.
 */
#ifndef TUI_H
#define TUI_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "an_calib.h"
#include "an_stats.h"
#include "q_format.h"
#include "q_metrics.h"
#include "q_model.h"
#include "q_plan.h"

/* `qtune MODEL [--plan P] [--imatrix I] [--theme NAME]`: runs the TUI; argv[0]
 * is the model path's predecessor (the program name). Returns a process exit
 * code (0, 64 usage, 65/66 for a model or plan that cannot be read). */
int tui_main(int argc, char **argv);

/* ---- tui_term.c: terminal ownership, glyphs, themes ---- */

/* X(enum, theme key, mono attribute) — semantic elements of the screen. */
#define TUI_ELEM_LIST(X)                              \
    X(TE_NORMAL, "normal", A_NORMAL)                  \
    X(TE_TITLE, "title", A_REVERSE)                   \
    X(TE_HEADER, "tree.header", A_BOLD | A_UNDERLINE) \
    X(TE_BLOCK, "tree.block", A_BOLD)                 \
    X(TE_SELECTED, "tree.selected", A_REVERSE)        \
    X(TE_MARKED, "tree.marked", A_BOLD)               \
    X(TE_MATCH, "tree.match", A_UNDERLINE)            \
    X(TE_FALLBACK, "tree.fallback", A_BOLD)           \
    X(TE_COMPUTING, "tree.computing", A_DIM)          \
    X(TE_ERR_GOOD, "error.good", A_NORMAL)            \
    X(TE_ERR_MID, "error.mid", A_NORMAL)              \
    X(TE_ERR_BAD, "error.bad", A_BOLD)                \
    X(TE_TAB_ACTIVE, "tab.active", A_REVERSE)         \
    X(TE_TAB, "tab.inactive", A_NORMAL)               \
    X(TE_BORDER, "border", A_NORMAL)                  \
    X(TE_HIST_BAR, "hist.bar", A_NORMAL)              \
    X(TE_HIST_LEVEL, "hist.level", A_BOLD)            \
    X(TE_HIST_CLIP, "hist.clip", A_BOLD)              \
    X(TE_STATUS, "status", A_REVERSE)                 \
    X(TE_STATUS_ERR, "status.error", A_REVERSE | A_BOLD) \
    X(TE_FOOTER, "footer", A_NORMAL)                  \
    X(TE_KEY, "footer.key", A_BOLD)                   \
    X(TE_HELP, "help", A_NORMAL)                      \
    X(TE_CMDLINE, "cmdline", A_NORMAL)

typedef enum tui_elem {
#define TUI_ELEM_ENUM(e, key, mono) e,
    TUI_ELEM_LIST(TUI_ELEM_ENUM)
#undef TUI_ELEM_ENUM
        TE_COUNT
} tui_elem;

/* Glyphs: UTF-8 where the locale allows, ASCII otherwise. */
typedef struct tui_glyphs {
    const char *fold_closed, *fold_open, *vline, *hline, *half_upper, *full, *arrow, *mark;
} tui_glyphs;

typedef struct tui_term {
    bool active;        /* curses is up */
    bool utf8;          /* the locale's codeset is UTF-8 */
    bool color;         /* colours in use (has_colors and no NO_COLOR) */
    int ncolors;        /* COLORS */
    int heat_levels;    /* colour levels of the heat map (0: ASCII ramp) */
    tui_glyphs g;
    char theme[64];
} tui_term;

extern tui_term tui_T;
/* Signals seen (set by handlers, read by the main loop). */
extern volatile sig_atomic_t tui_sig_hup, tui_sig_int;

/* Brings curses up (locale, colours, mouse, keypad, halfdelay), installs the
 * atexit and fatal-signal restore and the SIGHUP/SIGTERM flag handlers. */
void tui_term_init(void);
/* Restores the terminal; safe to call twice and from atexit. */
void tui_term_end(void);
/* Loads theme NAME (themes/NAME.theme, searched in $QTUNE_THEMES, ./themes,
 * beside the executable and /usr/local/share/qtune/themes). Writes a message
 * into msg (cap bytes) and returns false when the theme cannot be loaded (the
 * previous colours stay). */
bool tui_theme_load(const char *name, char *msg, size_t cap);
/* NULL-terminated list of the theme names found (static storage). */
const char *const *tui_theme_names(void);
/* The curses attribute of an element. */
int tui_attr(tui_elem e);
/* Attribute of a heat-map half cell: upper level a, lower level b
 * (0..heat_levels-1). */
int tui_heat_attr(int a, int b);

/* ---- tui_worker.c: the preview thread ---- */

enum { TUI_JOB_PLAN = 0, TUI_JOB_WHATIF = 1, TUI_JOB_STATS = 2, TUI_JOB_KLD = 3 };

typedef struct tui_result {
    int64_t tensor;
    int kind;               /* TUI_JOB_* */
    q_fmt_spec fmt;
    q_method method;
    uint64_t gen;           /* the request's generation */
    bool exact, failed;
    bool on_gpu;            /* exact figures from the CUDA device (k_preview_result) */
    q_metrics m;
    double rel_lo, rel_hi;
    char msg[160];          /* when failed */
    an_stats stats;         /* TUI_JOB_STATS */
    double out_err;         /* PLAN/WHATIF, exact: ‖X Wᵀ − X Ŵᵀ‖/‖X Wᵀ‖ on the imatrix's
                               activation sample; NaN when there is none */
    int64_t kld_done, kld_total; /* TUI_JOB_KLD: chunks; exact (or failed) when finished */
    int64_t kld_ctx;
    an_kld_result kld;
} tui_result;

/* Starts the thread for model m (borrowed until tui_worker_stop). */
bool tui_worker_start(const q_model *m);
void tui_worker_stop(void);
/* Queues a job for tensor t (a preview in fmt/method, or TUI_JOB_STATS), newest
 * first. Pending jobs of the same tensor and kind are dropped (with
 * replace_same_fmt_only: only those of the same format; STATS: those of every
 * tensor), and a running one of the same tensor and kind is cancelled unless
 * replace_same_fmt_only. imatrix is borrowed (cols floats) until the worker
 * stops. Returns the job's generation. */
uint64_t tui_worker_push(int64_t t, int kind, const q_fmt_spec *fmt, q_method method,
                         const float *imatrix, bool replace_same_fmt_only);
/* The imatrix file whose activation samples (NAME.qtune_sample, qtune calib) give the
 * output error of PLAN and WHATIF jobs; NULL for none. Copied. */
void tui_worker_set_samples(const char *imatrix_path);
/* Queues a model-level KL divergence job (an_kld) of the plan res (m->n_tensors
 * entries, copied) over the text file at path (tokenized with the model's tokenizer)
 * in chunks of ctx tokens (0: min(512, the model's context, the text)); im (may be
 * NULL) is borrowed until the worker stops. It runs before pending previews; a KLD
 * job already queued or running is cancelled. Progress and the final figures come as
 * TUI_JOB_KLD results with this generation (returned; 0 when out of memory). */
uint64_t tui_worker_kld(const char *path, int64_t ctx, const q_resolved *res,
                        const q_imatrix *im);
/* Cancels a queued or running KLD job (a failed result "cancelled" follows when one
 * was running). Returns whether there was one. */
bool tui_worker_kld_cancel(void);
/* Drops pending WHATIF requests of tensors other than t. */
void tui_worker_drop_whatif(int64_t keep_tensor);
/* Moves up to cap results into out; returns the count. Never blocks long. */
int tui_worker_poll(tui_result *out, int cap);
/* Requests queued or running. */
int tui_worker_busy(void);

/* ---- tui_cmdline.c: readline inside curses ---- */

/* Called with the accepted line (never NULL; "" for an empty line). */
typedef void (*tui_cmd_fn)(const char *line, bool is_search);
/* Completion source: returns the i-th candidate for word (or NULL). */
typedef const char *(*tui_complete_fn)(const char *line_so_far, int word_start, int i);

void tui_cmdline_init(tui_cmd_fn on_accept, tui_complete_fn complete);
void tui_cmdline_fini(void);
/* Opens the line with prompt ":" (commands) or "/" (search). */
void tui_cmdline_open(bool search);
bool tui_cmdline_active(void);
/* Feeds one getch() value; returns after the line was redrawn into the last
 * screen row. */
void tui_cmdline_key(int ch);
/* Draws the line (prompt, text, cursor) into row y. */
void tui_cmdline_draw(int y, int width);
/* Completion candidates shown after Tab (static buffer, "" when none). */
const char *tui_cmdline_hint(void);

#endif
