#!/usr/bin/env python3
"""PyTorch's time for the project's AlexNet (docs/alexnet.md: the single-tower
model, LRN with PyTorch's alpha = 5 * 1e-4 so it equals the paper's formula),
the reference the CUDA backend is compared with. --precision: fp32 (TF32 off
everywhere, strict), default (PyTorch's own defaults: TF32 in cuDNN
convolutions, not in matrix products; what users get) or tf32 (TF32 in both).
Times training steps (forward, loss, backward, SGD with the
paper's momentum and weight decay) and inference with CUDA events after a
warm-up (the median of --steps calls), on random data already on the GPU.
Prints one JSON line."""
import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

PAPER_PARAMS = 62_378_344  # at 3x224x224 -> 1000 classes (docs/alexnet.md)


def channels(paper: int, width: float) -> int:
    """models/alexnet.c's rule: paper * width rounded to a multiple of 8, at least 8
    (round half to even, as lrintf; float32 arithmetic as the C code)."""
    import numpy as np
    c = int(np.rint(np.float32(paper) * np.float32(width) / np.float32(8.0))) * 8
    return max(c, 8)


def alexnet(classes: int = 1000, groups: int = 1, in_channels: int = 3, width: float = 1.0, fc: int = 4096,
            size: int = 224, dropout: float = 0.5) -> nn.Module:
    """Stage names as in docs/alexnet.md: stage1.0 ... stage5.0, classifier.2/.5/.7.
    The defaults are the paper's model; convnet's other configurations (`convnet
    summary` prints them; the default run: in_channels=1, width=0.5, fc=1024,
    size=64) take the same arguments as `convnet train`."""

    def lrn():
        return nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

    c1, c2, c3, c4, c5 = (channels(p, width) for p in (96, 256, 384, 384, 256))
    s = (size + 4 - 11) // 4 + 1  # conv1
    s = (s - 3) // 2 + 1          # pool1 (conv2 keeps the size)
    s = (s - 3) // 2 + 1          # pool2 (conv3-5 keep it)
    s = (s - 3) // 2 + 1          # pool5
    m = nn.Module()
    m.stage1 = nn.Sequential(nn.Conv2d(in_channels, c1, 11, stride=4, padding=2), nn.ReLU(), lrn(),
                             nn.MaxPool2d(3, 2))
    m.stage2 = nn.Sequential(nn.Conv2d(c1, c2, 5, padding=2, groups=groups), nn.ReLU(), lrn(),
                             nn.MaxPool2d(3, 2))
    m.stage3 = nn.Sequential(nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU())
    m.stage4 = nn.Sequential(nn.Conv2d(c3, c4, 3, padding=1, groups=groups), nn.ReLU())
    m.stage5 = nn.Sequential(nn.Conv2d(c4, c5, 3, padding=1, groups=groups), nn.ReLU(),
                             nn.MaxPool2d(3, 2))
    m.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c5 * s * s, fc), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(fc, fc), nn.ReLU(),
                                 nn.Linear(fc, classes))
    seq = nn.Sequential()
    for name in ("stage1", "stage2", "stage3", "stage4", "stage5", "classifier"):
        seq.add_module(name, getattr(m, name))
    return seq


