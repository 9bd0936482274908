#!/bin/bash
# The data-parallel checks that need a GPU (issue 12), ~1 minute on one GPU:
# one rank under mpirun takes the NCCL path (ncclCommInitRank, ncclAllReduce
# on the stream, polled against the timeout) and must end bitwise where the
# run without a launcher ends; then the one-process emulation of 2 ranks on
# the GPU (dropout by global row, pack/unpack on the device); 1 rank with
# gradients summed in buckets during backward (several, and none) too. With 2+ GPUs it
# also runs 2 ranks (one per GPU) against that emulation.
# Usage: benchmarks/gpu_dist_check.sh [build dir]   (exit 0: all passed)
set -u
B=${1:-build}/tools/convnet
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
RUN=(mpirun --bind-to none)
[ "$(id -u)" = 0 ] && RUN+=(--allow-run-as-root)
A=(train --device cuda --size 64 --width 0.25 --fc 256 --dropout 0.5 --limit 512 --test-limit 256 --batch 64
   --epochs 1 --quiet)
fail=0
"$B" "${A[@]}" --checkpoint-dir "$W/plain" | tail -1
"${RUN[@]}" -np 1 "$B" "${A[@]}" --checkpoint-dir "$W/nccl1" | grep -E "data parallel|all-reduce|done"
cmp "$W/plain/last.safetensors" "$W/nccl1/last.safetensors" && echo "ok: NCCL, 1 rank == no launcher" ||
    { echo "FAIL: NCCL 1 rank differs"; fail=1; }
# the bucketed sums during backward (NCCL's own stream after an event on the
# compute stream; the compute stream waits for it) and the one sum after backward
for mb in 0.05 0; do
    "${RUN[@]}" -np 1 "$B" "${A[@]}" --dist-bucket-mb $mb --checkpoint-dir "$W/b$mb" | grep -E "all-reduce"
    cmp "$W/plain/last.safetensors" "$W/b$mb/last.safetensors" && echo "ok: NCCL, 1 rank, --dist-bucket-mb $mb" ||
        { echo "FAIL: NCCL 1 rank, --dist-bucket-mb $mb differs"; fail=1; }
done
"$B" "${A[@]}" --emulate-ranks 2 --checkpoint-dir "$W/emu" | tail -1
if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then
    "${RUN[@]}" -np 2 "$B" "${A[@]}" --checkpoint-dir "$W/nccl2" | grep -E "all-reduce|done"
    cmp "$W/emu/last.safetensors" "$W/nccl2/last.safetensors" && echo "ok: NCCL, 2 GPUs == emulation" ||
        { echo "FAIL: 2 GPUs differ from the emulation"; fail=1; }
else
    echo "skip: one GPU: 2 ranks need 2 (one process per GPU)"
fi
exit $fail
