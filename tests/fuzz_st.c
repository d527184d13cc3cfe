/* fuzz_st.c — libFuzzer target for the safetensors reader and the Hugging Face
 * config.json / model.safetensors.index.json parsers.
 *
 * Input: one selector byte (value % 3: 0 safetensors, 1 config.json, 2 index),
 * then the bytes given to that parser. Each parser gets its own exact-size copy
 * so that ASan sees any read past the end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "q_st.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks what an accepted safetensors image promises; aborts on a broken promise. */
static void fz_check_st(const q_st *st, const uint8_t *buf, uint64_t size)
{
    uint64_t at = 0;
    if (st->data_offset != 8 + st->header_len) {
        abort();
    }
    for (uint64_t i = 0; i < st->n_tensors; i++) {
        const q_st_tensor *t = &st->tensors[i];
        if (t->begin != at || t->end < t->begin || t->n_dims > Q_ST_MAX_DIMS || !t->name ||
            t->abs_offset != st->data_offset + t->begin || t->data != buf + t->abs_offset) {
            abort();
        }
        at = t->end;
    }
    if (st->data_offset + at != size) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t n = size - 1;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        return 0;
    }
    memcpy(buf, data + 1, n);
    q_err err;
    err.msg[0] = '\0';
    switch (data[0] % 3) {
    case 0: {
        q_st *st = NULL;
        q_status rc = q_st_parse(buf, n, "fuzz.safetensors", &st, &err);
        if (rc == Q_OK) {
            fz_check_st(st, buf, n);
        } else if (st || rc != Q_EDATA) {
            abort();
        }
        q_st_free(st);
        break;
    }
    case 1: {
        q_arch a;
        q_status rc = q_hf_parse_config((const char *)buf, n, "config.json", &a, &err);
        if (rc == Q_OK && memchr(a.name, '\0', sizeof a.name) == NULL) {
            abort();
        }
        if (rc != Q_OK && rc != Q_EDATA) {
            abort();
        }
        break;
    }
    default: {
        q_hf_index *ix = NULL;
        q_status rc = q_hf_parse_index((const char *)buf, n, "index.json", &ix, &err);
        if (rc == Q_OK) {
            for (uint64_t i = 0; i < ix->n_entries; i++) {
                if (ix->file_of[i] >= ix->n_files) {
                    abort();
                }
            }
        } else if (ix || rc != Q_EDATA) {
            abort();
        }
        q_hf_index_free(ix);
        break;
    }
    }
    if (err.msg[0] && (memchr(err.msg, '\0', sizeof err.msg) == NULL ||
                       strchr(err.msg, '\n'))) {
        abort();
    }
    free(buf);
    return 0;
}
