/* tui_term.c — the one module that owns the terminal: curses set-up and restore
 * (atexit and fatal signals included), glyph sets, colour themes. */
#include <curses.h>
#include <errno.h>
#include <langinfo.h>
#include <limits.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <unistd.h>

#include "tui.h"

tui_term tui_T;
volatile sig_atomic_t tui_sig_hup, tui_sig_int;

static int te_pair[TE_COUNT];  /* colour pair per element (0: none) */
static int te_extra[TE_COUNT]; /* attributes per element when coloured */

static const int te_mono[TE_COUNT] = {
#define TUI_ELEM_MONO(e, key, mono) [e] = (int)(mono),
    TUI_ELEM_LIST(TUI_ELEM_MONO)
#undef TUI_ELEM_MONO
};
static const char *const te_key[TE_COUNT] = {
#define TUI_ELEM_KEY(e, key, mono) [e] = key,
    TUI_ELEM_LIST(TUI_ELEM_KEY)
#undef TUI_ELEM_KEY
};

#define HEAT_PAIR0 40 /* above the theme pairs (at most TE_COUNT) */

static void term_restore_atexit(void)
{
    tui_term_end();
}

static void term_fatal(int sig)
{
    /* endwin is not async-signal-safe, but the process is dying and a sane
     * terminal is worth the risk (htop does the same). */
    if (tui_T.active) {
        tui_T.active = false;
        endwin();
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void term_hup(int sig)
{
    if (sig == SIGINT)
        tui_sig_int = 1;
    else
        tui_sig_hup = 1;
}

static void term_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = term_hup;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = term_fatal;
    sa.sa_flags = SA_RESETHAND;
    int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGQUIT};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        sigaction(fatal[i], &sa, NULL);
    /* SIGTSTP is left to ncurses, whose handler restores the terminal and
     * redraws on SIGCONT. */
}

static void set_glyphs(void)
{
    if (tui_T.utf8) {
        tui_T.g = (tui_glyphs){"\u25b8", "\u25be", "\u2502", "\u2500", "\u2580", "\u2588",
                               "\u2192", "\u25cf"};
    } else {
        tui_T.g = (tui_glyphs){"+", "-", "|", "-", "^", "#", "->", "*"};
    }
}

static void heat_pairs(void)
{
    /* Cold to hot ramps; 256 colours: 8 levels, 8 colours: 4 levels. */
    static const short ramp256[] = {16, 17, 19, 25, 37, 148, 214, 196};
    static const short ramp8[] = {COLOR_BLACK, COLOR_BLUE, COLOR_YELLOW, COLOR_RED};
    const short *ramp = tui_T.ncolors >= 256 ? ramp256 : ramp8;
    int n = tui_T.ncolors >= 256 ? 8 : 4;
    if (!tui_T.utf8 || !tui_T.color || COLOR_PAIRS < HEAT_PAIR0 + n * n) {
        tui_T.heat_levels = 0;
        return;
    }
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++)
            init_pair((short)(HEAT_PAIR0 + a * n + b), ramp[a], ramp[b]);
    tui_T.heat_levels = n;
}

void tui_term_init(void)
{
    setlocale(LC_ALL, "");
    const char *cs = nl_langinfo(CODESET);
    tui_T.utf8 = cs && (!strcasecmp(cs, "UTF-8") || !strcasecmp(cs, "utf8"));
    set_glyphs();
    if (!getenv("ESCDELAY"))
        set_escdelay(25);
    initscr();
    tui_T.active = true;
    atexit(term_restore_atexit);
    term_install_signals();
    cbreak();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    curs_set(0);
    timeout(100); /* getch returns ERR after 100 ms: the loop polls results */
    mousemask(BUTTON1_CLICKED | BUTTON1_PRESSED | BUTTON4_PRESSED | BUTTON5_PRESSED, NULL);
    mouseinterval(0);
    const char *nc = getenv("NO_COLOR");
    tui_T.color = has_colors() && !(nc && nc[0]);
    if (tui_T.color) {
        start_color();
        use_default_colors();
        tui_T.ncolors = COLORS;
    }
    heat_pairs();
}

void tui_term_end(void)
{
    if (!tui_T.active)
        return;
    tui_T.active = false;
    curs_set(1);
    endwin();
}

int tui_attr(tui_elem e)
{
    if ((unsigned)e >= TE_COUNT)
        return A_NORMAL;
    if (!tui_T.color || !te_pair[e])
        return te_mono[e] | (tui_T.color ? te_extra[e] : 0);
    return COLOR_PAIR(te_pair[e]) | te_extra[e];
}

int tui_heat_attr(int a, int b)
{
    int n = tui_T.heat_levels;
    if (n <= 0)
        return A_NORMAL;
    a = a < 0 ? 0 : a >= n ? n - 1 : a;
    b = b < 0 ? 0 : b >= n ? n - 1 : b;
    return COLOR_PAIR(HEAT_PAIR0 + a * n + b);
}

/* ---- themes ---- */

