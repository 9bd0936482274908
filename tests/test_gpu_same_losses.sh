#!/bin/bash
# The GPU switches that are off by default change no number they should not:
# short training runs of `convnet train --device DEVICE` with each of them
# log the losses of the plain run, step for step. One script for the
# emulated GPU (meson test emu_same_losses: tests/cuda_emu, loaded through
# CONVNET_CUDA_MODULE) and a real one (benchmarks/gpu_check.sh; its dry run
# on the CPU, where only NN_FUSE_RELU does anything, keeps the runs working):
#   bit for bit: NN_CUDA_LAZY_CHECKS NN_CUDA_PINNED NN_FUSE_BIAS NN_FUSE_RELU
#     together; NN_RESIDENT; NN_CUDA_GRAPH (with the resident data and the lazy
#     check it needs: the run must say steps ran from the graph, so a silent
#     fallback fails);
#   within a relative 1e-3 (other roundings): NN_FUSE_BIAS_GRAD (db summed
#     in another order), NN_CONV_IMPLICIT (dx and dw summed in other orders; with
#     NN_CONV_WS_MB=0 as gpu_check.sh's bench, a no-op at these sizes);
#     all of these together (the graph captured); NN_TF32 (operands
#     rounded to 10 bits), alone and with NN_CONV_IMPLICIT (the implicit
#     conv's tensor-core kernel) and NN_FUSE_RELU, on LeNet's first step only:
#     later steps, from weights that already differ, drift apart by more
#     (2e-3 by the fifth step of the AlexNet below), and its emulated mma is
#     slow (10x the fp32 kernels).
# Then `convnet gradcheck --device cuda`, plain and with the conv and bias
# switches. Skipped (77) without Fashion-MNIST.
# Usage: test_gpu_same_losses.sh CONVNET [DEVICE]   (DEVICE: cuda, the default, or cpu)
set -u
CONVNET=$1
DEV=${2:-cuda}
DATA=${CONVNET_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
[ -e "$DATA/train-images-idx3-ubyte.gz" ] ||
    { echo "SKIP: no Fashion-MNIST in $DATA (apt-get install dataset-fashion-mnist, or CONVNET_FASHION_MNIST=DIR)"; exit 77; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# 6 full batches: 2 plain, the third captured, 3 replayed (models/train.c);
# AlexNet at an eighth of its width on 64x64, dropout 0.3 (the default recipe)
ALEX=(train --device "$DEV" --data "$DATA" --size 64 --width 0.125 --fc 64 --limit 192 --test-limit 64 --epochs 1
      --batch 32 --log-every 1 --quiet)
TRAIN=("${ALEX[@]}")
run() { # NAME [VAR=VALUE...]: the run's step lines (loss, top-1) in $W/NAME.txt
    local name=$1
    shift
    if ! env "$@" "$CONVNET" "${TRAIN[@]}" --checkpoint-dir "$W/$name" >"$W/$name.out" 2>"$W/$name.err"; then
        bad "$name ($*): convnet train failed: $(tail -3 "$W/$name.err")"
        return 1
    fi
    grep '"kind":"step"' "$W/$name/metrics.jsonl" | sed 's/,"images_per_s.*//' >"$W/$name.txt"
}
same() { # NAME: bit for bit the plain run's step lines
    if [ -s "$W/plain.txt" ] && cmp -s "$W/plain.txt" "$W/$1.txt"; then
        ok "$1: the plain run's $(wc -l <"$W/plain.txt") losses, bit for bit"
    else
        bad "$1: losses differ from the plain run's: $(diff "$W/plain.txt" "$W/$1.txt" | head -4)"
    fi
}
close() { # NAME [PLAIN]: losses within a relative 1e-3 of the plain run's
    local r
    r=$(python3 -c 'import re, sys
loss = lambda f: [float(m) for m in re.findall(r"\"loss\":([-+0-9.eE]+)", open(f).read())]
a, b = loss(sys.argv[1]), loss(sys.argv[2])
worst = max([abs(x - y) / max(abs(x), 1e-30) for x, y in zip(a, b)] or [float("inf")])
print("%d steps, largest relative difference %.2g" % (len(b), worst))
sys.exit(0 if a and len(a) == len(b) and all(abs(x - y) <= 1e-3 * abs(x) + 1e-6 for x, y in zip(a, b)) else 1)' \
        "$W/${2:-plain}.txt" "$W/$1.txt") && ok "$1: $r" || bad "$1: $r"
}

run plain && { [ -s "$W/plain.txt" ] || bad "the plain run logged no steps"; }
run switched NN_CUDA_LAZY_CHECKS=1 NN_CUDA_PINNED=1 NN_FUSE_BIAS=1 NN_FUSE_RELU=1 && same switched
run resident NN_RESIDENT=1 && same resident
captured() { # NAME: the run says its steps ran from a captured graph (a silent fallback fails)
    grep -H "not captured" "$W/$1.err" && bad "$1: the step was not captured"
    if [ "$DEV" = cpu ]; then
        : # the CPU ignores NN_CUDA_GRAPH
    elif grep -q "NN_CUDA_GRAPH: [1-9][0-9]* steps ran from a captured graph" "$W/$1.out"; then
        ok "$1: $(grep -o '[0-9]* steps ran from a captured graph' "$W/$1.out")"
    else
        bad "$1: no step ran from a captured graph: $(cat "$W/$1.err")"
    fi
}
if run graph NN_CUDA_GRAPH=1 NN_CUDA_LAZY_CHECKS=1 NN_RESIDENT=1; then
    same graph
    captured graph
    cmp -s "$W/plain/last.safetensors" "$W/graph/last.safetensors" && ok "graph: the plain run's checkpoint, bit for bit" ||
        bad "graph: the checkpoint differs from the plain run's"
fi
run fused_db NN_FUSE_BIAS_GRAD=1 && close fused_db
run implicit NN_CONV_IMPLICIT=1 NN_CONV_WS_MB=0 && close implicit
# every switch but NN_TF32 together: each alone above matched, yet the
# implicit forward once ignored the fused ReLU (train loss 7.42 against 3.17)
run all NN_CONV_IMPLICIT=1 NN_FUSE_RELU=1 NN_FUSE_BIAS=1 NN_FUSE_BIAS_GRAD=1 NN_CUDA_LAZY_CHECKS=1 \
    NN_CUDA_PINNED=1 NN_CUDA_GRAPH=1 NN_RESIDENT=1 && close all && captured all
TRAIN=(train --device "$DEV" --data "$DATA" --model lenet --limit 32 --test-limit 32 --epochs 1 --batch 32
       --log-every 1 --quiet)
run lenet && run lenet_tf32 NN_TF32=1 && close lenet_tf32 lenet
run lenet_implicit_tf32 NN_TF32=1 NN_CONV_IMPLICIT=1 NN_FUSE_RELU=1 && close lenet_implicit_tf32 lenet

# every op's gradients on the device, as gpu_check.sh runs it, then with the switches
for sw in "" "NN_CONV_IMPLICIT=1 NN_FUSE_BIAS=1 NN_FUSE_BIAS_GRAD=1"; do
    if env $sw "$CONVNET" gradcheck --device "$DEV" >"$W/gc.out" 2>&1; then
        ok "gradcheck --device $DEV${sw:+ with $sw}: $(tail -1 "$W/gc.out")"
    else
        bad "gradcheck --device $DEV${sw:+ with $sw}: $(grep -E 'FAIL|passed|rror' "$W/gc.out" | head -6)"
    fi
done
[ $fails = 0 ] || { echo "$fails check(s) failed"; exit 1; }
