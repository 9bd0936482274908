/* The backend interface, written once: every slot of nn_backend as
 * NN_KERNEL(op, ret, name, (args)). Including this file with NN_KERNEL defined
 * expands the list; core/backend.h builds the struct slots, the kernel ids
 * and the CPU prototypes (nn_cpu_<name>) from it, cuda/common.cuh the CUDA
 * prototypes (nn_cuda_<name>), core/cpu_backend.c and cuda/backend.cu their
 * tables. So a kernel's signature lives here and nowhere else, and a table
 * cannot miss a slot: a kernel left unwritten is a link error.
 *
 * `op` names the op a kernel serves, as the op names itself in messages
 * ("conv2d"); nn_backend_supports() checks an op's kernels by it. The
 * memory, helper, data and optimizer slots belong to no op: their `op` is the
 * group they are in. Conventions for the kernels: see core/backend.h.
 * No include guard: meant to be expanded several times. */

/* memory */
NN_KERNEL(memory, nn_status, alloc, (void **p, size_t bytes))   /* *p NULL on failure */
NN_KERNEL(memory, void, free, (void *p))
NN_KERNEL(memory, nn_status, memset0, (void *p, size_t bytes))
/* copy where either side may be on the host (NN_CPU) or this device */
NN_KERNEL(memory, nn_status, copy, (void *dst, nn_device dst_dev, const void *src, nn_device src_dev, size_t bytes))
NN_KERNEL(memory, nn_status, sync, (void))
NN_KERNEL(memory, size_t, peak_bytes, (void))                   /* allocator high-water mark */

/* elementwise helpers */
NN_KERNEL(helpers, nn_status, fill, (float *x, size_t n, float v))
NN_KERNEL(helpers, nn_status, axpy, (size_t n, float a, const float *x, float *y))   /* y += a x */
NN_KERNEL(helpers, nn_status, count_nonfinite, (size_t n, const float *x, size_t *host_count))
/* the same count added to sv->nonfinite where the device can read it: no
 * host sync (sv in this device's memory, core/step_vars.h) */
NN_KERNEL(helpers, nn_status, count_nonfinite_into, (size_t n, const float *x, nn_step_vars *sv))
NN_KERNEL(helpers, nn_status, rng_uniform, (float *x, size_t n, uint64_t seed, uint64_t offset, float lo, float hi))
NN_KERNEL(helpers, nn_status, rng_normal, (float *x, size_t n, uint64_t seed, uint64_t offset, float mean, float std))

/* conv2d: y = conv(x, w) + b; ws has conv2d_workspace(g) bytes */
NN_KERNEL(conv2d, size_t, conv2d_workspace, (const nn_conv2d_geom *g))
NN_KERNEL(conv2d, nn_status, conv2d_forward, (const nn_conv2d_geom *g, const float *x, const float *w,
                                              const float *b, float *y, void *ws))
NN_KERNEL(conv2d, nn_status, conv2d_backward, (const nn_conv2d_geom *g, const float *x, const float *w,
                                               const float *dy, float *dx, float *dw, float *db, void *ws))

/* relu: y = max(x, 0); dx += dy * (y > 0) */
NN_KERNEL(relu, nn_status, relu_forward, (size_t n, const float *x, float *y))
NN_KERNEL(relu, nn_status, relu_backward, (size_t n, const float *y, const float *dy, float *dx))

/* lrn: scale = k + alpha * sum_window x^2 ; y = x * scale^-beta */
NN_KERNEL(lrn, nn_status, lrn_forward, (const nn_lrn_geom *g, const float *x, float *y, float *scale))
NN_KERNEL(lrn, nn_status, lrn_backward, (const nn_lrn_geom *g, const float *x, const float *y,
                                         const float *scale, const float *dy, float *dx))

/* maxpool: argmax holds the flat index (within its (n, c) plane) of each max */
NN_KERNEL(maxpool2d, nn_status, maxpool_forward, (const nn_pool_geom *g, const float *x, float *y, int32_t *argmax))
NN_KERNEL(maxpool2d, nn_status, maxpool_backward, (const nn_pool_geom *g, const int32_t *argmax, const float *dy,
                                                   float *dx))

