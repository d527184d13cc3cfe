/* tool_dump.c — writes one tensor of a model, dequantized by qtune, as raw
 * little-endian f32 (rows × cols, in stored row order), for cross-checks with
 * independent readers.
 *
 * usage: tool_dump MODEL TENSOR OUT.f32 */
#include <stdio.h>
#include <stdlib.h>

#include "q_model.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fputs("usage: tool_dump MODEL TENSOR OUT.f32\n", stderr);
        return 64;
    }
    q_model *m = NULL;
    q_err err = {{0}};
    q_status st = q_model_open(argv[1], &m, &err);
    if (st != Q_OK) {
        fprintf(stderr, "tool_dump: %s\n", err.msg);
        return (int)st;
    }
    int64_t i = q_model_find(m, argv[2]);
    if (i < 0) {
        fprintf(stderr, "tool_dump: %s: no tensor %s\n", argv[1], argv[2]);
        q_model_close(m);
        return 65;
    }
    const q_tensor *t = &m->tensors[i];
    float *buf = malloc((size_t)t->params * sizeof *buf);
    FILE *fp = fopen(argv[3], "wb");
    int rc = 0;
    if (!buf || !fp || (st = q_tensor_read_rows(t, 0, t->rows, buf, &err)) != Q_OK ||
        fwrite(buf, sizeof *buf, (size_t)t->params, fp) != (size_t)t->params) {
        fprintf(stderr, "tool_dump: %s\n", st != Q_OK ? err.msg : "cannot write output");
        rc = 74;
    }
    if (fp)
        fclose(fp);
    free(buf);
    q_model_close(m);
    return rc;
}
