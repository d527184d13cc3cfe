/* mem_tensor.h — a q_tensor over rows × cols values of type dtype already in
 * memory (no model file), for the tests and tools that preview a generated
 * tensor. Each program has its own copy (static). */
#ifndef MEM_TENSOR_H
#define MEM_TENSOR_H

#include <string.h>

#include "q_dtype.h"
#include "q_model.h"

/* name is borrowed (not freed: the tensor owns nothing); data must hold
 * q_dtype_bytes(dtype, rows × cols) bytes while t is used. */
static inline void mem_tensor(q_tensor *t, const char *name, const void *data, uint32_t dtype,
                              int64_t rows, int64_t cols)
{
    memset(t, 0, sizeof *t);
    t->name = t->gguf_name = (char *)name;
    t->n_dims = 2;
    t->ne[0] = cols;
    t->ne[1] = rows;
    t->ne[2] = t->ne[3] = 1;
    t->rows = rows;
    t->cols = cols;
    t->dtype = dtype;
    t->params = rows * cols;
    t->bytes = (uint64_t)q_dtype_bytes(dtype, rows * cols);
    t->data = (const uint8_t *)data;
    t->readable = q_dtype_readable(dtype);
}

#endif
