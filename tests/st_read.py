#!/usr/bin/env python3
"""An independent safetensors reader (json + struct + zlib only) for test_safetensors.

Prints one line per tensor, sorted by name:
    tensor NAME DTYPE SHAPE CRC32 [SUM]
(SHAPE like 2x3, [] for a scalar; CRC32 of the raw bytes in hex; SUM, for F32,
the float64 sum of the values in storage order, printed with %.17g), then one
line per metadata entry, sorted by key:
    meta KEY=VALUE
and exits 1 with a message on stderr if the file breaks the format.
"""
import json
import struct
import sys
import zlib

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def fail(msg):
    sys.stderr.write("st_read.py: %s\n" % msg)
    sys.exit(1)


def main(path):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        fail("file too short")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        fail("header length %d beyond the file" % n)
    if (8 + n) % 8 != 0:
        fail("data section not 8-byte aligned (header length %d)" % n)
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    spans = []
    lines = []
    for name in sorted(header):
        t = header[name]
        dtype, shape, (b, e) = t["dtype"], t["shape"], t["data_offsets"]
        numel = 1
        for d in shape:
            numel *= d
        if e - b != numel * SIZES[dtype] or e > len(data):
            fail("tensor %s: size/offsets mismatch" % name)
        if b % SIZES[dtype] != 0:
            fail("tensor %s: offset %d not aligned to %s" % (name, b, dtype))
        spans.append((b, e))
        buf = data[b:e]
        shp = "x".join(str(d) for d in shape) if shape else "[]"
        line = "tensor %s %s %s %08x" % (name, dtype, shp, zlib.crc32(buf) & 0xffffffff)
        if dtype == "F32":
            s = 0.0
            for (v,) in struct.iter_unpack("<f", buf):
                s += v
            line += " %s" % ("%.17g" % s)
        lines.append(line)
    at = 0
    for b, e in sorted(spans):
        if b != at:
            fail("data section has a hole or overlap at byte %d" % at)
        at = e
    if at != len(data):
        fail("%d bytes after the last tensor" % (len(data) - at))
    for k in sorted(meta):
        lines.append("meta %s=%s" % (k, meta[k]))
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail("usage: st_read.py FILE")
    main(sys.argv[1])
