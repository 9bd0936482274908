#!/bin/bash
# Data-parallel training (models/dist_train.h) as 2 MPI ranks over shared
# memory, against one process: bitwise equal to the one-process emulation of 2
# ranks, bucketed sums during backward equal to one sum after it, within 1e-5
# of one process's gradients, resumable 2 -> 1 and 1 -> 2,
# a dead or hung rank ends the job, rank 0's start broadcast undoes a
# perturbed rank, and a batch that does not divide is an error. Skipped (77)
# without mpirun or without MPI in the build. With the emulated CUDA module
# (tests/cuda_emu, NCCL on MPI), the GPU path too: NCCL with 1 rank matches
# no launcher, 2 ranks match the emulation of 2, the broadcast undoes a
# perturbed rank, a rank hung in the sum ends the job by NCCL's deadline, and
# one hung in NCCL's setup by the watchdog.
# Usage: test_dist.sh CONVNET HAVE_MPI(0|1) COMPARE_PY [EMULATED_CUDA_MODULE]
set -u
CONVNET=$1 HAVE_MPI=$2 COMPARE=$3 EMU=${4:-}
[ "$HAVE_MPI" = 1 ] || { echo "SKIP: this build has no MPI (-Dmpi, libopenmpi-dev)"; exit 77; }
command -v mpirun >/dev/null || { echo "SKIP: mpirun is absent (apt-get install openmpi-bin)"; exit 77; }
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { echo "SKIP: no Fashion-MNIST"; exit 77; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
# --bind-to none: mpirun's default core binding slows threads; root needs the flag
# Under ASan (.ci/run), no leak check inside mpirun: Open MPI 4.1 leaves ~14 KB
# per rank allocated from its plugins, whose frames LeakSanitizer cannot name
# (so no suppression file matches them). The one-process runs below (the
# emulation, no launcher) still check models/dist_train.c's own memory.
RUN=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" mpirun --bind-to none)
[ "$(id -u)" = 0 ] && RUN+=(--allow-run-as-root)
MPI=("${RUN[@]}" -np 2)
fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
same() { if cmp -s "$1" "$2"; then ok "$3"; else bad "$3 ($1 and $2 differ)"; fi; }
# same_train_record DIR1 DIR2 LABEL: the epochs' training loss and top-1 in
# metrics.jsonl (the whole global batch's: summed over ranks with the gradients)
train_record() { grep '"kind":"epoch","split":"train"' "$1/metrics.jsonl" | sed -E 's/,"images_per_s".*//'; }
same_train_record() {
    if [ -n "$(train_record "$1")" ] && [ "$(train_record "$1")" = "$(train_record "$2")" ]; then ok "$3"
    else bad "$3: $(train_record "$1" | tr '\n' ' ') against $(train_record "$2" | tr '\n' ' ')"; fi
}
# ended LABEL RC LOG PATTERN: a job with a dead or hung rank ended (not at the
# outer timeout, status 124), non-zero, with a line matching PATTERN (grep -E)
ended() {
    if [ "$2" = 124 ]; then bad "$1: the job did not end"
    elif [ "$2" = 0 ]; then bad "$1: exit status 0"
    elif grep -qE "$4" "$3"; then ok "$1: status $2, '$(grep -m1 -oE "$4" "$3")'"
    else bad "$1: no message naming the rank: $(cat "$3")"; fi
}

# a small AlexNet (dropout 0.5 included) and LeNet: a few steps each
ALEX=(train --size 64 --width 0.125 --fc 64 --dropout 0.5 --limit 192 --test-limit 100 --batch 32 --epochs 2
      --threads 1 --quiet)
LENET=(train --model lenet --limit 256 --test-limit 100 --batch 32 --epochs 1 --threads 1 --quiet)

# 1. 2 ranks == one process computing the 2 slices in turn, bitwise; the run ends
#    with the ranks' weight hashes compared (it fails if they differ)
"${MPI[@]}" "$CONVNET" "${ALEX[@]}" --checkpoint-dir r2 > r2.log 2>&1 || bad "2 ranks: $(tail -3 r2.log)"
"$CONVNET" "${ALEX[@]}" --emulate-ranks 2 --checkpoint-dir e2 > e2.log 2>&1 || bad "emulation: $(tail -3 e2.log)"
same r2/last.safetensors e2/last.safetensors "2 ranks bitwise equal to 2 slices in one process (AlexNet, dropout)"
same_train_record r2 e2 "2 ranks: the epochs' training loss and top-1 those of 2 slices in one process"
grep -q "gradient all-reduce:" r2.log && ok "all-reduce time reported: $(grep 'gradient all-reduce' r2.log)"

# 1a. the start broadcast has effect: rank 1 starts from other weights and
#     optimizer state (--fault perturb:1: every tensor 0.25), which rank 0's
#     replace before the first step, so the run is the unperturbed one's bits
"${MPI[@]}" "$CONVNET" "${ALEX[@]}" --fault perturb:1 --checkpoint-dir pr2 > pr2.log 2>&1 || bad "perturbed rank 1: $(tail -3 pr2.log)"
same pr2/last.safetensors r2/last.safetensors "2 ranks, rank 1 perturbed before the broadcast, bitwise equal to unperturbed"

# 1c. gradients summed in buckets started during backward (0.05 MiB: several
#     buckets of this model's 70,219 floats; 4 MiB, the GPU's default: one) give
#     the bits of one sum after backward (the CPU's default, run 1), since each
#     float is the same a + b
grep -q "summed by mpi after backward" r2.log && ok "CPU default: one sum after backward" ||
    bad "CPU default is not one sum after backward: $(grep 'data parallel' r2.log)"
"${MPI[@]}" "$CONVNET" "${ALEX[@]}" --dist-bucket-mb 0.05 --checkpoint-dir k2 > k2.log 2>&1 || bad "buckets: $(tail -3 k2.log)"
"${MPI[@]}" "$CONVNET" "${ALEX[@]}" --dist-bucket-mb 4 --checkpoint-dir k4 > k4.log 2>&1 || bad "one bucket: $(tail -3 k4.log)"
grep -Eq "\(([2-9]|[1-9][0-9]+) buckets\)" k2.log && ok "$(grep -Eo '[0-9]+ buckets\)' k2.log | tr -d ')') of 0.05 MiB" ||
    bad "0.05 MiB did not make several buckets: $(grep 'all-reduce' k2.log)"
same k2/last.safetensors r2/last.safetensors "2 ranks: 0.05 MiB buckets during backward bitwise equal to one sum after it"
same k4/last.safetensors r2/last.safetensors "2 ranks: one 4 MiB bucket during backward bitwise equal to one sum after it"

# 1b. one rank under mpirun takes the reduction path (pack, MPI sum, unpack):
#     the same bits as no launcher (with a GPU, the same check runs NCCL)
"${RUN[@]}" -np 1 "$CONVNET" "${LENET[@]}" --checkpoint-dir m1 > m1.log 2>&1 || bad "1 rank: $(tail -3 m1.log)"
"$CONVNET" "${LENET[@]}" --checkpoint-dir p1 > p1.log 2>&1 || bad "no launcher: $(tail -3 p1.log)"
same m1/last.safetensors p1/last.safetensors "1 rank under mpirun bitwise equal to no launcher"
grep -q "data parallel: 1 process, 32 images each per step; gradients summed by mpi" m1.log &&
    ok "1 rank says so: $(grep 'data parallel' m1.log)" ||
    bad "1 rank under mpirun does not say how it sums: $(head -5 m1.log)"

# 2. 2 ranks vs 1 process at the same global batch: one SGD step at lr 1 gives
#    the gradient; then Adam for an epoch stays close
SGD=(--optim sgd --momentum 0 --wd 0 --schedule const --stop-after 1)
"$CONVNET" "${LENET[@]}" "${SGD[@]}" --lr 1e-30 --checkpoint-dir g0 > /dev/null 2>&1 # w0: a step of ~0
"$CONVNET" "${LENET[@]}" "${SGD[@]}" --lr 1 --checkpoint-dir g1 > /dev/null 2>&1
"${MPI[@]}" "$CONVNET" "${LENET[@]}" "${SGD[@]}" --lr 1 --checkpoint-dir g2 > /dev/null 2>&1
# 1e-5: the two sum the same products in a different order (float32 rounding)
python3 "$COMPARE" grad g0/last.safetensors g1/last.safetensors g2/last.safetensors 1e-5 && ok "first-step gradients" ||
    bad "first-step gradients"
"$CONVNET" "${LENET[@]}" --checkpoint-dir c1 > /dev/null 2>&1
"${MPI[@]}" "$CONVNET" "${LENET[@]}" --checkpoint-dir c2 > /dev/null 2>&1
# 1e-3: 8 Adam steps amplify rounding differences a little
python3 "$COMPARE" close c1/last.safetensors c2/last.safetensors 1e-3 && ok "weights after 8 steps" ||
    bad "weights after 8 steps"

# 3. resume with a different N continues exactly: 2 ranks -> 1 process (emulating
#    2) and 1 process (emulating 2) -> 2 ranks end where the uninterrupted runs do
#    (--epochs and --test-limit are not taken from the checkpoint: given again)
"${MPI[@]}" "$CONVNET" "${ALEX[@]}" --stop-after 3 --checkpoint-dir s21 > s21.log 2>&1 || bad "stop: $(tail -3 s21.log)"
"$CONVNET" train --resume s21 --epochs 2 --test-limit 100 --threads 1 --quiet --emulate-ranks 2 --checkpoint-dir s21 > s21b.log 2>&1 ||
    bad "resume 2 -> 1: $(tail -3 s21b.log)"
same s21/last.safetensors r2/last.safetensors "resume 2 ranks -> 1 process"
"$CONVNET" "${ALEX[@]}" --emulate-ranks 2 --stop-after 5 --checkpoint-dir s12 > s12.log 2>&1
"${MPI[@]}" "$CONVNET" train --resume s12 --epochs 2 --test-limit 100 --threads 1 --quiet --checkpoint-dir s12 > s12b.log 2>&1 ||
    bad "resume 1 -> 2: $(tail -3 s12b.log)"
same s12/last.safetensors e2/last.safetensors "resume 1 process -> 2 ranks"

# 4. a rank that dies or hangs at step 3 ends the job non-zero within the timeout
#    (3 s; the outer timeout only guards the test itself); hang-sum: rank 1
#    hangs after the step's agreement, so what ends the job is the sum's own
#    deadline: the wait for the buckets (0.05 MiB), or the watchdog of the
#    blocking sum after backward (the CPU's default), which ends rank 0 itself
for kind in die hang hang-sum:0.05 hang-sum; do
    fault=${kind%%:*} buckets=()
    [ "$kind" != "$fault" ] && buckets=(--dist-bucket-mb "${kind#*:}")
    timeout 120 "${MPI[@]}" "$CONVNET" "${LENET[@]}" "${buckets[@]}" --fault $fault:1:3 --dist-timeout 3 --checkpoint-dir f > f.log 2>&1
    rc=$?
    case $kind in
    die) pat="rank 1 .*exited on signal 9" ;;
    hang) pat="rank 1 did not reach step 3 within 3 s" ;;
    hang-sum:0.05) pat="rank 0: the bucketed gradient all-reduce did not complete within 3 s" ;;
    hang-sum) pat="rank 0: the all-reduce of [0-9]* floats did not complete within 3 s" ;;
    esac
    ended "$kind" $rc f.log "$pat"
