/* q_arch.h — model architecture summary shared by GGUF and HF sources. */
#ifndef Q_ARCH_H
#define Q_ARCH_H

#include <stdbool.h>
#include <stdint.h>

/* Architecture fields, as far as the source gives them (0 when absent). */
typedef struct q_arch {
    char name[32];      /* "llama" */
    int64_t n_layer;    /* block count */
    int64_t n_embd;     /* hidden size */
    int64_t n_head;
    int64_t n_head_kv;
    int64_t n_ff;       /* feed-forward length */
    int64_t n_vocab;
    int64_t n_ctx;      /* context length */
    int64_t n_rot;      /* rope dimension count */
    double rope_theta;
    double norm_eps;
    bool tied_embeddings;
} q_arch;

#endif
