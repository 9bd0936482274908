#!/usr/bin/env python3
"""Side by side: convnet's AlexNet against the same AlexNet in PyTorch.

Same architecture (LRN through nn.LocalResponseNorm with alpha = n * 1e-4, because
PyTorch divides alpha by n; see docs/alexnet.md), same batch, same input size, same
thread count, same optimizer (SGD, momentum 0.9, weight decay 5e-4). The two are
timed in the same run, alternately, for several rounds, so that a noisy machine
slows both alike: each round runs `convnet bench --model-only` and then PyTorch's
training step and inference (the order flips every round). Each phase runs in its
own process, and its peak resident memory (VmHWM) is that process's.

    python3 benchmarks/compare_pytorch.py [--convnet build/tools/convnet] [--batch 64]
        [--threads 2] [--model paper|default|lenet] [--size S] [--repeats 5] [--rounds 3] [--json FILE]

--model paper (the default): AlexNet 3x224x224 -> 1000, SGD. default: what `convnet train`
runs with no options (AlexNet at width 0.5, fc 1024, dropout 0.3, 1x64x64 -> 10, Adam).
lenet: LeNet-5 on 1x28x28 -> 10, SGD.

PyTorch: the newest that installs (`pip install torch`); Debian's python3-torch as
the fallback. The version that ran is printed.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)



def vm_hwm_mb():
    """Peak resident set of this process in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def loadavg():
    """The 1-minute load average (how busy the shared machine was), or '?'."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


# The three models: convnet bench flags, and the PyTorch side's settings.
PRESETS = {
    "paper": {"flags": [], "channels": 3, "size": 224, "classes": 1000, "width": 1.0, "fc": 4096, "dropout": 0.5,
              "optim": "sgd", "arch": "alexnet"},
    "default": {"flags": ["--width", "0.5", "--fc", "1024", "--dropout", "0.3", "--channels", "1", "--classes", "10",
                          "--optim", "adam"],
                "channels": 1, "size": 64, "classes": 10, "width": 0.5, "fc": 1024, "dropout": 0.3, "optim": "adam",
                "arch": "alexnet"},
    "lenet": {"flags": ["--model", "lenet"], "channels": 1, "size": 28, "classes": 10, "optim": "sgd", "arch": "lenet"},
}


def torch_lenet(nn, size=28, classes=10, channels=1):
    """LeNet-5 as models/lenet.c: two conv+relu+pool stages, three linear layers."""
    f = ((size + 4 - 4) // 2 - 4) // 2
    return nn.Sequential(nn.Conv2d(channels, 6, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5),
                         nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(16 * f * f, 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes))


def torch_alexnet(nn, size=224, classes=1000, channels=3, width=1.0, fc=4096, dropout=0.5):
    """benchmarks/torch_alexnet.py's module (one definition of the PyTorch side), with
    the paper's initialization, as convnet's default AlexNet: N(0, 0.01^2), biases 1 in
    conv2, conv4, conv5, fc6, fc7 (it matters for speed only through denormals)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_alexnet import alexnet
    seq = alexnet(classes=classes, in_channels=channels, width=width, fc=fc, size=size, dropout=dropout)
    ones = {id(seq.stage2[0]), id(seq.stage4[0]), id(seq.stage5[0]), id(seq.classifier[2]), id(seq.classifier[5])}
    for mod in seq.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(mod.weight, 0.0, 0.01)
            nn.init.constant_(mod.bias, 1.0 if id(mod) in ones else 0.0)
    return seq


