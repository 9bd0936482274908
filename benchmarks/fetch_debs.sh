#!/usr/bin/env bash
# Fetches (does not install) the .deb files of the given packages into DIR
# (default debs/, git-ignored) and unpacks each with dpkg -x into DIR/root, a
# private tree (never /). benchmarks/gpu_check.sh prepare calls it with exactly
# the packages that own the libraries `ldd` lists for the carried binaries,
# plus the few a fallback build on the GPU machine needs (headers, .pc files
# and pkgconf: that machine has no pkg-config). A package already fetched is
# not fetched again. Exit status 1 when a package could not be fetched.
#   usage: benchmarks/fetch_debs.sh DIR PACKAGE...
set -uo pipefail

[ $# -ge 2 ] || { echo "usage: $0 DIR PACKAGE..." >&2; exit 2; }
dir=$1
shift
mkdir -p "$dir/root"
cd "$dir" || exit 1
missing=()
for p in "$@"; do
    have=("${p}"_*.deb)
    if [ ! -e "${have[0]}" ]; then
        # apt-get warns when root downloads into a folder _apt cannot write: harmless
        apt-get download "$p" >/dev/null 2>&1 || { missing+=("$p"); continue; }
        have=("${p}"_*.deb)
    fi
    dpkg -x "${have[0]}" root || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "fetch_debs: could not fetch or unpack: ${missing[*]} (apt-get update first?)" >&2
    exit 1
fi
echo "fetch_debs: $# packages unpacked in $(pwd)/root"
