/* fuzz_gguf.c — libFuzzer target for the GGUF reader: any input must parse or
 * fail with Q_EDATA, never crash; a parsed file is walked completely (every kv
 * through the lookup helpers, every string of every string array, the first and
 * last byte of every tensor). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "q_gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void touch(const q_gguf *g)
{
    uint64_t sum = 0;
    char *key = NULL;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const q_gguf_kv *kv = &g->kv[i];
        char *k = realloc(key, (size_t)kv->key.len + 1);
        if (!k) {
            break;
        }
        key = k;
        memcpy(key, kv->key.ptr, (size_t)kv->key.len);
        key[kv->key.len] = '\0';
        int64_t iv;
        double dv;
        char s[16];
        int64_t at = q_gguf_find(g, key);
        if (!memchr(kv->key.ptr, 0, (size_t)kv->key.len) && at != (int64_t)i) {
            abort(); /* keys are unique; one holding a NUL byte cannot be looked up */
        }
        sum += q_gguf_get_int(g, key, &iv) ? (uint64_t)iv : 0;
        sum += q_gguf_get_f64(g, key, &dv) ? 1 : 0;
        sum += q_gguf_get_str(g, key, s, sizeof s) ? (uint8_t)s[0] : 0;
        sum += strlen(q_gguf_vtype_name(kv->type));
        if (kv->type != Q_GGUF_ARRAY || kv->arr_n == 0) {
            continue;
        }
        if (kv->arr_type == Q_GGUF_STRING) {
            q_gguf_str str;
            for (uint64_t j = 0; j < kv->arr_n; j++) {
                if (!q_gguf_arr_str(kv, j, &str)) {
                    abort();
                }
                sum += str.len ? (uint8_t)str.ptr[0] + (uint8_t)str.ptr[str.len - 1] : 0;
            }
            /* Backwards too: the helper's cursor must restart. */
            if (q_gguf_arr_str(kv, 0, &str)) {
                sum += str.len;
            }
        } else {
            size_t esz = q_gguf_vtype_size(kv->arr_type);
            sum += kv->arr_data[0] + kv->arr_data[kv->arr_n * esz - 1];
        }
    }
    free(key);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const q_gguf_tensor *t = &g->tensors[i];
        char name[64];
        size_t n = t->name.len < sizeof name - 1 ? (size_t)t->name.len : sizeof name - 1;
        memcpy(name, t->name.ptr, n);
        name[n] = '\0';
        sum += (uint64_t)q_gguf_find_tensor(g, name);
        if (t->data) {
            sum += t->data[0] + t->data[t->nbytes - 1];
        }
    }
    sink = sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    q_gguf *g = NULL;
    q_err err;
    q_status st = q_gguf_parse(data, size, "fuzz.gguf", &g, &err);
    if (st == Q_OK) {
        touch(g);
        q_gguf_free(g);
    } else if (st != Q_EDATA || g != NULL) {
        abort();
    }
    return 0;
}
