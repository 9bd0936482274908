#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (tests/fuzz/corpus/<target>/): a few small
valid files and typical broken ones for the IDX, safetensors/checkpoint and
PNG readers. Deterministic; the output is committed, rerun after edits:
    python3 tests/fuzz/make_corpus.py"""
import gzip
import json
import os
import random
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, mtime=0)


# ---- IDX -------------------------------------------------------------------
def idx(dims, data, typ=0x08):
    return bytes([0, 0, typ, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


img = bytes(range(3 * 4 * 4))
put("idx", "images_3x4x4", idx([3, 4, 4], img))
put("idx", "images_3x4x4.gz", gz(idx([3, 4, 4], img)))
put("idx", "labels_5", idx([5], bytes([0, 9, 3, 1, 7])))
put("idx", "labels_5.gz", gz(idx([5], bytes([0, 9, 3, 1, 7]))))
put("idx", "four_dims", idx([1, 2, 1, 2], b"\x01\x02\x03\x04"))
put("idx", "truncated", idx([3, 4, 4], img[:20]))
put("idx", "truncated.gz", gz(idx([3, 4, 4], img))[:30])
put("idx", "trailing", idx([5], bytes(6)))
put("idx", "bad_magic", b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00")
put("idx", "float32", idx([2], struct.pack(">ff", 1.0, 2.0), typ=0x0D))
put("idx", "ndim0", bytes([0, 0, 8, 0]))
put("idx", "ndim9", bytes([0, 0, 8, 9]) + bytes(36))
put("idx", "zero_dim", idx([0, 28, 28], b""))
put("idx", "forged_huge", idx([0x7FFFFFFF, 0x7FFFFFFF], bytes(16)))
put("idx", "forged_2g", idx([0x40000000, 2], bytes(16)))

# ---- safetensors -----------------------------------------------------------
DSIZE = {"F32": 4, "I32": 4, "F16": 2, "BF16": 2, "U8": 1, "I8": 1, "BOOL": 1, "I64": 8, "F64": 8,
         "U16": 2, "I16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def st(tensors, meta=None, pad=True):
    """tensors: list of (name, dtype, shape, bytes)."""
    h, off, blob = {}, 0, b""
    for name, dt, shape, data in tensors:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blob += data
    if meta is not None:
        h["__metadata__"] = meta
    text = json.dumps(h, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-(len(text) + 8) % 8)
    return struct.pack("<Q", len(text)) + text + blob


def st_raw(header, blob=b""):
    text = header.encode()
    return struct.pack("<Q", len(text)) + text + blob


def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


put("safetensors", "empty", st_raw("{}"))
put("safetensors", "two_tensors", st([("w", "F32", [2, 3], f32([1, 2, 3, 4, 5, 6])),
                                       ("labels", "I32", [3], struct.pack("<3i", 0, 1, 2))],
                                      {"note": "seed"}))
put("safetensors", "dtypes", st([("a", "F64", [1], struct.pack("<d", 1.5)), ("b", "I64", [1], bytes(8)),
                                  ("c", "F16", [2], bytes(4)), ("d", "BF16", [1, 1], bytes(2)),
                                  ("e", "U8", [3], b"abc"), ("f", "BOOL", [1], b"\x01"),
                                  ("g", "F8_E4M3", [1], b"\x00")]))
put("safetensors", "scalar_and_empty", st([("s", "F32", [], f32([3.0])), ("z", "F32", [0, 4], b""),
                                            ("i", "I32", [1, 1, 1, 1], bytes(4))]))
put("safetensors", "overlap", st_raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                     '"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)))
put("safetensors", "hole", st_raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)))
put("safetensors", "size_mismatch", st_raw('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}',
                                           bytes(8)))
put("safetensors", "overflow_shape", st_raw('{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],'
                                            '"data_offsets":[0,0]}}'))
put("safetensors", "bad_json", st_raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]', bytes(4)))
put("safetensors", "forged_header_len", struct.pack("<Q", 1 << 40) + b"{}")
put("safetensors", "truncated", st([("w", "F32", [4], f32([1, 2, 3, 4]))])[:-5])
put("safetensors", "dup_names", st_raw('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                       '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"xy"))

# A tiny AlexNet checkpoint (4,402 parameters + SGD momentum) in the layout of
# models/checkpoint.c, so the fuzzer reaches nn_checkpoint_load with a model.
rng = random.Random(6)
META = {
    "format": "convnet-checkpoint-1",
    "model.arch": "alexnet", "model.in_channels": "1", "model.in_size": "67", "model.classes": "2",
    "model.groups": "1", "model.width": "0.02", "model.fc": "4", "model.dropout": "0.5", "model.init": "he",
    "optim.steps": "8", "train.epoch": "1", "train.batch": "0", "train.step": "8", "train.seed": "1",
    "train.dropout_seed": "55304", "train.dropout_offset": "0", "train.mean": "0.29", "train.std": "0.35",
    "train.batch_size": "32", "train.epochs": "1", "train.limit": "64", "train.augment": "1",
    "data.classes": "a\nb", "train.best_acc": "0.38", "optim.kind": "sgd",
    "optim.lr": "0.01", "optim.momentum": "0.9", "optim.weight_decay": "0.0005", "optim.decay_bias": "0",
    "sched.kind": "const", "sched.base_lr": "0.01", "sched.lr": "0.01", "sched.step_epochs": "30",
    "sched.gamma": "0.1", "sched.patience": "2", "sched.min_lr": "1e-05", "sched.best": "-1",
    "sched.bad_epochs": "0",
}
PARAMS = [("stage1.0", [8, 1, 11, 11]), ("stage2.0", [8, 8, 5, 5]), ("stage3.0", [8, 8, 3, 3]),
          ("stage4.0", [8, 8, 3, 3]), ("stage5.0", [8, 8, 3, 3]), ("classifier.2", [4, 8]),
          ("classifier.5", [4, 4]), ("classifier.7", [2, 4])]
tens = []
for prefix in ("", "optim."):
    for layer, shape in PARAMS:
        for kind, shp in (("weight", shape), ("bias", shape[:1])):
            n = 1
            for d in shp:
                n *= d
            name = prefix + layer + "." + kind + (".v" if prefix else "")
            tens.append((name, "F32", shp, f32([rng.uniform(-0.1, 0.1) for _ in range(n)])))
put("safetensors", "ckpt_alexnet_tiny", st(tens, META))
# the same weights as PyTorch's save_file writes them: parameters only, no metadata
put("safetensors", "weights_only_alexnet_tiny", st([t for t in tens if not t[0].startswith("optim.")]))
put("safetensors", "ckpt_meta_only_lenet", st([], dict(META, **{"model.arch": "lenet", "model.in_size": "28",
                                                                 "model.classes": "10", "model.fc": "84",
                                                                 "data.classes": "\n".join("0123456789"),
                                                                 "model.width": "1", "model.dropout": "0"})))
put("safetensors", "ckpt_bad_values", st([], dict(META, **{"model.in_size": "-3", "train.epoch": "x"})))


# ---- PNG -------------------------------------------------------------------
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(w, h, depth, color, rows, interlace=0, extra=b""):
    """rows: raw scanlines (without filter bytes) of the whole image, or of
    each Adam7 pass in order when interlaced."""
    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


put("png", "gray8_3x2.png", png(3, 2, 8, 0, [b"\x00\x80\xff", b"\x10\x20\x30"]))
put("png", "rgb8_2x2.png", png(2, 2, 8, 2, [b"\xff\x00\x00\x00\xff\x00", b"\x00\x00\xff\xff\xff\xff"]))
put("png", "rgba16_1x1.png", png(1, 1, 16, 6, [b"\x12\x34\x56\x78\x9a\xbc\xde\xf0"]))
put("png", "graya8_2x1.png", png(2, 1, 8, 4, [b"\x40\xff\x80\x00"]))
put("png", "gray1_8x1.png", png(8, 1, 1, 0, [b"\xa5"]))
put("png", "palette_trns_2x1.png", png(2, 1, 8, 3, [b"\x00\x01"],
                                       extra=chunk(b"PLTE", b"\xff\x00\x00\x00\x00\xff") + chunk(b"tRNS", b"\x80")))
# 2x2 gray, Adam7: pass 1 holds (0,0), pass 6 (1,0), pass 7 row 1 (0,1),(1,1)
put("png", "gray8_interlaced_2x2.png", png(2, 2, 8, 0, [b"\x11", b"\x22", b"\x33\x44"], interlace=1))
good = png(3, 2, 8, 0, [b"\x00\x80\xff", b"\x10\x20\x30"])
put("png", "truncated.png", good[:45])
bad_crc = bytearray(good)
bad_crc[29] ^= 0xFF
put("png", "bad_crc.png", bytes(bad_crc))
put("png", "huge_dims.png", png(1 << 20, 1 << 20, 8, 0, [b"\x00"]))
put("png", "zero_width.png", png(0, 1, 8, 0, [b""]))
put("png", "not_png.png", b"GIF89a\x01\x00\x01\x00")


# ---- reproducers (tests/fuzz/crashes/<target>-<what>) ------------------------
def crash(name, data):
    d = os.path.join(os.path.dirname(ROOT), "crashes")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# checkpoint metadata with an unknown optimizer / schedule: the error must name the file
crash("safetensors-ckpt-optim-kind-message-no-path", st(tens, dict(META, **{"optim.kind": "sgg"})))
crash("safetensors-ckpt-sched-kind-message-no-path", st(tens, dict(META, **{"sched.kind": "bogus"})))
# a 16384 x 16384 RGB interlaced header over 100 bytes of pixels: 805 MB allocated up front
crash("png-forged-interlaced-805MB.png", png(16384, 16384, 8, 2, [bytes(100)], interlace=1))
