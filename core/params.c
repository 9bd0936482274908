/* The named parameter list and its gradient block. */
#include "core/params.h"

#include <string.h>

#include "core/backend.h"

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
    size_t n;
    float *block = nn_params_flat(ps, &n);
    if (block) return nn_backend_get(ps->grad_dev)->memset0(block, n * sizeof(float));
    for (int i = 0; i < ps->n; i++) NN_TRY(nn_tensor_zero_grad(ps->p[i].t));
    return NN_OK;
}

/* ---- the gradient block ---- */

static size_t grad_slot(size_t numel)
{
    return (numel + NN_PARAMS_GRAD_ALIGN - 1) / NN_PARAMS_GRAD_ALIGN * NN_PARAMS_GRAD_ALIGN;
}

float *nn_params_flat(const nn_params *ps, size_t *n)
{
    if (!ps || !ps->grad_block) return NULL;
    size_t off = 0;
    for (int i = 0; i < ps->n; i++) {
        const nn_tensor *t = ps->p[i].t;
        if (!t->grad || t->grad->data != ps->grad_block + off) return NULL;
        off += grad_slot(t->numel);
    }
    if (off != ps->grad_n) return NULL; /* a parameter was removed */
    if (n) *n = ps->grad_n;
    return ps->grad_block;
}

/* The gradients' device and the block's gradient floats, or an error naming
 * the parameter that cannot go in. */
static nn_status block_size(const nn_params *ps, nn_device *dev, size_t *n)
{
    *dev = ps->n ? ps->p[0].t->device : NN_CPU;
    *n = 0;
    for (int i = 0; i < ps->n; i++) {
        const nn_param *p = &ps->p[i];
        if (!p->t->grad || !p->t->grad->owned || p->t->dtype != NN_F32)
            return nn_error(NN_E_ARG, "params: '%s' has no float32 heap gradient to flatten (nn_tensor_require_grad)",
                            p->name);
        if (p->t->device != *dev)
            return nn_error(NN_E_ARG, "params: '%s' is on %s, '%s' on %s: one gradient block needs one device",
                            p->name, nn_device_name(p->t->device), ps->p[0].name, nn_device_name(*dev));
        *n += grad_slot(p->t->numel);
    }
    return NN_OK;
}

/* Copies the current gradients into block (a failure leaves them untouched). */
static nn_status fill_block(const nn_params *ps, const nn_backend *be, float *block)
{
    size_t off = 0;
    for (int i = 0; i < ps->n; i++) {
        const nn_tensor *g = ps->p[i].t->grad;
        NN_TRY(be->copy(block + off, g->device, g->data, g->device, nn_tensor_bytes(g)));
        off += grad_slot(g->numel);
    }
    return NN_OK;
}

/* Points every gradient into block, freeing buffers they owned; then frees the old block. */
static void adopt_block(nn_params *ps, const nn_backend *be, float *block)
{
    size_t off = 0;
    for (int i = 0; i < ps->n; i++) {
        nn_tensor *g = ps->p[i].t->grad;
        if (!g->view) be->free(g->data);
        g->data = block + off;
        g->view = true;
        off += grad_slot(g->numel);
    }
    if (ps->grad_block) nn_backend_get(ps->grad_dev)->free(ps->grad_block);
    ps->grad_block = block;
}

nn_status nn_params_flatten_grads(nn_params *ps, size_t extra, float **block, size_t *n)
{
    if (block) *block = NULL;
    if (!ps) return nn_error(NN_E_ARG, "params: NULL list to flatten");
    if (!nn_params_flat(ps, NULL) || ps->grad_extra < extra) {
        nn_device dev;
        size_t gn;
        NN_TRY(block_size(ps, &dev, &gn));
        const nn_backend *be = nn_backend_need(dev, "params: gradient block");
        if (!be) return NN_E_DEVICE;
        float *b = NULL;
        size_t bytes = (gn + extra) * sizeof(float);
        NN_TRY(be->alloc((void **)&b, bytes ? bytes : sizeof(float)));
        nn_status s = be->memset0(b, bytes);
        if (s == NN_OK) s = fill_block(ps, be, b);
        if (s != NN_OK) return be->free(b), s;
        adopt_block(ps, be, b);
        ps->grad_n = gn, ps->grad_extra = extra, ps->grad_dev = dev;
    }
    if (block) *block = ps->grad_block;
    if (n) *n = ps->grad_n;
    return NN_OK;
}

void nn_params_clear(nn_params *ps)
{
    if (ps->grad_block) nn_backend_get(ps->grad_dev)->free(ps->grad_block);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}