def worker(phase, batch, threads, size, repeats, device, preset="paper"):
    """One phase of PyTorch in this process; prints one JSON line."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(1)
    p = PRESETS[preset]
    if p["arch"] == "lenet":
        model = torch_lenet(nn, size, p["classes"], p["channels"]).to(device)
    else:
        model = torch_alexnet(nn, size, p["classes"], p["channels"], p["width"], p["fc"], p["dropout"]).to(device)
    x = torch.empty(batch, p["channels"], size, size).uniform_(-1, 1).to(device)
    y = torch.randint(0, p["classes"], (batch,)).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times, loss0 = [], float("nan")
    if phase == "train":
        model.train()
        if p["optim"] == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        for i in range(-2, repeats):
            t0 = time.perf_counter_ns()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sync()
            t = (time.perf_counter_ns() - t0) * 1e-9
            if i == -2:
                loss0 = float(loss.detach())
            if i >= 0:
                times.append(t)
    else:
        model.eval()
        with torch.inference_mode():
            for i in range(-2, repeats):
                t0 = time.perf_counter_ns()
                model(x)
                sync()
                t = (time.perf_counter_ns() - t0) * 1e-9
                if i >= 0:
                    times.append(t)
    print(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                      "loss": loss0, "rss_mb": vm_hwm_mb(), "torch": torch.__version__,
                      "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0,
                      "mkldnn": bool(torch.backends.mkldnn.is_available()),
                      "threads": torch.get_num_threads()}), flush=True)


def find_convnet(path):
    if path:
        return path
    cands = [os.path.join(ROOT, "build", "tools", "convnet")]
    cands += sorted(glob.glob(os.path.join(ROOT, "build*", "tools", "convnet")), key=os.path.getmtime, reverse=True)
    for c in cands:
        if os.access(c, os.X_OK):
            return c
    sys.exit("compare_pytorch.py: no convnet binary found (build with `meson setup build && ninja -C build`, "
             "or pass --convnet PATH)")


def run_ours(binary, a):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "bench.json")
        cmd = [binary, "bench", "--model-only", "--device", a.device, "--batch", str(a.batch), "--threads",
               str(a.threads), "--size", str(a.size), "--repeats", str(a.repeats), "--json", out] + PRESETS[a.model]["flags"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            sys.exit("compare_pytorch.py: %s failed:\n%s%s" % (" ".join(cmd), r.stdout, r.stderr))
        with open(out) as f:
            j = json.load(f)
    cpu = j["devices"][a.device]
    return {"train": cpu["train"], "infer": cpu["inference"], "sgemm_gflops": cpu["sgemm_gflops"],
            "machine": j["machine"]}


def run_torch(phase, a):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", phase, "--batch", str(a.batch), "--threads",
           str(a.threads), "--size", str(a.size), "--repeats", str(a.repeats), "--device", a.device, "--model", a.model]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if r.returncode != 0:
        sys.exit("compare_pytorch.py: the PyTorch %s worker failed:\n%s" % (phase, r.stderr))
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--convnet", help="path to the convnet binary (default: build/tools/convnet)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--model", choices=sorted(PRESETS), default="paper",
                    help="paper (AlexNet 3x224x224, SGD), default (convnet train's default model) or lenet")
    ap.add_argument("--size", type=int, default=0, help="input size (default: the model's: 224, 64 or 28)")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per phase and round (median)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of ours and PyTorch's")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cpu (default) or cuda (needs convnet built with CUDA and a CUDA torch)")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--worker", choices=["train", "infer"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.size == 0:
        a.size = PRESETS[a.model]["size"]
    if a.worker:
        worker(a.worker, a.batch, a.threads, a.size, a.repeats, a.device, a.model)
        return
    try:
        import torch
    except ImportError:
        sys.exit("compare_pytorch.py: PyTorch is not installed: `pip install torch` "
                 "(or Debian's `apt-get install python3-torch`)")
    binary = find_convnet(a.convnet)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("compare_pytorch.py: --device cuda but this torch sees no GPU")
    print("convnet: %s\nPyTorch %s (%s), MKLDNN/oneDNN %s" % (
        binary, torch.__version__, os.path.dirname(torch.__file__),
        "on" if torch.backends.mkldnn.is_available() else "off"))
    print("model %s (%s %dx%dx%d), batch %d, fp32, on %s, %d threads; %d rounds, median of %d steps per phase and round\n" % (
        a.model, PRESETS[a.model]["arch"], PRESETS[a.model]["channels"], a.size, a.size, a.batch, a.device, a.threads,
        a.rounds, a.repeats))
    rounds = []
    for r in range(a.rounds):
        res = {}
        order = ["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]
        for who in order:
            if who == "ours":
                res["ours"] = run_ours(binary, a)
            else:
                res["torch"] = {"train": run_torch("train", a), "infer": run_torch("infer", a)}
        o, t = res["ours"], res["torch"]
        print("round %d: ours train %.2f img/s infer %.2f img/s | PyTorch train %.2f img/s infer %.2f img/s | "
              "ratio train %.2f infer %.2f | SGEMM %.0f GFLOP/s, load %s" % (
                  r + 1, a.batch / o["train"]["median_s"], a.batch / o["infer"]["median_s"],
                  a.batch / t["train"]["median_s"], a.batch / t["infer"]["median_s"],
                  t["train"]["median_s"] / o["train"]["median_s"], t["infer"]["median_s"] / o["infer"]["median_s"],
                  o["sgemm_gflops"], loadavg()), flush=True)
        rounds.append(res)

    def med(who, phase, key):
        return statistics.median(x[who][phase][key] for x in rounds)

    ours_tr, ours_in = a.batch / med("ours", "train", "median_s"), a.batch / med("ours", "infer", "median_s")
    pt_tr, pt_in = a.batch / med("torch", "train", "median_s"), a.batch / med("torch", "infer", "median_s")
    ours_rss_tr, ours_rss_in = med("ours", "train", "peak_rss_mb"), med("ours", "infer", "peak_rss_mb")
    pt_rss_tr, pt_rss_in = med("torch", "train", "rss_mb"), med("torch", "infer", "rss_mb")
    if a.device == "cuda":  # device memory: our allocator's peak against torch's
        ours_rss_tr, ours_rss_in = med("ours", "train", "device_peak_mb"), med("ours", "infer", "device_peak_mb")
        pt_rss_tr, pt_rss_in = med("torch", "train", "device_peak_mb"), med("torch", "infer", "device_peak_mb")
    mem = "device peak" if a.device == "cuda" else "peak resident"
    # issue 15's targets: speed 1.5x (LeNet's training: at least PyTorch's), memory half / 0.6x
    speed = 1.0 if a.model == "lenet" else 1.5
    rows = [
        ("training images/s", ours_tr, pt_tr, ours_tr / pt_tr, ">= %g" % speed, ours_tr / pt_tr >= speed),
        ("inference images/s", ours_in, pt_in, ours_in / pt_in, "", None),
        (mem + ", training (MiB)", ours_rss_tr, pt_rss_tr, ours_rss_tr / pt_rss_tr, "<= 0.5",
         ours_rss_tr / pt_rss_tr <= 0.5),
        (mem + ", inference (MiB)", ours_rss_in, pt_rss_in, ours_rss_in / pt_rss_in, "<= 0.6",
         ours_rss_in / pt_rss_in <= 0.6),
    ]
    if a.model == "paper":
        rows[1] = rows[1][:4] + (">= 1.5", ours_in / pt_in >= 1.5)
    print("\n%-32s %12s %12s %12s %8s" % ("(median over rounds)", "convnet", "PyTorch " + torch.__version__.split("+")[0],
                                         "ours/PyTorch", "target"))
    for name, ours, pt, ratio, target, ok in rows:
        verdict = "" if ok is None else (" met" if ok else " NOT met")
        print("%-32s %12.2f %12.2f %12.2f %8s%s" % (name, ours, pt, ratio, target, verdict))
    # On a shared machine the load changes between rounds: the ratio within a
    # round (ours and PyTorch's phases minutes apart at most) is steadier
    # than the ratio of the medians, so print its median too.
    print("median of the per-round ratios: training %.2f, inference %.2f" % (
        statistics.median(x["torch"]["train"]["median_s"] / x["ours"]["train"]["median_s"] for x in rounds),
        statistics.median(x["torch"]["infer"]["median_s"] / x["ours"]["infer"]["median_s"] for x in rounds)))
    print("(SGEMM on this machine: %.1f GFLOP/s, measured by convnet bench; first training loss: ours %.3f, "
          "PyTorch %.3f)" % (statistics.median(x["ours"]["sgemm_gflops"] for x in rounds),
                            rounds[0]["ours"]["train"]["first_loss"], rounds[0]["torch"]["train"]["loss"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": a.device, "batch": a.batch, "threads": a.threads, "size": a.size,
                       "model": a.model,
                       "rounds": rounds, "summary": {r[0]: {"convnet": r[1], "pytorch": r[2], "ratio": r[3]}
                                                      for r in rows}}, f, indent=1)
        print("JSON written to %s" % a.json)


if __name__ == "__main__":
    main()
