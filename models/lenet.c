/* LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, for 28x28 digits or
 * clothes: how short a network is to define with the sequential builder. */
#include <string.h>

#include "models/model.h"

nn_model_config nn_lenet_config(void)
{
    nn_model_config c = {0};
    strcpy(c.arch, "lenet");
    c.in_channels = 1;
    c.in_size = 28;
    c.classes = 10;
    c.groups = 1;
    c.width = 1.0f;
    c.fc = 84; /* informational: LeNet's widths are fixed */
    c.init = NN_INIT_HE;
    return c;
}

nn_status nn_lenet_layers(nn_seq *s, const nn_model_config *c)
{
    nn_seq_init(s, c->in_channels, c->in_size, c->in_size);
    nn_seq_conv(s, "features.0", 6, 5, 1, 2, 1, 0.0f);  /* 6x28x28 */
    nn_seq_relu(s, "features.1");
    nn_seq_maxpool(s, "features.2", 2, 2);              /* 6x14x14 */
    nn_seq_conv(s, "features.3", 16, 5, 1, 0, 1, 0.0f); /* 16x10x10 */
    nn_seq_relu(s, "features.4");
    nn_seq_maxpool(s, "features.5", 2, 2);              /* 16x5x5 */
    nn_seq_flatten(s, "classifier.0");
    nn_seq_linear(s, "classifier.1", 120, 0.0f);
    nn_seq_relu(s, "classifier.2");
    nn_seq_linear(s, "classifier.3", 84, 0.0f);
    nn_seq_relu(s, "classifier.4");
    nn_seq_linear(s, "classifier.5", c->classes, 0.0f);
    return s->status;
}
