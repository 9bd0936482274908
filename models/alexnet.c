/* AlexNet (Krizhevsky et al. 2012) as one composition of the ops, with the
 * layer names of the common PyTorch definition (docs/alexnet.md). The two-tower
 * variant (groups = 2) groups conv2, conv4 and conv5 as in the paper. */
#include <math.h>
#include <string.h>

#include "models/model.h"

nn_model_config nn_alexnet_config(void)
{
    nn_model_config c = {0};
    strcpy(c.arch, "alexnet");
    c.in_channels = 3;
    c.in_size = 224;
    c.classes = 1000;
    c.groups = 1;
    c.width = 1.0f;
    c.fc = 4096;
    c.dropout = 0.5f;
    c.init = NN_INIT_PAPER;
    return c;
}

/* Channel counts scaled by width, kept multiples of 8 (so groups of 2 split). */
static int ch(int paper, float width)
{
    int c = (int)lrintf((float)paper * width / 8.0f) * 8;
    return c < 8 ? 8 : c;
}

nn_status nn_alexnet_layers(nn_seq *s, const nn_model_config *c)
{
    if (c->groups != 1 && c->groups != 2)
        return nn_error(NN_E_ARG, "alexnet: groups must be 1 or 2, not %d", c->groups);
    if (!(c->width > 0) || c->width > 8 || c->fc < 1 || c->classes < 1 || !(c->dropout >= 0 && c->dropout < 1))
        return nn_error(NN_E_ARG, "alexnet: need 0 < width <= 8, fc >= 1, classes >= 1, 0 <= dropout < 1");
    int g = c->groups;
    float w = c->width;
    nn_seq_init(s, c->in_channels, c->in_size, c->in_size);
    /* name           out         k  s  p  groups bias(paper) */
    nn_seq_conv(s, "stage1.0", ch(96, w), 11, 4, 2, 1, 0.0f);
    nn_seq_relu(s, "stage1.1");
    nn_seq_lrn(s, "stage1.2", NN_LRN_PAPER);
    nn_seq_maxpool(s, "stage1.3", 3, 2);
    nn_seq_conv(s, "stage2.0", ch(256, w), 5, 1, 2, g, 1.0f);
    nn_seq_relu(s, "stage2.1");
    nn_seq_lrn(s, "stage2.2", NN_LRN_PAPER);
    nn_seq_maxpool(s, "stage2.3", 3, 2);
    nn_seq_conv(s, "stage3.0", ch(384, w), 3, 1, 1, 1, 0.0f);
    nn_seq_relu(s, "stage3.1");
    nn_seq_conv(s, "stage4.0", ch(384, w), 3, 1, 1, g, 1.0f);
    nn_seq_relu(s, "stage4.1");
    nn_seq_conv(s, "stage5.0", ch(256, w), 3, 1, 1, g, 1.0f);
    nn_seq_relu(s, "stage5.1");
    nn_seq_maxpool(s, "stage5.2", 3, 2);
    nn_seq_flatten(s, "classifier.0");
    nn_seq_dropout(s, "classifier.1", c->dropout);
    nn_seq_linear(s, "classifier.2", c->fc, 1.0f);
    nn_seq_relu(s, "classifier.3");
    nn_seq_dropout(s, "classifier.4", c->dropout);
    nn_seq_linear(s, "classifier.5", c->fc, 1.0f);
    nn_seq_relu(s, "classifier.6");
    nn_seq_linear(s, "classifier.7", c->classes, 0.0f);
    return s->status;
}

nn_status nn_model_build(nn_seq *s, const nn_model_config *c, nn_device dev, nn_rng *rng)
{
    nn_status st;
    if (strcmp(c->arch, "alexnet") == 0)
        st = nn_alexnet_layers(s, c);
    else if (strcmp(c->arch, "lenet") == 0)
        st = nn_lenet_layers(s, c);
    else
        return nn_error(NN_E_ARG, "unknown model '%s' (expected alexnet or lenet)", c->arch);
    if (st != NN_OK) return st;
    if (!rng) return nn_seq_infer(s);
    return nn_seq_build(s, dev, c->init, rng);
}

const char *const nn_model_meta_keys[NN_MODEL_META_KEYS] = {
    "arch", "in_channels", "in_size", "classes", "groups", "width", "fc", "dropout", "init"};

void nn_model_meta_value(const nn_model_config *c, int key, char *buf, size_t n)
{
    switch (key) {
    case 0: snprintf(buf, n, "%s", c->arch); break;
    case 1: snprintf(buf, n, "%d", c->in_channels); break;
    case 2: snprintf(buf, n, "%d", c->in_size); break;
    case 3: snprintf(buf, n, "%d", c->classes); break;
    case 4: snprintf(buf, n, "%d", c->groups); break;
    case 5: snprintf(buf, n, "%.9g", (double)c->width); break;
    case 6: snprintf(buf, n, "%d", c->fc); break;
    case 7: snprintf(buf, n, "%.9g", (double)c->dropout); break;
    default: snprintf(buf, n, "%s", nn_init_name(c->init)); break;
    }
}

static nn_status parse_int(const char *key, const char *v, int lo, int hi, int *out)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi)
        return nn_error(NN_E_FORMAT, "model metadata: %s = '%s' is not an integer in [%d, %d]", key, v, lo, hi);
    *out = (int)x;
    return NN_OK;
}

static nn_status parse_float(const char *key, const char *v, float *out)
{
    char *end;
    float x = strtof(v, &end);
    if (!*v || *end || !isfinite(x))
        return nn_error(NN_E_FORMAT, "model metadata: %s = '%s' is not a number", key, v);
    *out = x;
    return NN_OK;
}

nn_status nn_model_meta_set(nn_model_config *c, const char *key, const char *v)
{
    if (strcmp(key, "arch") == 0) {
        if (strlen(v) >= sizeof c->arch) return nn_error(NN_E_FORMAT, "model metadata: arch '%s' too long", v);
        strcpy(c->arch, v);
        return NN_OK;
    }
    if (strcmp(key, "in_channels") == 0) return parse_int(key, v, 1, 4096, &c->in_channels);
    if (strcmp(key, "in_size") == 0) return parse_int(key, v, 1, 8192, &c->in_size);
    if (strcmp(key, "classes") == 0) return parse_int(key, v, 1, 1 << 20, &c->classes);
    if (strcmp(key, "groups") == 0) return parse_int(key, v, 1, 2, &c->groups);
    if (strcmp(key, "width") == 0) return parse_float(key, v, &c->width);
    if (strcmp(key, "fc") == 0) return parse_int(key, v, 1, 1 << 16, &c->fc);
    if (strcmp(key, "dropout") == 0) return parse_float(key, v, &c->dropout);
    if (strcmp(key, "init") == 0) return nn_init_parse(v, &c->init);
    return nn_error(NN_E_FORMAT, "model metadata: unknown key '%s'", key);
}
