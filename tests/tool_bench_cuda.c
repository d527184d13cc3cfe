/* tool_bench_cuda.c — benchmark of the CUDA preview (k_cuda_preview) against
 * the device's own copy bandwidth, and of a 7B-shaped model previewed in q4_k.
 *
 * usage: tool_bench_cuda [--rows R] [--cols C] [--formats a,b,...] [--reps N]
 *                        [--no-model]
 *
 * Built by `make cuda` (build-cuda/tests/tool_bench_cuda); the CPU build's
 * copy, and a CUDA build on a machine without a usable GPU, print why the
 * bench is skipped and exit 0. Figures, each timed by CUDA events inside
 * k_cuda_preview / k_cuda_copy_bandwidth:
 * - the copy bandwidth: device-to-device cudaMemcpy of 1 GiB, best of N,
 *   bytes read plus bytes written over the time (STREAM's copy);
 * - per format, on the tool_bench_kernels tensor (4096 × 4096 f32, the same
 *   generator and seed) kept on the device: the preview's kernels (the fused
 *   pass, the final reduction and the copy of the result back) best of N,
 *   the source bytes over that time, and that rate's share of the copy
 *   bandwidth against the target of 50% for the round-to-nearest
 *   formats; the tensor's host-to-device copy once, alongside;
 * - a generated model of llama-7B's shapes (32 layers of dim 4096, feed
 *   forward 11008, vocabulary 32000, f16): one tensor of each of its four
 *   shapes is generated (per-row scales, Gaussian values), kept on the device
 *   and previewed in q4_k with a histogram, best of N; the model's time is
 *   each shape's time times the number of tensors of that shape (32 × 4
 *   attention, 32 × 2 gate/up, 32 down, token embedding and output), against
 *   the target of 1 s. Tensors already on the device, as the TUI keeps the
 *   layer under preview: the host-to-device copies are printed apart. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k_cuda.h"
#include "k_cuda_fused.h"
#include "q_dtype.h"
#include "q_format.h"
#include "q_metrics.h"
#include "tool_gen.h"

/* A model-sized f16 tensor, cheaper to make than tool_gen_weights': per-row
 * scales and one normal drawn per four values, each of the four with its
 * own sign and scale (a quarter of the draws for 6.7 billion values). */
static void gen_f16(uint16_t *h, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++) {
        double rs = 0.02 * (0.7 + 0.6 * tool_urand());
        for (int64_t c = 0; c < cols; c += 4) {
            double z = tool_nrand();
            for (int64_t k = 0; k < 4 && c + k < cols; k++)
                h[r * cols + c + k] = q_f32_to_f16((float)(rs * z * (k % 2 ? -1.0 : 1.0) *
                                                           (0.6 + 0.25 * (double)k)));
        }
    }
}

/* Best kernel time of reps previews of a kept tensor; < 0 on failure. */
static double preview_ms(const void *src, k_src type, int64_t rows, int64_t cols,
                         const q_fmt_spec *spec, int reps, double *copy_ms)
{
    double best = -1.0;
    for (int r = 0; r < reps; r++) {
        q_metrics_acc acc;
        q_err err;
        q_metrics_init(&acc, 0.05);
        if (k_cuda_preview(src, type, rows, cols, spec, NULL, 0.05, NULL, &acc, NULL, &err) !=
            Q_OK) {
            fprintf(stderr, "tool_bench_cuda: %s\n", err.msg);
            return -1.0;
        }
        double c = 0, k = 0;
        if (!k_cuda_preview_timing(&c, &k))
            return -1.0;
        if (copy_ms && r == 0)
            *copy_ms = c;
        if (best < 0 || k < best)
            best = k;
    }
    return best;
}

static int bench_formats(const char *list, int64_t rows, int64_t cols, int reps, double copy_bw)
{
    const size_t n = (size_t)rows * (size_t)cols;
    float *x = malloc(n * sizeof *x);
    if (!x) {
        fprintf(stderr, "tool_bench_cuda: out of memory\n");
        return 1;
    }
    tool_gen_weights(x, rows, cols);
    const double gb = (double)n * sizeof *x / 1e9;
    q_err err;
    /* one preview with the tensor not kept: its host-to-device copy */
    q_fmt_spec q8;
    q_fmt_parse("q8_0", &q8);
    double h2d = 0;
    if (preview_ms(x, K_SRC_F32, rows, cols, &q8, 1, &h2d) < 0) {
        free(x);
        return 1;
    }
    if (k_cuda_keep(x, n * sizeof *x, &err) != Q_OK) {
        fprintf(stderr, "tool_bench_cuda: %s\n", err.msg);
        free(x);
        return 1;
    }
    printf("tensor %lldx%lld F32 (%.1f MB) kept on the device (its host-to-device copy %.2f "
           "ms, %.1f GB/s)\n",
           (long long)rows, (long long)cols, gb * 1e3, h2d, gb / (h2d * 1e-3));
    printf("%-12s %9s %8s %7s  %s\n", "format", "kernel_ms", "GB/s", "%copy", "target");
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    int rc = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        q_fmt_spec spec;
        if (!q_fmt_parse(tok, &spec) || !k_cuda_fused_has(&spec)) {
            printf("%-12s no CUDA kernel\n", tok);
            continue;
        }
        double ms = preview_ms(x, K_SRC_F32, rows, cols, &spec, reps, NULL);
        if (ms < 0) {
            rc = 1;
            break;
        }
        const double gbs = gb / (ms * 1e-3), pct = 100.0 * gbs / copy_bw;
        const bool rtn = spec.id != Q_FMT_Q4_K && spec.id != Q_FMT_Q6_K;
        printf("%-12s %9.3f %8.1f %7.1f  %s\n", tok, ms, gbs, pct,
               !rtn ? "(k-quant: no bandwidth target)"
               : pct >= 50.0 ? ">=50% of copy: met"
                             : ">=50% of copy: NOT met");
    }
    k_cuda_forget(x);
    free(x);
    return rc;
}

