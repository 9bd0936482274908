#!/usr/bin/env python3
"""The Python scripts the suite cannot run whole (the PyTorch comparisons need
torch, which CI does not install) must still parse, and those that import torch
only when they run must answer --help, so they cannot rot unseen.

    python3 tests/check_scripts.py SOURCE_ROOT
"""
import os
import pathlib
import py_compile
import subprocess
import sys
import tempfile

HELP_WITHOUT_TORCH = ["benchmarks/compare_pytorch.py", "benchmarks/init_check.py"]


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    scripts = sorted(root.glob("benchmarks/*.py")) + sorted(root.glob("tests/**/*.py"))
    if len(scripts) < 5:
        print(f"only {len(scripts)} scripts under {root}: wrong root?")
        return 1
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:  # no __pycache__ in the source tree
        for s in scripts:
            try:
                py_compile.compile(str(s), cfile=os.path.join(tmp, "x.pyc"), doraise=True)
                print(f"ok: {s.relative_to(root)} parses")
            except py_compile.PyCompileError as e:
                print(f"FAIL: {e.msg}")
                bad += 1
    for rel in HELP_WITHOUT_TORCH:
        r = subprocess.run([sys.executable, str(root / rel), "--help"], capture_output=True, text=True)
        if r.returncode == 0 and "usage:" in r.stdout:
            print(f"ok: {rel} --help")
        else:
            print(f"FAIL: {rel} --help: status {r.returncode}: {(r.stderr or r.stdout)[-300:]}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
