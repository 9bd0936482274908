/* The named parameter list. */
#include "core/params.h"

#include <string.h>

nn_status nn_params_add(nn_params *ps, const char *name, nn_tensor *t, bool is_bias)
{
    if (strlen(name) >= sizeof ps->p[0].name)
        return nn_error(NN_E_ARG, "params: name '%s' too long", name);
    if (nn_params_find(ps, name)) return nn_error(NN_E_ARG, "params: duplicate name '%s'", name);
    if (ps->n == ps->cap) {
        int cap = ps->cap ? ps->cap * 2 : 16;
        nn_param *p = realloc(ps->p, (size_t)cap * sizeof *p);
        if (!p) return nn_error(NN_E_NOMEM, "params: out of memory");
        ps->p = p;
        ps->cap = cap;
    }
    nn_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    memcpy(p->name, name, strlen(name) + 1);
    p->t = t;
    p->is_bias = is_bias;
    return NN_OK;
}

nn_tensor *nn_params_find(const nn_params *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0) return ps->p[i].t;
    return NULL;
}

size_t nn_params_count(const nn_params *ps)
{
    size_t n = 0;
    for (int i = 0; i < ps->n; i++) n += ps->p[i].t->numel;
    return n;
}

nn_status nn_params_zero_grad(const nn_params *ps)
{
    for (int i = 0; i < ps->n; i++) NN_TRY(nn_tensor_zero_grad(ps->p[i].t));
    return NN_OK;
}

void nn_params_clear(nn_params *ps)
{
    free(ps->p);
    ps->p = NULL;
    ps->n = ps->cap = 0;
}