static int bench_model(int reps)
{
    /* llama-7B: rows x cols and how many tensors of that shape */
    static const struct {
        const char *what;
        int64_t rows, cols, count;
    } shapes[] = {
        {"attn q/k/v/o", 4096, 4096, 32 * 4},
        {"ffn gate/up", 11008, 4096, 32 * 2},
        {"ffn down", 4096, 11008, 32},
        {"token_embd/output", 32000, 4096, 2},
    };
    q_fmt_spec spec;
    q_fmt_parse("q4_k", &spec);
    double total = 0, copies = 0, values = 0;
    printf("7B-shaped model (f16, 32 layers, dim 4096, ff 11008, vocab 32000) in q4_k:\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const size_t n = (size_t)shapes[i].rows * (size_t)shapes[i].cols;
        uint16_t *h = malloc(n * sizeof *h);
        if (!h) {
            fprintf(stderr, "tool_bench_cuda: out of memory\n");
            return 1;
        }
        gen_f16(h, shapes[i].rows, shapes[i].cols);
        double h2d = 0;
        q_err err;
        if (preview_ms(h, K_SRC_F16, shapes[i].rows, shapes[i].cols, &spec, 1, &h2d) < 0 ||
            k_cuda_keep(h, n * sizeof *h, &err) != Q_OK) {
            fprintf(stderr, "tool_bench_cuda: %s preview or keep failed\n", shapes[i].what);
            free(h);
            return 1;
        }
        double ms = preview_ms(h, K_SRC_F16, shapes[i].rows, shapes[i].cols, &spec, reps, NULL);
        k_cuda_forget(h);
        free(h);
        if (ms < 0)
            return 1;
        printf("  %-18s %5lld x %-5lld x %3lld: %8.3f ms each, %8.1f ms in all (copy to the "
               "device %.2f ms each)\n",
               shapes[i].what, (long long)shapes[i].rows, (long long)shapes[i].cols,
               (long long)shapes[i].count, ms, ms * (double)shapes[i].count, h2d);
        total += ms * (double)shapes[i].count;
        copies += h2d * (double)shapes[i].count;
        values += (double)n * (double)shapes[i].count;
    }
    printf("  whole model (%.2f billion values): %.0f ms of preview kernels, target < 1 s: %s "
           "(host-to-device copies, were nothing kept: %.0f ms more)\n",
           values / 1e9, total, total < 1000.0 ? "met" : "NOT met", copies);
    return 0;
}

int main(int argc, char **argv)
{
    int64_t rows = 4096, cols = 4096;
    int reps = 5;
    bool model = true;
    const char *list = "q8_0,q4_0,int8,int4,uint4,uint3,nf4,fp8_e4m3,fp8_e5m2,q6_k,q4_k";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--cols") && i + 1 < argc)
            cols = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--formats") && i + 1 < argc)
            list = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-model"))
            model = false;
        else {
            fprintf(stderr,
                    "usage: %s [--rows R] [--cols C] [--formats a,b] [--reps N] [--no-model]\n",
                    argv[0]);
            return 2;
        }
    }
    if (rows <= 0 || cols <= 0 || cols % 256 != 0 || reps < 1) {
        fprintf(stderr, "tool_bench_cuda: rows > 0, cols a multiple of 256, reps >= 1\n");
        return 2;
    }
    char why[256];
    if (!k_cuda_available(why, sizeof why)) {
        printf("GPU bench skipped: %s\n", why);
        return 0;
    }
    double bw = 0;
    q_err err;
    if (k_cuda_copy_bandwidth((size_t)1 << 30, reps, &bw, &err) != Q_OK) {
        fprintf(stderr, "tool_bench_cuda: %s\n", err.msg);
        return 1;
    }
    printf("device: %s; copy bandwidth (device to device, 1 GiB, best of %d): %.0f GB/s "
           "(read + written)\n",
           why, reps, bw);
    int rc = bench_formats(list, rows, cols, reps, bw);
    if (rc == 0 && model)
        rc = bench_model(reps);
    k_cuda_fused_release();
    return rc;
}
