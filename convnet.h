/* convnet.h: the one header a program needs. Everything public lives under
 * the nn_ / NN_ prefix; each header included here documents its own part
 * (ownership of returned pointers, formulas, defaults). Internal headers
 * (core/op.h, ops/cpu_kernels.h, io/atomic.h, io/imagefolder_impl.h, cuda/)
 * are not part of the API and are not installed. Compile with
 * $(pkg-config --cflags convnet), which names <includedir>/convnet. Every
 * header reached from here is in meson.build's public_headers (installed) and
 * no other: .ci/install_check.sh fails when they differ. */
#ifndef CONVNET_H
#define CONVNET_H

#include "core/status.h"
#include "core/tensor.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/graph.h"
#include "core/params.h"
#include "core/backend.h"
#include "core/gradcheck.h"
#include "core/dist.h"
#include "ops/ops.h"
#include "optim/optim.h"
#include "models/model.h"
#include "models/sequential.h"
#include "models/checkpoint.h"
#include "models/evaluate.h"
#include "models/weights.h"
#include "models/metrics.h"
#include "models/train.h"
#include "models/dist_train.h"
#include "io/dataset.h"
#include "io/arrays.h"
#include "io/imagefolder.h"
#include "io/safetensors.h"
#include "io/idx.h"
#include "io/png.h"
#include "io/jpeg.h"
#include "io/photo.h"

#endif