def timed(fn, steps: int, dev: torch.device) -> float:
    """Milliseconds per call of fn: the median of `steps` calls, each between
    two CUDA events on a GPU, two clock readings on the CPU (as convnet bench
    reports medians: a shared machine's outliers move a mean, not a median)."""
    if dev.type != "cuda":
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def per_op(model: nn.Module, x: torch.Tensor, steps: int, warmup: int, dev: torch.device) -> list:
    """Each layer of the model alone, forward and backward, at the input it
    sees in the model (the rows of `convnet bench`, joined by layer name):
    the median of `steps` calls after `warmup`. Backward: the gradients of the
    layer's parameters and, but for the first layer (whose input is the
    image), of its input, as one training step computes them."""
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    inputs = {}
    hooks = [m.register_forward_hook(lambda m, a, y, name=name: inputs.__setitem__(name, a[0].detach()))
             for name, m in leaves]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    rows = []
    for i, (name, m) in enumerate(leaves):
        if isinstance(m, nn.Flatten):
            continue  # a view: convnet has no such op
        xi = inputs[name].clone().requires_grad_(i > 0)
        y = m(xi)
        dy = torch.randn_like(y)
        wrt = [p for p in m.parameters()] + ([xi] if i > 0 else [])

        def forward():
            m(xi)

        def backward():
            torch.autograd.grad(y, wrt, dy, retain_graph=True)

        for fn in (forward, backward) * warmup if wrt else (forward,) * warmup:
            fn()
        sync(dev)
        fwd = timed(forward, steps, dev)
        bwd = timed(backward, steps, dev) if wrt else 0.0
        rows.append({"layer": name, "op": type(m).__name__, "input": "x".join(map(str, xi.shape)),
                     "forward_ms": round(fwd, 4), "backward_ms": round(bwd, 4)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--groups", type=int, default=1, help="2: the paper's two-GPU grouping")
    ap.add_argument("--precision", choices=("fp32", "default", "tf32"), default="default",
                    help="fp32: TF32 off; default: PyTorch's (TF32 convolutions); tf32: TF32 everywhere")
    ap.add_argument("--tf32", action="store_true", help="same as --precision tf32")
    ap.add_argument("--no-cudnn-benchmark", action="store_true")
    ap.add_argument("--per-op", action="store_true",
                    help="also time each layer alone, forward and backward (JSON key 'ops', as convnet bench's rows)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: the same timings with the clock (to try the script without a GPU)")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 1

    if a.tf32:
        a.precision = "tf32"
    # PyTorch's defaults (2.x): cudnn.allow_tf32 True, matmul.allow_tf32 False
    if a.precision != "default":
        torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
    torch.backends.cudnn.benchmark = not a.no_cudnn_benchmark
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = alexnet(a.classes, a.groups).to(dev)
    params = sum(p.numel() for p in model.parameters())
    if a.classes == 1000 and a.groups == 1 and params != PAPER_PARAMS:
        print(json.dumps({"error": f"{params} parameters, expected {PAPER_PARAMS}"}))
        return 1
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(a.batch, 3, 224, 224, device=dev)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(a.warmup):
        train_step()
    sync(dev)
    gpu = dev.type == "cuda"
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    train_ms = timed(train_step, a.steps, dev)
    train_peak = torch.cuda.max_memory_allocated() if gpu else None
    ops = per_op(model, x, a.steps, a.warmup, dev) if a.per_op else None
    if ops is not None:
        logits = model(x).detach().requires_grad_(True)
        loss = loss_fn(logits, y)
        fwd = timed(lambda: loss_fn(logits, y), a.steps, dev)
        bwd = timed(lambda: torch.autograd.grad(loss, [logits], retain_graph=True), a.steps, dev)
        ops.append({"layer": "loss", "op": "CrossEntropyLoss", "input": "x".join(map(str, logits.shape)),
                    "forward_ms": round(fwd, 4), "backward_ms": round(bwd, 4)})

    model.eval()
    with torch.no_grad():
        for _ in range(a.warmup):
            model(x)
        sync(dev)
        infer_ms = timed(lambda: model(x), a.steps, dev)

    print(json.dumps({
        "model": "alexnet",
        "framework": "pytorch",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "batch": a.batch,
        "groups": a.groups,
        "precision": a.precision,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "params": params,
        "steps": a.steps,
        "train_ms_per_step": round(train_ms, 3),
        "train_images_per_s": round(a.batch * 1000.0 / train_ms, 1),
        "train_peak_bytes": train_peak,
        "infer_ms_per_batch": round(infer_ms, 3),
        "infer_images_per_s": round(a.batch * 1000.0 / infer_ms, 1),
        **({"ops": ops} if ops is not None else {}),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
