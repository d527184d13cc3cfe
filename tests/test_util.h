/* test_util.h — the real test models the suites share: $QTUNE_MODELS
 * (default ../shared/models; a suite skips when stories260K.gguf is not
 * there). Include after <cmocka.h>. Each test program has its own copy
 * (static), so suites never disturb each other. */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "q_model.h"

static char models_dir[1024];

/* Sets models_dir from $QTUNE_MODELS; true when stories260K.gguf is readable
 * there. */
static inline bool have_models(void)
{
    const char *d = getenv("QTUNE_MODELS");
    snprintf(models_dir, sizeof models_dir, "%s", d ? d : "../shared/models");
    char p[1200];
    snprintf(p, sizeof p, "%s/stories260K.gguf", models_dir);
    return access(p, R_OK) == 0;
}

/* models_dir/rel into p (cap bytes). */
static inline void model_path(char *p, size_t cap, const char *rel)
{
    snprintf(p, cap, "%s/%s", models_dir, rel);
}

/* Opens the model at path (a file or a directory); fails the test when it
 * cannot. */
static inline q_model *open_model_path(const char *path)
{
    q_model *m = NULL;
    q_err err = {{0}};
    if (q_model_open(path, &m, &err) != Q_OK)
        fail_msg("%s: %s", path, err.msg);
    return m;
}

/* Opens models_dir/rel (a file or a directory); fails the test when it cannot. */
static inline q_model *open_model(const char *rel)
{
    char p[1200];
    model_path(p, sizeof p, rel);
    return open_model_path(p);
}

#endif
