#!/usr/bin/env bash
# The library as a user gets it: installs BUILD (default build/) into a
# temporary prefix, then compiles every examples/*.c outside the tree against
# the installed headers and libraries only, through pkg-config, linked shared
# and static, and runs each (exit 77 = the example skipped itself). A
# CPU-only program must not need the CUDA runtime: checked on both links.
# Then the same example through a meson project that uses convnet as a
# subproject (dependency('convnet') with a fallback).
#   bash .ci/install_check.sh [BUILD]
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

meson install -C "$build" --no-rebuild --destdir "$tmp/dest" >/dev/null
prefix=$(meson introspect "$build" --buildoptions |
    python3 -c 'import json, sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
root=$tmp/dest$prefix
pcfile=$(find "$root" -name convnet.pc | head -1)
[ -n "$pcfile" ] || { echo "no convnet.pc installed under $root" >&2; exit 1; }
# the .pc file names the configured prefix: a copy points at the staging one
mkdir -p "$tmp/pc"
sed "s|^prefix=.*|prefix=$root|" "$pcfile" >"$tmp/pc/convnet.pc"
pc() { PKG_CONFIG_PATH=$tmp/pc pkg-config "$@" convnet; }
libdir=$(pc --variable=libdir)
echo "installed: $(cd "$root" && find . -type f | wc -l) files under $prefix; pkg-config: $(pc --cflags --libs)"

# The public headers are named twice: meson.build's public_headers (what is
# installed) and convnet.h (what a program includes). They must agree both
# ways: a header convnet.h reaches but not installed fails this compile, and
# one installed but not reached from convnet.h is listed as a failure.
inc=$(pc --variable=includedir)/convnet
installed=$(cd "$inc" && find . -name '*.h' | sed 's|^\./||' | sort)
# (compiled in $tmp: from the tree, "convnet.h" would be the source's)
if ! deps=$(cd "$tmp" && echo '#include "convnet.h"' | cc -std=c11 -MM -I"$inc" -x c - 2>&1); then
    echo "FAILED  public headers: convnet.h includes one that is not installed:"; echo "$deps"; fails=$((fails + 1))
elif reached=$(tr ' \\' '\n\n' <<<"$deps" | sed -n "s|^$inc/||p" | sort -u) && [ "$reached" != "$installed" ]; then
    echo "FAILED  public headers: installed (<) and reached from convnet.h (>) differ:"
    diff <(echo "$installed") <(echo "$reached") | grep '^[<>]' || true
    fails=$((fails + 1))
else
    echo "ok      public headers: the $(wc -l <<<"$installed") installed are the ones convnet.h includes"
fi

mkdir -p "$tmp/app"
run_one() {  # run_one NAME EXE LINK: runs it, checks what it needs at run time
    local name=$1 exe=$2 link=$3 rc=0 needed
    needed=$(readelf -d "$exe" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')
    if [[ $needed == *cudart* || $needed == *convnet_cuda* ]]; then
        echo "FAILED  $name ($link): needs the CUDA runtime: $needed"; fails=$((fails + 1)); return
    fi
    if [[ $link == static && $needed == *libconvnet* ]]; then
        echo "FAILED  $name (static): still needs a shared libconvnet: $needed"; fails=$((fails + 1)); return
    fi
    (cd "$tmp/app" && LD_LIBRARY_PATH=$libdir OMP_WAIT_POLICY=passive timeout 300 "$exe" >"$exe.log" 2>&1) || rc=$?
    case $rc in
    0) echo "ok      $name ($link): $(tail -1 "$exe.log")" ;;
    77) echo "skipped $name ($link): $(tail -1 "$exe.log")" ;;
    *) echo "FAILED  $name ($link, exit $rc):"; tail -20 "$exe.log"; fails=$((fails + 1)) ;;
    esac
}
for ex in examples/*.c; do
    name=$(basename "$ex" .c)
    # a copy outside the tree, so no header of the source tree can be found
    cp "$ex" "$tmp/app/$name.c"
    cc -std=c11 -Wall -Wextra -Werror -o "$tmp/app/$name" "$tmp/app/$name.c" $(pc --cflags --libs) &&
        run_one "$name" "$tmp/app/$name" shared || { echo "FAILED  $name: shared build"; fails=$((fails + 1)); }
    cc -std=c11 -Wall -Wextra -Werror -o "$tmp/app/$name-static" "$tmp/app/$name.c" $(pc --cflags) \
        -Wl,--as-needed -l:libconvnet.a $(pc --static --libs) &&
        run_one "$name" "$tmp/app/$name-static" static || { echo "FAILED  $name: static build"; fails=$((fails + 1)); }
done

# as a meson subproject: the README's lines, with the tree as the subproject
mkdir -p "$tmp/sub/subprojects"
ln -s "$src" "$tmp/sub/subprojects/convnet"
cp examples/readme_network.c "$tmp/sub/"
cat >"$tmp/sub/meson.build" <<'MESON'
project('uses_convnet', 'c', default_options: ['c_std=c11'])
convnet = dependency('convnet', fallback: 'convnet',
  default_options: ['cuda=disabled', 'tests=disabled'])
executable('readme_network', 'readme_network.c', dependencies: convnet)
MESON
if (cd "$tmp/sub" && meson setup b >b.log 2>&1 && meson compile -C b readme_network >>b.log 2>&1); then
    run_one readme_network "$tmp/sub/b/readme_network" subproject
else
    echo "FAILED  meson subproject build:"; tail -30 "$tmp/sub/b.log"; fails=$((fails + 1))
fi
[ "$fails" -eq 0 ]
