/* tui_cmdline.c — GNU readline's callback interface tamed inside curses.
 *
 * Readline never sees the terminal: its input comes from a small byte queue
 * that tui_cmdline_key fills from getch() (curses key codes are turned back
 * into the escape sequences readline binds), its terminal preparation and
 * redisplay are no-ops, its output stream is /dev/null, and the UI draws
 * rl_line_buffer / rl_point into the bottom row itself. */
#include <curses.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "tui.h"

static struct {
    bool active, search, inited;
    unsigned char in[64];
    int head, tail;
    char *accepted;   /* line handed over by the handler, owned */
    bool got_line;
    tui_cmd_fn on_accept;
    tui_complete_fn complete;
    char hist_path[PATH_MAX];
    char hint[512];
    FILE *devnull;
} C;

static int cl_getc(FILE *fp)
{
    (void)fp;
    if (C.head == C.tail)
        return EOF;
    return C.in[C.head++];
}

static int cl_avail(void)
{
    return C.head < C.tail;
}

static void cl_redisplay(void)
{
    /* The main loop draws the line (tui_cmdline_draw). */
}

static void cl_prep(int meta)
{
    (void)meta;
}

static void cl_deprep(void)
{
}

static void cl_handler(char *line)
{
    free(C.accepted);
    C.accepted = line; /* NULL on EOF (Ctrl-D on an empty line) */
    C.got_line = true;
    rl_callback_handler_remove();
    C.active = false;
}

static char *cl_generator(const char *text, int state)
{
    static int idx;
    (void)text;
    if (!state)
        idx = 0;
    const char *s = C.complete ? C.complete(rl_line_buffer, rl_point - (int)strlen(text), idx++)
                               : NULL;
    return s ? strdup(s) : NULL;
}

static char **cl_attempt(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    C.hint[0] = 0;
    return rl_completion_matches(text, cl_generator);
}

static void cl_display(char **matches, int n, int maxlen)
{
    (void)maxlen;
    size_t off = 0;
    for (int i = 1; i <= n && off + 2 < sizeof C.hint; i++) {
        int w = snprintf(C.hint + off, sizeof C.hint - off, "%s%s", i > 1 ? "  " : "",
                         matches[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    if (off >= sizeof C.hint)
        C.hint[sizeof C.hint - 1] = 0;
}

static void mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0700);
            *p = '/';
        }
    }
}

void tui_cmdline_init(tui_cmd_fn on_accept, tui_complete_fn complete)
{
    C.on_accept = on_accept;
    C.complete = complete;
    C.devnull = fopen("/dev/null", "w");
    rl_readline_name = "qtune";
    rl_catch_signals = 0;
    rl_catch_sigwinch = 0;
    rl_change_environment = 0;
    rl_getc_function = cl_getc;
    rl_input_available_hook = cl_avail;
    rl_redisplay_function = cl_redisplay;
    rl_prep_term_function = cl_prep;
    rl_deprep_term_function = cl_deprep;
    rl_instream = stdin;
    rl_outstream = C.devnull ? C.devnull : stdout;
    rl_attempted_completion_function = cl_attempt;
    rl_completion_display_matches_hook = cl_display;
    using_history();
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(C.hist_path, sizeof C.hist_path, "%s/qtune/history", xdg);
    else if (home && *home)
        snprintf(C.hist_path, sizeof C.hist_path, "%s/.local/state/qtune/history", home);
    if (C.hist_path[0])
        read_history(C.hist_path);
    C.inited = true;
}

void tui_cmdline_fini(void)
{
    if (!C.inited)
        return;
    if (C.active)
        rl_callback_handler_remove();
    C.active = false;
    free(C.accepted);
    C.accepted = NULL;
    if (C.devnull)
        fclose(C.devnull);
    C.devnull = NULL;
    rl_outstream = NULL;
    C.inited = false;
}

void tui_cmdline_open(bool search)
{
    C.search = search;
    C.active = true;
    C.head = C.tail = 0;
    C.hint[0] = 0;
    rl_callback_handler_install(search ? "/" : ":", cl_handler);
}

bool tui_cmdline_active(void)
{
    return C.active;
}

static void feed(const char *bytes, int n)
{
    if (C.tail + n > (int)sizeof C.in)
        C.head = C.tail = 0;
    memcpy(C.in + C.tail, bytes, (size_t)n);
    C.tail += n;
}

void tui_cmdline_key(int ch)
{
    if (!C.active)
        return;
    if (ch == 27 || ((ch == KEY_BACKSPACE || ch == 127 || ch == 8) && rl_end == 0)) {
        rl_callback_handler_remove();
        C.active = false;
        C.hint[0] = 0;
        return;
    }
    C.head = C.tail = 0;
    switch (ch) {
    case KEY_LEFT: feed("\033[D", 3); break;
    case KEY_RIGHT: feed("\033[C", 3); break;
    case KEY_UP: feed("\033[A", 3); break;
    case KEY_DOWN: feed("\033[B", 3); break;
    case KEY_HOME: feed("\001", 1); break;
    case KEY_END: feed("\005", 1); break;
    case KEY_DC: feed("\004", 1); break;
    case KEY_BACKSPACE: case 8: feed("\177", 1); break;
    case KEY_ENTER: case '\n': case '\r': feed("\r", 1); break;
    default:
        if (ch >= 0 && ch < 256) {
            char c = (char)ch;
            feed(&c, 1);
        }
        break;
    }
    if (ch != '\t')
        C.hint[0] = 0;
    C.got_line = false;
    while (cl_avail() && (C.active || !C.got_line))
        rl_callback_read_char();
    if (C.got_line) {
        C.got_line = false;
        char *line = C.accepted;
        C.accepted = NULL;
        if (line && *line && !C.search) {
            add_history(line);
            if (C.hist_path[0]) {
                char dir[PATH_MAX];
                snprintf(dir, sizeof dir, "%s", C.hist_path);
                mkdirs(dir);
                write_history(C.hist_path);
            }
        }
        if (C.on_accept)
            C.on_accept(line ? line : "", C.search);
        free(line);
    }
}

void tui_cmdline_draw(int y, int width)
{
    if (!C.active)
        return;
    const char *buf = rl_line_buffer ? rl_line_buffer : "";
    int point = rl_point;
    int avail = width - 2;
    int start = point > avail ? point - avail : 0;
    attrset(tui_attr(TE_CMDLINE));
    move(y, 0);
    clrtoeol();
    addstr(C.search ? "/" : ":");
    addnstr(buf + start, avail);
    if (C.hint[0] && (int)strlen(buf) + 4 < width) {
        attrset((int)(tui_attr(TE_FOOTER) | A_DIM));
        mvaddnstr(y, (int)strlen(buf) + 3, C.hint, width - (int)strlen(buf) - 4);
    }
    attrset(A_NORMAL);
    move(y, 1 + point - start);
    curs_set(1);
}

const char *tui_cmdline_hint(void)
{
    return C.hint;
}
