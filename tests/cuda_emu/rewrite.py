#!/usr/bin/env python3
"""Turns one CUDA source of the backend into C++ for the CPU runtime of
tests/cuda_emu (cuda_runtime.h says what that runtime models):

  k<<<grid, block, smem, stream>>>(args)  ->  nn_emu::launch(nn_emu::cfg(grid, block, smem, stream),
                                                 nn_emu::kernel_name<&k>(), k, args)
  extern __shared__ ... T name[];         ->  T *name = (T *)nn_emu::dynamic_smem();
  __launch_bounds__(MAX, ...) k(...) {    ->  the same, and nn_emu::launch_bounds(MAX); first in the body
                                              (a block larger than MAX: the GPU refuses the launch);
                                              a __global__ function without it is an error

  __shared__ T name[N]...; (or T name;)   ->  the same, and nn_emu::shared_unset(&name, sizeof name): unset
                                              again at the start of each block (the hardware keeps nothing)
  reinterpret_cast<float4 *>(p)           ->  nn_emu::vec_cast<float4 *>(p): p checked to be 16-byte aligned
                                              (the GPU's vector loads and stores trap otherwise)

A header under cuda/ that needs any of these changes is rewritten and inlined where
it is included (#line keeps diagnostics on the original files).

usage: rewrite.py SOURCE_ROOT INPUT.cu OUTPUT.cpp [DEPFILE]
"""
import os
import re
import sys


def fail(path, pos, text, why):
    line = text.count("\n", 0, pos) + 1
    sys.exit(f"{path}:{line}: {why}")


def matching(text, pos, open_c, close_c, step):
    """Index of the bracket that closes the one at pos, scanning by step (+1 or -1)."""
    depth = 0
    i = pos
    while 0 <= i < len(text):
        c = text[i]
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return i
        i += step
    return -1


def rewrite_launches(path, text):
    out = []
    pos = 0
    while True:
        at = text.find("<<<", pos)
        if at < 0:
            out.append(text[pos:])
            return "".join(out)
        # the kernel: an identifier, maybe with template arguments, just before <<<
        end = at
        while end > 0 and text[end - 1].isspace():
            end -= 1
        start = end
        if text[end - 1] == ">":
            start = matching(text, end - 1, ">", "<", -1)
            if start < 0:
                fail(path, at, text, "unbalanced template arguments before <<<")
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_:"):
            start -= 1
        kernel = text[start:end]
        if not re.match(r"[A-Za-z_]", kernel):
            fail(path, at, text, "no kernel name before <<<")
        close = text.find(">>>", at)
        if close < 0:
            fail(path, at, text, "<<< without >>>")
        config = text[at + 3:close]
        paren = close + 3
        while text[paren].isspace():
            paren += 1
        if text[paren] != "(":
            fail(path, at, text, "no argument list after >>>")
        last = matching(text, paren, "(", ")", 1)
        if last < 0:
            fail(path, at, text, "unbalanced argument list")
        args = text[paren + 1:last]
        call = f"nn_emu::launch(nn_emu::cfg({config}), nn_emu::kernel_name<&{kernel}>(), {kernel}"
        call += f", {args})" if args.strip() else ")"
        # keep the line count: diagnostics and debug info stay on the right lines
        call += "\n" * (text.count("\n", start, last + 1) - call.count("\n"))
        out.append(text[pos:start])
        out.append(call)
        pos = last + 1


DYNAMIC_SMEM = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([A-Za-z_][\w\s]*?)\s+(\w+)\s*\[\s*\]\s*;")


# a static __shared__ array or variable (extern ones are DYNAMIC_SMEM's, rewritten first)
STATIC_SMEM = re.compile(r"(__shared__\s+(?:__align__\(\d+\)\s+)?[A-Za-z_][\w\s]*?\s+(\w+)\s*(?:\[[^\];]*\]\s*)*;)")

