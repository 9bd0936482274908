#!/usr/bin/env bash
# The GPU checks, as one prepared script for a bare GPU machine (nvcc, meson,
# ninja, maybe PyTorch; no network; maybe no OpenBLAS/cmocka/cJSON/libpng/libjpeg dev
# packages). Missing libraries come from .deb files fetched beforehand by
# benchmarks/fetch_debs.sh, unpacked with dpkg -x into a local prefix (never
# into /). Then: a fresh -Dcuda=enabled build, the GPU tests, `convnet
# gradcheck --device cuda`, `convnet bench --device cuda`, and PyTorch's
# AlexNet timing where torch works. Prints a table (check, result, seconds),
# writes the full log, and exits non-zero if any check failed.
#
#   usage: benchmarks/gpu_check.sh [--debs DIR] [--build DIR] [--log FILE] [--sm SM]
# Run from anywhere; paths are relative to the current directory.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
debs=debs
build="build-gpu-check"
log=gpu_check.log
sm=90
while [ $# -gt 0 ]; do
  case "$1" in
    --debs) debs=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --log) log=$2; shift 2 ;;
    --sm) sm=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
mkdir -p "$(dirname "$log")"
log=$(cd "$(dirname "$log")" && pwd)/$(basename "$log")
: >"$log"
[ -d "$debs" ] && debs=$(cd "$debs" && pwd)
case "$build" in /*) ;; *) build=$(pwd)/$build ;; esac
prefix=$build-deps

t_start=$(date +%s)
declare -a rows=()
failed=0

say() { echo "$*" | tee -a "$log"; }

# run NAME TIMEOUT CMD...: runs a check with its output in the log; records
# pass/fail/timeout and the seconds taken. Returns the command's status.
run() {
  local name=$1 limit=$2
  shift 2
  say ""
  say "==== $name: $*"
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  local secs result
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc -eq 0 ]; then
    result=pass
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    result="FAIL (timeout ${limit}s)"
  else
    result="FAIL (exit $rc)"
  fi
  [ $rc -eq 0 ] || failed=$((failed + 1))
  rows+=("$name|$result|$secs")
  say "==== $name: $result in ${secs}s"
  return $rc
}

# note NAME RESULT: a row without a command (skipped or missing checks)
note() {
  rows+=("$1|$2|-")
  say "==== $1: $2"
  case "$2" in FAIL*) failed=$((failed + 1)) ;; esac
}

table() {
  say ""
  say "$(printf '%-26s %-34s %8s' check result seconds)"
  say "$(printf '%-26s %-34s %8s' -------------------------- ---------------------------------- --------)"
  local r
  for r in "${rows[@]}"; do
    IFS='|' read -r a b c <<<"$r"
    say "$(printf '%-26s %-34s %8s' "$a" "$b" "$c")"
  done
  say ""
  say "total $(($(date +%s) - t_start))s, $failed failed; full log: $log"
}

finish() {
  table
  [ $failed -eq 0 ]
  exit $?
}

# ---- the machine ----
say "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), source $root"
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
  command -v nvcc >/dev/null && nvcc --version | tail -2
  meson --version
} >>"$log" 2>&1
if command -v nvidia-smi >/dev/null && nvidia-smi -L >>"$log" 2>&1; then
  note "gpu present" pass
else
  note "gpu present" "FAIL (nvidia-smi)"
fi

# ---- missing libraries from .deb files, into a local prefix ----
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
# GPU_CHECK_FORCE_DEBS=1 unpacks everything (to test this path on a full machine)
force=${GPU_CHECK_FORCE_DEBS:-0}
have_pc() { [ "$force" != 1 ] && pkg-config --exists "$1" 2>/dev/null; }
have_so() { [ "$force" != 1 ] && ldconfig -p 2>/dev/null | grep -q "$1"; }
want=()
have_pc openblas || { [ "$force" != 1 ] && [ -e "/usr/lib/$multiarch/openblas-openmp/libopenblas.so" ]; } ||
  want+=(libopenblas-openmp-dev libopenblas0-openmp)
have_so libgfortran.so.5 || want+=(libgfortran5)
have_so libquadmath.so.0 || want+=(libquadmath0)
have_so libgomp.so.1 || want+=(libgomp1)
have_pc cmocka || want+=(libcmocka-dev libcmocka0)
have_pc libcjson || want+=(libcjson-dev libcjson1)
have_pc libpng || want+=(libpng-dev libpng16-16)
have_pc libjpeg || want+=(libjpeg62-turbo-dev libjpeg62-turbo)
have_pc zlib || want+=(zlib1g-dev)
have_so libz.so.1 || want+=(zlib1g)

rm -rf "$prefix"
if [ ${#want[@]} -gt 0 ]; then
  say "libraries to unpack: ${want[*]}"
  missing=()
  mkdir -p "$prefix"
  for p in "${want[@]}"; do
    found=("$debs/${p}_"*.deb)
    f=${found[0]}
    if [ ! -e "$f" ]; then
      missing+=("$p")
      continue
    fi
    dpkg -x "$f" "$prefix" >>"$log" 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    note "dependencies" "FAIL (no .deb: ${missing[*]})"
  else
    note "dependencies" "pass (${#want[@]} unpacked)"
  fi
  # .pc files say /usr: point them at the prefix
  find "$prefix" -name '*.pc' -type f -exec sed -i "s|/usr|$prefix/usr|g" {} +
  libdirs="$prefix/usr/lib/$multiarch:$prefix/usr/lib/$multiarch/openblas-openmp:$prefix/lib/$multiarch"
  export PKG_CONFIG_PATH="$prefix/usr/lib/$multiarch/openblas-openmp/pkgconfig:$prefix/usr/lib/$multiarch/pkgconfig:$prefix/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LIBRARY_PATH="$libdirs${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export CPATH="$prefix/usr/include:$prefix/usr/include/$multiarch:$prefix/usr/include/$multiarch/openblas-openmp${CPATH:+:$CPATH}"
  {
    echo "PKG_CONFIG_PATH=$PKG_CONFIG_PATH"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "CPATH=$CPATH"
  } >>"$log"
else
  note "dependencies" "pass (all installed)"
fi

# ---- build ----
rm -rf "$build"
if ! run "meson setup" 120 meson setup "$build" "$root" -Dcuda=enabled -Dtests=enabled -Dgpu_sm="$sm" \
  --buildtype=release; then
  finish
fi
# only what the checks run: the library, the CLI and the GPU test program
if ! run "build" 240 ninja -C "$build" tools/convnet tests/test_cuda; then
  finish
fi
convnet=$build/tools/convnet

# ---- the GPU tests: they must run, not skip ----
run "meson test cuda" 240 meson test -C "$build" cuda --no-rebuild --print-errorlogs --timeout-multiplier 2
cat "$build/meson-logs/testlog.txt" >>"$log" 2>/dev/null
if grep -q "no CUDA device: skipped\|CUDA backend not built" "$build/meson-logs/testlog.txt" 2>/dev/null; then
  note "gpu tests ran" "FAIL (skipped: no device seen)"
else
  note "gpu tests ran" pass
fi

# ---- the CLI's checks (commands may not exist yet: a missing one is a failed check) ----
has_cmd() { [ -x "$convnet" ] && "$convnet" help 2>&1 | grep -qw "$1"; }
if has_cmd gradcheck; then
  run "convnet gradcheck cuda" 120 "$convnet" gradcheck --device cuda
else
  note "convnet gradcheck cuda" "FAIL (command missing)"
fi

# ---- timing ----
if has_cmd bench; then
  run "convnet bench cuda" 180 "$convnet" bench --device cuda
else
  note "convnet bench cuda" "skip (command missing)"
fi
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$log" 2>&1; then
  run "pytorch alexnet" 180 python3 "$root/benchmarks/torch_alexnet.py" --batch 128 --steps 20
  grep '^{' "$log" | tail -1 | sed 's/^/pytorch: /'
else
  note "pytorch alexnet" "skip (no torch with CUDA)"
fi

finish