done

# 4b. SIGUSR1 on rank 1 alone at step 3: every rank stops after step 3 (agreed),
#     exit 128 + 10, one checkpoint at step 3 that resumes
"${MPI[@]}" "$CONVNET" "${LENET[@]}" --fault signal:1:3 --checkpoint-dir u > u.log 2>&1
rc=$?
if [ $rc = 138 ] && grep -q "stopped by signal 10 after step 3" u.log && [ -e u/last.safetensors ]; then
    ok "SIGUSR1 on rank 1: all stopped after step 3, status 138"
else bad "SIGUSR1 on rank 1: status $rc: $(tail -5 u.log)"; fi

# 5. a global batch that does not divide by the ranks is a clear error
"${MPI[@]}" "$CONVNET" "${LENET[@]}" --batch 33 > b.log 2>&1 && bad "batch 33 on 2 ranks was accepted"
grep -q "does not divide by 2 processes" b.log && ok "batch 33: $(grep -m1 -o 'convnet train: .*' b.log)" ||
    bad "batch 33: $(cat b.log)"

# 6. the GPU path (cuda/nccl.cu, buckets on NCCL's stream) on the emulated GPU,
#    whose NCCL is MPI on the emulated device memory (tests/cuda_emu/nccl.h):
#    GPU runs against GPU runs, tiny ones (emulated kernels are ~1000x slower);
#    the small AlexNet, dropout included, 70,219 floats of gradients.
#    NN_EMU_EAGER=1: NCCL's stream runs each sum as soon as it is queued, so a
#    sum not ordered after its gradients (a missing event wait) sums stale ones
gpu_cases() {
    local GPU=(env "CONVNET_CUDA_MODULE=$EMU" NN_EMU_EAGER=1) MPIX=(-x CONVNET_CUDA_MODULE -x NN_EMU_EAGER)
    local TINY=(train --size 64 --width 0.125 --fc 64 --dropout 0.5 --device cuda --limit 48 --test-limit 16
                --batch 16 --epochs 1 --threads 1 --quiet)
    # a. one rank under mpirun takes NCCL's path (one member): the bits of no launcher
    "${GPU[@]}" "$CONVNET" "${TINY[@]}" --checkpoint-dir gp1 > gp1.log 2>&1 || bad "GPU, no launcher: $(tail -3 gp1.log)"
    for mb in 0.05 0; do
        "${GPU[@]}" "${RUN[@]}" "${MPIX[@]}" -np 1 "$CONVNET" "${TINY[@]}" --dist-bucket-mb $mb --checkpoint-dir gm1-$mb \
            > gm1-$mb.log 2>&1 || bad "GPU, 1 rank, buckets $mb: $(tail -3 gm1-$mb.log)"
        same gm1-$mb/last.safetensors gp1/last.safetensors "GPU: 1 rank under mpirun (NCCL, --dist-bucket-mb $mb) bitwise equal to no launcher"
        grep -q "data parallel: 1 process, .* summed by nccl" gm1-$mb.log ||
            bad "GPU, 1 rank, buckets $mb: not summed by NCCL: $(grep 'data parallel' gm1-$mb.log)"
    done
    # b. 2 ranks, NCCL sums in buckets during backward (the GPU's default, 4
    #    MiB: one; 0.05 MiB: several) and one sum after it, against the emulation of 2
    "${GPU[@]}" "$CONVNET" "${TINY[@]}" --emulate-ranks 2 --checkpoint-dir ge2 > ge2.log 2>&1 ||
        bad "GPU, emulation of 2 ranks: $(tail -3 ge2.log)"
    for mb in default 0.05 0; do
        local flag=()
        [ $mb = default ] || flag=(--dist-bucket-mb $mb)
        "${GPU[@]}" "${MPI[@]}" "${MPIX[@]}" "$CONVNET" "${TINY[@]}" "${flag[@]}" --checkpoint-dir gr2-$mb \
            > gr2-$mb.log 2>&1 || bad "GPU, 2 ranks, buckets $mb: $(tail -3 gr2-$mb.log)"
        grep -q "summed by nccl" gr2-$mb.log || bad "GPU, 2 ranks: not summed by NCCL: $(grep 'data parallel' gr2-$mb.log)"
        same gr2-$mb/last.safetensors ge2/last.safetensors "GPU: 2 ranks (NCCL, --dist-bucket-mb $mb) bitwise equal to 2 slices in one process"
        same_train_record gr2-$mb ge2 "GPU: 2 ranks (--dist-bucket-mb $mb): the training loss and top-1 those of 2 slices"
    done
    grep -q "in 4 MiB buckets during backward" gr2-default.log ||
        bad "GPU: the default is not 4 MiB buckets: $(grep 'data parallel' gr2-default.log)"
    grep -Eq "\(([2-9]|[1-9][0-9]+) buckets\)" gr2-0.05.log ||
        bad "GPU: 0.05 MiB did not make several buckets: $(grep 'all-reduce' gr2-0.05.log)"
    # c. 2 ranks vs 1 process at the same global batch, first-step gradients
    #    (the GPU's dropout masks drawn by global row); 1e-5 as in 2.
    "${GPU[@]}" "$CONVNET" "${TINY[@]}" "${SGD[@]}" --lr 1e-30 --checkpoint-dir gg0 > /dev/null 2>&1
    "${GPU[@]}" "$CONVNET" "${TINY[@]}" "${SGD[@]}" --lr 1 --checkpoint-dir gg1 > /dev/null 2>&1
    "${GPU[@]}" "${MPI[@]}" "${MPIX[@]}" "$CONVNET" "${TINY[@]}" "${SGD[@]}" --lr 1 --checkpoint-dir gg2 > /dev/null 2>&1
    python3 "$COMPARE" grad gg0/last.safetensors gg1/last.safetensors gg2/last.safetensors 1e-5 &&
        ok "GPU: first-step gradients, 2 ranks vs 1 process" || bad "GPU: first-step gradients, 2 ranks vs 1 process"
    # d. the start broadcast (NCCL) has effect: rank 1 perturbed, as in 1a
    "${GPU[@]}" "${MPI[@]}" "${MPIX[@]}" "$CONVNET" "${TINY[@]}" --fault perturb:1 --checkpoint-dir gpr2 > gpr2.log 2>&1 ||
        bad "GPU, perturbed rank 1: $(tail -3 gpr2.log)"
    same gpr2/last.safetensors gr2-default/last.safetensors "GPU: 2 ranks, rank 1 perturbed before the broadcast, bitwise equal to unperturbed"
    # e. a rank that hangs after step 2's agreement leaves NCCL's sum pending
    #    (the emulated collective stays on its stream until MPI completes it):
    #    cuda/nccl.cu's deadline ends the job, naming the rank that waited, for
    #    the bucketed sum on NCCL's stream and for the one sum after backward
    #    on the compute stream. 8 s, not 3: the same deadline bounds the steps'
    #    agreements before the fault, and emulated ranks on a loaded machine
    #    can drift a few seconds apart
    for mb in 4 0; do
        timeout 120 "${GPU[@]}" "${MPI[@]}" "${MPIX[@]}" "$CONVNET" "${TINY[@]}" --dist-bucket-mb $mb --fault hang-sum:1:2 \
            --dist-timeout 8 --checkpoint-dir gf > gf.log 2>&1
        rc=$?
        if [ $mb = 0 ]; then what="gradient all-reduce"; else what="bucketed gradient all-reduce"; fi
        ended "GPU, hang-sum, --dist-bucket-mb $mb" $rc gf.log "rank 0: the $what \(NCCL\) did not complete within 8 s"
    done
    # f. a rank that never joins NCCL's rendezvous (the emulator's
    #    NN_EMU_NCCL_INIT_HANG_RANK: ncclCommInitRank blocks for ever) ends
    #    the job by the watchdog around the setup (whichever rank's fires
    #    first: both wait in it)
    timeout 120 "${GPU[@]}" NN_EMU_NCCL_INIT_HANG_RANK=1 "${MPI[@]}" "${MPIX[@]}" -x NN_EMU_NCCL_INIT_HANG_RANK \
        "$CONVNET" "${TINY[@]}" --dist-timeout 3 --checkpoint-dir gi > gi.log 2>&1
    rc=$?
    ended "GPU, a rank hung in NCCL's setup" $rc gi.log \
        "rank [01]: NCCL's communicator setup \(ncclCommInitRank\) did not complete within 3 s"
}
if [ -z "$EMU" ]; then
    echo "SKIP (GPU cases): no emulated CUDA module with NCCL (tests/cuda_emu needs the CUDA backend, C++, x86-64, and NCCL in the toolkit)"
else gpu_cases; fi

[ $fails = 0 ] || { echo "$fails failure(s)"; exit 1; }