# a cast to a pointer to a CUDA vector type (float4, int2, ...)
VEC_CAST = re.compile(r"reinterpret_cast\s*<\s*((?:const\s+)?(?:u?char|u?short|u?int|u?long|u?longlong|float|double)[1-4]\s*\*)\s*>")


def first_argument(args):
    depth = 0
    for i, c in enumerate(args):
        if c in "([<":
            depth += 1
        elif c in ")]>":
            depth -= 1
        elif c == "," and depth == 0:
            return args[:i]
    return args


def check_launch_bounds(path, text):
    """Puts nn_emu::launch_bounds(MAX) first in the body of each kernel declared with __launch_bounds__(MAX, ...).
    A kernel without __launch_bounds__ is an error: ptxas could then give it more registers than a block of its
    launch can hold, which fails only on a GPU. (nvcc's own --Werror missing-launch-bounds is no help: nvcc 13
    reports template kernels that have a bound independent of their parameters.)"""
    for m in re.finditer(r"\b__global__\b", text):
        declarator = text[m.end():text.find("(", m.end())]
        if "__launch_bounds__" not in declarator:
            fail(path, m.start(), text, "a __global__ function without __launch_bounds__(threads): "
                 "ptxas may give it more registers than its blocks can hold")
    out = []
    pos = 0
    for m in re.finditer(r"__launch_bounds__\s*\(", text):
        if m.start() < pos:
            continue
        close = matching(text, m.end() - 1, "(", ")", 1)
        params = text.find("(", close + 1)
        body = text.find("{", matching(text, params, "(", ")", 1))
        if close < 0 or params < 0 or body < 0:
            fail(path, m.start(), text, "cannot find the kernel after __launch_bounds__")
        bound = first_argument(text[m.end():close]).strip()
        out.append(text[pos:body + 1])
        out.append(f" nn_emu::launch_bounds({bound});")
        pos = body + 1
    out.append(text[pos:])
    return "".join(out)


def rewrite_text(path, text):
    text = DYNAMIC_SMEM.sub(lambda m: f"{m.group(1)} *{m.group(2)} = ({m.group(1)} *)nn_emu::dynamic_smem();", text)
    text = STATIC_SMEM.sub(lambda m: f"{m.group(1)} nn_emu::shared_unset(&{m.group(2)}, sizeof {m.group(2)});", text)
    text = check_launch_bounds(path, text)
    text = VEC_CAST.sub(lambda m: f"nn_emu::vec_cast<{m.group(1)}>", text)
    return rewrite_launches(path, text)


INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"(cuda/[^"]+)"[^\n]*$', re.M)


def needs_rewrite(text):
    return ("<<<" in text or "__launch_bounds__" in text or "__shared__" in text or
            VEC_CAST.search(text) is not None)


def expand(root, path, seen):
    with open(path) as f:
        text = f.read()
    parts = []
    pos = 0
    for m in INCLUDE.finditer(text):
        header = os.path.join(root, m.group(1))
        with open(header) as f:
            htext = f.read()
        if not needs_rewrite(htext):
            continue
        parts.append(rewrite_text(path, text[pos:m.start()]))
        if header not in seen:
            seen.add(header)
            parts.append(f'#line 1 "{header}"\n')
            parts.append(expand(root, header, seen))
        line = text.count("\n", 0, m.end()) + 1
        parts.append(f'\n#line {line + 1} "{path}"')
        pos = m.end()
    parts.append(rewrite_text(path, text[pos:]))
    return "".join(parts)


def main():
    root, src, dst = sys.argv[1:4]
    src = os.path.abspath(src)
    inlined = set()
    body = f'#line 1 "{src}"\n' + expand(root, src, inlined)
    with open(dst, "w") as f:
        f.write(body)
    if len(sys.argv) > 4:  # the inlined headers and this script: a change to one rewrites this file
        with open(sys.argv[4], "w") as f:
            f.write(f"{dst}: {src} {os.path.abspath(__file__)} {' '.join(sorted(inlined))}\n")


if __name__ == "__main__":
    main()
