#!/usr/bin/env bash
# Downloads (does not install) the .deb files benchmarks/gpu_check.sh needs on
# a GPU machine without network: OpenBLAS (OpenMP and pthread builds), cmocka,
# cJSON, libpng, libjpeg, zlib and their runtime libraries, into ./debs (git-ignored).
# Run it on a machine with apt access, of the same distribution as the GPU one.
#   usage: benchmarks/fetch_debs.sh [DIR]
set -euo pipefail

dir=${1:-debs}
pkgs=(
  libopenblas-dev libopenblas0
  libopenblas-openmp-dev libopenblas0-openmp
  libopenblas-pthread-dev libopenblas0-pthread
  libgfortran5 libquadmath0 libgomp1
  libcmocka-dev libcmocka0
  libcjson-dev libcjson1
  libpng-dev libpng16-16
  libjpeg62-turbo-dev libjpeg62-turbo
  zlib1g-dev zlib1g
)

mkdir -p "$dir"
cd "$dir"
if ! apt-get download "${pkgs[@]}"; then
  echo "fetch_debs: apt-get download failed; run 'apt-get update' first?" >&2
  exit 1
fi
got=(./*.deb)
echo "fetch_debs: ${#got[@]} packages in $(pwd)"
