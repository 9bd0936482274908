#!/usr/bin/env bash
# One entry point that sets everything up on a fresh Debian 12 machine:
#   bash tools/run.sh train [convnet train options]   # the main job
#   bash tools/run.sh test                            # the whole test suite
#   bash tools/run.sh build                           # just install + build
# It installs the missing Debian packages (apt-get, as root or via sudo),
# configures meson in build/ (CUDA backend when nvcc is present) and builds.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(gcc meson ninja-build pkg-config python3
          libopenblas-openmp-dev libcmocka-dev zlib1g-dev libcjson-dev libpng-dev
          libjpeg62-turbo-dev dataset-fashion-mnist openmpi-bin libopenmpi-dev)

install_missing() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "== installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
    # nvcc lives outside PATH in the usual CUDA install
    if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
        export PATH="/usr/local/cuda/bin:$PATH"
    fi
    local werror=false
    [ "${CI:-}" = "true" ] && werror=true
    # quiet when all goes well, the whole log when it does not
    local log
    log=$(mktemp)
    if [ ! -f build/build.ninja ]; then
        if ! meson setup build -Dwerror=$werror -Dcuda=auto >"$log" 2>&1; then
            cat "$log"; rm -f "$log"; echo "== meson setup failed" >&2; exit 1
        fi
    fi
    if ! ninja -C build >"$log" 2>&1; then
        cat "$log"; rm -f "$log"; echo "== build failed" >&2; exit 1
    fi
    rm -f "$log"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    train) install_missing; build; exec ./build/tools/convnet train "$@" ;;
    test)  install_missing; build; meson test -C build --print-errorlogs "$@" ;;
    build) install_missing; build ;;
    *) echo "usage: bash tools/run.sh train [options] | test | build" >&2; exit 2 ;;
esac