static int color_from_name(const char *s, bool *ok)
{
    static const char *const names[] = {"black", "red", "green", "yellow",
                                        "blue", "magenta", "cyan", "white"};
    *ok = true;
    if (!strcasecmp(s, "default") || !*s)
        return -1;
    for (int i = 0; i < 8; i++)
        if (!strcasecmp(s, names[i]))
            return i;
    if (!strncasecmp(s, "bright", 6)) {
        for (int i = 0; i < 8; i++)
            if (!strcasecmp(s + 6, names[i]))
                return tui_T.ncolors >= 16 ? i + 8 : i;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v > 255) {
        *ok = false;
        return -1;
    }
    if (v >= tui_T.ncolors)
        v = v % 8; /* a 256-colour theme on an 8-colour terminal */
    return (int)v;
}

static int attr_from_name(const char *s, bool *ok)
{
    *ok = true;
    if (!strcasecmp(s, "bold"))
        return A_BOLD;
    if (!strcasecmp(s, "reverse"))
        return A_REVERSE;
    if (!strcasecmp(s, "underline"))
        return A_UNDERLINE;
    if (!strcasecmp(s, "dim"))
        return A_DIM;
    if (!strcasecmp(s, "standout"))
        return A_STANDOUT;
    if (!strcasecmp(s, "normal"))
        return A_NORMAL;
    *ok = false;
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = 0;
    return s;
}

static bool theme_path(const char *name, char *out, size_t cap)
{
    char exe[PATH_MAX];
    const char *dirs[5];
    int nd = 0;
    const char *env = getenv("QTUNE_THEMES");
    if (env && *env)
        dirs[nd++] = env;
    dirs[nd++] = "themes";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            dirs[nd++] = exe;
        }
    }
    dirs[nd++] = "/usr/local/share/qtune/themes";
    for (int i = 0; i < nd; i++) {
        if (dirs[i] == exe)
            snprintf(out, cap, "%s/themes/%s.theme", dirs[i], name);
        else
            snprintf(out, cap, "%s/%s.theme", dirs[i], name);
        if (access(out, R_OK) == 0)
            return true;
    }
    return false;
}

bool tui_theme_load(const char *name, char *msg, size_t cap)
{
    char path[PATH_MAX + 64];
    if (!name || !*name || strchr(name, '/')) {
        snprintf(msg, cap, "bad theme name '%s'", name ? name : "");
        return false;
    }
    if (!theme_path(name, path, sizeof path)) {
        snprintf(msg, cap, "theme '%s' not found (themes/%s.theme)", name, name);
        return false;
    }
    FILE *fp = fopen(path, "r");
    if (!fp) {
        snprintf(msg, cap, "%s: %s", path, strerror(errno));
        return false;
    }
    int pair[TE_COUNT] = {0}, extra[TE_COUNT] = {0};
    short fgs[TE_COUNT], bgs[TE_COUNT];
    bool set[TE_COUNT] = {false};
    char line[512];
    int lineno = 0;
    bool ok = true;
    while (fgets(line, sizeof line, fp)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(msg, cap, "%s:%d: expected 'element = fg,bg,attr'", path, lineno);
            ok = false;
            break;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        int e = -1;
        for (int i = 0; i < TE_COUNT; i++)
            if (!strcmp(key, te_key[i]))
                e = i;
        if (e < 0)
            continue; /* unknown elements are ignored: newer themes still load */
        char *save = NULL;
        int field = 0;
        fgs[e] = bgs[e] = -1;
        for (char *tok = strtok_r(val, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            char *t = trim(tok);
            bool good;
            if (field < 2) {
                int c = color_from_name(t, &good);
                if (good) {
                    if (field == 0)
                        fgs[e] = (short)c;
                    else
                        bgs[e] = (short)c;
                    field++;
                    continue;
                }
                field = 2;
            }
            int a = attr_from_name(t, &good);
            if (!good) {
                snprintf(msg, cap, "%s:%d: unknown colour or attribute '%s'", path, lineno, t);
                ok = false;
                break;
            }
            extra[e] |= a;
        }
        if (!ok)
            break;
        set[e] = true;
    }
    fclose(fp);
    if (!ok)
        return false;
    if (tui_T.color) {
        int next = 1;
        for (int e = 0; e < TE_COUNT; e++) {
            if (!set[e])
                continue;
            if (fgs[e] == -1 && bgs[e] == -1) {
                pair[e] = 0;
                continue;
            }
            init_pair((short)next, fgs[e], bgs[e]);
            pair[e] = next++;
        }
    }
    for (int e = 0; e < TE_COUNT; e++) {
        te_pair[e] = pair[e];
        /* Elements a theme leaves out keep their monochrome attribute. */
        te_extra[e] = set[e] ? extra[e] : te_mono[e];
    }
    snprintf(tui_T.theme, sizeof tui_T.theme, "%s", name);
    msg[0] = 0;
    return true;
}

const char *const *tui_theme_names(void)
{
    static char names[32][64];
    static const char *list[33];
    int n = 0;
    char path[PATH_MAX + 64];
    if (theme_path("default", path, sizeof path)) {
        char *slash = strrchr(path, '/');
        *slash = 0;
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d)) && n < 32) {
            size_t l = strlen(de->d_name);
            if (l > 6 && l < 64 && !strcmp(de->d_name + l - 6, ".theme")) {
                memcpy(names[n], de->d_name, l - 6);
                names[n][l - 6] = 0;
                list[n] = names[n];
                n++;
            }
        }
        if (d)
            closedir(d);
    }
    list[n] = NULL;
    return list;
}
