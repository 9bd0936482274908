#!/usr/bin/env python3
"""Writes a weights-only safetensors file from a convnet checkpoint, as
PyTorch's safetensors.torch.save_file(model.state_dict(), OUT) would: only the
parameters (no "optim.*" state), no "__metadata__", tensors laid out sorted
by name (json + struct only; no numpy or torch needed).

    weights_only.py CKPT OUT [--f64]

--f64 stores the tensors as F64 (model.double().state_dict()), which the
loader converts back to float32.
"""
import json
import struct
import sys


def main(src, dst, f64):
    with open(src, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    header.pop("__metadata__", None)
    out_header, chunks, offset = {}, [], 0
    for name in sorted(header):
        if name.startswith("optim."):
            continue
        t = header[name]
        b, e = t["data_offsets"]
        buf = data[b:e]
        dtype = t["dtype"]
        if f64 and dtype == "F32":
            vals = struct.unpack("<%df" % (len(buf) // 4), buf)
            buf = struct.pack("<%dd" % len(vals), *vals)
            dtype = "F64"
        out_header[name] = {"dtype": dtype, "shape": t["shape"], "data_offsets": [offset, offset + len(buf)]}
        chunks.append(buf)
        offset += len(buf)
    text = json.dumps(out_header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.stderr.write("usage: weights_only.py CKPT OUT [--f64]\n")
        sys.exit(2)
    main(sys.argv[1], sys.argv[2], len(sys.argv) == 4 and sys.argv[3] == "--f64")
