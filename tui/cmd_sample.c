/* cmd_sample.c — `qtune sample`: write a synthetic llama-shaped GGUF model. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "an_synth.h"
#include "cli.h"
#include "q_dtype.h"
#include "q_status.h"

static void sample_usage(FILE *fp)
{
    an_synth_cfg d;
    an_synth_defaults(&d);
    fprintf(fp,
            "usage: qtune sample -o FILE.gguf [options]\n"
            "Write a synthetic llama model (heavy-tailed weights, outlier channels,\n"
            "byte-fallback vocabulary) that llama.cpp can load.\n"
            "  -o, --output FILE   output path (written atomically)\n"
            "      --dim N         embedding length (default %lld)\n"
            "      --layers N      transformer blocks (default %lld)\n"
            "      --ff N          feed-forward length (default %lld)\n"
            "      --heads N       attention heads (default %lld)\n"
            "      --kv-heads N    key/value heads (default %lld)\n"
            "      --vocab N       vocabulary size, >= %d (default %lld)\n"
            "      --ctx N         context length (default %lld)\n"
            "      --seed N        random seed (default %" PRIu64 ")\n"
            "      --dtype T       f16 or f32 for matrices (default f16)\n"
            "  -q, --quiet         no progress and no summary\n"
            "  -h, --help          this help\n",
            (long long)d.dim, (long long)d.layers, (long long)d.ff, (long long)d.heads,
            (long long)d.kv_heads, AN_SYNTH_MIN_VOCAB, (long long)d.vocab, (long long)d.ctx,
            d.seed);
}

/* Strict decimal (or 0x hex) unsigned parse of a whole argument. */
static bool sample_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0')
        return false;
    *out = (uint64_t)v;
    return true;
}

static bool sample_parse_i64(const char *s, int64_t *out)
{
    uint64_t v;
    if (!sample_parse_u64(s, &v) || v > (uint64_t)INT64_MAX)
        return false;
    *out = (int64_t)v;
    return true;
}

typedef struct sample_progress {
    bool tty;
    int last_pct;
} sample_progress;

static int sample_on_progress(void *ctx, uint64_t done, uint64_t total)
{
    sample_progress *p = ctx;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (p->tty && pct != p->last_pct) {
        fprintf(stderr, "\rqtune sample: %3d%%", pct);
        fflush(stderr);
        p->last_pct = pct;
    }
    return 0;
}

static double sample_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

enum {
    OPT_DIM = 256,
    OPT_LAYERS,
    OPT_FF,
    OPT_HEADS,
    OPT_KV_HEADS,
    OPT_VOCAB,
    OPT_SEED,
    OPT_DTYPE,
    OPT_CTX,
};

int cmd_sample(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"dim", required_argument, NULL, OPT_DIM},
        {"layers", required_argument, NULL, OPT_LAYERS},
        {"ff", required_argument, NULL, OPT_FF},
        {"heads", required_argument, NULL, OPT_HEADS},
        {"kv-heads", required_argument, NULL, OPT_KV_HEADS},
        {"vocab", required_argument, NULL, OPT_VOCAB},
        {"seed", required_argument, NULL, OPT_SEED},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"ctx", required_argument, NULL, OPT_CTX},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    an_synth_cfg cfg;
    an_synth_defaults(&cfg);
    const char *out = NULL;
    bool quiet = false;
    int c, li = -1;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:qh", opts, &li)) != -1) {
        int64_t *field = NULL;
        switch (c) {
        case 'o': out = optarg; continue;
        case 'q': quiet = true; continue;
        case 'h': sample_usage(stdout); return 0;
        case OPT_DIM: field = &cfg.dim; break;
        case OPT_LAYERS: field = &cfg.layers; break;
        case OPT_FF: field = &cfg.ff; break;
        case OPT_HEADS: field = &cfg.heads; break;
        case OPT_KV_HEADS: field = &cfg.kv_heads; break;
        case OPT_VOCAB: field = &cfg.vocab; break;
        case OPT_CTX: field = &cfg.ctx; break;
        case OPT_SEED:
            if (!sample_parse_u64(optarg, &cfg.seed)) {
                cli_errorf("sample: --seed: '%s' is not an unsigned integer", optarg);
                goto usage;
            }
            continue;
        case OPT_DTYPE: {
            int t = q_dtype_from_name(optarg);
            if (t != Q_DT_F16 && t != Q_DT_F32) {
                cli_errorf("sample: --dtype: '%s' is not f16 or f32", optarg);
                goto usage;
            }
            cfg.dtype = (uint32_t)t;
            continue;
        }
        case ':':
            cli_errorf("sample: option '%s' needs a value", argv[optind - 1]);
            goto usage;
        default:
            cli_errorf("sample: unknown option '%s'", argv[optind - 1]);
            goto usage;
        }
        if (!sample_parse_i64(optarg, field)) {
            cli_errorf("sample: --%s: '%s' is not a non-negative integer", opts[li].name, optarg);
            goto usage;
        }
    }
    if (optind < argc) {
        cli_errorf("sample: unexpected argument '%s'", argv[optind]);
        goto usage;
    }
    if (!out) {
        cli_errorf("sample: -o FILE is required");
        goto usage;
    }

    q_err err = {{0}};
    q_status st = an_synth_validate(&cfg, &err);
    if (st != Q_OK) {
        cli_errorf("sample: %s", err.msg);
        goto usage;
    }
    sample_progress prog = {.tty = !quiet && isatty(STDERR_FILENO), .last_pct = -1};
    if (prog.tty) {
        cfg.progress = sample_on_progress;
        cfg.progress_ctx = &prog;
    }
    double t0 = sample_now();
    st = an_synth_write(&cfg, out, &err);
    if (prog.tty)
        fprintf(stderr, "\r\033[K");
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        return (int)st;
    }
    if (!quiet)
        fprintf(stderr,
                "qtune sample: wrote %s: llama, dim %lld, %lld layers, ff %lld, heads %lld/%lld,"
                " vocab %lld, %s, %.2fM params, %.1f MB, seed %" PRIu64 ", %.2f s\n",
                out, (long long)cfg.dim, (long long)cfg.layers, (long long)cfg.ff,
                (long long)cfg.heads, (long long)cfg.kv_heads, (long long)cfg.vocab,
                q_dtype_name(cfg.dtype), (double)an_synth_params(&cfg) / 1e6,
                (double)an_synth_data_bytes(&cfg) / 1e6, cfg.seed, sample_now() - t0);
    return 0;

usage:
    fputs("usage: qtune sample -o FILE.gguf [--dim N] [--layers N] [--ff N] [--heads N]\n"
          "           [--kv-heads N] [--vocab N] [--ctx N] [--seed N] [--dtype f16|f32]\n"
          "       qtune sample --help   for details\n",
          stderr);
    return Q_EUSAGE;
}