/* dropout: mask[i] = keep(seed, offset, i, p); y = x * mask / (1 - p) */
NN_KERNEL(dropout, nn_status, dropout_forward, (size_t n, const float *x, float *y, uint8_t *mask, float p,
                                                uint64_t seed, uint64_t offset))
/* the same with the counters at sv->rng_offset + offset + i (sv in this device's memory) */
NN_KERNEL(dropout, nn_status, dropout_forward_at, (size_t n, const float *x, float *y, uint8_t *mask, float p,
                                                   uint64_t seed, uint64_t offset, const nn_step_vars *sv))
NN_KERNEL(dropout, nn_status, dropout_backward, (size_t n, const uint8_t *mask, float p, const float *dy, float *dx))

/* linear: y = x w^T + b */
NN_KERNEL(linear, nn_status, linear_forward, (const nn_linear_geom *g, const float *x, const float *w,
                                              const float *b, float *y))
NN_KERNEL(linear, nn_status, linear_backward, (const nn_linear_geom *g, const float *x, const float *w,
                                               const float *dy, float *dx, float *dw, float *db))

/* softmax cross-entropy over (n, classes) logits and int32 labels:
 * probs = softmax(logits); *loss (one float on the device) = mean -log p[label].
 * A label outside [0, classes) is NN_E_RANGE. Backward:
 * dx += dloss[0] * (probs - onehot) / n, dloss a device pointer. */
NN_KERNEL(softmax_xent, nn_status, xent_forward, (int n, int classes, const float *logits, const int32_t *labels,
                                                  float *probs, float *loss))
NN_KERNEL(softmax_xent, nn_status, xent_backward, (int n, int classes, const float *probs, const int32_t *labels,
                                                   const float *dloss, float *dx))

/* data: a batch of a byte data set kept on the device (io/resident.h):
 * x (n, c, size, size) = the loader's normalized, resized, augmented samples
 * of images[order[k]] (io/sample.h), y[k] = labels[order[k]] */
NN_KERNEL(data, nn_status, u8_batch, (const nn_u8_batch_geom *g, const uint8_t *images, const int32_t *labels,
                                      const int32_t *order, float *x, int32_t *y))

/* optimizers (see optim/optim.h for the formulas) */
NN_KERNEL(optim, nn_status, sgd_update, (size_t n, float *w, const float *g, float *v, float lr, float momentum,
                                         float wd))
NN_KERNEL(optim, nn_status, adam_update, (size_t n, float *w, const float *g, float *m, float *v, float lr,
                                          float beta1, float beta2, float eps, float wd, int decoupled,
                                          float bias1, float bias2))
/* the same with lr (and Adam's bias1, bias2) read from sv, in this device's
 * memory; nothing is written when sv->nonfinite is not zero */
NN_KERNEL(optim, nn_status, sgd_update_at, (size_t n, float *w, const float *g, float *v, float momentum, float wd,
                                            const nn_step_vars *sv))
NN_KERNEL(optim, nn_status, adam_update_at, (size_t n, float *w, const float *g, float *m, float *v, float beta1,
                                             float beta2, float eps, float wd, int decoupled, const nn_step_vars *sv))

/* step capture (docs/cuda_graph.md), in the memory group as sync is (the
 * stream's, no op's): graph_begin starts capturing the work
 * enqueued on this device's one stream (nothing of it runs); graph_end stops
 * and instantiates it into *g (NULL and a status when the capture failed:
 * the stream is usable again); graph_launch replays it on the stream. The
 * CPU has none: NN_E_UNSUPPORTED. */
NN_KERNEL(memory, nn_status, graph_begin, (void))
NN_KERNEL(memory, nn_status, graph_end, (void **g))
NN_KERNEL(memory, nn_status, graph_launch, (void *g))
NN_KERNEL(memory, void, graph_free, (void *g))
