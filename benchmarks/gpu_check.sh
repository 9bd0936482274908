#!/usr/bin/env bash
# The GPU checks as one prepared command for a short, rare GPU window (a bare
# machine: nvcc, Python + PyTorch, meson, ninja; no pkg-config, no Debian
# libraries, no network; 10 minutes a command; what is under $OUT comes back).
#
#   benchmarks/gpu_check.sh prepare    here, without a GPU: builds convnet and
#       test_cuda, test_cuda_fuse (build-gpu-check/, -Dcuda=enabled), packs them with the
#       runtime libraries ldd lists (from the Debian packages, dpkg -x) and what
#       a fallback build needs into gpu-carry/bundle.tar.xz (with, under mpi/,
#       a second convnet built with MPI and NCCL and Open MPI relocated: see
#       prepare_mpi), and the
#       Fashion-MNIST .gz files into gpu-carry/fashion-mnist when they fit
#   benchmarks/gpu_check.sh [run]      there, with carry ["gpu-carry"]: the steps
#       below, most valuable first, each with its own time limit inside one
#       budget (GPU_CHECK_BUDGET, default 540 s); log, JSON table and results
#       go to $OUT (default gpu_check_out/) after EVERY step, so a kill keeps
#       what finished
#   benchmarks/gpu_check.sh --dry-run  here: prepare (when gpu-carry/ is
#       missing or older than the sources), then every step except those that
#       need a GPU, which are only checked to be runnable; fails loudly when
#       the script or the bundle is broken (.ci/run runs this)
#
# Steps, by value: unpack; binaries start (else a fallback build there); the
# GPU test suite (a failure is rerun with CUDA_LAUNCH_BLOCKING=1 to name the
# kernel); gradcheck --device cuda; compute-sanitizer memcheck and racecheck;
# convnet bench at batch 128 in strict fp32 and TF32 (NN_TF32=1) against
# PyTorch on the same GPU in fp32 and with its default precision (TF32 for
# convolutions). Then, only while EXTRA_RESERVE (180) seconds stay for the
# training: the switches that are off by default (fused epilogue tests, the
# step captured as a CUDA graph (test_cuda_graph), the implicit-GEMM conv's
# tests, NCCL with one rank under the carried mpirun against no launcher,
# sanitizer runs and training step, the no-sync, resident and graph
# runs' losses against a plain run, the uncapped workspace); the side-by-side
# table; the full-size AlexNet on Fashion-MNIST with the time left.
# GPU_CHECK_ONLY=REGEX runs only the steps whose names match (extended
# regular expression; the bundle's own checks always run): a second, short
# run of what the first one showed failing, e.g. 'test_cuda|NCCL'.
# Exit status: 0 when no step failed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
carry=$root/gpu-carry
bdir=$root/build-gpu-check
debs=$root/debs
sm=${GPU_CHECK_SM:-90}
budget=${GPU_CHECK_BUDGET:-540}
# carried binaries and libraries together stay under this (the tree travels in 64 MiB)
bundle_max=$((40 * 1024 * 1024))
travel_max=$((60 * 1024 * 1024))

mode=run
case "${1:-run}" in
    prepare) mode=prepare ;;
    run) mode=run ;;
    --dry-run) mode=dry ;;
    -h | --help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (prepare, run or --dry-run)" >&2; exit 2 ;;
esac

# ---- helpers shared by both sides ----

# find_cuda_bin NAME: a CUDA tool on PATH or in the usual install folders
find_cuda_bin() {
    local d
    if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return 0; fi
    for d in "${CUDA_HOME:-/nonexistent}/bin" /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/cuda/bin; do
        [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    return 1
}

# a digest of the sources the binaries are built from (the .git folder may
# not travel: the files themselves are read, in a fixed order)
sources_digest() {
    (cd "$root" && find core cuda ops models optim io tools tests meson.build meson_options.txt -type f \
        \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name 'meson*' \) 2>/dev/null |
        LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)
}

# libraries every Linux has and that must come from the machine itself
is_system_lib() {
    case "$1" in
        libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | librt.so.* | ld-linux* | libresolv.so.*) return 0 ;;
    esac
    return 1
}

# ---- prepare: build, gather libraries, pack ----

# The MPI build, for issue 12's "NCCL with one rank runs the GPU path": a
# second convnet (-Dmpi=enabled, its CUDA module with NCCL), so that the main
# binaries never depend on Open MPI loading there, and Open MPI itself from
# Debian's packages, relocated (OPAL_PREFIX; PMIx by PMIX_PKGLIBDIR and
# PMIX_PKGDATADIR) under mpi/usr. NCCL (libnccl.so.2, 200+ MB) does not
# travel: the GPU machine has it (the CUDA root or PyTorch's nvidia-nccl).
mpi_pkgs=(openmpi-bin openmpi-common libopenmpi3 libpmix2 libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7
    libudev1 libmunge2)
mpi_multiarch=usr/lib/x86_64-linux-gnu

