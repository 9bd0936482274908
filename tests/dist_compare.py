#!/usr/bin/env python3
"""Compares the weights of safetensors checkpoints for test_dist.sh (json + struct only).

    dist_compare.py grad W0 A B TOL   the steps W0->A and W0->B (one SGD step at lr 1: the
                                      gradients) agree within TOL relative to each tensor's max
    dist_compare.py close A B TOL     the weights agree within TOL relative to each tensor's max
Names starting with "optim." are skipped. Prints the worst ratio; exits 1 past TOL.
"""
import json
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (hl,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8:8 + hl])
    out = {}
    for name, t in head.items():
        if name == "__metadata__" or name.startswith("optim.") or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        out[name] = struct.unpack("<%df" % ((b - a) // 4), raw[8 + hl + a:8 + hl + b])
    return out


def worst(pairs):
    bad, where = 0.0, ""
    for name, x, y in pairs:
        scale = max(max(abs(v) for v in x), max(abs(v) for v in y), 1e-30)
        d = max(abs(u - v) for u, v in zip(x, y)) / scale
        if d > bad:
            bad, where = d, name
    return bad, where


def main():
    mode, tol = sys.argv[1], float(sys.argv[-1])
    if mode == "grad":
        w0, a, b = (load(p) for p in sys.argv[2:5])
        pairs = [(n, [u - v for u, v in zip(w0[n], a[n])], [u - v for u, v in zip(w0[n], b[n])]) for n in w0]
    else:
        a, b = (load(p) for p in sys.argv[2:4])
        pairs = [(n, a[n], b[n]) for n in a]
    bad, where = worst(pairs)
    print("%s: worst relative difference %.3g (%s), tolerance %g" % (mode, bad, where, tol))
    sys.exit(0 if bad <= tol else 1)


main()
