/* main.c — the qtune command-line entry point: dispatches to subcommands. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "an_forward.h"
#include "cli.h"
#include "k_cuda.h"
#include "tui.h"
#include "k_preview.h"

#define QTUNE_VERSION "0.1.0"

void cli_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("qtune: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void usage(FILE *fp)
{
    fputs("usage: qtune COMMAND [ARGS]\n"
          "\n"
          "  qtune inspect MODEL [--json | --csv]   per-tensor shapes, types and statistics\n"
          "  qtune sample -o FILE.gguf [options]     write a synthetic llama-shaped model\n"
          "  qtune plan MODEL --preset NAME -o P     make a plan (also: plan explain, plan export)\n"
          "  qtune preview MODEL --plan P            per-tensor error and size of a plan\n"
          "  qtune apply MODEL --plan P -o OUT.gguf  quantize and write a GGUF\n"
          "  qtune calib MODEL --text F -o OUT.gguf  imatrix from text (--kld --plan P: KLD)\n"
          "  qtune MODEL [--plan P] [--imatrix I] [--theme NAME]   open MODEL in the TUI\n"
          "\n"
          "MODEL is a .gguf file, a .safetensors file, or a Hugging Face directory\n"
          "(config.json with model.safetensors or model.safetensors.index.json).\n"
          "Run 'qtune COMMAND --help' for a command's options.\n",
          fp);
}

/* A CUDA build says once, on stderr, when there is no usable GPU and the CPU
 * kernels will run (a CPU build has nothing to say). */
static void note_gpu(void)
{
#ifdef QTUNE_CUDA
    char why[256];
    if (!k_cuda_available(why, sizeof why))
        fprintf(stderr, "qtune: %s: using the CPU kernels\n", why);
#endif
}

int main(int argc, char **argv)
{
    k_init(); /* fast kernels into the format traits and q_preview */
    if (argc < 2) {
        usage(stderr);
        return 64;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("qtune %s\n", QTUNE_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "inspect"))
        return cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(cmd, "sample"))
        return cmd_sample(argc - 1, argv + 1);
    if (!strcmp(cmd, "plan"))
        return cmd_plan(argc - 1, argv + 1);
    if (!strcmp(cmd, "preview") || !strcmp(cmd, "apply") || !strcmp(cmd, "calib"))
        note_gpu();
    if (!strcmp(cmd, "preview"))
        return cmd_preview(argc - 1, argv + 1);
    if (!strcmp(cmd, "apply"))
        return cmd_apply(argc - 1, argv + 1);
    if (!strcmp(cmd, "calib"))
        return cmd_calib(argc - 1, argv + 1);
    if (cmd[0] == '-') {
        cli_errorf("unknown option '%s'", cmd);
        usage(stderr);
        return 64;
    }
    /* `qtune MODEL [options]`: the interactive view (tui/tui.c). */
    if (access(cmd, F_OK) == 0) {
        note_gpu();
        return tui_main(argc, argv);
    }
    cli_errorf("unknown command '%s'", cmd);
    usage(stderr);
    return 64;
}