# elf_deps_outside STAGE FILE: the libraries FILE needs that neither the
# staged tree (lib/, and Open MPI's under mpi/) nor the system basics provide
elf_deps_outside() {
    local stage=$1 f=$2 l path
    # ldd resolves through the machine's own folders too: a library counts only when found in the tree
    local m=$stage/mpi/$mpi_multiarch
    env LD_LIBRARY_PATH="$m:$m/pmix2/lib:$stage/lib" ldd "$f" 2>/dev/null |
        awk '$2 == "=>" {print $1, $3}' | while read -r l path; do
            is_system_lib "$l" && continue
            case $path in "$stage"/*) continue ;; esac
            echo "$l"
        done
}

prepare_mpi() {
    local stage=$1 mb=$root/build-gpu-check-mpi
    if ! command -v mpicc >/dev/null 2>&1 && ! pkg-config --exists ompi-c 2>/dev/null; then
        echo "gpu_check prepare: no Open MPI here (libopenmpi-dev): the bundle has no MPI build" >&2
        return 0
    fi
    # the dry run reuses build/ when it is this build (CI's: MPI, CUDA with NCCL, release)
    if [ "$mode" = dry ] && grep -q '^#define NN_HAVE_NCCL 1' "$root/build/config.h" 2>/dev/null &&
        meson introspect "$root/build" --buildoptions 2>/dev/null | python3 -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
sys.exit(0 if (o["buildtype"], o["gpu_sm"]) == ("release", sys.argv[1]) else 1)' "$sm"; then
        mb=$root/build
    fi
    if [ ! -f "$mb/build.ninja" ]; then
        meson setup "$mb" "$root" -Dcuda=enabled -Dmpi=enabled -Dtests=disabled -Dgpu_sm="$sm" --buildtype=release \
            >/dev/null || { echo "gpu_check prepare: the MPI build does not configure" >&2; return 1; }
    fi
    if ! grep -q '^#define NN_HAVE_NCCL 1' "$mb/config.h"; then
        echo "gpu_check prepare: $mb has no NCCL (MPI and NCCL both needed): the bundle has no MPI build" >&2
        return 0
    fi
    local module
    module=$(ninja -C "$mb" -t targets all | sed -nE 's/^(cuda\/libconvnet_cuda\.so[.0-9]*): cuda_LINKER$/\1/p' |
        head -1)
    nice ninja -C "$mb" tools/convnet "$module" >/dev/null || { ninja -C "$mb" tools/convnet "$module"; return 1; }

    local debs_mpi=$debs/mpi m=$stage/mpi
    bash "$root/benchmarks/fetch_debs.sh" "$debs_mpi" "${mpi_pkgs[@]}" >/dev/null ||
        { echo "gpu_check prepare: Open MPI's packages not fetched: the bundle has no MPI build" >&2; return 0; }
    mkdir -p "$m/bin" "$m/cuda" "$m/usr/bin" "$m/usr/share"
    cp "$mb/tools/convnet" "$m/bin/"
    cp -L "$mb"/cuda/libconvnet_cuda.so.[0-9] "$m/cuda/"
    # orterun (mpirun) alone: one machine needs no orted
    cp "$debs_mpi/root/usr/bin/orterun" "$m/usr/bin/"
    cp -a "$debs_mpi/root/usr/share/openmpi" "$m/usr/share/"
    mkdir -p "$m/usr/lib"
    cp -a "$debs_mpi/root/$mpi_multiarch" "$m/usr/lib/"
    # what a C program on one machine never loads: the Fortran, C++, Java and
    # OpenSHMEM libraries, the profiling and development files
    (cd "$m/$mpi_multiarch" && rm -rf libmpi_cxx* libmpi_java* libmpi_mpifh* libmpi_usempi* liboshmem* libompitrace* \
        openmpi/lib/ompi_monitoring_prof.so openmpi/include pkgconfig *.a *.la pmix2/lib/*.a pmix2/include)
    # plugins (and their common libraries) that need what does not travel (UCX,
    # libfabric, InfiniBand, PSM, netlink: networks between machines) are
    # dropped until every file left resolves in the tree
    local f gone=1
    while [ $gone = 1 ]; do
        gone=0
        while IFS= read -r f; do
            if [ -n "$(elf_deps_outside "$stage" "$f")" ]; then
                rm -f "$f"
                gone=1
            fi
        done < <(find "$m/$mpi_multiarch" -name '*.so*' -type f)
        find "$m/$mpi_multiarch" -xtype l -delete # links to what was dropped
    done
    local missing=
    for f in "$m/bin/convnet" "$m"/cuda/* "$m/usr/bin/orterun"; do
        missing+=$(elf_deps_outside "$stage" "$f" | grep -v '^libnccl\.' | tr '\n' ' ')
    done
    if [ -n "$missing" ]; then
        echo "gpu_check prepare: the MPI build needs libraries that do not travel: $missing" >&2
        return 1
    fi
    echo "gpu_check prepare: MPI build from $mb, Open MPI $(du -sh "$m/usr" | cut -f1) in mpi/usr" >&2
}

prepare() {
    local nvcc cuda=enabled
    if nvcc=$(find_cuda_bin nvcc); then
        export PATH="$(dirname "$nvcc"):$PATH"
    elif [ "$mode" = dry ]; then
        echo "gpu_check: no nvcc here: the dry run packs a build without the CUDA backend" >&2
        cuda=disabled
    else
        echo "gpu_check prepare: nvcc not found (PATH, CUDA_HOME, /usr/local/cuda*)" >&2
        return 1
    fi
    # the dry run reuses build/ when it is what prepare would make (CI has just built it)
    if [ "$mode" = dry ] && grep -q '^#define NN_HAVE_CUDA 1' "$root/build/config.h" 2>/dev/null &&
        meson introspect "$root/build" --buildoptions 2>/dev/null | python3 -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
# the GPU machine has no Open MPI: the bundle is built without it
sys.exit(0 if o.get("mpi") == "disabled" and (o["buildtype"], o["gpu_sm"]) == ("release", sys.argv[1]) and
         o["tests"] in ("enabled", "auto") else 1)' "$sm"; then
        bdir=$root/build
    fi
    if [ ! -f "$bdir/build.ninja" ]; then
        local setup_log
        setup_log=$(mktemp)
        meson setup "$bdir" "$root" -Dcuda=$cuda -Dmpi=disabled -Dtests=enabled -Dgpu_sm="$sm" --buildtype=release \
            >"$setup_log" 2>&1 || { cat "$setup_log"; rm -f "$setup_log"; return 1; }
        rm -f "$setup_log"
    fi
    nice ninja -C "$bdir" tools/convnet tests/test_cuda tests/test_cuda_fuse tests/test_cuda_graph >/dev/null || {
        ninja -C "$bdir" tools/convnet tests/test_cuda tests/test_cuda_fuse tests/test_cuda_graph; return 1; }

    local stage=$carry.stage
    rm -rf "$stage"
    mkdir -p "$stage/bin" "$stage/lib" "$stage/dev/pkgconfig" "$carry"
    cp "$bdir/tools/convnet" "$bdir/tests/test_cuda" "$bdir/tests/test_cuda_fuse" "$bdir/tests/test_cuda_graph" "$stage/bin/"
    # the CUDA backend is a module (libconvnet_cuda.so.N): convnet dlopen()s it
    # from ../cuda/ beside its bin/, and test_cuda's runpath is $ORIGIN/../cuda
    mkdir -p "$stage/cuda"
    cp -L "$bdir"/cuda/libconvnet_cuda.so.[0-9] "$stage/cuda/"

    # the libraries ldd lists, and the packages that own them
    local libs=() pkgs=() l p
    mapfile -t libs < <(ldd "$stage/bin/convnet" "$stage/bin/test_cuda" "$stage/bin/test_cuda_fuse" "$stage/bin/test_cuda_graph" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
    for l in "${libs[@]}"; do
        is_system_lib "$(basename "$l")" && continue
        case $(basename "$l") in libconvnet*) continue ;; esac # ours: carried above
        p=$(dpkg -S "$l" 2>/dev/null || dpkg -S "$(readlink -f "$l")" 2>/dev/null || dpkg -S "/usr$l" 2>/dev/null) || p=
        p=${p%%:*}
        [ -n "$p" ] && pkgs+=("$p")
    done
    # a fallback build there: headers, .pc files, .so links and pkgconf itself
    local dev=(libopenblas-openmp-dev libcmocka-dev libcjson-dev libpng-dev libjpeg62-turbo-dev zlib1g-dev
        pkgconf-bin libpkgconf3)
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
    local fetched=1
    bash "$root/benchmarks/fetch_debs.sh" "$debs" "${pkgs[@]}" "${dev[@]}" || fetched=0

    for l in "${libs[@]}"; do
        local name f
        name=$(basename "$l")
        is_system_lib "$name" && continue
        case $name in libconvnet*) continue ;; esac
        f=$(find "$debs/root" -name "$name" 2>/dev/null | head -1)
        if [ -z "$f" ]; then
            # no package (no network, or a library from outside Debian): the installed copy is the same file
            echo "gpu_check prepare: $name not in the fetched packages: copying $l" >&2
            f=$l
        fi
        cp -L "$f" "$stage/lib/$name"
    done
    if [ $fetched = 1 ]; then
        # development links (libfoo.so -> the carried soname), matched through the file both resolve to
        local -A soname_of=()
        for f in "$stage/lib"/*; do
            l=$(find "$debs/root" -name "$(basename "$f")" | head -1)
            [ -n "$l" ] && soname_of[$(readlink -f "$l")]=$(basename "$f")
        done
        while IFS= read -r l; do
            f=${soname_of[$(readlink -f "$l")]:-}
            [ -n "$f" ] && ln -sf "$f" "$stage/lib/$(basename "$l")"
        done < <(find "$debs/root" -name 'lib*.so' -type l)
        cp -a "$debs/root/usr/include" "$stage/dev/include"
        # .pc files point at @CARRY@, replaced where the bundle is unpacked
        for f in $(find "$debs/root" -name '*.pc' -path '*pkgconfig*' ! -name 'blas-*' ! -name 'lapack-*'); do
            sed -e 's|^libdir=.*|libdir=@CARRY@/lib|' -e 's|/usr/include|@CARRY@/dev/include|g' \
                -e 's|^prefix=/usr|prefix=@CARRY@/dev|' "$f" >"$stage/dev/pkgconfig/$(basename "$f")"
        done
        cp "$debs/root/usr/bin/pkgconf" "$stage/bin/pkgconf"
        cp -L "$(find "$debs/root" -name 'libpkgconf.so.3' | head -1)" "$stage/lib/"
    else
        echo "gpu_check prepare: packages not fetched: the bundle has no fallback build files" >&2
    fi
    if [ "$cuda" = enabled ]; then prepare_mpi "$stage" || return 1; fi
    {
        echo "git $(git -C "$root" rev-parse HEAD 2>/dev/null)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (modified)')"
        echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), cuda=$cuda, sm_$sm"
        echo "packages: ${pkgs[*]}"
        echo "sources $(sources_digest)"
        (cd "$stage" && find bin lib cuda mpi/bin mpi/cuda -type f -printf '%s %p\n' 2>/dev/null | sort -k2)
    } >"$stage/MANIFEST"

    rm -f "$carry/bundle.tar.xz"
    local level=-6
    [ "$mode" = dry ] && level=-1 # CI's time: a little larger, as good
    XZ_OPT=$level tar -C "$stage" -cJf "$carry/bundle.tar.xz" . || return 1
    rm -rf "$stage"
    local size
    size=$(stat -c %s "$carry/bundle.tar.xz")
    if [ "$size" -gt $bundle_max ]; then
        echo "gpu_check prepare: bundle is $((size >> 20)) MiB, over $((bundle_max >> 20)) MiB" >&2
        return 1
    fi

    # the data, when the whole tree still travels (tracked files + carry)
    local data tree total
    rm -rf "$carry/fashion-mnist"
    data=$(dirname "$(dpkg -L dataset-fashion-mnist 2>/dev/null | grep 'train-images-idx3-ubyte.gz$' | head -1)")
    tree=$(git -C "$root" ls-files -z | (cd "$root" && xargs -0 stat -c %s 2>/dev/null) | awk '{s += $1} END {print s + 0}')
    if [ -d "$data" ]; then
        total=$((tree + size + $(cat "$data"/*-ubyte.gz | wc -c)))
        if [ $total -le $travel_max ]; then
            mkdir -p "$carry/fashion-mnist"
            cp "$data"/*-ubyte.gz "$carry/fashion-mnist/"
        else
            echo "gpu_check prepare: Fashion-MNIST left out ($((total >> 20)) MiB would travel)" >&2
        fi
    fi
    echo "gpu_check prepare: $(du -sh "$carry" | cut -f1) in $carry (bundle $((size >> 20)) MiB," \
        "tracked files $((tree >> 20)) MiB); carry [\"gpu-carry\"]"
}

if [ "$mode" = prepare ]; then
    prepare
    exit $?
fi
if [ "$mode" = dry ]; then
    # a bundle older than the sources is rebuilt, so CI checks what the code is now
    # (Python's byte code, which this run's own compile check writes, is not a source)
    if [ ! -f "$carry/bundle.tar.xz" ] || [ -n "$(find "$root/core" "$root/cuda" "$root/ops" "$root/tools" "$root/tests" \
        "$root/benchmarks" -newer "$carry/bundle.tar.xz" -type f ! -name '*.pyc' 2>/dev/null | head -1)" ]; then
        prepare || { echo "gpu_check --dry-run: prepare FAILED" >&2; exit 1; }
    fi
fi

# ---- run (or dry run): steps, log and table ----

out=${OUT:-$root/gpu_check_out}
[ "$mode" = dry ] && out=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_dry.XXXXXX")
mkdir -p "$out"
log=$out/gpu_check.log
json=$out/gpu_check.json
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
: >"$log"
t_end=$((SECONDS + budget))
rows=()
failed=0

say() { echo "$*" | tee -a "$log"; }
linebuf=
command -v stdbuf >/dev/null && linebuf="stdbuf -oL -eL"

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr '\n\t' '  ')"; }

# the JSON table, rewritten after every step
write_json() {
    local r a b c d first=1
    {
        printf '{"mode": %s, "git": %s, "budget_s": %d, "failed": %d, "steps": [\n' "$(json_str "$mode")" \
            "$(json_str "$(head -1 "$work/MANIFEST" 2>/dev/null || git -C "$root" rev-parse HEAD 2>/dev/null)")" \
            "$budget" "$failed"
        for r in "${rows[@]}"; do
            IFS='|' read -r a b c d <<<"$r"
            [ $first = 1 ] || printf ',\n'
            first=0
            printf '  {"step": %s, "result": %s, "seconds": %s, "limit_s": %s}' "$(json_str "$a")" \
                "$(json_str "$b")" "${c:-null}" "${d:-null}"
        done
        printf '\n]}\n'
    } >"$json.tmp" && mv "$json.tmp" "$json"
}

# record NAME RESULT [SECONDS LIMIT]: a row in the table (FAIL... counts as failed)
record() {
    rows+=("$1|$2|${3:-}|${4:-}")
    case "$2" in FAIL*) failed=$((failed + 1)) ;; esac
    say "==== $1: $2${3:+ in ${3}s}"
    write_json
}

# selected NAME: whether GPU_CHECK_ONLY lets step NAME run (the bundle's own
# checks always do: nothing else runs without them)
only=${GPU_CHECK_ONLY:-}
selected() {
    [ -z "$only" ] && return 0
    case "$1" in "carried binaries start" | "fallback build"* | "carried CUDA module"* | "rerun "*) return 0 ;; esac
    [[ $1 =~ $only ]]
}

# step NAME LIMIT CMD...: runs CMD (a program or a function of this script)
# under min(LIMIT, time left); its output goes to the log and to $work/last.out.
# With cut_ok=1 a timeout is the planned end, not a failure. Returns the
# command's status (124: timeout, 125: no time left).
step() {
    local name=$1 want=$2 limit=$2 left rc t0
    shift 2
    # timeout runs programs: a function runs in a bash that inherits it (export -f)
    declare -F "$1" >/dev/null && set -- bash -c '"$@"' step "$@"
    selected "$name" || return 125 # (not in the table: the run's first line names the selection)
    left=$((t_end - SECONDS))
    [ $limit -gt $left ] && limit=$left
    if [ $left -lt 10 ] && [ $left -lt $want ]; then
        record "$name" "skip (no time left)"
        return 125
    fi
    say ""
    say "==== $name (limit ${limit}s): $*"
    t0=$SECONDS
    # line-buffered stdio (stdbuf), so a killed step's output is in the log up to its end
    timeout -k 5 "$limit" $linebuf "$@" >"$work/last.out" 2>&1
    rc=$?
    cat "$work/last.out" >>"$log"
    if [ $rc -eq 0 ]; then
        record "$name" pass $((SECONDS - t0)) "$limit"
    elif { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && [ "${cut_ok:-0}" = 1 ]; then
        record "$name" "cut at its time limit" $((SECONDS - t0)) "$limit"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        record "$name" "FAIL (timeout)" $((SECONDS - t0)) "$limit"
    else
        record "$name" "FAIL (exit $rc)" $((SECONDS - t0)) "$limit"
    fi
    return $rc
}

# gstep NAME LIMIT CMD...: a step that needs the GPU; the dry run only checks
# that its program exists and is executable
gstep() {
    selected "$1" || return 125
    if [ "$mode" = dry ]; then
        local prog=$3
        [ "$prog" = env ] && prog=$(for a in "${@:3}"; do case "$a" in *=*) ;; env) ;; *) echo "$a"; break ;; esac; done)
        if command -v "$prog" >/dev/null 2>&1 || [ -x "$prog" ]; then
            record "$1" "skip (dry run)"
        else
            record "$1" "FAIL (dry run: '$prog' is not runnable)"
        fi
        return 0
    fi
    step "$@"
}

# gstep_extra NAME LIMIT CMD...: a gstep that runs only while more than
# EXTRA_RESERVE seconds are left (kept for the training at the end)
extra_reserve=${EXTRA_RESERVE:-180}
gstep_extra() {
    selected "$1" || return 125
    if [ "$mode" = run ] && [ $((t_end - SECONDS - $2)) -lt $extra_reserve ]; then
        record "$1" "skip (time kept for the training)"
        return 125
    fi
    gstep "$@"
}

finish() {
    say ""
    say "$(printf '%-40s %-26s %7s %6s' step result seconds limit)"
    local r a b c d
    for r in "${rows[@]}"; do
        IFS='|' read -r a b c d <<<"$r"
        say "$(printf '%-40s %-26s %7s %6s' "$a" "$b" "${c:--}" "${d:--}")"
    done
    [ -f "$work/summary.txt" ] && cat "$work/summary.txt" | tee -a "$log"
    say "gpu_check ($mode): $failed failed, $SECONDS s; log and table in $out"
    write_json
    # the device tool brings back at most 8 files (the 8 results: log, table,
    # 3 convnet and 2 PyTorch benchmarks, training)
    if [ "$(find "$out" -type f | wc -l)" -gt 8 ]; then
        say "gpu_check: more than 8 files in $out: only 8 come back"
        failed=$((failed + 1))
    fi
    if [ "$mode" = dry ] && ! python3 -m json.tool "$json" >/dev/null; then
        say "gpu_check: $json is not valid JSON"
        failed=$((failed + 1))
    fi
    rm -rf "$work"
    [ "$mode" = dry ] && [ $failed -eq 0 ] && [ -z "${GPU_CHECK_KEEP:-}" ] && rm -rf "$out"
    [ $failed -eq 0 ]
    exit $?
}
trap 'record "interrupted" "FAIL (signal)"; finish' INT TERM

say "gpu_check ($mode): $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), source $root, budget ${budget}s"
[ -n "$only" ] && say "gpu_check: only the steps matching GPU_CHECK_ONLY='$only'"

# ---- 1. the machine and the bundle ----
if [ "$mode" = run ]; then
    if nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap,clocks.sm --format=csv >>"$log" 2>&1; then
        record "gpu present" pass
    else
        record "gpu present" "FAIL (nvidia-smi)"
    fi
fi
if [ ! -f "$carry/bundle.tar.xz" ]; then
    record "unpack" "FAIL (no $carry/bundle.tar.xz: run 'benchmarks/gpu_check.sh prepare' here and carry gpu-carry)"
    finish
fi
# tar needs xz for .xz: Python's tarfile does it without
if ! { command -v xz >/dev/null && tar -C "$work" -xJf "$carry/bundle.tar.xz"; } &&
    ! python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        "$carry/bundle.tar.xz" "$work" >>"$log" 2>&1; then
    record "unpack" "FAIL (bundle.tar.xz)"
    finish
fi
cat "$work/MANIFEST" >>"$log"
# binaries from other sources than these would test the wrong code: say so (and go on)
if ! grep -qx "sources $(sources_digest)" "$work/MANIFEST"; then
    record "bundle matches the sources" "FAIL (stale: run 'benchmarks/gpu_check.sh prepare' again)"
fi
# the C and C++ runtime of the machine is newer than the carried one: prefer it
# (and keep compute-sanitizer and PyTorch away from ours)
for l in libstdc++.so.6 libgcc_s.so.1 libgomp.so.1 libz.so.1; do
    if [ "$mode" = run ] && [ -e "$work/lib/$l" ] && ldconfig -p 2>/dev/null | grep -q "/$l\$"; then
        rm -f "$work/lib/$l"
    fi
done
record "unpack" "pass ($(ls "$work/lib" | wc -l) libraries)"
libpath="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=$work/bin
export root out work libpath bin carry sm
# wl CMD...: CMD with the carried libraries (set per command: never for python3)
wl() { env LD_LIBRARY_PATH="$libpath" "$@"; }

# ---- 2. the carried binaries start, else a build there ----
fallback_build() {
    local nvcc
    nvcc=$(find_cuda_bin nvcc) || { echo "no nvcc"; return 1; }
    sed -i "s|@CARRY@|$work|g" "$work"/dev/pkgconfig/*.pc
    # pkgconf needs its library: a wrapper that brings it
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$work/lib" "$work/bin/pkgconf" >"$work/bin/pkg-config"
    chmod +x "$work/bin/pkg-config"
    local fb=$work/build
    env PATH="$(dirname "$nvcc"):$PATH" PKG_CONFIG="$work/bin/pkg-config" PKG_CONFIG_LIBDIR="$work/dev/pkgconfig" \
        meson setup "$fb" "$root" -Dcuda=enabled -Dmpi=disabled -Dtests=enabled -Dgpu_sm="$sm" --buildtype=release || return 1
    [ "${1:-}" = configure-only ] && return 0
    env PATH="$(dirname "$nvcc"):$PATH" LIBRARY_PATH="$work/lib" ninja -C "$fb" tools/convnet tests/test_cuda \
        tests/test_cuda_fuse tests/test_cuda_graph || return 1
    cp "$fb/tools/convnet" "$fb/tests/test_cuda" "$fb/tests/test_cuda_fuse" "$fb/tests/test_cuda_graph" "$bin/"
    mkdir -p "$bin/../cuda"
    cp -L "$fb"/cuda/libconvnet_cuda.so.[0-9] "$bin/../cuda/"
}
export -f find_cuda_bin fallback_build
if step "carried binaries start" 10 sh -c "ldd '$bin/convnet' '$bin/test_cuda' '$bin/test_cuda_fuse' '$bin/test_cuda_graph' | grep -q 'not found' && exit 1; \
    env LD_LIBRARY_PATH='$libpath' '$bin/convnet' help"; then
    [ "$mode" = dry ] && [ -f "$work/bin/pkgconf" ] &&
        step "fallback build configures (dry run)" 60 fallback_build configure-only
else
    if [ "$mode" = dry ]; then finish; fi
    step "fallback build there" 240 fallback_build || finish
fi
if [ "$mode" = run ] && grep -q "CUDA backend: no" <(wl "$bin/convnet" help 2>&1); then
    record "cuda backend built" "FAIL (convnet was built without it)"
fi

# ---- 3. the GPU test suite: it must run, not skip ----
# (here the carried program runs too: its GPU tests skip, the others must pass)
[ "$mode" = dry ] && step "carried test_cuda runs (GPU tests skip)" 60 env LD_LIBRARY_PATH="$libpath" "$bin/test_cuda"
# the CUDA module travels beside bin/ (convnet looks in ../cuda/); its own
# libraries resolve there too (a missing one would only show on the GPU)
[ "$mode" = dry ] && step "carried CUDA module resolves" 10 sh -c "m=\$(ls '$bin'/../cuda/libconvnet_cuda.so.* 2>/dev/null) && \
    [ -n \"\$m\" ] && ! env LD_LIBRARY_PATH='$libpath' ldd \$m | grep 'not found'"
gstep "gpu tests (test_cuda)" 90 env LD_LIBRARY_PATH="$libpath" "$bin/test_cuda"
rc=$?
if [ "$mode" = run ] && [ $rc -ne 0 ] && [ $rc -ne 125 ]; then
    # each failed test alone with synchronous launches: the failing kernel is the
    # one its error names (all of them when the run died before naming one)
    failed_tests=$(sed -nE 's/^\[  (FAILED  |ERROR   )\] (test_[a-z0-9_]+).*/\2/p' "$work/last.out" | sort -u | head -2)
    while read -r t; do # (read: a pattern is not expanded against file names)
        step "rerun $t, CUDA_LAUNCH_BLOCKING=1" 30 env CUDA_LAUNCH_BLOCKING=1 NN_TEST_FILTER="$t" \
            LD_LIBRARY_PATH="$libpath" "$bin/test_cuda"
    done <<<"${failed_tests:-test_*}"
fi
if [ "$mode" = run ] && grep -q "no CUDA device: skipped\|CUDA backend not built" "$log"; then
    record "gpu tests ran" "FAIL (skipped: no device seen)"
fi

# ---- 4. gradients on the GPU ----
# emulated (no GPU): meson test emu_same_losses (tests/test_gpu_same_losses.sh)
gstep "gradcheck --device cuda" 25 env LD_LIBRARY_PATH="$libpath" "$bin/convnet" gradcheck --device cuda

# ---- 5. compute-sanitizer on short runs ----
san=$(find_cuda_bin compute-sanitizer) || san=compute-sanitizer
[ "$mode" = dry ] && ! command -v "$san" >/dev/null && san=$bin/convnet # nothing to check here but the step itself
gstep "memcheck: gradcheck" 45 env LD_LIBRARY_PATH="$libpath" "$san" --tool memcheck --error-exitcode 1 \
    "$bin/convnet" gradcheck --device cuda
gstep "racecheck: gradcheck" 45 env LD_LIBRARY_PATH="$libpath" "$san" --tool racecheck --error-exitcode 1 \
    "$bin/convnet" gradcheck --device cuda
# every op at small AlexNet shapes (64x64 input): the larger GEMM tiles and the conv chunks
gstep "memcheck: bench ops, batch 4, 64x64" 35 env LD_LIBRARY_PATH="$libpath" "$san" --tool memcheck \
    --error-exitcode 1 "$bin/convnet" bench --device cuda --ops-only --batch 4 --size 64 --repeats 1

# ---- 6. speed against PyTorch on the same GPU, batch 128 ----
# as shipped (strict fp32, 64 MiB conv workspace); then without the workspace
# cap (NN_CONV_WS_MB=0) and with the bias in the GEMM (NN_FUSE_BIAS=1), in fp32
# and in TF32 (NN_TF32=1; its ops validated at the TF32 tolerance, which also
# checks the uncapped conv and the fused bias at full size)
gstep "bench fp32 (ops + model), batch 128" 80 env LD_LIBRARY_PATH="$libpath" "$bin/convnet" bench --device cuda \
    --batch 128 --repeats 5 --json "$out/bench_fp32.json"
# emulated: emu_same_losses (NN_TF32=1, LeNet's first step), cuda_emu_ws_uncapped; the bench is too slow there
gstep "bench TF32, no ws cap (ops + model)" 30 env NN_TF32=1 NN_CONV_WS_MB=0 NN_FUSE_BIAS=1 LD_LIBRARY_PATH="$libpath" \
    "$bin/convnet" bench --device cuda --batch 128 --repeats 3 --json "$out/bench_tf32.json"
torch_step() { # precision: its JSON line goes to $out/torch_<precision>.json
    PYTHONUNBUFFERED=1 python3 "$root/benchmarks/torch_alexnet.py" --batch 128 --steps 20 --precision "$1" --per-op \
        >"$out/torch_$1.json"
}
export -f torch_step
if [ "$mode" = dry ]; then
    step "torch_alexnet.py compiles (dry run)" 30 python3 -m py_compile "$root/benchmarks/torch_alexnet.py"
else
    step "pytorch fp32, batch 128" 45 torch_step fp32
    step "pytorch default (TF32 convs), batch 128" 45 torch_step default
fi

# ---- 6b. the switches not on by default, with the time the training can spare ----
# (fusions, implicit-GEMM conv, no-sync uploads, resident data: each is a
# tested reference's faster twin; the defaults above come first, and these
# stop where EXTRA_RESERVE seconds are left for the full-size training)
# the bias in the GEMM epilogue (NN_FUSE_BIAS=1) and the bias gradient in the
# weight-gradient GEMM (NN_FUSE_BIAS_GRAD=1) against the CPU, conv2d and linear
# emulated: meson test cuda_emu_fuse_bias_conv2d, cuda_emu_fuse_bias_linear
for t in test_conv2d test_linear; do
    gstep_extra "$t with NN_FUSE_BIAS=1 NN_FUSE_BIAS_GRAD=1" 20 env NN_FUSE_BIAS=1 NN_FUSE_BIAS_GRAD=1 NN_TEST_FILTER="$t" \
        LD_LIBRARY_PATH="$libpath" "$bin/test_cuda"
done
# the fused epilogue against the unfused kernels (tests/test_cuda_fuse.c: the
# ReLU and the row sums in every GEMM kernel, the fused ops and builder, the
# bias gradient in the dw GEMM), then with the bias in the epilogue as well
[ "$mode" = dry ] && step "carried test_cuda_fuse runs (GPU tests skip)" 30 env LD_LIBRARY_PATH="$libpath" \
    "$bin/test_cuda_fuse"
# emulated: meson test cuda_fuse_emu, cuda_fuse_emu_fuse_bias
gstep_extra "fused epilogue tests (test_cuda_fuse)" 40 env LD_LIBRARY_PATH="$libpath" "$bin/test_cuda_fuse"
gstep_extra "test_cuda_fuse with NN_FUSE_BIAS=1" 30 env NN_FUSE_BIAS=1 LD_LIBRARY_PATH="$libpath" "$bin/test_cuda_fuse"
# the step captured as a CUDA graph (NN_CUDA_GRAPH=1) against the plain step
# (tests/test_cuda_graph.c: losses, weights and Adam state bit for bit over two
# epochs with dropout and the cosine schedule; a NaN batch skipped or stopped at alike)
[ "$mode" = dry ] && step "carried test_cuda_graph runs (GPU tests skip)" 20 env LD_LIBRARY_PATH="$libpath" \
    "$bin/test_cuda_graph"
# emulated: meson test cuda_graph_emu
gstep_extra "captured step = plain step (test_cuda_graph)" 30 env LD_LIBRARY_PATH="$libpath" "$bin/test_cuda_graph"
# the implicit-GEMM conv forward, dx and dw (NN_CONV_IMPLICIT=1; test_conv2d_implicit
# in the suite above compares them with im2col + GEMM whatever the switch):
# the op and its gradients against the CPU, and the gradient checks
# emulated: meson test cuda_emu_implicit
gstep_extra "test_conv2d* with NN_CONV_IMPLICIT=1" 25 env NN_CONV_IMPLICIT=1 NN_TEST_FILTER="test_conv2d*" \
    LD_LIBRARY_PATH="$libpath" "$bin/test_cuda"
# NCCL with one rank (issue 12): the MPI build (mpi/, see prepare_mpi) under
# the carried mpirun takes the GPU gradient path through NCCL (one member: a
# sum is a copy) and must end with the bits of the same build run without a
# launcher (no MPI call), in the GPU's default 4 MiB buckets during backward
# and as one sum after it; then 2 ranks (one GPU: a clear error, not a
# hang). The dry run runs the same on the emulated GPU (whose NCCL is MPI),
# checks that every Open MPI file loaded came from the bundle, and runs 2
# ranks on the CPU against their one-process emulation.
export mpi=$work/mpi mpi_multiarch
# nccl_dir: the folder of this machine's libnccl.so.2 (the CUDA root, the
# linker's cache, or PyTorch's nvidia-nccl wheel): it is too large to carry
nccl_dir() {
    local d
    for d in "${CUDA_HOME:-/nonexistent}/lib64" /usr/local/cuda/lib64 \
        $(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 / {print $NF}' | xargs -r -n1 dirname) \
        $(python3 -c 'import nvidia.nccl as m; print(*[p + "/lib" for p in m.__path__])' 2>/dev/null); do
        [ -e "$d/libnccl.so.2" ] && { echo "$d"; return 0; }
    done
    return 1
}
nccl_lib=$(nccl_dir) || nccl_lib=
export nccl_lib
# with_mpi CMD...: CMD with the carried Open MPI, relocated (OPAL_PREFIX;
# PMIx by its two folders), as root, over shared memory on this machine
with_mpi() {
    local m=$mpi/$mpi_multiarch
    env OPAL_PREFIX="$mpi/usr" PMIX_PKGLIBDIR="$m/pmix2/lib/pmix" PMIX_PKGDATADIR="$m/pmix2/share/pmix" \
        OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
        OMPI_MCA_btl_vader_single_copy_mechanism=none PATH="$mpi/usr/bin:$PATH" \
        LD_LIBRARY_PATH="$m:$m/pmix2/lib:$libpath${nccl_lib:+:$nccl_lib}" "$@"
}
nccl_one_rank() {
    local d=$work/nccl mb fails=0
    mkdir -p "$d" && cd "$d" || return 1
    if [ -z "${CONVNET_CUDA_MODULE:-}" ] && [ -z "$nccl_lib" ]; then
        echo "no libnccl.so.2 on this machine (CUDA root, ldconfig -p, PyTorch's nvidia-nccl)"
        return 1
    fi
    local tiny=(train --data "$carry/fashion-mnist" --size 64 --width 0.125 --fc 64 --dropout 0.5 --device cuda
        --limit "${NCCL_CHECK_LIMIT:-512}" --test-limit 64 --batch 32 --epochs 1 --threads 1 --quiet)
    with_mpi "$mpi/bin/convnet" "${tiny[@]}" --checkpoint-dir none >none.log 2>&1 || { tail -5 none.log; return 1; }
    for mb in default 0; do
        local flag=()
        [ $mb = default ] || flag=(--dist-bucket-mb "$mb")
        if ! with_mpi orterun --bind-to none -np 1 -x LD_LIBRARY_PATH ${CONVNET_CUDA_MODULE:+-x CONVNET_CUDA_MODULE} \
            "$mpi/bin/convnet" "${tiny[@]}" "${flag[@]}" --checkpoint-dir one-$mb >one-$mb.log 2>&1; then
            echo "FAIL: 1 rank, buckets $mb:"
            tail -5 one-$mb.log
            fails=1
            continue
        fi
        grep -h "data parallel\|gradient all-reduce" one-$mb.log
        grep -q "summed by nccl" one-$mb.log || { echo "FAIL: 1 rank, buckets $mb: not summed by NCCL"; fails=1; }
        if cmp one-$mb/last.safetensors none/last.safetensors; then
            echo "ok: 1 rank under mpirun (NCCL, buckets $mb) bitwise equal to no launcher"
        else
            fails=1
        fi
    done
    [ -n "${CONVNET_CUDA_MODULE:-}" ] && return $fails # the emulated GPU: test_dist.sh runs 2 ranks there
    # 2 ranks: where they run (2 GPUs), the bits of their one-process
    # emulation; on one GPU NCCL refuses two ranks ("Duplicate GPU detected"),
    # and the job must end saying so, not hang
    local gpus
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
    with_mpi timeout -k 5 40 orterun --bind-to none -np 2 -x LD_LIBRARY_PATH "$mpi/bin/convnet" "${tiny[@]}" \
        --dist-timeout 20 --checkpoint-dir two >two.log 2>&1
    local rc=$?
    if [ $rc = 0 ]; then # 2 GPUs (or an NCCL that lets two ranks share one)
        with_mpi "$mpi/bin/convnet" "${tiny[@]}" --emulate-ranks 2 --checkpoint-dir emu2 >emu2.log 2>&1
        if cmp two/last.safetensors emu2/last.safetensors; then
            echo "ok: 2 ranks on $gpus GPU(s) (NCCL) bitwise equal to their one-process emulation"
        else
            echo "FAIL: 2 ranks on $gpus GPU(s) differ from their one-process emulation"
            fails=1
        fi
    elif [ "$gpus" -lt 2 ] && [ $rc != 124 ] && grep -q "one GPU per process" two.log; then
        echo "ok: 2 ranks on one GPU end with status $rc: $(grep -m1 -o 'dist: rank.*' two.log)"
    else
        echo "FAIL: 2 ranks on $gpus GPU(s): status $rc$([ $rc = 124 ] && echo ' (did not end)'):"
        tail -5 two.log
        fails=1
    fi
    return $fails
}
# (dry run) the Open MPI files every process loads come from the bundle, and
# 2 ranks on the CPU give the bits of their one-process emulation
mpi_from_bundle() {
    local d=$work/mpi-cpu
    mkdir -p "$d" && cd "$d" || return 1
    local lenet=(train --data "$carry/fashion-mnist" --model lenet --limit 256 --test-limit 64 --batch 32 --epochs 1
        --threads 1 --quiet)
    LD_DEBUG=files with_mpi orterun --bind-to none -np 2 "$mpi/bin/convnet" "${lenet[@]}" --checkpoint-dir two \
        >two.log 2>&1 || { grep -v '^ *[0-9]*:' two.log | tail -5; return 1; }
    local ours outside
    ours=$(sed -nE 's/.*calling init: (.*(libmpi|libopen-|libpmix|libhwloc|mca_).*)/\1/p' two.log | sort -u)
    outside=$(grep -v "^$mpi/" <<<"$ours")
    echo "$(wc -l <<<"$ours") Open MPI files loaded by orterun and the ranks"
    if [ -n "$outside" ]; then
        echo "FAIL: $(wc -l <<<"$outside") loaded from outside the bundle: $(head -3 <<<"$outside" | tr '\n' ' ')"
        return 1
    fi
    [ -n "$ours" ] || { echo "FAIL: no Open MPI file seen loaded (LD_DEBUG)"; return 1; }
    with_mpi "$mpi/bin/convnet" "${lenet[@]}" --emulate-ranks 2 --checkpoint-dir emu >emu.log 2>&1 ||
        { tail -5 emu.log; return 1; }
    cmp two/last.safetensors emu/last.safetensors &&
        echo "ok: 2 ranks (carried mpirun, cpu) bitwise equal to their emulation"
}
export -f with_mpi nccl_one_rank mpi_from_bundle
emu_module=$root/build/tests/cuda_emu/libconvnet_cuda_emu.so
if [ ! -x "$mpi/bin/convnet" ]; then
    record "NCCL, one rank = no launcher" "skip (no MPI build in the bundle)"
elif [ ! -f "$carry/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
    record "NCCL, one rank = no launcher" "skip (data not carried)"
elif [ "$mode" = dry ]; then
    step "carried Open MPI: files from the bundle, 2 ranks (cpu)" 60 mpi_from_bundle
    if [ -f "$emu_module" ] && grep -q '^#define NN_HAVE_NCCL 1' "$root/build/config.h" 2>/dev/null; then
        step "NCCL, one rank = no launcher (dry run, emulated GPU)" 60 env CONVNET_CUDA_MODULE="$emu_module" \
            NCCL_CHECK_LIMIT=64 bash -c nccl_one_rank
    else
        record "NCCL, one rank = no launcher" "skip (dry run: no emulated GPU with NCCL in build/)"
    fi
else
    gstep_extra "NCCL, one rank = no launcher" 75 nccl_one_rank
fi
# the switches change no number they should not (tests/test_gpu_same_losses.sh,
# the script meson test emu_same_losses runs on the emulated GPU): short
# training runs with the no-sync switches and the fusions (NN_CUDA_LAZY_CHECKS,
# NN_CUDA_PINNED, NN_FUSE_BIAS, NN_FUSE_RELU), the resident data set, the step
# captured as a graph (which must say it ran from the graph) log the plain
# run's losses bit for bit; NN_FUSE_BIAS_GRAD, NN_CONV_IMPLICIT and NN_TF32
# within 1e-3; then gradcheck with the switches. The dry run does it on the
# CPU, where only NN_FUSE_RELU does something, to keep the runs working.
same_losses() { # DEVICE
    env CONVNET_FASHION_MNIST="$carry/fashion-mnist" LD_LIBRARY_PATH="$libpath" \
        bash "$root/tests/test_gpu_same_losses.sh" "$bin/convnet" "$1"
}
export -f same_losses
if [ ! -f "$carry/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
    record "switches: same losses" "skip (data not carried)"
elif [ "$mode" = dry ]; then
    step "switches: same losses (dry run, cpu)" 80 same_losses cpu
else
    gstep_extra "switches: same losses" 75 same_losses cuda
fi
# the implicit-GEMM conv on the conv gradient checks' small shapes: memcheck
# (its gather reads x at computed offsets), racecheck (one barrier per
# double-buffered slice)
# emulated: cuda_emu_implicit runs these tests under the emulator's red zones and barrier order (not a sanitizer)
for tool in memcheck racecheck; do
    gstep_extra "$tool: conv gradcheck, NN_CONV_IMPLICIT=1" 20 env NN_CONV_IMPLICIT=1 NN_TEST_FILTER=test_conv2d_gradcheck \
        LD_LIBRARY_PATH="$libpath" "$san" --tool $tool --error-exitcode 1 "$bin/test_cuda"
done
# emulated: cuda_emu_ws_uncapped, and NN_FUSE_BIAS=1 in emu_same_losses (the bench is too slow there)
gstep_extra "bench fp32, no ws cap, model" 30 env NN_CONV_WS_MB=0 NN_FUSE_BIAS=1 LD_LIBRARY_PATH="$libpath" "$bin/convnet" bench \
    --device cuda --batch 128 --repeats 5 --model-only --json "$out/bench_fp32_nocap.json"
# the same training step with the implicit-GEMM conv forward, dx and dw (its JSON in
# $work: at most 8 files come back; the summary prints its images/s)
# emulated: emu_same_losses' implicit run (NN_CONV_IMPLICIT=1), cuda_emu_ws_uncapped
gstep_extra "bench fp32, no ws cap, implicit conv, model" 30 env NN_CONV_IMPLICIT=1 NN_CONV_WS_MB=0 NN_FUSE_BIAS=1 \
    LD_LIBRARY_PATH="$libpath" "$bin/convnet" bench --device cuda --batch 128 --repeats 3 --model-only \
    --json "$work/bench_fp32_implicit.json"
# and on tensor cores (NN_TF32=1: the implicit conv's own TF32 kernel, beside
# the TF32 GEMM for the fc layers), against PyTorch's default
# emulated: test_conv2d_implicit's tf32 cases (the marked shapes of tests/conv_shapes.h)
gstep_extra "bench TF32, implicit conv, model" 30 env NN_TF32=1 NN_CONV_IMPLICIT=1 NN_FUSE_BIAS=1 \
    LD_LIBRARY_PATH="$libpath" "$bin/convnet" bench --device cuda --batch 128 --repeats 3 --model-only \
    --json "$work/bench_tf32_implicit.json"

# side by side: training images/s, ours over PyTorch's (into the log: at most
# 8 files come back from $OUT, and the results take 8)
summary() {
    python3 - "$out" "$work" <<'EOF' >"$work/summary.txt"
import json, os, sys
out, work = sys.argv[1], sys.argv[2]
def load(name, *keys):
    try:
        v = json.load(open(os.path.join(out, name) if os.path.exists(os.path.join(out, name)) else os.path.join(work, name)))
        for k in keys:
            v = v[k]
        return float(v)
    except Exception:
        return None
rows = [("fp32", load("bench_fp32.json", "devices", "cuda", "train", "images_per_s"),
         load("torch_fp32.json", "train_images_per_s")),
        ("fp32, no ws cap, fused bias", load("bench_fp32_nocap.json", "devices", "cuda", "train", "images_per_s"),
         load("torch_fp32.json", "train_images_per_s")),
        ("fp32, no cap, implicit conv", load("bench_fp32_implicit.json", "devices", "cuda", "train", "images_per_s"),
         load("torch_fp32.json", "train_images_per_s")),
        ("TF32 + no cap / PyTorch default", load("bench_tf32.json", "devices", "cuda", "train", "images_per_s"),
         load("torch_default.json", "train_images_per_s")),
        ("TF32 + implicit conv / default", load("bench_tf32_implicit.json", "devices", "cuda", "train", "images_per_s"),
         load("torch_default.json", "train_images_per_s"))]
print("training images/s, batch 128    convnet   pytorch   ratio")
for name, ours, theirs in rows:
    f = lambda v: "%9.1f" % v if v else "        -"
    ratio = "%7.2fx" % (ours / theirs) if ours and theirs else "       -"
    print("%-32s %s %s %s" % (name, f(ours), f(theirs), ratio))
# each layer alone, forward + backward (convnet bench's rows and torch_alexnet.py
# --per-op's, joined by layer name): where the step's time goes, and who is slower
def ops_of(name, device_ops):
    try:
        j = json.load(open(os.path.join(out, name)))
        return {o["layer"]: o for o in (j["devices"]["cuda"]["ops"] if device_ops else j["ops"])}
    except Exception:
        return {}
for label, ours_file, theirs_file in (("fp32", "bench_fp32.json", "torch_fp32.json"),
                                      ("TF32 / PyTorch default", "bench_tf32.json", "torch_default.json")):
    ours, theirs = ops_of(ours_file, True), ops_of(theirs_file, False)
    if not ours or not theirs:
        continue
    print("per layer, %s, fwd + bwd ms     convnet   pytorch   ratio" % label)
    for layer, o in ours.items():
        t = theirs.get(layer)
        mine = 1e3 * (o["forward_s"] + o["backward_s"])
        if t is None:
            print("  %-14s %-13s %9.3f         -        -" % (layer, o["op"], mine))
            continue
        other = t["forward_ms"] + t["backward_ms"]
        ratio = "%7.2fx" % (other / mine) if mine > 0 else "       -"
        print("  %-14s %-13s %9.3f %9.3f %s" % (layer, o["op"], mine, other, ratio))
EOF
}
export -f summary
if [ "$mode" = dry ]; then
    # the summary reads the keys the two programs write: try it on stand-ins
    echo '{"devices": {"cuda": {"train": {"images_per_s": 100.0}, "ops": [{"layer": "stage1.0", "op": "conv2d",
        "forward_s": 0.001, "backward_s": 0.002}]}}}' >"$out/bench_fp32.json"
    echo '{"train_images_per_s": 200.0, "ops": [{"layer": "stage1.0", "forward_ms": 1.0, "backward_ms": 0.5}]}' \
        >"$out/torch_fp32.json"
    summary_check() {
        summary && grep -q '^fp32 .* 0.50x$' "$work/summary.txt" && grep -q 'stage1.0 .* 0.50x$' "$work/summary.txt"
    }
    export -f summary_check
    step "side-by-side summary (dry run, stand-in numbers)" 5 summary_check
else
    step "side-by-side summary" 5 summary
fi

# ---- 7. the full-size AlexNet on Fashion-MNIST, with the time left ----
# (--init he: the paper's init diverges on Fashion-MNIST; README, The main job)
if [ -f "$carry/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
    train() {
        set -o pipefail # the status is convnet's, not tee's
        env LD_LIBRARY_PATH="$libpath" "$bin/convnet" train --device cuda --data "$carry/fashion-mnist" \
            --size 224 --width 1 --fc 4096 --init he --optim sgd --dropout 0.5 --schedule plateau \
            --batch 128 --epochs 10 --checkpoint-dir "$work/ck" 2>&1 | tee "$out/train.log"
    }
    export -f train
    # the run is cut by the budget by design: the epochs it finished are the result
    cut_ok=1 gstep "train AlexNet 224 on Fashion-MNIST" 100000 train
else
    record "train AlexNet 224 on Fashion-MNIST" "skip (data not carried)"
fi

finish
