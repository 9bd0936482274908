#!/usr/bin/env python3
"""The first training steps of the full-size AlexNet on Fashion-MNIST, in convnet
and in PyTorch, with one initialization: does the run learn or diverge?

The paper's initialization (N(0, 0.01^2), biases 1 in conv2, conv4, conv5, fc6,
fc7) with the paper's SGD (lr 0.01, momentum 0.9, weight decay 5e-4) and batch
128 diverges on Fashion-MNIST's 10 classes within ten steps and then sits at
chance (loss ln 10 = 2.303) in both frameworks; He's (N(0, 2 / fan-in), biases
0) learns. README, "The main job", quotes this script's numbers.

    python3 benchmarks/init_check.py [--init paper|he] [--steps 12] [--threads 2]
        [--convnet build/tools/convnet] [--data /usr/share/datasets/fashion-mnist]

Needs PyTorch and NumPy (`pip install torch numpy`); about 3 minutes on 2 cores.

Both sides: 1x28x28 images resized to 224x224 (bilinear, half-pixel centres),
normalized by the training set's mean and std, dropout 0.5, no augmentation.
PyTorch takes the first steps * 128 training images in file order; convnet its own
shuffled order of the same images (--limit), so the two agree in kind (learning or
not), not step for step. Prints one line per step and side.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
BATCH = 128


def idx(path, header):
    """An IDX file's bytes after its header (uint8 images or labels)."""
    import numpy as np
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=header)


def torch_losses(a):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn
    from compare_pytorch import torch_alexnet  # the paper's init, as convnet's --init paper
    torch.manual_seed(1)
    torch.set_num_threads(a.threads)
    n = a.steps * BATCH
    allx = idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"), 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255
    mean, std = float(allx.mean()), float(allx.std())  # over the whole training set
    x = (allx[:n] - mean) / std
    y = idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz"), 8)[:n].astype(np.int64)
    model = torch_alexnet(nn, size=224, classes=10, channels=1)
    if a.init == "he":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    out = []
    for s in range(a.steps):
        xb = F.interpolate(torch.from_numpy(x[s * BATCH:(s + 1) * BATCH]), size=224, mode="bilinear",
                           align_corners=False)
        loss = F.cross_entropy(model(xb), torch.from_numpy(y[s * BATCH:(s + 1) * BATCH]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
        print("pytorch step %d: loss %.4f" % (s + 1, out[-1]), flush=True)
    return out


def convnet_losses(a):
    with tempfile.TemporaryDirectory() as d:
        cmd = [a.convnet, "train", "--data", a.data, "--size", "224", "--width", "1", "--fc", "4096", "--init", a.init,
               "--optim", "sgd", "--dropout", "0.5", "--schedule", "const", "--batch", str(BATCH), "--epochs", "1",
               "--limit", str(a.steps * BATCH), "--test-limit", "256", "--threads", str(a.threads), "--log-every",
               "1", "--quiet", "--checkpoint-dir", d]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            sys.exit("init_check.py: %s failed:\n%s%s" % (" ".join(cmd), r.stdout, r.stderr))
        with open(os.path.join(d, "metrics.jsonl")) as f:
            steps = [json.loads(line) for line in f]
    out = [s["loss"] for s in steps if s["kind"] == "step" and s["split"] == "train"]
    for i, v in enumerate(out):
        print("convnet step %d: loss %.4f" % (i + 1, v), flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", choices=["paper", "he"], default="paper")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--convnet", default=os.path.join(os.path.dirname(HERE), "build", "tools", "convnet"))
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args()
    if a.steps < 1:
        sys.exit("init_check.py: --steps must be at least 1")
    ours = convnet_losses(a)
    theirs = torch_losses(a)
    for name, v in (("convnet", ours), ("pytorch", theirs)):
        print("%s, --init %s: largest loss %.2f, last %.4f (chance: 2.3026)" % (name, a.init, max(v), v[-1]))


if __name__ == "__main__":
    main()
